"""The shadow model that ranks layers (compress/fallback.shadow_model): each
shadow node reads the fp32 inputs through copies of the QDQ model's Q/DQ and
the dequantized int8 weights, compared after a folded activation and through
a graph output's own Q/DQ."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgekit.compress import QuantConfig, quantize
from edgekit.compress.fallback import SHADOW_SUFFIX, shadow_model


def _fp32_model() -> onnx.ModelProto:
    """conv + relu (folded into the conv's output quantization), conv, gemm to the graph output."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) / 5).astype(np.float32), "w1"),
        numpy_helper.from_array((rng.standard_normal((8, 8, 1, 1)) / 3).astype(np.float32), "w2"),
        numpy_helper.from_array((rng.standard_normal((10, 8 * 6 * 6)) / 17).astype(np.float32), "wf"),
        numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape"),
    ]
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1"], ["c1"], name="conv1"),
        n("Relu", ["c1"], ["r1"], name="relu1"),
        n("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        n("Reshape", ["c2", "shape"], ["f"], name="flat"),
        n("Gemm", ["f", "wf"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "shadow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_shadows_read_quantized_copies_of_the_fp32_inputs() -> None:
    fp32 = _fp32_model()
    cal = {"x": np.random.default_rng(1).standard_normal((16, 3, 8, 8)).astype(np.float32)}
    q = quantize(fp32, QuantConfig(), calibration=cal)
    model, pairs = shadow_model(q.int8_model, q.reference, ["conv1", "conv2", "fc", "no-such-node"])
    by_node = {node: (ref, shadow) for node, ref, shadow in pairs}
    assert set(by_node) == {"conv1", "conv2", "fc"}
    # conv1's Relu was folded into its output quantization: compared after it.
    assert by_node["conv1"] == ("r1", f"r1{SHADOW_SUFFIX}act_conv1")
    assert by_node["conv2"] == ("c2", f"c2{SHADOW_SUFFIX}")
    # The graph output's Q/DQ is part of what keeping fc in float removes.
    assert by_node["fc"][0] == "y" and by_node["fc"][1].endswith(f"{SHADOW_SUFFIX}out")
    onnx.checker.check_model(model, full_check=True)
    # Every shadow weight reads an int8 initializer copied from the QDQ model.
    int8_inits = {t.name for t in model.graph.initializer if t.data_type == TensorProto.INT8}
    dq_weights = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int8_inits]
    assert len(dq_weights) >= 3

    names = [t for _, ref, shadow in pairs for t in (ref, shadow)]
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    known = {o.name for o in exposed.graph.output}
    exposed.graph.output.extend(onnx.ValueInfoProto(name=t) for t in dict.fromkeys(names) if t not in known)
    sess = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": cal["x"][:1]})))
    for node, (ref, shadow) in by_node.items():
        err = np.linalg.norm(values[shadow] - values[ref]) / np.linalg.norm(values[ref])
        # int8 error of one layer on its own: small, but not zero.
        assert 0 < err < 0.05, (node, err)
