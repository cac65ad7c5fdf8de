"""Core utilities: registry, tensor specs, input checks, error formatting."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.core.errors import ConfigError, EdgekitError, InputError
from edgekit.core.registry import Registry
from edgekit.core.tensors import TensorSpec, check_inputs, parse_input_shapes, parse_shape


def test_registry_register_get_duplicate_unknown() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("alpha", 1)
    reg.register("beta", 2)
    assert reg.get("alpha") == 1
    assert reg.available() == ["alpha", "beta"]
    with pytest.raises(ConfigError, match="already registered"):
        reg.register("alpha", 3)
    reg.register("alpha", 3, replace=True)
    assert reg.get("alpha") == 3
    with pytest.raises(ConfigError) as info:
        reg.get("alpah")
    assert "unknown widget 'alpah'" in str(info.value)
    assert "alpha, beta" in str(info.value) and "Did you mean 'alpha'" in str(info.value)
    assert info.value.fields["available"] == ["alpha", "beta"]


def test_error_message_and_hint() -> None:
    err = EdgekitError("thing broke.", hint="Fix it.")
    assert str(err) == "thing broke. Fix it."
    assert EdgekitError("plain").hint == ""
    assert str(EdgekitError("plain")) == "plain"


@pytest.mark.parametrize("text, dims", [("1x3x224x224", (1, 3, 224, 224)), ("1,8", (1, 8)), ("5", (5,))])
def test_parse_shape(text, dims) -> None:
    assert parse_shape(text) == dims


@pytest.mark.parametrize("bad", ["1xAx3", "0x3", "", "1x-2"])
def test_parse_shape_rejects(bad) -> None:
    with pytest.raises(InputError):
        parse_shape(bad)


def test_parse_input_shapes() -> None:
    assert parse_input_shapes(["a=1x2", "b:c=3"]) == {"a": (1, 2), "b:c": (3,)}
    with pytest.raises(InputError, match="NAME=1x3x224x224"):
        parse_input_shapes(["1x2"])


def test_check_inputs() -> None:
    specs = [TensorSpec("x", (1, 3), "float32"), TensorSpec("ids", (1, 2), "int64")]
    feeds = {"x": np.zeros((1, 3), np.float64), "ids": np.zeros((1, 2), np.int32)}
    out = check_inputs(specs, feeds)
    assert out["x"].dtype == np.float32 and out["ids"].dtype == np.int64
    with pytest.raises(InputError, match="missing input\\(s\\): ids"):
        check_inputs(specs, {"x": feeds["x"]})
    with pytest.raises(InputError, match="unknown input\\(s\\): extra"):
        check_inputs(specs, {**feeds, "extra": feeds["x"]})
    with pytest.raises(InputError, match="'x' has shape \\[2, 3\\], the model expects \\[1, 3\\]"):
        check_inputs(specs, {**feeds, "x": np.zeros((2, 3))})
    with pytest.raises(InputError, match="dtype"):
        check_inputs(specs, {**feeds, "ids": np.zeros((1, 2), np.float32)})


def test_tensor_spec_json_round_trip() -> None:
    spec = TensorSpec("x", (1, 3, 8, 8), "float32")
    assert TensorSpec.from_json(spec.to_json()) == spec
    assert spec.nbytes == 3 * 64 * 4


def test_public_api_names_resolve() -> None:
    import edgekit

    for name in edgekit.__all__:
        assert getattr(edgekit, name) is not None, name
    assert edgekit.quantize.__module__ == "edgekit.compress.quantize"
