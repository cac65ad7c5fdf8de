"""A Linux board's runner: its C is compiled for the board's CPU, its link
takes the architecture's baseline CPU, so zig builds musl once per
architecture (1.5-3 minutes each on a cold cache) instead of once per board."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgekit.compiler import firmware
from edgekit.compiler.backends.llvm import linux_cross
from edgekit.core.profiles import get_board


def _commands(board: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[list[str]], list[str]]:
    compiled: list[list[str]] = []
    linked: list[str] = []

    def compile_c(toolchain: Any, sources: Any, out_dir: Path, flags: Any, include_dirs: Any = ()) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        compiled.append(list(flags))
        objs = [out_dir / (Path(s).stem + ".o") for s in sources]
        for o in objs:
            o.write_bytes(b"")
        return objs

    def link_image(toolchain: Any, inputs: Any, out: Path, flags: Any, **kw: Any) -> Path:
        linked.extend(flags)
        assert [Path(p).name for p in inputs] == ["model.o", "runner.o", "kernels.o"]
        out.write_bytes(b"exe")
        return out

    monkeypatch.setattr(firmware, "find_toolchain", lambda cross=False: firmware.Toolchain(kind="zig", command=("zig", "cc")))
    monkeypatch.setattr(firmware, "compile_c", compile_c)
    monkeypatch.setattr(firmware, "link_image", link_image)
    _board, target = get_board(board)
    members = {"model/model.c": b"", "model/model.h": b"", "model/kernels.o": b""}
    assert linux_cross.link_runner(members, linux_cross.zig_flags(target, target.tvm_target()), tmp_path / board) == b"exe"
    return compiled, linked


@pytest.mark.parametrize("boards", [("raspberry-pi-4", "raspberry-pi-5"), ("visionfive2", "bpi-f3")])
def test_boards_of_one_architecture_link_against_one_libc(
    boards: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    (c1, l1), (c2, l2) = (_commands(b, tmp_path, monkeypatch) for b in boards)
    # the C is compiled for each board's own CPU ...
    cpu1, cpu2 = ([f for f in c[0] if f.startswith("-mcpu=")] for c in (c1, c2))
    assert cpu1 and cpu2 and cpu1 != cpu2
    # ... and linked with the same flags, no CPU among them
    assert l1 == l2 and not any(f.startswith("-mcpu=") for f in l1)
    assert l1[:2] == c1[0][:2] and "-static" in l1
