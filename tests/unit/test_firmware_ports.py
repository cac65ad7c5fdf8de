"""One board data model: the profile names its firmware port; one loader, one toolchain, one cache."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from edgekit.core.cache import cache_dir, cache_root
from edgekit.core.errors import ConfigError
from edgekit.core.firmware_ports import load_port, load_ports, port_for_board
from edgekit.core.profiles import load_profiles
from edgekit.core.toolchain import find_toolchain


def test_boards_name_their_ports_and_the_ports_hold_the_sources() -> None:
    boards = load_profiles()
    rv32, m7 = port_for_board(boards.board("rv32-mcu-sim")), port_for_board(boards.board("stm32h7"))
    assert (rv32.name, m7.name) == ("rv32-sim", "stm32h7") and rv32.cross and not load_port("posix").cross
    for port in (rv32, m7):
        names = [p.name for p in port.sources]
        assert names[:4] == ["ek_agent.c", "ek_slots.c", "ek_sha256.c", "ek_crc32_cobs.c"]  # [common] first
        assert port.linker_script is not None and port.linker_script.is_file()
        assert port.cflags[:2] == ("-std=c99", "-O2") and "-ffreestanding" in port.cflags
    assert m7.ram_bytes == 0x80000 and rv32.raw["uart"]["kind"] == "ns16550"
    with pytest.raises(ConfigError, match="board 'host' names no firmware port"):
        port_for_board(boards.board("host"))


def _ports(tmp_path: Path, body: str) -> Path:
    (tmp_path / "a.c").write_text("int x;\n")
    (tmp_path / "ports.toml").write_text(body)
    load_ports.cache_clear()
    return tmp_path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[ports.p]\nsources = ["a.c", "gone.c"]\n', "key 'ports.p.sources' names missing file 'gone.c'"),
        ('[ports.p]\nsources = ["a.c"]\nlinker_scrpt = "x.ld"\n', "unknown key 'ports.p.linker_scrpt'"),
        ('[ports.p]\ncflags = "-O2"\n', "key 'ports.p.cflags' must be list"),
        ('[common]\nsources = ["a.c"]\n', "'ports' table is missing"),
    ],
)
def test_a_broken_ports_file_names_the_key(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_ports(_ports(tmp_path, body))


def test_a_profile_naming_an_unknown_port_is_refused(tmp_path: Path) -> None:
    (tmp_path / "b.toml").write_text('name = "b"\ntarget = "rv32imf-baremetal"\nfirmware = "rv32"\n')
    with pytest.raises(ConfigError, match="b.toml: key 'firmware' names unknown firmware port 'rv32'.*rv32-sim"):
        load_profiles([tmp_path])


def test_one_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EDGEKIT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "edgekit" and cache_dir("agents") == tmp_path / "xdg" / "edgekit" / "agents"
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "mine"))  # the override documented first wins
    assert cache_dir("zig") == tmp_path / "mine" / "zig"
    from edgekit.compiler.backends.llvm.tuning import cache_root as tuning_root
    from edgekit.sim.agent_build import cache_dir as agent_cache

    assert tuning_root() == tmp_path / "mine" and agent_cache() == tmp_path / "mine" / "agents"


def test_one_toolchain_search_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEKIT_CC", "clang --some-flag")
    assert find_toolchain(cross=True).command == ("clang", "--some-flag")
    monkeypatch.delenv("EDGEKIT_CC")
    zig = find_toolchain(cross=False)  # ziglang is a dependency: it comes before the system cc
    assert zig.kind == "zig" and zig.command == (sys.executable, "-m", "ziglang", "cc")
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    assert zig.env()["ZIG_GLOBAL_CACHE_DIR"] == str(tmp_path / "zig")


def test_a_user_board_reusing_a_port_gets_its_firmware(tmp_path: Path) -> None:
    from edgekit.compiler.firmware import firmware_spec

    board = replace(load_profiles().board("rv32-mcu-sim"), name="my-rv32")
    spec = firmware_spec(board)
    assert spec is not None and spec.board == "my-rv32" and spec.linker_script is not None
    assert spec.linker_script.parent.name == "rv32-sim" and spec.stack_bytes == 16 * 1024
