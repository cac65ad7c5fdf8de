"""``edgekit compile``: an ONNX model into a ``.ekpkg`` package for a board."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Callable

import onnx

from edgekit.compiler.backend import CompileOptions
from edgekit.compiler.driver import compile_model as _compile
from edgekit.compiler.result import CompileResult
from edgekit.api.fit_advice import with_int8_advice
from edgekit.core.errors import DoesNotFitError, InputError
from edgekit.frontend.loader import PreparedModel

__all__ = ["CompileResult", "compile_model", "StageProgress"]

#: ``progress(stage, message)``, called as each compile stage starts (a
#: stage may report again with a new message).
StageProgress = Callable[[str, str], None]


def compile_model(
    model: str | os.PathLike[str] | onnx.ModelProto | PreparedModel,
    board: str,
    output: str | os.PathLike[str],
    *,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    options: CompileOptions | None = None,
    board_dirs: Iterable[str | os.PathLike[str]] = (),
    progress: StageProgress | None = None,
) -> CompileResult:
    """Compiles ``model`` for ``board`` and writes the package to ``output``.

    Example::

        result = compile_model("model.onnx", "host", "model.ekpkg")
        print(result.manifest.memory["arena_bytes"])

    Args:
        model: An ONNX file, a ``ModelProto`` or a prepared model.
        board: Board profile name (:func:`edgekit.api.boards.list_boards`).
        output: The package file (replaced atomically).
        input_shapes: Static input shapes by name.
        options: Compile options (tuning, int8 choice, weight storage...).
        board_dirs: Extra folders of board/target profiles.
        progress: See :data:`StageProgress`.

    Raises:
        InputError: tuning options without tuning trials.
        ConfigError, ModelError, CompileError: from the compiler; a
            ``DoesNotFitError`` refused for RAM before the build advises int8
            too (:mod:`edgekit.api.fit_advice`).
    """
    if options is not None and (options.tune_tracker or options.tune_key) and not options.tune_trials:
        raise InputError("--tracker and --key apply to tuning", hint="Add --tune N, or drop them.")
    try:
        return _compile(model, board, output, input_shapes=input_shapes, options=options, board_dirs=board_dirs,
                        progress=progress)  # fmt: skip
    except DoesNotFitError as exc:
        raise with_int8_advice(exc) from None
