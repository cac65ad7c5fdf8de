"""The one place that decides whether a command talks to a board or to its simulator.

:func:`connect` reads the board profile's registered transport and simulator
(:mod:`edgekit.core.links`) and the user's ``--port``/``--sim`` and returns a
:class:`Connection`: the real board at an address, this machine, or the
board's simulator (with its engine). Every runner starts with it, so the
rules below hold for every board:

* ``--port`` and ``--sim`` together are refused;
* ``--sim`` (or ``--sim ENGINE``) uses the simulator; an engine the board's
  simulator lacks is refused; a board that *is* this machine runs here;
* ``--port ADDRESS`` (or the address in the profile) uses the real board;
  a board reached without an address (in-process) refuses ``--port``;
* with neither, a board without an address is simulated, with a notice;
  without a simulator either, :class:`NoConnectionError` says what to pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgekit.core.errors import ConfigError
from edgekit.core.links import SIMULATORS, TRANSPORTS, SimulatorKind, TransportKind

if TYPE_CHECKING:
    from edgekit.core.profiles import Board

__all__ = ["Connection", "NoConnectionError", "connect"]

logger = logging.getLogger(__name__)


class NoConnectionError(ConfigError):
    """Neither a real board (no address given or configured) nor a simulator is available."""


@dataclass(frozen=True)
class Connection:
    """Where a command runs, decided by :func:`connect`.

    Attributes:
        board: The board profile.
        transport: Its registered transport.
        simulator: The registered simulator when the board is simulated, else None.
        address: The real board's address (serial port, ``user@host``...);
            empty when simulated or when the board is this machine.
        engine: The simulator's engine (``--sim ENGINE``; its first engine
            for plain ``--sim``), or ``""``.
    """

    board: "Board"
    transport: TransportKind
    simulator: SimulatorKind | None = None
    address: str = ""
    engine: str = ""

    @property
    def simulated(self) -> bool:
        """Whether a simulator stands in for the board."""
        return self.simulator is not None

    def describe(self) -> str:
        """Where it runs, for messages and reports."""
        if self.simulator is not None:
            return f"{self.board.name}'s {self.simulator.name} simulator" + (f" ({self.engine})" if self.engine else "")
        if self.address:
            return f"{self.transport.name} {self.address}"
        return "this machine"


def _simulate(board: "Board", simulator: SimulatorKind, transport: TransportKind, sim: bool | str) -> Connection:
    if isinstance(sim, str) and sim not in simulator.engines:
        kinds = [name for name in SIMULATORS if sim in SIMULATORS.get(name).engines]
        raise ConfigError(
            f"--sim {sim} needs an {'/'.join(k.upper() for k in kinds) or 'other'} board: '{board.name}' is "
            f"simulated by '{simulator.name}', which has no engine '{sim}'",
            hint="Use plain --sim on this board.",
            board=board.name,
        )
    if not simulator.simulates:
        if simulator.name == "native":  # the board is this machine: nothing stands in for it
            return Connection(board, transport)
        raise NoConnectionError(
            f"board '{board.name}' has no simulator",
            hint=f"Leave out --sim and run on the board ({_where_hint(transport)}).",
            board=board.name,
        )
    engine = sim if isinstance(sim, str) else (simulator.engines[0] if simulator.engines else "")
    return Connection(board, transport, simulator, engine=engine)


def _where_hint(transport: TransportKind) -> str:
    if not transport.addressed:
        return "on the machine it is"
    return f"--port {transport.address_example}, or transport.{transport.address_key} in its profile"


def connect(board: "Board", port: str | None = None, sim: bool | str | None = None) -> Connection:
    """Decides once whether to use the real board or its simulator.

    Args:
        board: The board profile.
        port: The real board's address (``--port``): a serial port, ``user@host``...
        sim: True forces the simulator, an engine name (``"rtl"``) forces that
            engine, False forbids simulation, None decides from the address.

    Raises:
        ConfigError: ``port`` and ``sim`` together, an engine the simulator
            lacks, or ``port`` for a board reached without an address.
        NoConnectionError: no address and no simulator to fall back on (or ``sim=False``).
    """
    transport = TRANSPORTS.get(board.transport.kind)
    simulator = SIMULATORS.get(board.simulator.kind)
    if port and sim:
        raise ConfigError(
            "both --port and --sim given",
            hint=f"Use one: --port {transport.address_example or 'ADDRESS'} for the board, --sim for its simulator.",
        )
    if sim:
        return _simulate(board, simulator, transport, sim)
    if port and not transport.addressed:
        raise ConfigError(
            f"board '{board.name}' runs on {transport.description}; --port does not apply",
            hint="Leave out --port, or choose the board that is attached to that port.",
            board=board.name,
        )
    address = port or (str(getattr(board.transport, transport.address_key)) if transport.addressed else "")
    if address or (transport.name != "sim" and not transport.addressed):
        return Connection(board, transport, address=address)
    if transport.name == "sim" and sim is None and simulator.simulates:
        return _simulate(board, simulator, transport, True)  # a simulated-only board: nothing to say
    if sim is False or not simulator.simulates:
        what = transport.address_name or "real board"
        raise NoConnectionError(
            f"no {what} for board '{board.name}'" + ("" if simulator.simulates else " and no simulator"),
            hint=f"Pass --port {transport.address_example or 'ADDRESS'}"
            + (f" (or set transport.{transport.address_key} in the board profile)" if transport.addressed else "")
            + (", or use --sim." if simulator.simulates else "."),
            board=board.name,
        )
    logger.warning(
        "no %s configured for %s: using its %s simulator (pass --port to use a board)",
        transport.address_name or "board", board.name, simulator.name,
    )
    return _simulate(board, simulator, transport, True)
