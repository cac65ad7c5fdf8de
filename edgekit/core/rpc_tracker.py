"""The TVM RPC tracker client: reach a tracker, ask it about a key, meet one server.

Both ways edgekit uses a board farm start here: ``edgekit bench --tracker``
(:mod:`edgekit.runtime.rpc`) and tuning measured on a farm's boards
(:mod:`edgekit.compiler.tuning_rpc`). It sits in ``core`` because those two
are sibling layers that must not import each other; it knows nothing of
packages, runners or compilation. TVM's own client retries a refused
connection for 60 s, so the probes here open their own sockets and fail fast.
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import dataclass
from typing import Any

from edgekit.core.errors import ConfigError, DeviceError, TransportError

__all__ = [
    "INFO_FUNCTION",
    "PROBE_TIMEOUT_S",
    "TrackerStatus",
    "parse_tracker",
    "probe_tracker",
    "remote_info",
    "server_info",
]

#: Remote function returning the server's name and how it runs executables (JSON).
INFO_FUNCTION = "edgekit.rpc.server_info"
#: How long :func:`probe_tracker` waits for the tracker to answer.
PROBE_TIMEOUT_S = 5.0


def parse_tracker(text: str) -> tuple[str, int]:
    """Splits ``HOST:PORT``.

    Raises:
        ConfigError: when it is not ``HOST:PORT``.
    """
    host, sep, port = (text or "").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--tracker '{text}' is not HOST:PORT", hint="E.g. --tracker 127.0.0.1:9190.")
    return host.strip("[]"), int(port)


def remote_info(remote: Any) -> dict[str, Any]:
    """What an RPC server session says about itself (:data:`INFO_FUNCTION`); a plain TVM server says nothing."""
    try:
        return dict(json.loads(str(remote.get_function(INFO_FUNCTION)())))
    except Exception:  # a plain TVM server: native, no name
        return {"name": "", "qemu": "", "simulated": False}


@dataclass(frozen=True)
class TrackerStatus:
    """What a tracker reports for one key (see :func:`probe_tracker`).

    Attributes:
        tracker: ``(host, port)`` of the tracker.
        key: The key asked about.
        servers: Servers registered under ``key`` (busy or free).
        free: Of those, servers not in a session right now.
        pending: Requests for ``key`` waiting in the tracker's queue.
        keys: Every key some server is registered under.
    """

    tracker: tuple[str, int]
    key: str
    servers: int
    free: int
    pending: int
    keys: tuple[str, ...] = ()


def _tracker_socket(tracker: tuple[str, int], timeout_s: float) -> socket.socket:
    """A connection to the tracker that has passed the magic handshake.

    TVM's own client retries a refused connection for 60 s; a probe must fail fast.
    """
    from tvm.rpc import base

    where = f"{tracker[0]}:{tracker[1]}"
    try:
        sock = socket.create_connection(tracker, timeout=timeout_s)
    except OSError as exc:
        raise TransportError(
            f"cannot reach the RPC tracker at {where} ({exc.strerror or type(exc).__name__})",
            hint="Start one (`python -m edgekit.runtime.rpc tracker --port 9190`) or check --tracker HOST:PORT.",
            tracker=where,
        ) from None
    try:
        sock.settimeout(timeout_s)
        sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
        magic = struct.unpack("<i", base.recvall(sock, 4))[0]
    except (OSError, RuntimeError) as exc:
        sock.close()
        raise TransportError(
            f"{where} accepted a connection but did not answer as a TVM RPC tracker within {timeout_s:g} s ({exc})",
            hint="Check that --tracker names the tracker's port, not a server's.",
            tracker=where,
        ) from None
    if magic != base.RPC_TRACKER_MAGIC:
        sock.close()
        raise TransportError(f"{where} is not a TVM RPC tracker", hint="Check --tracker HOST:PORT.", tracker=where)
    return sock


def probe_tracker(tracker: tuple[str, int], key: str, timeout_s: float = PROBE_TIMEOUT_S) -> TrackerStatus:
    """Asks the tracker how many servers are registered under ``key``, without queueing.

    Raises:
        TransportError: the tracker is unreachable or does not answer within ``timeout_s``.
        DeviceError: no server is registered under ``key``.
    """
    from tvm.rpc import base

    where = f"{tracker[0]}:{tracker[1]}"
    sock = _tracker_socket(tracker, timeout_s)
    try:
        base.sendjson(sock, [base.TrackerCode.SUMMARY])
        answer = base.recvjson(sock)
    except (OSError, RuntimeError, ValueError) as exc:
        raise TransportError(
            f"the RPC tracker at {where} did not send its summary within {timeout_s:g} s ({exc})",
            hint="Check the tracker (`python -m tvm.exec.query_rpc_tracker`) and retry.",
            tracker=where,
        ) from None
    finally:
        sock.close()
    summary = answer[1] if isinstance(answer, list) and len(answer) == 2 else {}
    registered = [str(s.get("key", "")).partition(":")[2] for s in summary.get("server_info", [])]
    queue = summary.get("queue_info", {}).get(key, {})
    status = TrackerStatus(
        tracker=tracker,
        key=key,
        servers=registered.count(key),
        free=int(queue.get("free", 0)),
        pending=int(queue.get("pending", 0)),
        keys=tuple(sorted({k for k in registered if k})),
    )
    if not status.servers:
        known = ", ".join(status.keys) or "none"
        raise DeviceError(
            f"no RPC server is registered under key '{key}' with the tracker {where} (registered keys: {known})",
            hint=f"Start one on the board (`python -m edgekit.runtime.rpc server --tracker {where} --key {key}`) "
            "or pass the --key it uses.",
            tracker=where,
            key=key,
        )
    return status


def server_info(tracker: tuple[str, int], key: str, wait_s: float = PROBE_TIMEOUT_S) -> dict[str, Any] | None:
    """Opens a short session with a server of ``key`` and returns what it says about itself.

    Returns ``{"name", "qemu", "machine", "simulated"}`` (``machine`` is empty
    for a plain TVM server), or None when no server of ``key`` became free
    within ``wait_s`` (the request leaves the tracker's queue).

    Raises:
        TransportError: the tracker is unreachable, or the server it handed out is.
    """
    from tvm import rpc
    from tvm.rpc import base

    sock = _tracker_socket(tracker, wait_s)
    try:
        base.sendjson(sock, [base.TrackerCode.REQUEST, key, "", 1])
        answer = base.recvjson(sock)
    except (OSError, RuntimeError, ValueError):
        # Timed out in the queue: closing the connection withdraws the request.
        return None
    finally:
        sock.close()
    if not (isinstance(answer, list) and answer and answer[0] == base.TrackerCode.SUCCESS):
        return None
    url, port, matchkey = answer[1]
    try:
        remote = rpc.connect(url, port, matchkey, session_timeout=max(wait_s, 10.0))
    except Exception as exc:
        raise TransportError(
            f"the tracker handed out the '{key}' server at {url}:{port}, which cannot be reached: "
            f"{str(exc).splitlines()[0][:200]}",
            hint="The server may bind an address this machine cannot reach; check its --host.",
            key=key,
        ) from exc
    info = remote_info(remote)
    info.setdefault("machine", "")
    del remote  # ends the session
    return info
