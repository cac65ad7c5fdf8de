"""Exclusive device access (issue 10): a second edgekit *process* on the same
port gets a clear PortBusyError, and the port is free again once the first
process exits."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgekit.core.errors import PortBusyError
from edgekit.runtime.device import DeviceClient
from edgekit.runtime.transport import SerialTransport
from edgekit.sim.agent_build import build_blob_agent
from edgekit.sim.posix import PosixAgent

REPO = Path(__file__).resolve().parents[2]


def test_second_process_gets_port_busy(tmp_path: Path) -> None:
    with PosixAgent(build_blob_agent("posix", 64), storage=tmp_path / "s.bin") as agent:
        holder = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(f"""
                import sys
                from edgekit.runtime.transport import SerialTransport
                from edgekit.runtime.device import DeviceClient
                t = SerialTransport({agent.port!r})
                DeviceClient(t).hello()
                print("holding", flush=True)
                sys.stdin.readline()
            """)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        try:
            assert holder.stdout.readline().strip() == "holding"
            with pytest.raises(PortBusyError, match=r"busy.*another process") as err:
                SerialTransport(agent.port)
            assert err.value.fields["port"] == agent.port
            assert "Close the other program" in err.value.hint
            assert "busy" in str(err.value)
        finally:
            holder.communicate("\n", timeout=20)
        assert holder.returncode == 0
        with SerialTransport(agent.port) as t:  # released with the process
            assert DeviceClient(t).hello().version == 1


def test_cli_style_process_reports_busy_on_stderr(tmp_path: Path) -> None:
    with PosixAgent(build_blob_agent("posix", 64), storage=tmp_path / "s.bin") as agent, SerialTransport(agent.port):
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(f"""
                import sys
                from edgekit.core.errors import EdgekitError
                from edgekit.runtime.transport import SerialTransport
                try:
                    SerialTransport({agent.port!r})
                except EdgekitError as exc:
                    print(type(exc).__name__, exc, file=sys.stderr)
                    sys.exit(exc.exit_code)
            """)],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 2
        assert proc.stderr.startswith("PortBusyError serial port") and "busy" in proc.stderr
