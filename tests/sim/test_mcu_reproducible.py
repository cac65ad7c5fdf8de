"""Two compiles of one model for an MCU give the same package, byte for byte.

The firmware is linked in a fresh temporary folder; its debug info named
that folder until the build mapped it to the package's ``model/``. With
``SOURCE_DATE_EPOCH`` set the archives are equal too (entries in name order,
one fixed time, and ``created`` from the variable).
"""

from __future__ import annotations

import importlib.util
import json
import zipfile

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.compiler.driver import compile_model

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ziglang") is None, reason="ziglang not installed (pip install ziglang)")


def _tiny_cnn():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (4, 2, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "b")]  # fmt: skip
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_two_compiles_give_identical_packages(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1796515200")  # 2026-12-06 00:00 UTC
    packages = []
    for k in range(2):
        compile_model(_tiny_cnn(), "rv32-mcu-sim", tmp_path / f"m{k}.ekpkg")
        with zipfile.ZipFile(tmp_path / f"m{k}.ekpkg") as zf:
            packages.append({name: zf.read(name) for name in zf.namelist()})
    first, second = packages
    assert "firmware/firmware.elf" in first and first.keys() == second.keys()
    for name in first:
        if name != "manifest.json":
            assert first[name] == second[name], f"{name} differs between two compiles of one model"
    assert b"edgekit-aot-" not in first["firmware/firmware.elf"]  # the build folder's name
    manifests = [json.loads(p["manifest.json"]) for p in packages]
    assert manifests[0] == manifests[1] and manifests[0]["created"] == "2026-12-06T00:00:00+00:00"
    assert (tmp_path / "m0.ekpkg").read_bytes() == (tmp_path / "m1.ekpkg").read_bytes()
