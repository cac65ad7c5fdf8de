"""The backends' optional precision hook: the driver builds through whichever backend it resolved."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from edgekit.compiler.backend import BuildResult, ChosenBuild, CompileOptions, build_with_choice, get_backend

PREPARED: Any = SimpleNamespace(name="m")
BOARD: Any = SimpleNamespace(name="b")
TARGET: Any = SimpleNamespace(name="t")


class _Plain:
    """A backend without a precision hook."""

    def __init__(self) -> None:
        self.builds: list[Any] = []

    def build(self, prepared: Any, board: Any, target: Any, options: CompileOptions, progress: Any) -> BuildResult:
        self.builds.append(prepared)
        return BuildResult({"a.bin": b"a"}, "test")


class _Choosing(_Plain):
    """A backend whose hook decides for some models only."""

    def __init__(self, decides: bool) -> None:
        super().__init__()
        self.decides, self.costs = decides, []

    def choose_precision(self, prepared: Any, board: Any, target: Any, options: CompileOptions, progress: Any, *,
                         cost: Any = None) -> ChosenBuild | None:  # fmt: skip
        self.costs.append(cost)
        if not self.decides:
            return None
        other = SimpleNamespace(name="m-mixed")
        return ChosenBuild(other, self.build(other, board, target, options, progress), {"decision": "mixed"})


def _build(backend: Any, cost: Any = None) -> ChosenBuild:
    return build_with_choice(backend, PREPARED, BOARD, TARGET, CompileOptions(), lambda s, m: None, cost=cost)


def test_a_backend_without_the_hook_builds_the_model_as_it_is() -> None:
    backend = _Plain()
    built = _build(backend, cost="ignored")
    assert built.prepared is PREPARED and built.choice is None and backend.builds == [PREPARED]


def test_the_hook_decides_and_gets_the_callers_cost_model() -> None:
    backend = _Choosing(decides=True)
    built = _build(backend, cost="model")
    assert built.prepared.name == "m-mixed" and built.choice == {"decision": "mixed"}
    assert backend.costs == ["model"] and [p.name for p in backend.builds] == ["m-mixed"]


def test_a_hook_with_nothing_to_choose_falls_back_to_build() -> None:
    backend = _Choosing(decides=False)
    built = _build(backend)
    assert built.prepared is PREPARED and built.choice is None and backend.builds == [PREPARED] and backend.costs == [None]


def test_which_builtin_backends_have_the_hook() -> None:
    # The int8/fp32 choice is the CPU backend's; the others make none (their manifests carry no int8_choice).
    from edgekit.compiler.backends.llvm.int8_choice import choose_precision

    assert get_backend("llvm").choose_precision is choose_precision  # type: ignore[attr-defined]
    for codegen in ("aot-c", "cuda", "npu"):
        assert not hasattr(get_backend(codegen), "choose_precision"), codegen
