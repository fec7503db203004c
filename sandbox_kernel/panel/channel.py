"""The kernel side of the side panel: comm target ``sandbox_kernel.stats``.

Used by both faces of a session: the sandbox kernel and the magics in an
ordinary IPython kernel.  They call three methods::

    channel = StatsChannel(kernel, lambda: sessions.sessions.values(), kind="magics")
    channel.register()                  # the target, for comms the frontend opens
    channel.announce()                  # magics only: open one from here (the
                                        # frontend looked before %load_ext ran)
    channel.cell_started(session)       # before Session.execute
    channel.cell_finished(session, result.stats, footer="beside")   # after it (stats None: it raised)
    channel.close()                     # unload / shutdown

When each message goes (messages.py has their shape)::

    frontend opens / asks  ->  snapshot (sessions, history of cells)
    cell_started           ->  cell_start
      every ``interval`` s while the cell runs, from the ticker thread -> tick
    cell_finished          ->  cell_end (the cell's row)

What it reads of a session: ``session.snapshot()`` (a frozen
``SessionSnapshot``, session/stats.py), taken by the session under its own
state lock, and nothing else: the ticker thread and a cell's thread never
read the session's files at once.  The names in ``running`` and in a
cell's row come from the snapshot and from the cell's stats contract.

Why it never blocks a cell: the ticker is its own thread and only takes
snapshots (one read of the cgroup files each) and hands a message to
ipykernel's iopub thread, which sends it without waiting for anyone to read
it.  Nothing is queued here: with no comm open nothing is built or sent;
when a frontend goes away without closing its comm, ZeroMQ's PUB socket
drops what nobody reads.  The ticker sleeps on an Event while no cell runs: an idle kernel has
no wakeups.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import messages

HISTORY_SIZE = 100          # cell rows kept for a frontend that opens later
TICK_INTERVAL = 1.0         # seconds between ticks while a cell runs

log = logging.getLogger(__name__)

SessionProvider = Callable[[], Iterable]
"""The sessions to show: objects with ``snapshot() -> SessionSnapshot``."""


@dataclass(frozen=True)
class _RunningCell:
    """The cell that runs now; replaced as a whole, so the ticker never sees
    half of one.  ``session``: the object whose snapshot names it (taken
    only when a message is built: nothing is read while nobody listens)."""
    session: object
    cell_id: str | None
    execution_count: int | None
    started_at: float


class StatsChannel:
    """Pushes the stats contract of ``session_provider()``'s sessions to every
    open comm of target ``sandbox_kernel.stats``."""

    def __init__(self, kernel, session_provider: SessionProvider, *, kind: str,
                 comm_manager=None, interval: float = TICK_INTERVAL,
                 policy: Callable[[], dict] | None = None):
        self.kernel = kernel
        self.session_provider = session_provider
        self.policy = policy          # the policy's as_dict(), for snapshots (None: no policy)
        self.kind = kind
        self.comm_manager = comm_manager if comm_manager is not None else kernel.comm_manager
        self.interval = interval
        self.history: collections.deque[dict] = collections.deque(maxlen=HISTORY_SIZE)
        self._comms: dict[str, object] = {}
        self._lock = threading.Lock()
        self._running: _RunningCell | None = None  # the cell that runs now
        self._cell_running = threading.Event()     # the ticker waits on it while idle
        self._closing = threading.Event()
        self._ticker: threading.Thread | None = None

    # -- comms -------------------------------------------------------------------

    def register(self) -> None:
        """Answer comms the frontend opens to the target."""
        self.comm_manager.register_target(messages.TARGET, self._on_open)

    def announce(self) -> None:
        """Open a comm from the kernel: for a frontend that connected before
        this channel existed (its own open was refused then).  A frontend
        without the panel refuses it, and that is all."""
        from comm import create_comm
        comm = create_comm(target_name=messages.TARGET, data={"protocol": messages.PROTOCOL_VERSION})
        self._adopt(comm)
        self._send_to(comm, self._snapshot("announce"))

    @property
    def listening(self) -> bool:
        return bool(self._comms)

    def _on_open(self, comm, msg) -> None:
        self._adopt(comm)
        self._send_to(comm, self._snapshot("open"))

    def _adopt(self, comm) -> None:
        with self._lock:
            self._comms[comm.comm_id] = comm
        comm.on_msg(lambda msg, comm=comm: self._on_msg(comm, msg))
        comm.on_close(lambda msg, comm_id=comm.comm_id: self._forget(comm_id))

    def _forget(self, comm_id: str) -> None:
        with self._lock:
            self._comms.pop(comm_id, None)

    def _on_msg(self, comm, msg) -> None:
        data = msg.get("content", {}).get("data") or {}
        if data.get("request") == "stats":
            self._send_to(comm, self._snapshot("request"))
        else:
            log.warning("sandbox_kernel.stats: unknown request %r (expected {'request': 'stats'})", data)

    # -- cells -------------------------------------------------------------------

    def cell_started(self, session, *, execution_count: int | None = None) -> None:
        """A cell of ``session`` starts now.  ``execution_count``: the number
        the notebook shows, when it is not the container's (the magics)."""
        self._running = _RunningCell(session, self._parent_cell_id(), execution_count,
                                     time.monotonic())
        self._cell_running.set()
        self._start_ticker()
        self._push("cell_start")

    def cell_finished(self, session, stats: dict | None, *, footer: str = "beside") -> None:
        """The cell ended; ``stats`` is its CellResult.stats (None: no result),
        whose ``session`` is the session's name (the contract's).  ``footer``:
        where the cell's footer goes (beside, output, off); the labextension
        draws the magics' footer from this row when it is beside."""
        running, self._running = self._running, None
        self._cell_running.clear()
        if stats is None:
            self._push("cell_end")
            return
        record = messages.cell_record(
            stats.get("session"), stats, cell_id=running.cell_id if running else None,
            execution_count=running.execution_count if running else None, footer=footer)
        self.history.append(record)
        self._push("cell_end", cell=record)

    def close(self) -> None:
        """Stop the ticker and close the comms (the frontend shows the kernel
        as not sandboxed until a new channel announces itself)."""
        self._closing.set()
        self._cell_running.set()        # wake the ticker so that it sees _closing
        with self._lock:
            comms, self._comms = list(self._comms.values()), {}
        for comm in comms:
            self._close_comm(comm)
        unregister = getattr(self.comm_manager, "unregister_target", None)
        if unregister is not None and messages.TARGET in getattr(self.comm_manager, "targets", {}):
            unregister(messages.TARGET, self._on_open)

    def _close_comm(self, comm) -> None:
        """comm.close() sends comm_close, then unregisters the comm from the
        process's global CommManager (comm.get_comm_manager()).  A kernel with
        a manager of its own (the sandbox kernel) registered it there instead:
        the global one raises KeyError, and ours must forget it."""
        try:
            comm.close()
        except KeyError:
            pass
        except (OSError, RuntimeError) as error:       # the kernel is going away already
            log.debug("sandbox_kernel.stats: closing a comm failed: %s", error)
        if comm.comm_id in (getattr(self.comm_manager, "comms", None) or {}):
            self.comm_manager.unregister_comm(comm)

    # -- sending -----------------------------------------------------------------

    def _running_now(self, sessions: list, snapshots: list) -> dict | None:
        """The running cell for a message; its session's name from the
        snapshot just taken of it (one more only when the provider no longer
        lists that session)."""
        running = self._running
        if running is None:
            return None
        snapshot = next((snap for session, snap in zip(sessions, snapshots)
                         if session is running.session), None)
        if snapshot is None:
            snapshot = running.session.snapshot()
        return {"session": snapshot.name, "cell_id": running.cell_id,
                "execution_count": running.execution_count,
                "elapsed": round(time.monotonic() - running.started_at, 3)}

    def _snapshot(self, reason: str) -> dict:
        sessions, snapshots = self._sessions()
        return messages.message("snapshot", kind=self.kind, sessions=snapshots,
                                running=self._running_now(sessions, snapshots),
                                history=self.history, reason=reason,
                                policy=self.policy() if self.policy is not None else None)

    def _push(self, event: str, cell: dict | None = None) -> None:
        """One message to every open comm; nothing is built when none is open."""
        with self._lock:
            comms = list(self._comms.values())
        if not comms:
            return
        sessions, snapshots = self._sessions()
        data = messages.message(event, kind=self.kind, sessions=snapshots,
                                running=self._running_now(sessions, snapshots), cell=cell)
        for comm in comms:
            self._send_to(comm, data)

    def _sessions(self) -> tuple[list, list]:
        """The sessions and one snapshot of each, taken now: all the panel
        reads of them."""
        sessions = list(self.session_provider())
        return sessions, [session.snapshot() for session in sessions]

    @staticmethod
    def _send_to(comm, data: dict) -> None:
        comm.send(data=data, metadata={"event": data["event"]})

    def _parent_cell_id(self) -> str | None:
        """The notebook cell's id: JupyterLab and Notebook 7 put it in the
        execute_request's metadata as ``cellId``."""
        get_parent = getattr(self.kernel, "get_parent", None)
        parent = get_parent() if get_parent is not None else {}
        cell_id = (parent or {}).get("metadata", {}).get("cellId")
        return cell_id if isinstance(cell_id, str) else None

    # -- the ticker --------------------------------------------------------------

    def _start_ticker(self) -> None:
        if self._ticker is None and not self._closing.is_set():
            self._ticker = threading.Thread(target=self._tick, name="sbk-panel-ticker", daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        """While a cell runs: a tick every ``interval`` seconds.  Errors are
        logged and the ticking goes on: a lost tick is only a late figure."""
        while True:
            self._cell_running.wait()
            if self._closing.wait(self.interval):
                return
            if not self._cell_running.is_set():
                continue
            try:
                self._push("tick")
            except (OSError, RuntimeError, ValueError, KeyError) as error:
                log.warning("sandbox_kernel.stats: a tick failed: %s", error)


class NullStatsChannel:
    """Where there is no kernel to talk to (IPython in a terminal): the
    same calls, and nothing is sent."""

    listening = False

    def register(self) -> None: ...
    def announce(self) -> None: ...
    def cell_started(self, session, *, execution_count: int | None = None) -> None: ...
    def cell_finished(self, session, stats: dict | None, *, footer: str = "beside") -> None: ...
    def close(self) -> None: ...


def channel_for_shell(shell, session_provider: SessionProvider):
    """The magics' channel: registered on the shell's kernel and announced;
    a NullStatsChannel when IPython runs without a kernel (a terminal)."""
    kernel = getattr(shell, "kernel", None)
    if kernel is None or getattr(kernel, "comm_manager", None) is None:
        return NullStatsChannel()
    channel = StatsChannel(kernel, session_provider, kind="magics")
    channel.register()
    channel.announce()
    return channel
