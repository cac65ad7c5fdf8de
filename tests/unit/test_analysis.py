"""Tests of edgekit.frontend.analysis: MAC counts, parameters, peak activations, board fit.

Tiny graphs are built with onnx.helper so their MACs are known exactly; the
real architectures are the ONNX backend "light" models inside the onnx wheel
and the PP-OCR angle classifier inside rapidocr.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.core.profiles import Board, MemoryConfig
from edgekit.core.tensors import TensorSpec
from edgekit.frontend.analysis import GRAPH_WALK, MAC_HANDLERS, analyze
from edgekit.frontend.loader import PreparedModel, load_model

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT_MODELS = sorted(p.stem for p in LIGHT_DIR.glob("*.onnx"))
DOCS = Path(__file__).resolve().parents[2] / "docs" / "macs.md"

# Hand counts from docs/macs.md (derived there from the published architectures).
SQUEEZENET_HAND_MACS = 349_151_936
ALEXNET_HAND_MACS = 654_560_384
ALEXNET_HAND_LAYERS = [  # conv1..conv5, fc6..fc8
    101_616_768, 207_667_200, 127_401_984, 95_551_488, 63_700_992, 37_748_736, 16_777_216, 4_096_000,
]


@functools.lru_cache(maxsize=2)  # light models hold up to 575 MB of weights each
def _light(name: str) -> PreparedModel:
    return load_model(LIGHT_DIR / f"{name}.onnx")


def _model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name: str, shape, elem=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _out(name: str, rank: int, elem=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    """A graph output of known rank whose sizes shape inference fills in."""
    return helper.make_tensor_value_info(name, elem, [f"{name}{i}" for i in range(rank)])


def _w(name: str, shape, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones(shape, dtype=dtype), name)


def _analyze(model: onnx.ModelProto, board: Board | None = None):
    return analyze(load_model(model, simplify=False), board)


def _layer(report, op: str):
    (layer,) = [la for la in report.layers if la.op == op]
    return layer


# --------------------------------------------------------------------------- #
# Tiny graphs with exactly known MACs
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "cin, cout, group, expected",
    [
        (8, 16, 1, 1 * 16 * 10 * 10 * 8 * 9),  # plain
        (8, 16, 4, 1 * 16 * 10 * 10 * 2 * 9),  # grouped: Cin/groups = 2
        (8, 8, 8, 1 * 8 * 10 * 10 * 1 * 9),  # depthwise
    ],
)
def test_conv_groups(cin, cout, group, expected):
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], group=group, name="conv")
    model = _model(
        [node], [_vi("x", [1, cin, 10, 10])], [_out("y", 4)],
        [_w("w", (cout, cin // group, 3, 3)), _w("b", (cout,))],
    )
    report = _analyze(model)
    conv = _layer(report, "Conv")
    assert conv.macs == expected == report.macs
    assert conv.output_shape == (1, cout, 10, 10)
    assert conv.params == cout * (cin // group) * 9 + cout
    assert report.warnings == []


def test_conv_strides_and_dilations():
    # 11x11 input, 3x3 kernel dilated by 2 (spans 5), stride 2, no padding:
    # output side (11 - 5) // 2 + 1 = 4.
    node = helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2], dilations=[2, 2], name="conv")
    model = _model([node], [_vi("x", [2, 3, 11, 11])], [_out("y", 4)], [_w("w", (5, 3, 3, 3))])
    report = _analyze(model)
    assert _layer(report, "Conv").output_shape == (2, 5, 4, 4)
    assert report.macs == 2 * 5 * 4 * 4 * 3 * 3 * 3


def test_conv1d_and_conv3d():
    c1 = helper.make_node("Conv", ["x", "w"], ["y"], name="c1")
    m1 = _model([c1], [_vi("x", [1, 4, 20])], [_out("y", 3)], [_w("w", (6, 4, 5))])
    assert _analyze(m1).macs == 6 * 16 * 4 * 5
    c3 = helper.make_node("Conv", ["x", "w"], ["y"], name="c3")
    m3 = _model([c3], [_vi("x", [1, 2, 4, 5, 6])], [_out("y", 5)], [_w("w", (3, 2, 2, 2, 2))])
    assert _analyze(m3).macs == 3 * (3 * 4 * 5) * 2 * 8


@pytest.mark.parametrize("group, cout", [(1, 3), (2, 4)])
def test_conv_transpose(group, cout):
    # W is [Cin, Cout/groups, kh, kw]; each input element feeds Cout/groups*kh*kw outputs.
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], group=group, strides=[2, 2], name="deconv")
    model = _model(
        [node], [_vi("x", [1, 4, 5, 5])], [_out("y", 4)], [_w("w", (4, cout // group, 3, 3))]
    )
    report = _analyze(model)
    assert _layer(report, "ConvTranspose").output_shape == (1, cout, 11, 11)
    assert report.macs == 4 * 25 * (cout // group) * 9


@pytest.mark.parametrize(
    "a_shape, b_shape, attrs",
    [
        ((2, 5), (5, 7), {}),
        ((2, 5), (7, 5), {"transB": 1}),
        ((5, 2), (5, 7), {"transA": 1}),
        ((5, 2), (7, 5), {"transA": 1, "transB": 1}),
    ],
)
def test_gemm_transposes(a_shape, b_shape, attrs):
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], name="fc", **attrs)
    model = _model([node], [_vi("a", list(a_shape))], [_out("y", 2)], [_w("b", b_shape), _w("c", (7,))])
    report = _analyze(model)
    assert _layer(report, "Gemm").output_shape == (2, 7)
    assert report.macs == 2 * 5 * 7  # bias adds are not MACs
    assert report.params == 5 * 7 + 7


@pytest.mark.parametrize(
    "a_shape, b_shape, expected",
    [
        ((3, 4), (4, 6), 3 * 4 * 6),
        ((8, 3, 4), (8, 4, 6), 8 * 3 * 4 * 6),  # batched
        ((2, 1, 3, 4), (5, 4, 6), 2 * 5 * 3 * 4 * 6),  # broadcast batch (2,1) x (5,) -> (2,5)
        ((4,), (4, 6), 4 * 6),  # 1-D left operand
        ((2, 3, 4), (4,), 2 * 3 * 4),  # 1-D right operand
    ],
)
def test_matmul_batched_and_broadcast(a_shape, b_shape, expected):
    node = helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")
    rank = np.matmul(np.zeros(a_shape), np.zeros(b_shape)).ndim
    model = _model([node], [_vi("a", list(a_shape)), _vi("b", list(b_shape))], [_out("y", rank)])
    report = _analyze(model)
    assert report.macs == expected
    assert report.params == 0  # both operands are activations


@pytest.mark.parametrize(
    "equation, shapes, expected",
    [
        ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)], 2 * 3 * 4 * 5),
        ("ij,jk", [(3, 4), (4, 5)], 3 * 4 * 5),  # implicit output
        ("...ij,...jk->...ik", [(2, 3, 4), (4, 5)], 2 * 3 * 4 * 5),  # ellipsis broadcast
        ("ii->i", [(6, 6)], 0),  # diagonal: no multiplication
        # left to right: (i,j)x(j,k) keeps i,k (8*3*5), then (i,k)x(k,l) (8*5*2)
        ("ij,jk,kl->il", [(8, 3), (3, 5), (5, 2)], 8 * 3 * 5 + 8 * 5 * 2),
    ],
)
def test_einsum(equation, shapes, expected):
    names = [f"x{i}" for i in range(len(shapes))]
    node = helper.make_node("Einsum", names, ["y"], equation=equation, name="es")
    rank = np.einsum(equation, *[np.zeros(sh) for sh in shapes]).ndim
    model = _model([node], [_vi(n, list(s)) for n, s in zip(names, shapes)], [_out("y", rank)])
    report = _analyze(model)
    assert report.macs == expected
    # onnx infers no output shape for a broadcast ellipsis; MACs do not need it
    assert not [w for w in report.warnings if "MACs" in w]


@pytest.mark.parametrize("op, gates", [("LSTM", 4), ("GRU", 3), ("RNN", 1)])
@pytest.mark.parametrize("direction, dirs", [("forward", 1), ("bidirectional", 2)])
def test_recurrent(op, gates, direction, dirs):
    seq, batch, inp, hidden = 5, 2, 3, 4
    node = helper.make_node(op, ["x", "w", "r"], ["y"], hidden_size=hidden, direction=direction, name="rnn")
    model = _model(
        [node], [_vi("x", [seq, batch, inp])], [_out("y", 4)],
        [_w("w", (dirs, gates * hidden, inp)), _w("r", (dirs, gates * hidden, hidden))],
    )
    report = _analyze(model)
    assert report.macs == dirs * seq * batch * gates * hidden * (inp + hidden)


def test_zero_mac_ops_are_listed():
    nodes = [
        helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y1"], name="bn"),
        helper.make_node("LRN", ["y1"], ["y2"], size=3, name="lrn"),
        helper.make_node("MaxPool", ["y2"], ["y3"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("GlobalAveragePool", ["y3"], ["y"], name="gap"),
    ]
    inits = [_w(n, (4,)) for n in "sbmv"]
    model = _model(nodes, [_vi("x", [1, 4, 8, 8])], [_out("y", 4)], inits)
    report = _analyze(model)
    assert [(la.name, la.macs) for la in report.layers] == [("bn", 0), ("lrn", 0), ("pool", 0), ("gap", 0)]
    assert report.ops == {"BatchNormalization": 1, "LRN": 1, "MaxPool": 1, "GlobalAveragePool": 1}
    assert report.layers[2].output_shape == (1, 4, 4, 4)
    assert report.params == 16


def test_unknown_shapes_give_warnings_not_errors():
    # A custom op has no shape inference, so the MatMul after it has an unknown operand.
    nodes = [
        helper.make_node("Mystery", ["x"], ["h"], domain="acme", name="mystery"),
        helper.make_node("MatMul", ["h", "w"], ["y"], name="mm"),
    ]
    graph = helper.make_graph(nodes, "g", [_vi("x", [1, 4])], [_vi("y", None)], [_w("w", (4, 3))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("acme", 1)])
    prepared = PreparedModel(model, [TensorSpec("x", (1, 4), "float32")], [])
    report = analyze(prepared)
    assert report.macs == 0
    assert _layer(report, "MatMul").output_shape is None
    text = "\n".join(report.warnings)
    assert "mm (MatMul): shape of 'h' unknown" in text
    assert "custom op acme::Mystery" in text
    assert "activation(s) unknown" in text
    assert report.ops == {"acme::Mystery": 1, "MatMul": 1}
    assert report.params == 12  # the weight is still counted


def test_missing_value_info_is_reinferred():
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    model = _model([node], [_vi("x", [1, 2, 6, 6])], [_vi("y", None)], [_w("w", (4, 2, 3, 3))])
    # Not through load_model: no value_info and no output shape at all.
    report = analyze(PreparedModel(model, [TensorSpec("x", (1, 2, 6, 6), "float32")], []))
    assert report.macs == 4 * 4 * 4 * 2 * 9
    assert report.warnings == []


# --------------------------------------------------------------------------- #
# Parameters, weight bytes, peak activations, board fit
# --------------------------------------------------------------------------- #


def test_params_exclude_shape_constants_and_count_dtype_bytes():
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Reshape", ["h", "shape"], ["r"], name="reshape"),
        helper.make_node("Add", ["r", "bias"], ["y"], name="add"),
    ]
    inits = [
        _w("w", (8, 6), np.float16),
        numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "shape"),
        numpy_helper.from_array(np.ones((2, 3), dtype=np.int8).astype(np.float16), "bias"),
    ]
    model = _model(nodes, [_vi("x", [1, 8], TensorProto.FLOAT16)], [_out("y", 2, TensorProto.FLOAT16)], inits)
    report = _analyze(model)
    assert report.params == 8 * 6 + 6
    assert report.weight_bytes == 2 * (8 * 6 + 6)
    assert {la.name: la.params for la in report.layers} == {"mm": 48, "reshape": 0, "add": 6}


def test_int32_weights_count_but_int32_axes_do_not():
    nodes = [
        helper.make_node("Add", ["x", "q"], ["h"], name="add"),
        helper.make_node("Unsqueeze", ["h", "axes"], ["y"], name="unsq"),
    ]
    inits = [_w("q", (5,), np.int32), numpy_helper.from_array(np.array([0], dtype=np.int64), "axes")]
    model = _model(nodes, [_vi("x", [5], TensorProto.INT32)], [_out("y", 2, TensorProto.INT32)], inits)
    report = _analyze(model)
    assert report.params == 5
    assert report.weight_bytes == 20


def _chain_model() -> onnx.ModelProto:
    # x(4000 B) -> a=Relu(x) -> b=Relu(a) -> c=Add(a, b) -> d=Concat(c, c) (8000 B)
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu1"),
        helper.make_node("Relu", ["a"], ["b"], name="relu2"),
        helper.make_node("Add", ["a", "b"], ["c"], name="add"),
        helper.make_node("Concat", ["c", "c"], ["d"], axis=1, name="cat"),
    ]
    return _model(nodes, [_vi("x", [1, 1000])], [_out("d", 2)])


def test_peak_activation_walk():
    report = _analyze(_chain_model())
    # live after each node: relu1 x+a=8000 (x freed), relu2 a+b=8000,
    # add a+b+c=12000 (a, b freed), cat c+d=4000+8000=12000 (first peak wins).
    assert report.peak_activation_bytes == 12000
    assert report.peak_activation_node == "add"


def test_peak_counts_graph_inputs_but_not_initializers():
    node = helper.make_node("Add", ["x", "w"], ["y"], name="add")
    model = _model([node], [_vi("x", [1, 100])], [_out("y", 2)], [_w("w", (1, 100))])
    report = _analyze(model)
    assert report.peak_activation_bytes == 800  # x and y, not w
    assert report.weight_bytes == 400


@pytest.mark.parametrize(
    "ram, flash, ram_ok, flash_ok",
    [(0, 0, True, True), (12000, 0, True, True), (11999, 0, False, True), (0, 100, True, True)],
)
def test_board_fit(ram, flash, ram_ok, flash_ok):
    board = Board(name="tiny", target="t", memory=MemoryConfig(ram_bytes=ram, flash_bytes=flash))
    report = _analyze(_chain_model(), board)
    assert report.fits is not None
    fit = report.fits.to_json()
    assert fit == {
        "board": "tiny", "ram_ok": ram_ok, "flash_ok": flash_ok, "ram_bytes": ram, "flash_bytes": flash,
        "needed_ram": 12000, "needed_flash": 0, "planner": GRAPH_WALK,
    }


def test_flash_too_small():
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    model = _model([node], [_vi("x", [1, 10])], [_out("y", 2)], [_w("w", (10, 10))])
    board = Board(name="b", target="t", memory=MemoryConfig(ram_bytes=0, flash_bytes=399))
    fits = _analyze(model, board).fits
    assert fits is not None and not fits.flash_ok and fits.ram_ok and fits.needed_flash == 400


def test_to_json_round_trips():
    report = _analyze(_chain_model())
    data = json.loads(json.dumps(report.to_json()))
    for key in ("macs", "params", "weight_bytes", "peak_activation_bytes", "ops", "inputs", "outputs",
                "layers", "notes", "warnings"):
        assert key in data
    assert "fits" not in data
    assert data["inputs"] == [{"name": "x", "shape": [1, 1000], "dtype": "float32"}]
    assert data["layers"][2] == {"name": "add", "op": "Add", "output_shape": [1, 1000], "macs": 0, "params": 0}


def test_handler_table_covers_the_contractions():
    for op in ("Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum", "LSTM", "GRU"):
        assert op in MAC_HANDLERS


# --------------------------------------------------------------------------- #
# Real architectures
# --------------------------------------------------------------------------- #


def test_squeezenet_matches_hand_count():
    report = analyze(_light("light_squeezenet"))
    assert report.macs == pytest.approx(SQUEEZENET_HAND_MACS, rel=0.02)
    assert report.warnings == []


def test_alexnet_matches_hand_count_per_layer():
    report = analyze(_light("light_bvlc_alexnet"))
    assert report.macs == pytest.approx(ALEXNET_HAND_MACS, rel=0.02)
    counted = [la.macs for la in report.layers if la.op in ("Conv", "Gemm")]
    assert counted == pytest.approx(ALEXNET_HAND_LAYERS, rel=0.02)
    # Published parameter count of Caffe's bvlc_alexnet: 60,965,224 (fc6 sees
    # 6x6x256 with a 224 input too). The placeholder weights are constant, so
    # onnxslim merges the identical biases of conv2/conv5 and conv3/conv4
    # (256 + 384 elements): the unique total is 640 lower than the per-layer sum.
    assert sum(la.params for la in report.layers) == 60_965_224
    assert report.params == 60_965_224 - 640


def test_hand_counts_are_the_documented_ones():
    text = DOCS.read_text(encoding="utf-8")
    for n in (SQUEEZENET_HAND_MACS, ALEXNET_HAND_MACS, *ALEXNET_HAND_LAYERS):
        assert f"{n:,}" in text


@pytest.mark.slow
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_every_light_model(name):
    prepared = _light(name)
    report = analyze(prepared)
    assert report.warnings == []
    assert report.macs > 10**7
    assert report.macs == sum(la.macs for la in report.layers)
    for layer in report.layers:
        if layer.op in ("Conv", "Gemm"):
            assert layer.macs > 0 and layer.params > 0, layer
    floats = [i for i in prepared.model.graph.initializer if i.data_type == TensorProto.FLOAT]
    assert report.params == sum(int(np.prod(i.dims)) for i in floats)
    assert report.weight_bytes == 4 * report.params
    assert report.peak_activation_bytes >= sum(s.nbytes for s in report.inputs)


@pytest.mark.slow
def test_vgg19_matches_published_figure():
    # He et al., "Deep Residual Learning" (2015), Fig. 3: VGG-19, 19.6 billion FLOPs (multiply-adds).
    # After test_every_light_model, whose last two models (vgg19, zfnet512) _light still holds:
    # loading vgg19 (575 MB of weights) costs about 13 s.
    assert analyze(_light("light_vgg19")).macs == pytest.approx(19.6e9, rel=0.02)


def test_rapidocr_angle_classifier(ppocr_cls_path):
    prepared = load_model(ppocr_cls_path, {"x": (1, 3, 48, 192)})
    report = analyze(prepared)
    assert report.warnings == []
    assert report.inputs[0].shape == (1, 3, 48, 192)
    assert report.macs > 10**6
    convs = [la for la in report.layers if la.op == "Conv"]
    assert convs and all(la.macs > 0 for la in convs)
    # MobileNetV3-style: depthwise convs have one input channel per group, so
    # their MACs are output elements x kernel area.
    graph = prepared.model.graph
    inits = {i.name: tuple(i.dims) for i in graph.initializer}
    for node, layer in zip(graph.node, report.layers):
        if node.op_type == "Conv":
            w = inits[node.input[1]]
            assert layer.macs == int(np.prod(layer.output_shape)) * int(np.prod(w[1:]))
