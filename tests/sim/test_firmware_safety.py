"""Issue 16: a package that compiles must run; what cannot run is refused at compile.

The P-Net-like model at 1x3x48x48 used to link TVM's GOT as an orphan section
at the start of the weights slots; the first upload overwrote it and the core
faulted (UC_ERR_READ_UNMAPPED) inside the softmax kernel.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from _conv_models import dense, pnet_like
from edgekit.cli.main import main
from edgekit.compiler.image_check import check_image, read_image_map, slot_capacity
from edgekit.core.errors import CompileError, DoesNotFitError
from edgekit.core.profiles import load_profiles

pytest.importorskip("unicorn")


@pytest.fixture(scope="module")
def pnet48(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("pnet")
    model = pnet_like(tmp / "pnet48.onnx", 48)
    pkg = tmp / "pnet48.ekpkg"
    assert main(["compile", str(model), "--board", "rv32-mcu-sim", "-o", str(pkg)]) == 0
    return model, pkg


def test_pnet_like_at_48x48_runs_on_the_rv32_simulator(pnet48: tuple[Path, Path], tmp_path: Path) -> None:
    model, pkg = pnet48
    x = np.random.default_rng(3).standard_normal((1, 3, 48, 48)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    assert main(["run", str(pkg), "--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz")]) == 0
    got = np.load(tmp_path / "out.npz")
    want = dict(zip(["prob", "box"], ort.InferenceSession(str(model)).run(None, {"x": x})))
    for name, ref in want.items():
        assert np.abs(got[name] - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max()), name


def _elf(pkg: Path) -> bytes:
    with zipfile.ZipFile(pkg) as z:
        return z.read("firmware/firmware.elf")


def _move_section(elf: bytes, name: str, addr: int) -> bytes:
    """The image with section ``name``'s address rewritten (ELF32 little endian)."""
    from io import BytesIO

    from elftools.elf.elffile import ELFFile

    f = ELFFile(BytesIO(elf))
    index = next(i for i, s in enumerate(f.iter_sections()) if s.name == name)
    off = f["e_shoff"] + index * f["e_shentsize"] + 12  # Elf32_Shdr.sh_addr
    return elf[:off] + struct.pack("<I", addr) + elf[off + 4 :]


def test_placement_check_refuses_a_section_inside_the_weights_slots(pnet48: tuple[Path, Path]) -> None:
    board = load_profiles().board("rv32-mcu-sim")
    elf = _elf(pnet48[1])
    facts = check_image(elf, board, 1000)
    assert facts["stack_bytes"] > 0 and facts["ram_free_bytes"] > 0
    slots = read_image_map(elf).slots
    # Where the linker used to put the GOT when the script did not name it.
    with pytest.raises(CompileError) as err:
        check_image(_move_section(elf, ".got", slots[0]), board, 1000)
    assert ".got" in str(err.value) and "overlaps the weights slots" in str(err.value)
    ram = read_image_map(elf).ram
    with pytest.raises(CompileError, match="overlaps the stack"):
        check_image(_move_section(elf, ".noinit", ram[1] - 8), board, 1000)


def test_slot_capacity_mirrors_the_agent() -> None:
    assert slot_capacity(0x1000, 0x1000 + 2 * 4096) == 4096 - 64
    assert slot_capacity(0, 2 * 1000) == (1000 & ~15) - 64  # halves rounded down to 16 B
    assert slot_capacity(0, 100) == 0


def test_weights_larger_than_a_slot_are_refused_at_compile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 1.23 MB of weights: less than the 2 MiB flash, more than one of its two slots.
    model = dense(tmp_path / "dense.onnx", 512, 600)
    code = main(["compile", str(model), "--board", "rv32-mcu-sim", "-o", str(tmp_path / "d.ekpkg")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "do not fit a weights slot" in err and "1231200 B" in err and "2097152 B" in err
    assert not (tmp_path / "d.ekpkg").exists()


def test_slot_error_carries_the_numbers(pnet48: tuple[Path, Path]) -> None:
    board = load_profiles().board("rv32-mcu-sim")
    elf = _elf(pnet48[1])
    cap = read_image_map(elf).slot_capacity
    check_image(elf, board, cap)
    with pytest.raises(DoesNotFitError) as err:
        check_image(elf, board, cap + 1)
    assert err.value.fields["slot_capacity_bytes"] == cap and err.value.fields["weight_bytes"] == cap + 1
