"""Quantization defaults per target are data (``[quantization]`` in targets/*.toml)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edgekit.compress.config import QuantConfig
from edgekit.compress.quantize import _resolve_config
from edgekit.core.errors import ConfigError
from edgekit.core.profiles import load_profiles

# (per_channel, weight_symmetric, activation_symmetric) for every shipped board,
# as the code gave them before the defaults moved into the target profiles
# (aot-c: per-channel symmetric weights, asymmetric activations; npu: all
# symmetric; llvm/cuda: QuantConfig's own defaults).
EXPECTED = {
    "bpi-f3": (True, True, False),
    "host": (True, True, False),
    "jetson-orin-nano": (True, True, False),
    "kv260": (True, True, True),
    "pynq-z2": (True, True, True),
    "raspberry-pi-4": (True, True, False),
    "raspberry-pi-5": (True, True, False),
    "rtx-4090": (True, True, False),
    "rv32-mcu-sim": (True, True, False),
    "stm32h7": (True, True, False),
    "ultra96": (True, True, True),
    "ulx3s-85f": (True, True, True),
    "visionfive2": (True, True, False),
}


def test_every_board_keeps_its_defaults() -> None:
    profiles = load_profiles()
    assert sorted(profiles.boards.available()) == sorted(EXPECTED)
    for name, expected in EXPECTED.items():
        board = profiles.board(name)
        cfg = QuantConfig.for_board(board, profiles.target_of(board))
        assert (cfg.per_channel, cfg.weight_symmetric, cfg.activation_symmetric) == expected, name
        # Everything the table does not set stays at the class default.
        rest = QuantConfig(per_channel=expected[0], weight_symmetric=expected[1], activation_symmetric=expected[2])
        assert cfg == rest, name


def _target(folder: Path, quantization: str) -> Path:
    path = folder / "my-mcu.toml"
    path.write_text(
        'name = "my-mcu"\ncodegen = "aot-c"\nisa = "rv32imf"\n'
        '[tvm]\ntarget = { kind = "llvm", mtriple = "riscv32-unknown-elf" }\n'
        f"[quantization]\n{quantization}\n",
        encoding="utf-8",
    )
    return path


def test_user_target_declares_its_own_defaults(tmp_path: Path) -> None:
    _target(tmp_path, "per_channel = false\nactivation_symmetric = true")
    target = load_profiles(target_dirs=[tmp_path]).targets.get("my-mcu")
    cfg = QuantConfig.for_board(None, target)
    # weight_symmetric not written: the class default.
    assert (cfg.per_channel, cfg.weight_symmetric, cfg.activation_symmetric) == (False, True, True)
    assert QuantConfig.for_board(None, target, per_channel=True).per_channel is True


def test_bad_value_names_file_and_key(tmp_path: Path) -> None:
    path = _target(tmp_path, 'per_channel = "yes"')
    with pytest.raises(ConfigError, match=r"key 'quantization.per_channel' must be bool") as info:
        load_profiles(target_dirs=[tmp_path])
    assert info.value.fields == {"file": str(path), "key": "quantization.per_channel"}
    assert str(path) in str(info.value)


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    path = _target(tmp_path, "per_chanel = true")
    with pytest.raises(ConfigError, match=r"unknown key 'quantization.per_chanel'") as info:
        load_profiles(target_dirs=[tmp_path])
    assert str(path) in str(info.value)


def test_warning_reads_the_target_data(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edgekit.compress.quantize")
    _resolve_config(QuantConfig(per_channel=False), "stm32h7")
    assert "stm32h7" in caplog.text and "per_channel = true" in caplog.text
    assert "cortex-m7.toml" in caplog.text
    caplog.clear()
    _resolve_config(QuantConfig(), "pynq-z2")  # asymmetric activations: not a weight convention
    _resolve_config(QuantConfig(per_channel=False), "host")  # no [quantization] table
    assert caplog.text == ""
