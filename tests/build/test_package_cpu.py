"""A host package built for a CPU with more x86 extensions than this one is refused, not run into SIGILL (issue #14).

CI has been a Zen 2 EPYC (AVX2) one day and a Sapphire Rapids Xeon (AVX-512,
AMX) the next; a package compiled on one and run on the other died with an
illegal instruction in its first kernel, taking the process with it.
"""

from __future__ import annotations

import pytest
from onnx import TensorProto, helper

from edgekit.compiler.driver import compile_model
from edgekit.core.cpu_features import TEST_FLAGS_ENV, host_arch
from edgekit.core.errors import PackageError
from edgekit.core.profiles import get_board
from edgekit.frontend.loader import load_model
from edgekit.package import open_package
from edgekit.runtime.runner import open_runner

pytest.importorskip("tvm")


@pytest.fixture
def host_package(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])])  # fmt: skip
    src = tmp_path / "relu.onnx"
    src.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    out = tmp_path / "relu.ekpkg"
    compile_model(load_model(str(src)), "host", out)
    return out


def test_a_package_for_a_cpu_this_one_is_not_is_refused(host_package, monkeypatch):
    if host_arch() != "x86_64":
        pytest.skip("x86 extensions")
    board, _ = get_board("host")
    open_runner(open_package(host_package), board).close()  # built here, runs here
    # This CPU as one without AVX (Nehalem): the package's code, for any CPU of the last decade, has AVX.
    monkeypatch.setenv(TEST_FLAGS_ENV, "sse sse2 pni ssse3 sse4_1 sse4_2 popcnt")
    with pytest.raises(PackageError, match="illegal instruction") as err:
        open_runner(open_package(host_package), board)
    assert "--board host" in err.value.hint
