"""A small CNN trained on scikit-learn's digits data, exported to ONNX.

edgekit ships this model as its bundled example (``digits_cnn.onnx``) and the
tests retrain it to check quantization, pruning and recovery against a real
trained network with real accuracy. The data set (1797 8x8 grayscale digits,
10 classes) is read from inside the scikit-learn wheel, so nothing is
downloaded.

There is no PyTorch in edgekit's dependencies and no lightweight numpy CNN
library that fits, so the forward pass, backward pass and Adam optimiser below
are hand-written (im2col convolutions over NHWC activations).

The network (``channels=(c1, c2)``, ``hidden=h``)::

    input [N,1,8,8]
    Conv3x3(1->c1, pad 1) -> Relu
    Conv3x3(c1->c2, pad 1) -> Relu -> MaxPool2x2            [N,c2,4,4]
    Conv3x3(c2->c1, pad 1) -> Relu -> Flatten               [N,c1*16]
    Gemm(c1*16->h) -> Relu -> Gemm(h->10)                   logits [N,10]

The third convolution narrows back to ``c1`` channels so the exported model
stays at tens of KB while every layer is a real, prunable, quantizable one.

Run ``python -m edgekit.examples.digits --out DIR`` to regenerate the shipped
files (see ``edgekit/examples/README.md``).
"""

from __future__ import annotations

import argparse
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import TensorProto, helper, numpy_helper

from edgekit.core.errors import ConfigError, EdgekitError

__all__ = [
    "DigitsData",
    "TrainedModel",
    "load_digits_data",
    "train_digits_cnn",
    "forward",
    "export_onnx",
    "write_example_files",
    "example_model_path",
    "example_inputs_path",
    "example_sample_path",
    "MODEL_FILE",
    "SAMPLE_FILE",
    "INPUT_FILE",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "OPSET",
]

logger = logging.getLogger(__name__)

#: File names of the shipped example (package data of ``edgekit.examples``).
MODEL_FILE = "digits_cnn.onnx"
#: 16 test samples with their labels: keys ``input`` and ``labels``.
SAMPLE_FILE = "digits_sample.npz"
#: The same 16 samples with only the model's input key (for ``edgekit run``).
INPUT_FILE = "digits_input.npz"

#: Graph input and output names of the exported model.
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
#: Default-domain opset of the export.
OPSET = 17
# IR 8 is the version onnx pairs with opset 17; newer onnx releases default to
# IR versions older onnxruntime and TVM importers refuse.
_IR_VERSION = 8

_NUM_CLASSES = 10
_IMAGE_SIZE = 8
# Number of shipped samples; tests require most of them to be classified right.
_NUM_SAMPLES = 16

# Parameter names double as ONNX initializer names.
_PARAM_ORDER = (
    "conv1.weight", "conv1.bias",
    "conv2.weight", "conv2.bias",
    "conv3.weight", "conv3.bias",
    "fc1.weight", "fc1.bias",
    "fc2.weight", "fc2.bias",
)  # fmt: skip

Params = dict[str, np.ndarray]


@dataclass(frozen=True)
class DigitsData:
    """A fixed stratified split of scikit-learn's digits data.

    Attributes:
        x_train: float32 images, NCHW ``(N, 1, 8, 8)``, scaled to [0, 1].
        y_train: int64 labels 0..9.
        x_test: float32 images, NCHW ``(M, 1, 8, 8)``, scaled to [0, 1].
        y_test: int64 labels 0..9.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass
class TrainedModel:
    """A trained digits CNN and its ONNX export.

    Attributes:
        onnx: The exported model (opset 17, input ``input`` ``[N,1,8,8]``,
            output ``logits`` ``[N,10]``).
        accuracy: Top-1 accuracy on ``data.x_test`` (a fraction in [0, 1]).
        data: The data it was trained and evaluated on.
        params: The trained weights, keyed by ONNX initializer name, in ONNX
            layouts (conv ``OIHW``, Gemm ``[out, in]``).
        seed: The seed it was trained with.
        epochs: Number of training epochs.
        losses: Mean training loss of each epoch.
        train_seconds: Wall time the training loop took.
    """

    onnx: onnx.ModelProto
    accuracy: float
    data: DigitsData
    params: Params
    seed: int
    epochs: int
    losses: list[float] = field(default_factory=list)
    train_seconds: float = 0.0

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits of the numpy reference implementation for NCHW images ``x``."""
        return forward(self.params, x)


def _require_sklearn():
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise EdgekitError(
            "the digits example needs scikit-learn, which is not installed",
            hint="Install it with `pip install scikit-learn` (or `pip install edgekit[test]`).",
        ) from None
    return load_digits, train_test_split


def load_digits_data(seed: int = 0, test_fraction: float = 0.25) -> DigitsData:
    """Loads scikit-learn's bundled digits data as a stratified train/test split.

    Args:
        seed: Seed of the split; the same seed always gives the same split.
        test_fraction: Fraction of the 1797 samples held out for testing.

    Returns:
        The split, images as float32 NCHW ``(N, 1, 8, 8)`` in [0, 1].

    Raises:
        ConfigError: ``test_fraction`` is not strictly between 0 and 1.
        EdgekitError: scikit-learn is not installed.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(
            f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}",
            hint="Pass e.g. test_fraction=0.25.",
        )
    load_digits, train_test_split = _require_sklearn()
    bunch = load_digits()
    # Pixel values are integers 0..16 in this data set.
    x = (bunch.images.astype(np.float32) / 16.0).reshape(-1, 1, _IMAGE_SIZE, _IMAGE_SIZE)
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return DigitsData(
        np.ascontiguousarray(x_train),
        np.ascontiguousarray(y_train),
        np.ascontiguousarray(x_test),
        np.ascontiguousarray(y_test),
    )


# --------------------------------------------------------------------------
# Numpy network: activations are NHWC inside, so im2col needs no transposes;
# the weights keep ONNX layouts so export is a plain copy.
# --------------------------------------------------------------------------


def _init_params(rng: np.random.Generator, channels: tuple[int, int], hidden: int) -> Params:
    c1, c2 = channels
    flat = c1 * (_IMAGE_SIZE // 2) ** 2

    def he(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    return {
        "conv1.weight": he((c1, 1, 3, 3), 9),
        "conv1.bias": np.zeros(c1, np.float32),
        "conv2.weight": he((c2, c1, 3, 3), c1 * 9),
        "conv2.bias": np.zeros(c2, np.float32),
        "conv3.weight": he((c1, c2, 3, 3), c2 * 9),
        "conv3.bias": np.zeros(c1, np.float32),
        "fc1.weight": he((hidden, flat), flat),
        "fc1.bias": np.zeros(hidden, np.float32),
        # The last layer starts small so the first logits are near uniform.
        "fc2.weight": (he((_NUM_CLASSES, hidden), hidden) * 0.1).astype(np.float32),
        "fc2.bias": np.zeros(_NUM_CLASSES, np.float32),
    }


def _im2col3x3(x: np.ndarray) -> np.ndarray:
    """NHWC ``x`` -> ``(N*H*W, C*9)`` patches of a 3x3, stride 1, pad 1 conv.

    Columns are ordered (C, kh, kw) to match ``weight.reshape(O, C*9)``.
    """
    n, h, w, c = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    windows = sliding_window_view(xp, (3, 3), axis=(1, 2))  # (N, H, W, C, 3, 3)
    return windows.reshape(n * h * w, c * 9)


def _col2im3x3(dcols: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Adjoint of :func:`_im2col3x3`: scatters patch gradients back to NHWC."""
    n, h, w, c = shape
    d = dcols.reshape(n, h, w, c, 3, 3)
    dxp = np.zeros((n, h + 2, w + 2, c), dtype=dcols.dtype)
    for i in range(3):
        for j in range(3):
            dxp[:, i : i + h, j : j + w, :] += d[..., i, j]
    return dxp[:, 1:-1, 1:-1, :]


def _conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, h, w, _ = x.shape
    cols = _im2col3x3(x)
    out = cols @ weight.reshape(weight.shape[0], -1).T + bias
    return out.reshape(n, h, w, weight.shape[0]), cols


def _conv_backward(
    dout: np.ndarray, cols: np.ndarray, weight: np.ndarray, x_shape: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    o = weight.shape[0]
    dflat = dout.reshape(-1, o)
    dweight = (dflat.T @ cols).reshape(weight.shape)
    dbias = dflat.sum(axis=0)
    dx = _col2im3x3(dflat @ weight.reshape(o, -1), x_shape)
    return dx, dweight, dbias


def _maxpool2x2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, h, w, c = x.shape
    windows = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
    windows = windows.reshape(n, h // 2, w // 2, c, 4)
    idx = windows.argmax(axis=-1)
    out = np.take_along_axis(windows, idx[..., None], axis=-1)[..., 0]
    return out, idx


def _maxpool2x2_backward(dout: np.ndarray, idx: np.ndarray) -> np.ndarray:
    # The gradient goes to the first maximum of each window only (ties from
    # ReLU zeros are common); any subgradient is valid, this one is simplest.
    n, h2, w2, c = dout.shape
    dwin = np.zeros((n, h2, w2, c, 4), dtype=dout.dtype)
    np.put_along_axis(dwin, idx[..., None], dout[..., None], axis=-1)
    dwin = dwin.reshape(n, h2, w2, c, 2, 2).transpose(0, 1, 4, 2, 5, 3)
    return dwin.reshape(n, h2 * 2, w2 * 2, c)


def _forward_cached(params: Params, x_nchw: np.ndarray) -> tuple[np.ndarray, dict]:
    x = np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1), dtype=np.float32)
    cache: dict = {"x": x}
    z1, cache["cols1"] = _conv(x, params["conv1.weight"], params["conv1.bias"])
    a1 = np.maximum(z1, 0)
    z2, cache["cols2"] = _conv(a1, params["conv2.weight"], params["conv2.bias"])
    a2 = np.maximum(z2, 0)
    p2, cache["pool_idx"] = _maxpool2x2(a2)
    z3, cache["cols3"] = _conv(p2, params["conv3.weight"], params["conv3.bias"])
    a3 = np.maximum(z3, 0)
    # ONNX Flatten works on NCHW, so flatten in that order.
    flat = a3.transpose(0, 3, 1, 2).reshape(a3.shape[0], -1)
    z4 = flat @ params["fc1.weight"].T + params["fc1.bias"]
    a4 = np.maximum(z4, 0)
    logits = a4 @ params["fc2.weight"].T + params["fc2.bias"]
    cache.update(a1=a1, a2=a2, p2=p2, a3=a3, flat=flat, a4=a4)
    return logits, cache


def forward(params: Params, x: np.ndarray) -> np.ndarray:
    """Logits of the digits CNN, computed in numpy.

    This is the reference the ONNX export is checked against.

    Args:
        params: Weights as in :attr:`TrainedModel.params`.
        x: float32 images, NCHW ``(N, 1, 8, 8)``.

    Returns:
        float32 logits ``(N, 10)``.
    """
    return _forward_cached(params, x)[0]


def _backward(params: Params, cache: dict, dlogits: np.ndarray) -> Params:
    g: Params = {}
    a4 = cache["a4"]
    g["fc2.weight"] = dlogits.T @ a4
    g["fc2.bias"] = dlogits.sum(axis=0)
    da4 = dlogits @ params["fc2.weight"]
    dz4 = da4 * (a4 > 0)
    g["fc1.weight"] = dz4.T @ cache["flat"]
    g["fc1.bias"] = dz4.sum(axis=0)
    dflat = dz4 @ params["fc1.weight"]
    a3 = cache["a3"]
    n, h, w, c = a3.shape
    da3 = dflat.reshape(n, c, h, w).transpose(0, 2, 3, 1)
    dz3 = da3 * (a3 > 0)
    dp2, g["conv3.weight"], g["conv3.bias"] = _conv_backward(
        dz3, cache["cols3"], params["conv3.weight"], cache["p2"].shape
    )
    da2 = _maxpool2x2_backward(dp2, cache["pool_idx"])
    dz2 = da2 * (cache["a2"] > 0)
    da1, g["conv2.weight"], g["conv2.bias"] = _conv_backward(
        dz2, cache["cols2"], params["conv2.weight"], cache["a1"].shape
    )
    dz1 = da1 * (cache["a1"] > 0)
    # The input needs no gradient, so conv1's dx is computed and dropped; it
    # is a 1-channel 8x8 image, too cheap to special-case.
    _, g["conv1.weight"], g["conv1.bias"] = _conv_backward(
        dz1, cache["cols1"], params["conv1.weight"], cache["x"].shape
    )
    return g


def _softmax_xent(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    probs = exp / exp.sum(axis=1, keepdims=True)
    n = logits.shape[0]
    loss = float(-np.log(probs[np.arange(n), labels] + 1e-12).mean())
    dlogits = probs
    dlogits[np.arange(n), labels] -= 1.0
    return loss, (dlogits / n).astype(np.float32)


class _Adam:
    """Adam (Kingma & Ba) with bias correction, updating params in place."""

    def __init__(self, params: Params, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params: Params, grads: Params, lr: float) -> None:
        self.t += 1
        c1 = 1.0 - self.beta1**self.t
        c2 = 1.0 - self.beta2**self.t
        for k, grad in grads.items():
            m, v = self.m[k], self.v[k]
            m *= self.beta1
            m += (1.0 - self.beta1) * grad
            v *= self.beta2
            v += (1.0 - self.beta2) * grad * grad
            params[k] -= (lr / c1 * m / (np.sqrt(v / c2) + self.eps)).astype(np.float32)


def _single_thread():
    """Limits BLAS to one thread: a fixed thread count keeps float sums in one
    order (bit-identical runs for a seed), and the model is too small to gain
    from more threads."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # a scikit-learn dependency, but be tolerant
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _accuracy(params: Params, x: np.ndarray, y: np.ndarray) -> float:
    return float((forward(params, x).argmax(axis=1) == y).mean())


def train_digits_cnn(
    seed: int = 0,
    epochs: int = 12,
    channels: tuple[int, int] = (16, 32),
    hidden: int = 32,
    *,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    data: DigitsData | None = None,
) -> TrainedModel:
    """Trains the digits CNN with Adam and exports it to ONNX.

    Training is deterministic for a seed: weight initialisation and batch
    order come from ``numpy.random.default_rng(seed)``, the data split from
    :func:`load_digits_data` with the same seed, and BLAS runs single-threaded.

    Args:
        seed: Seed of the split, the initial weights and the batch order.
        epochs: Passes over the training set.
        channels: Output channels ``(c1, c2)`` of the first two convolutions;
            the third convolution maps ``c2`` back to ``c1``.
        hidden: Width of the hidden fully connected layer.
        batch_size: Samples per Adam step.
        learning_rate: Peak Adam step size; it decays to zero on a cosine.
        data: Train on this split instead of ``load_digits_data(seed)``.

    Returns:
        The :class:`TrainedModel` with its ONNX export and test accuracy.

    Raises:
        ConfigError: A size, count or rate is not positive.
        EdgekitError: scikit-learn is not installed (only when ``data`` is None).
    """
    if len(channels) != 2:
        raise ConfigError(
            f"channels must be a pair (c1, c2), got {tuple(channels)}",
            hint="Pass e.g. channels=(16, 32).",
        )
    sizes = {"epochs": epochs, "channels[0]": channels[0], "channels[1]": channels[1],
             "hidden": hidden, "batch_size": batch_size}  # fmt: skip
    bad = [f"{k}={v}" for k, v in sizes.items() if int(v) < 1]
    if not learning_rate > 0:
        bad.append(f"learning_rate={learning_rate}")
    if bad:
        raise ConfigError(
            "train_digits_cnn needs positive sizes and rates: " + ", ".join(bad),
            hint="Use positive values, e.g. epochs=12, channels=(16, 32), hidden=32.",
        )
    channels = (int(channels[0]), int(channels[1]))
    if data is None:
        data = load_digits_data(seed)
    rng = np.random.default_rng(seed)
    params = _init_params(rng, channels, hidden)
    opt = _Adam(params)
    n = data.x_train.shape[0]
    steps_per_epoch = -(-n // batch_size)
    total_steps = epochs * steps_per_epoch
    losses: list[float] = []
    start = time.perf_counter()
    with _single_thread():
        step = 0
        for epoch in range(epochs):
            order = rng.permutation(n)
            epoch_loss = 0.0
            for b in range(steps_per_epoch):
                idx = order[b * batch_size : (b + 1) * batch_size]
                logits, cache = _forward_cached(params, data.x_train[idx])
                loss, dlogits = _softmax_xent(logits, data.y_train[idx])
                grads = _backward(params, cache, dlogits)
                lr = 0.5 * learning_rate * (1.0 + np.cos(np.pi * step / total_steps))
                opt.step(params, grads, lr)
                epoch_loss += loss * len(idx)
                step += 1
            losses.append(epoch_loss / n)
            logger.debug("epoch %d/%d: loss %.4f", epoch + 1, epochs, losses[-1])
        accuracy = _accuracy(params, data.x_test, data.y_test)
    elapsed = time.perf_counter() - start
    logger.info(
        "trained digits CNN (seed %d, %d epochs, channels %s, hidden %d) in %.1f s: test top-1 %.2f%%",
        seed, epochs, channels, hidden, elapsed, 100 * accuracy,
    )  # fmt: skip
    return TrainedModel(
        onnx=export_onnx(params),
        accuracy=accuracy,
        data=data,
        params=params,
        seed=seed,
        epochs=epochs,
        losses=losses,
        train_seconds=elapsed,
    )


def export_onnx(params: Params, name: str = "digits_cnn") -> onnx.ModelProto:
    """Builds the ONNX graph of the digits CNN with ``params`` as initializers.

    Args:
        params: Weights as in :attr:`TrainedModel.params`.
        name: Graph name.

    Returns:
        A checked opset-17 model: input ``input`` ``[N,1,8,8]`` float32 with a
        symbolic batch ``N``, output ``logits`` ``[N,10]``.
    """
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1]}
    nodes = [
        helper.make_node("Conv", [INPUT_NAME, "conv1.weight", "conv1.bias"], ["conv1"], "conv1", **conv),
        helper.make_node("Relu", ["conv1"], ["relu1"], "relu1"),
        helper.make_node("Conv", ["relu1", "conv2.weight", "conv2.bias"], ["conv2"], "conv2", **conv),
        helper.make_node("Relu", ["conv2"], ["relu2"], "relu2"),
        helper.make_node("MaxPool", ["relu2"], ["pool2"], "pool2", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["pool2", "conv3.weight", "conv3.bias"], ["conv3"], "conv3", **conv),
        helper.make_node("Relu", ["conv3"], ["relu3"], "relu3"),
        helper.make_node("Flatten", ["relu3"], ["flatten"], "flatten", axis=1),
        helper.make_node("Gemm", ["flatten", "fc1.weight", "fc1.bias"], ["fc1"], "fc1", transB=1),
        helper.make_node("Relu", ["fc1"], ["relu4"], "relu4"),
        helper.make_node("Gemm", ["relu4", "fc2.weight", "fc2.bias"], [OUTPUT_NAME], "fc2", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 1, _IMAGE_SIZE, _IMAGE_SIZE])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", _NUM_CLASSES])],
        initializer=[numpy_helper.from_array(np.asarray(params[k], np.float32), k) for k in _PARAM_ORDER],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="edgekit.examples.digits",
        ir_version=_IR_VERSION,
    )
    model.doc_string = "8x8 digit classifier trained with numpy on scikit-learn's digits data"
    onnx.checker.check_model(model, full_check=True)
    return model


def write_example_files(trained: TrainedModel, out_dir: str | Path) -> dict[str, Path]:
    """Writes the model and the first 16 test samples into ``out_dir``.

    Args:
        trained: The model to write.
        out_dir: Directory to write into (created if missing).

    Returns:
        Paths by file name: ``digits_cnn.onnx``, ``digits_sample.npz`` (keys
        ``input`` and ``labels``) and ``digits_input.npz`` (key ``input``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x = np.ascontiguousarray(trained.data.x_test[:_NUM_SAMPLES], dtype=np.float32)
    y = trained.data.y_test[:_NUM_SAMPLES].astype(np.int64)
    paths = {MODEL_FILE: out / MODEL_FILE, SAMPLE_FILE: out / SAMPLE_FILE, INPUT_FILE: out / INPUT_FILE}
    onnx.save(trained.onnx, str(paths[MODEL_FILE]))
    np.savez(paths[SAMPLE_FILE], **{INPUT_NAME: x, "labels": y})
    np.savez(paths[INPUT_FILE], **{INPUT_NAME: x})
    return paths


def _shipped(name: str) -> Path:
    candidates = []
    try:
        ref = resources.files("edgekit.examples") / name
        if isinstance(ref, Path):
            candidates.append(ref)
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - odd installs
        pass
    # Source tree (or an installer that did not expose the package as files).
    candidates.append(Path(__file__).resolve().parent / name)
    for path in candidates:
        if path.is_file():
            return path
    raise EdgekitError(
        f"the bundled example file '{name}' is missing from edgekit.examples",
        hint="Reinstall edgekit, or regenerate it with `python -m edgekit.examples.digits --out DIR`.",
    )


def example_model_path() -> Path:
    """Path of the shipped ``digits_cnn.onnx``."""
    return _shipped(MODEL_FILE)


def example_inputs_path() -> Path:
    """Path of the shipped ``digits_input.npz`` (only the ``input`` key;
    what ``edgekit run --input`` takes)."""
    return _shipped(INPUT_FILE)


def example_sample_path() -> Path:
    """Path of the shipped ``digits_sample.npz`` (``input`` and ``labels``)."""
    return _shipped(SAMPLE_FILE)


def main(argv: Sequence[str] | None = None) -> int:
    """Script entry: trains the example and writes the shipped files."""
    parser = argparse.ArgumentParser(
        prog="python -m edgekit.examples.digits",
        description="Train the bundled digits CNN and write digits_cnn.onnx, digits_sample.npz, digits_input.npz.",
    )
    parser.add_argument("--out", required=True, help="directory to write the files into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args(argv)
    try:
        trained = train_digits_cnn(seed=args.seed, epochs=args.epochs)
    except EdgekitError as exc:
        parser.exit(2, f"error: {exc}\n")
    paths = write_example_files(trained, args.out)
    print(
        f"seed {args.seed}, {args.epochs} epochs, {trained.train_seconds:.1f} s: "
        f"test top-1 {100 * trained.accuracy:.2f}% on {len(trained.data.y_test)} samples"
    )
    for p in paths.values():
        print(f"wrote {p} ({p.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
