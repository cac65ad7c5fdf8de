"""Board and target profiles: built-ins, validation messages, user folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.core.errors import BoardNotFoundError, ConfigError
from edgekit.core.profiles import load_profiles, parse_size

REQUIRED_BOARDS = ["host", "raspberry-pi-4", "visionfive2", "jetson-orin-nano", "rv32-mcu-sim", "stm32h7", "pynq-z2"]


def test_builtin_boards_present_and_resolve_targets() -> None:
    profiles = load_profiles()
    names = profiles.boards.available()
    for name in REQUIRED_BOARDS:
        assert name in names
        target = profiles.target_of(name)
        # Every target must construct a real TVM target.
        tvm_target = target.tvm_target_dict()
        assert tvm_target["kind"] in ("llvm", "cuda", "c")


def test_rv32_mcu_profile_matches_spec() -> None:
    board = load_profiles().board("rv32-mcu-sim")
    assert board.clock_hz == 100_000_000
    assert board.memory.ram_bytes == 512 * 1024
    assert board.memory.flash_bytes == 2 * 1024 * 1024
    assert board.simulator.kind == "unicorn"
    target = load_profiles().target_of(board)
    assert target.isa == "rv32imf" and target.codegen == "aot-c"


def test_pynq_has_npu_parameters() -> None:
    board = load_profiles().board("pynq-z2")
    assert board.npu is not None and board.npu.rows == 8 and board.npu.cols == 8


def test_unknown_board_lists_candidates() -> None:
    with pytest.raises(BoardNotFoundError) as info:
        load_profiles().board("stm32h8")
    msg = str(info.value)
    assert "stm32h8" in msg and "stm32h7" in msg and "Did you mean 'stm32h7'" in msg


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def test_user_board_folder(boards_dir: Path) -> None:
    _write(boards_dir, "myboard", 'name = "myboard"\ntarget = "rv32imf-baremetal"\nclock_hz = 50_000_000\n'
           '[memory]\nram = "128 KiB"\nflash = "1 MiB"\n')
    profiles = load_profiles([boards_dir])
    board = profiles.board("myboard")
    assert board.memory.ram_bytes == 128 * 1024
    assert board.source.endswith("myboard.toml")


def test_env_var_folder(boards_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(boards_dir, "envboard", 'name = "envboard"\ntarget = "x86_64-host"\n')
    monkeypatch.setenv("EDGEKIT_BOARDS", str(boards_dir))
    assert "envboard" in load_profiles().boards.available()


@pytest.mark.parametrize(
    "text, needle",
    [
        ('name = "b"\ntarget = "x86_64-host"\nclokc_hz = 5\n', "unknown key 'clokc_hz'"),
        ('name = "b"\ntarget = "x86_64-host"\nclock_hz = "fast"\n', "key 'clock_hz' must be int"),
        ('name = "b"\ntarget = "nope"\n', "unknown target 'nope'"),
        ('name = "b"\ntarget = "x86_64-host"\n[memory]\nram = "lots"\n', "key 'memory.ram'"),
        ('name = "b"\ntarget = "x86_64-host"\n[transport]\nkind = "pigeon"\n', "key 'transport.kind' is 'pigeon'"),
        ('target = "x86_64-host"\n', "key 'name' is missing"),
        ('name = "b"\ntarget = "x86_64-host"\n[npu]\nrows = 8\n', "key 'npu.cols' is missing"),
        ('name = "b" target', "not valid TOML"),
    ],
)
def test_invalid_board_names_file_and_key(boards_dir: Path, text: str, needle: str) -> None:
    path = _write(boards_dir, "bad", text)
    with pytest.raises(ConfigError) as info:
        load_profiles([boards_dir])
    assert needle in str(info.value)
    assert str(path) in str(info.value)


def test_duplicate_user_boards_rejected(boards_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    _write(boards_dir, "a", 'name = "dup"\ntarget = "x86_64-host"\n')
    _write(other, "b", 'name = "dup"\ntarget = "x86_64-host"\n')
    with pytest.raises(ConfigError, match="also defined in"):
        load_profiles([boards_dir, other])


def test_user_board_may_replace_builtin(boards_dir: Path) -> None:
    _write(boards_dir, "host", 'name = "host"\ntarget = "x86_64-host"\ncores = 1\n')
    assert load_profiles([boards_dir]).board("host").cores == 1


def test_user_target_in_board_folder(boards_dir: Path) -> None:
    _write(boards_dir, "t", 'name = "my-rv64"\ncodegen = "llvm"\nisa = "riscv64"\n[tvm]\ntag = "riscv/sifive-u54"\n')
    _write(boards_dir, "b", 'name = "b"\ntarget = "my-rv64"\n')
    profiles = load_profiles([boards_dir])
    assert profiles.target_of("b").tvm_target_dict()["mtriple"].startswith("riscv64")


def test_missing_folder_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_profiles([tmp_path / "nope"])


@pytest.mark.parametrize("text, value", [(1024, 1024), ("512 KiB", 524288), ("2MiB", 2097152), ("1 GB", 10**9)])
def test_parse_size(text, value) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["lots", -1, True, "1 PB"])
def test_parse_size_rejects(bad) -> None:
    with pytest.raises(ConfigError):
        parse_size(bad)
