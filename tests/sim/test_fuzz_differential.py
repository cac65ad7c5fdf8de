"""Differential fuzzing, short seeded run (issue 16): random graphs on four boards vs onnxruntime.

The long run is ``fuzz/differential.py`` (results in docs/reliability.md).
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from edgekit.core import errors

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"

pytest.importorskip("unicorn")


@pytest.fixture(scope="module")
def differential(script_module):
    with script_module(FUZZ / "differential.py", "differential") as module:
        yield module


def test_generated_graphs_are_valid_and_reproducible(differential):
    from graphgen import random_graph

    ops = set()
    for seed in range(40):
        a, b = random_graph(seed), random_graph(seed)
        assert a.model.SerializeToString() == b.model.SerializeToString()
        onnx.checker.check_model(a.model, full_check=True)
        ops.update(a.ops)
    assert {"Conv", "Conv(depthwise)", "MaxPool", "AveragePool", "Gemm", "Add", "Mul", "Concat", "Reshape"} <= ops
    q = random_graph(1, int8=True).model
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in q.graph.node}


# seed 4: float32 depthwise conv, ReLU, max-pool, two Gemms; seed 7: int8 QDQ
# conv, depthwise conv, Mul, conv, average pool, conv.
@pytest.mark.parametrize("seed", [4, 7])
def test_random_graphs_match_onnxruntime_or_are_refused_on_every_board(differential, seed, tmp_path):
    for board in differential.BOARDS:
        case = differential.run_case(seed, board, tmp_path)
        assert case["outcome"] in ("match", "refused"), case
        if case["outcome"] == "refused":
            assert issubclass(getattr(errors, case["error"]), errors.EdgekitError) and case["message"]
        assert case["seconds"] < 60, case


def test_judge_flags_a_silent_mismatch(differential):
    graph = differential.graph_for(4)
    ref = differential.reference(graph)
    name = next(iter(ref))
    wrong = {name: ref[name] * 1.01}
    outcome, detail = differential.judge(graph, wrong, ref, accumulation=100)
    assert outcome == "mismatch" and detail[name]["max_rel_error"] > detail[name]["tolerance"]
    assert differential.judge(graph, ref, ref, accumulation=100)[0] == "match"
