"""Fuzz target: the device-protocol frame codec (``edgekit.runtime.protocol``).

Property checked on every input: decoding arbitrary bytes either returns a
frame that re-encodes to the same wire bytes, or raises ProtocolError (incl.
ChecksumError) — never another exception. The stream splitter must return
only delimiter-free frames no longer than MAX_FRAME.

Long run (atheris, libFuzzer flags)::

    .venv/bin/python fuzz/fuzz_frame.py -max_total_time=3600 fuzz/corpus_frame

Without atheris the same target runs under hypothesis::

    .venv/bin/python fuzz/fuzz_frame.py --hypothesis 100000
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if __name__ == "__main__" and "--hypothesis" not in sys.argv:
    import atheris

    # Coverage feedback for edgekit's code only (instrumenting numpy & co. takes minutes).
    with atheris.instrument_imports(include=["edgekit"]):
        from edgekit.core.errors import ProtocolError
        from edgekit.runtime import protocol as P
else:
    from edgekit.core.errors import ProtocolError
    from edgekit.runtime import protocol as P

__all__ = ["test_one_input"]


def test_one_input(data: bytes) -> None:
    """One fuzz iteration; raises AssertionError on a property violation."""
    try:
        frame = P.decode_frame(data)
    except ProtocolError:
        pass
    else:
        wire = data if data.endswith(b"\x00") else data + b"\x00"
        # COBS has one canonical encoding, so a decoded frame re-encodes exactly.
        assert P.encode_frame(frame) == wire, "decode/encode is not a bijection"
    reader = P.FrameReader()
    for raw in reader.feed(data):
        assert b"\x00" not in raw and 0 < len(raw) <= P.MAX_FRAME
    assert reader.pending <= P.MAX_FRAME


def _main(argv: list[str]) -> None:
    if argv[:1] == ["--hypothesis"]:
        from _hypothesis_driver import run

        run(test_one_input, int(argv[1]) if len(argv) > 1 else 10000)
        return
    import atheris

    atheris.Setup([sys.argv[0], *argv], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    _main(sys.argv[1:])
