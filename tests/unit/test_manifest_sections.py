"""The backends' typed manifest sections: what compile writes round-trips, older packages read with
defaults, a key of the wrong type is a ManifestError naming it."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from edgekit.compiler.backends.aot_c.section import AotSection
from edgekit.compiler.backends.cuda.section import CudaSection
from edgekit.compiler.backends.llvm.int8_choice import Int8Choice, LayerCost
from edgekit.compiler.backends.npu.section import NpuSection
from edgekit.core.errors import ManifestError
from edgekit.package import Manifest
from edgekit.package.sections import LinuxSection, ParamsSection

#: Each section as this edgekit's compile writes it (key order included).
WRITTEN: dict[type, dict[str, Any]] = {
    ParamsSection: {"member": "params.bin", "format": "tvm-param-dict", "count": 10, "names": ["p0", "p1"]},
    LinuxSection: {"runner": "bin/runner", "weights": "weights.bin", "arch": "aarch64",
                   "zig_target": "aarch64-linux-musl", "zig_flags": ["-target", "aarch64-linux-musl"],
                   "libc": "musl (static)", "kernel_calls": 6},
    CudaSection: {"compiler": "nvrtc", "schedule": "dlight default gpu rules", "source": None},
    AotSection: {"model_c": "model/model.c", "model_h": "model/model.h", "kernels": "model/kernels.o",
                 "weights": "weights.bin", "firmware": "firmware/firmware.elf", "alignment": 64, "kernel_calls": 6,
                 "int8_c_kernel_calls": 0, "arena_bytes_without_reuse": 15784, "code_bytes_measured": True,
                 "kernel_imports": ["memcpy"], "input_offsets": [0], "output_offsets": [64],
                 "weight_storage": {"mode": "auto", "dense_bytes": 576, "stored_bytes": 300, "sparse_tensors": 1,
                                    "decode_scratch_bytes": 576, "arena_bytes_dense": 4096, "note": "",
                                    "tensors": [{"name": "w0", "dtype": "float32", "shape": [16, 1, 3, 3],
                                                 "encoding": "bitmask", "offset": 0, "dense_bytes": 576,
                                                 "stored_bytes": 300}]},
                 "float_ops": [{"step": 0, "kernel": "ek_nn_quantize_s8",
                                "tensors": [{"name": "x", "dtype": "float32", "shape": [1, 64], "bytes": 256}],
                                "float_bytes": 256, "arena_cost_bytes": 192}]},
    NpuSection: {"plan": "npu/plan.json",
                 "partition": {"offloaded_layers": 1, "offloaded_macs": 300, "total_macs": 400,
                               "offloaded_macs_fraction": 0.75,
                               "placements": [{"node": "c1", "op": "Conv", "where": "npu", "reason": "int8 layer",
                                               "layer": "c1", "macs": 300},
                                              {"node": "p", "op": "MaxPool", "where": "host", "reason": "pooling",
                                               "layer": "", "macs": 0}]},
                 "layers": 1},
    Int8Choice: {"mode": "auto", "source": "measured", "decision": "mixed", "reason": "1 layer(s) in fp32",
                 "fp32_layers": [{"node": "c1", "op_type": "Conv", "int8_ms": 0.5, "fp32_ms": 0.25,
                                  "source": "measured", "kept": "fp32", "reason": "fp32 2.00x faster"}],
                 "timed_layers": [{"node": "c1", "op_type": "Conv", "int8_ms": 0.5, "fp32_ms": 0.25,
                                   "source": "measured", "kept": "fp32", "reason": "fp32 2.00x faster"},
                                  {"node": "c2", "op_type": "Conv", "int8_ms": 0.1, "fp32_ms": None,
                                   "source": "measured", "kept": "int8", "reason": "int8 not slower"}],
                 "model_ms": {"int8": 1.5, "mixed": 1.25, "fp32": 2.0}, "candidates": 4, "not_timed": 1,
                 "elementwise": 1, "extra_seconds": 3.5, "timing": "TVM time_evaluator"},
}


def _manifest(**extra: Any) -> Manifest:
    return Manifest.from_json({"format_version": 1, "board": "b", "runtime": "r", "files": {}, **extra})


@pytest.mark.parametrize("cls", list(WRITTEN), ids=lambda c: c.__name__)
def test_written_section_round_trips(cls: type) -> None:
    data = copy.deepcopy(WRITTEN[cls])
    section = cls.of(_manifest(**{cls.KEY: data}))
    assert isinstance(section, cls)
    assert section.to_json() == WRITTEN[cls] and list(section.to_json()) == list(WRITTEN[cls])
    assert cls.of(_manifest()) is None  # a package of another backend has none


def test_typed_fields() -> None:
    aot = AotSection.from_json(WRITTEN[AotSection])
    assert aot.firmware == "firmware/firmware.elf" and aot.output_offsets == (64,) and aot.code_bytes_measured is True
    assert aot.float_ops[0].kernel == "ek_nn_quantize_s8" and aot.float_ops[0].tensors[0].shape == (1, 64)
    assert aot.weight_storage is not None and aot.weight_storage.stored_bytes == 300
    assert aot.weight_storage.tensors[0].encoding == "bitmask" and aot.weight_storage.tensors[0].shape == (16, 1, 3, 3)
    npu = NpuSection.from_json(WRITTEN[NpuSection])
    assert npu.partition is not None and npu.partition.offloaded_macs_fraction == 0.75
    assert [(p.node, p.where) for p in npu.partition.placements] == [("c1", "npu"), ("p", "host")]
    choice = Int8Choice.from_json(WRITTEN[Int8Choice])
    assert [c.node for c in choice.fp32_layers] == ["c1"] and choice.layers[1] == LayerCost(
        "c2", "Conv", 0.1, None, "measured", "int8", "int8 not slower")
    assert LinuxSection.from_json(WRITTEN[LinuxSection]).zig_flags == ("-target", "aarch64-linux-musl")


def test_int8_choice_in_words() -> None:
    # What compress --board's payoff table says about the choice.
    assert Int8Choice.from_json(WRITTEN[Int8Choice]).in_words() == (
        "compiled with 1 of 4 quantized layers in fp32 (faster there)")
    assert "whole-model guard" in Int8Choice("auto", "measured", "fp32").in_words()
    assert Int8Choice("auto", "measured", "int8").in_words() == ""


def test_older_sections_read_with_defaults() -> None:
    # Keys older packages did not write yet (or an empty object) read as the documented defaults.
    assert ParamsSection.from_json({"member": "w.bin", "format": "tvm-param-dict", "count": 2}) == ParamsSection(
        "w.bin", "tvm-param-dict", 2, None)
    assert ParamsSection.from_json({}) == ParamsSection()
    aot = AotSection.from_json({"model_c": "model/model.c", "weights": "weights.bin", "kernel_calls": 3})
    assert aot.kernel_calls == 3 and aot.float_ops == () and aot.weight_storage is None and aot.firmware is None
    assert "weight_storage" not in aot.to_json()  # an older section stays without it
    assert LinuxSection.from_json({}).runner == "bin/runner"
    assert NpuSection.from_json({"plan": "npu/plan.json", "layers": 2}).partition is None
    # An early int8_choice ({"choice": ...}) still reads: unknown keys are ignored.
    old = Int8Choice.from_json({"choice": "int8"})
    assert (old.mode, old.decision, old.layers) == ("", "int8", [])
    # The manifest's params_member reads the typed section.
    assert _manifest(params={"member": "w.bin"}).params_member == "w.bin" and _manifest().params_member == "params.bin"


@pytest.mark.parametrize(
    ("cls", "data", "key"),
    [
        (ParamsSection, {"count": "10"}, "params.count"),
        (ParamsSection, {"names": ["a", 1]}, "params.names"),
        (LinuxSection, {"zig_flags": "-target"}, "linux.zig_flags"),
        (AotSection, {"input_offsets": [0, True]}, "aot.input_offsets"),
        (AotSection, {"float_ops": [1]}, "aot.float_ops[]"),
        (AotSection, {"weight_storage": {"mode": "auto", "dense_bytes": 1, "stored_bytes": 1, "sparse_tensors": 0,
                                         "tensors": [{"name": "w"}]}}, "aot.weight_storage.tensors[].dtype"),
        (AotSection, {"code_bytes_measured": 1}, "aot.code_bytes_measured"),
        (CudaSection, {"source": 3}, "cuda.source"),
        (NpuSection, {"layers": 2.5}, "npu.layers"),
        (NpuSection, [], "npu"),
        (NpuSection, {"partition": {"offloaded_layers": 1}}, "npu.partition.offloaded_macs"),
        (NpuSection, {"partition": {"offloaded_layers": 1, "offloaded_macs": 1, "total_macs": 1,
                                    "offloaded_macs_fraction": 1.0, "placements": [{"node": 3}]}},
         "npu.partition.placements[].node"),
        (Int8Choice, {"model_ms": {"int8": "1"}}, "int8_choice.model_ms"),
        (Int8Choice, {"timed_layers": [{"op_type": "Conv"}]}, "int8_choice.timed_layers[].node"),
    ],
)
def test_wrong_type_is_a_manifest_error_naming_the_key(cls: type, data: Any, key: str) -> None:
    with pytest.raises(ManifestError, match=re.escape(f"key '{key}' must be")) as info:
        cls.of(_manifest(**{cls.KEY: data}))
    assert info.value.hint and "board 'b'" in str(info.value)
