"""``edgekit compile``, ``run`` and ``bench`` on the host, through ``main()``."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from edgekit.cli.main import main


def _small_cnn() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "small_cnn",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4, 8, 8])],
        [w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "small_cnn.onnx"
    onnx.save(_small_cnn(), path)
    return path


@pytest.fixture(scope="module")
def package(model_path: Path) -> Path:
    out = model_path.parent / "small.ekpkg"
    assert main(["compile", str(model_path), "--board", "host", "-o", str(out)]) == 0
    return out


def _ort(model_path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_compile_json_reports_manifest(model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.ekpkg"
    assert main(["compile", str(model_path), "--board", "host", "-o", str(out), "--input-shape", "x=2x3x8x8", "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["inputs"] == [{"name": "x", "shape": [2, 3, 8, 8], "dtype": "float32"}]
    assert manifest["memory"]["weight_bytes"] == (4 * 3 * 3 * 3 + 4) * 4
    assert manifest["package_bytes"] == out.stat().st_size


def test_compile_prints_progress_and_summary(package: Path, model_path: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.ekpkg"
    assert main(["compile", str(model_path), "--board", "host", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    for stage in ("load", "check", "import", "build", "export", "package"):
        assert stage in captured.err
    assert "arena" in captured.out and "weights" in captured.out and "time" in captured.out


def test_compile_unknown_board(model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", str(model_path), "--board", "hots", "-o", str(tmp_path / "m.ekpkg")]) == 2
    assert "unknown board 'hots'" in capsys.readouterr().err


def test_run_matches_onnxruntime_with_samples(package: Path, model_path: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    single = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "one.npz", x=single)
    assert main(["run", str(package), "--input", str(tmp_path / "one.npz"), "-o", str(tmp_path / "one_out.npz")]) == 0
    with np.load(tmp_path / "one_out.npz") as out:
        assert out["y"].shape == (1, 4, 8, 8)
        np.testing.assert_allclose(out["y"], _ort(model_path, single), rtol=1e-5, atol=1e-5)

    # A leading sample axis: three samples, each run on its own, outputs stacked.
    batch = rng.standard_normal((3, 1, 3, 8, 8)).astype(np.float64)  # float64 data is cast to float32
    np.savez(tmp_path / "three.npz", x=batch)
    assert main(["run", str(package), "--input", str(tmp_path / "three.npz"), "-o", str(tmp_path / "three_out.npz")]) == 0
    with np.load(tmp_path / "three_out.npz") as out:
        assert out["y"].shape == (3, 1, 4, 8, 8)
        for i in range(3):
            np.testing.assert_allclose(out["y"][i], _ort(model_path, batch[i].astype(np.float32)), rtol=1e-5, atol=1e-5)


def test_run_samples_along_batch_axis(package: Path, model_path: Path, tmp_path: Path) -> None:
    # (N, 3, 8, 8) for a batch-1 model: N samples, outputs concatenated on axis 0.
    x = np.random.default_rng(6).standard_normal((5, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    assert main(["run", str(package), "--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as out:
        assert out["y"].shape == (5, 4, 8, 8)
        np.testing.assert_allclose(out["y"], _ort(model_path, x), rtol=1e-5, atol=1e-5)


def test_run_missing_input_names_it(package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "in.npz", image=np.zeros((1, 3, 8, 8), np.float32))
    assert main(["run", str(package), "--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err
    assert "missing input(s): x" in err and "x [1, 3, 8, 8] float32" in err
    assert not (tmp_path / "o.npz").exists()


def test_run_wrong_shape_names_input(package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "in.npz", x=np.zeros((1, 3, 9, 8), np.float32))
    assert main(["run", str(package), "--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err
    assert "input 'x' has shape [1, 3, 9, 8], the model expects [1, 3, 8, 8]" in err


def test_run_unreadable_input_file(package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(package), "--input", str(tmp_path / "none.npz"), "-o", str(tmp_path / "o.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "junk.npz").write_bytes(b"garbage")
    assert main(["run", str(package), "--input", str(tmp_path / "junk.npz"), "-o", str(tmp_path / "o.npz")]) == 2
    assert "cannot read input file" in capsys.readouterr().err


def test_altered_package_is_refused(package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.ekpkg"
    with zipfile.ZipFile(package) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "params.bin":
                data = data[:-4] + np.float32(1.5).tobytes()  # change one weight
            zout.writestr(info.filename, data)
    np.savez(tmp_path / "in.npz", x=np.zeros((1, 3, 8, 8), np.float32))
    assert main(["run", str(bad), "--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err
    assert "member 'params.bin' does not match its SHA-256" in err
    assert main(["bench", str(bad), "--runs", "1"]) == 2


def test_other_board_is_refused(package: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(package), "--board", "raspberry-pi-4", "--runs", "1"]) == 2
    err = capsys.readouterr().err
    assert "built for board 'host', not 'raspberry-pi-4'" in err and "--allow-other-board" in err


def test_port_is_refused_for_in_process_board(package: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(package), "--port", "/dev/ttyUSB0", "--runs", "1"]) == 2
    assert "--port does not apply" in capsys.readouterr().err


def test_bench_compare_ort_json(package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report_path = tmp_path / "r.json"
    rc = main(["bench", str(package), "--runs", "7", "--warmup", "2", "--compare-ort", "--json", str(report_path)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "edgekit" in printed and "onnxruntime" in printed and "ratio" in printed
    report = json.loads(report_path.read_text())
    assert report["board"] == "host" and report["simulated"] is False and report["runs"] == 7
    for key in ("latency_ms", "ort_latency_ms"):
        stats = report[key]
        assert set(stats) == {"min", "p50", "p90", "p99", "mean", "std"}
        assert 0 < stats["min"] <= stats["p50"] <= stats["p90"] <= stats["p99"]
    assert report["ratio_vs_ort"] == pytest.approx(report["latency_ms"]["p50"] / report["ort_latency_ms"]["p50"])
    assert report["throughput_per_s"] == pytest.approx(1000.0 / report["latency_ms"]["mean"])
    assert report["threads"] >= 1
    assert report["memory"]["arena_bytes"] > 0
    assert report["outputs_agree"] is True and report["ort_max_rel_error"]["max"] <= 1e-4


def test_bench_with_input_file_and_stdout_json(package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "in.npz", x=np.ones((2, 1, 3, 8, 8), np.float32))
    assert main(["bench", str(package), "--runs", "2", "--warmup", "0", "--input", str(tmp_path / "in.npz"), "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["inputs"] == "data" and report["runs"] == 2 and "ort_latency_ms" not in report


def test_npy_instead_of_npz_is_an_input_error(package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    assert main(["run", str(package), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "o.npz")]) == 2
    assert "not an .npz archive" in capsys.readouterr().err


def test_split_samples_rules() -> None:
    from edgekit.core.errors import InputError
    from edgekit.core.tensors import TensorSpec
    from edgekit.runtime.data import split_samples

    specs = [TensorSpec("a", (1, 2), "float32"), TensorSpec("b", (3,), "int64")]
    one = split_samples(specs, {"a": np.zeros((1, 2)), "b": np.arange(3)})
    assert not one.batched and len(one) == 1 and one[0]["a"].dtype == np.float32
    many = split_samples(specs, {"a": np.zeros((4, 1, 2)), "b": np.zeros((4, 3), np.int64)})
    assert many.batched and len(many) == 4 and many[3]["b"].shape == (3,)
    with pytest.raises(InputError, match="different numbers of samples"):
        split_samples(specs, {"a": np.zeros((4, 1, 2)), "b": np.zeros((2, 3), np.int64)})
    along_batch = split_samples(specs[:1], {"a": np.arange(10.0).reshape(5, 2)})
    assert along_batch.mode == "batch" and len(along_batch) == 5 and along_batch[4]["a"].tolist() == [[8.0, 9.0]]
    with pytest.raises(InputError, match="b hold one sample while others hold several"):
        split_samples(specs, {"a": np.zeros((4, 1, 2)), "b": np.zeros(3, np.int64)})
    with pytest.raises(InputError, match="unknown input"):
        split_samples(specs, {"a": np.zeros((1, 2)), "b": np.arange(3), "c": np.zeros(1)})
    with pytest.raises(InputError, match="dtype"):
        split_samples(specs, {"a": np.zeros((1, 2)), "b": np.zeros(3)})  # float data for an int input


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_getaffinity"), reason="Linux only")
def test_host_runner_leaves_cpu_affinity_alone(package: Path) -> None:
    # TVM's thread pool pins the calling thread to core 0 unless told not to;
    # that would leave onnxruntime (and everything else here) on one core.
    import os

    before = os.sched_getaffinity(0)
    assert main(["bench", str(package), "--runs", "1", "--warmup", "0", "--json", "-"]) == 0
    assert os.sched_getaffinity(0) == before
