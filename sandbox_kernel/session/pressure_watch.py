"""Memory pressure during a cell (issue 23): a part of Session (client.py).

While a cell runs, a watch (runtime/cgroups/pressure.py) on the container's
cgroup makes a descriptor ready the moment its memory crosses
PRESSURE_FRACTION of the limit; a thread (WatchWaiter) sleeps in poll() on
it and on a pipe that ends it: nothing reads counters in a loop, and the
cell's own path only arms and disarms it.

``on_pressure`` says what then happens (``%container limits --on-pressure``):

    interrupt  SIGUSR2 to the agent, whose interrupt gate raises MemoryError
               in the cell's main thread with the words the request carried
               ("stopped at 90% of the 512 MiB limit to keep your session");
               the variables set before survive, the container stays
    warn       nothing is done to the cell: the footer and the panel mark
               it (the contract's ``memory_pressure``, and a warning)

Memory that keeps growing past the limit (C code, the signal ignored, one
allocation past the limit at once) is OOM-killed as before, with the same
words.  The null driver has no watch: ``memory_pressure`` stays null.
"""
from __future__ import annotations

import os
import select
import threading
import time

from ..runtime.cgroups import CgroupError
from ..runtime.cgroups.pressure import memory_watch
from ..runtime.container import LifecycleError, State
from . import options, stats as stats_contract
from .agent_core import PRESSURE_SIGNAL

PRESSURE_FRACTION = 0.9
ON_PRESSURE = ("warn", "interrupt")
JOIN_WAIT = 5.0


def pressure_words(limit: int | None, fraction: float = PRESSURE_FRACTION) -> str | None:
    """The MemoryError's message for a limit (None: no limit, no words)."""
    if limit is None:
        return None
    return (f"stopped at {fraction * 100:.0f}% of the {stats_contract.format_bytes(limit)} "
            f"limit to keep your session")


class WatchWaiter:
    """A thread that waits on a container's watch; armed while a cell runs.

    In a process that has threads of its own already (a kernel: ipykernel's
    IOPub, control and heartbeat threads) it lives with the container
    (kept_between_cells), so a cell only arms and disarms it: starting and
    joining a thread per cell cost 0.2-0.4 ms of every round trip.  A single-threaded process (a
    script, the CLI) stops it after each cell, so that it can still fork its
    containers' launchers (runtime/spawn.py forks only without threads).
    Between cells a crossing is read (the descriptor must not stay ready)
    and ignored: what happened between cells is not the next cell's."""

    def __init__(self, watch):
        self.watch = watch
        self.crossed_at: float | None = None      # monotonic time of the armed cell's first crossing
        self._on_crossed = None                   # set while a cell runs
        self._lock = threading.Lock()             # the watch's reads and writes, one thread at a time
        self._stop_r, self._stop_w = os.pipe()
        self.thread = threading.Thread(target=self._wait, daemon=True, name="sbk-pressure")
        self.thread.start()

    def arm(self, on_crossed) -> None:
        with self._lock:
            self.watch.begin()
            self.crossed_at = None
            self._on_crossed = on_crossed

    def disarm(self) -> float | None:
        """The cell ended: the time of its crossing, if there was one."""
        with self._lock:
            self._on_crossed = None
            try:
                self.watch.end()
            except OSError:
                pass                              # the group is gone: nothing to lift
            return self.crossed_at

    def _wait(self) -> None:
        poller = select.poll()
        poller.register(self.watch.fileno(), self.watch.events)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            ready = dict(poller.poll())           # blocks until the kernel or stop()
            if self._stop_r in ready or ready.get(self.watch.fileno(), 0) & select.POLLNVAL:
                return
            with self._lock:
                try:
                    crossed = self.watch.crossed()   # read even unarmed: it clears the readiness
                except OSError:
                    return                        # the group went away with its container
                if crossed and self._on_crossed is not None and self.crossed_at is None:
                    self.crossed_at = time.monotonic()
                    self._on_crossed()

    def stop(self) -> None:
        """End the thread (before the watch is closed); the watch stays open."""
        os.write(self._stop_w, b"x")
        self.thread.join(JOIN_WAIT)
        for fd in (self._stop_r, self._stop_w):
            os.close(fd)


def keeps_threads() -> bool:
    """Whether this process has threads besides its main thread and a waiter:
    then it never forks a launcher, and a waiter may live on between cells."""
    return threading.active_count() > 2


def kept_between_cells(watch) -> bool:
    """Whether ``watch``'s waiter lives on after a cell: in a process with
    threads (it never forks), on either driver."""
    return keeps_threads()


class MemoryPressure:
    """Session's memory-pressure watch (client.py); reads _container and limits."""

    on_pressure: str = "warn"
    _cell_watch: WatchWaiter | None = None     # armed while a cell runs
    _watch_waiter: WatchWaiter | None = None   # the container's waiter, kept between cells
    _memory_watch: tuple | None = None      # (watch, container, threshold): one per container
    _pressure_seen: bool | None = None      # the last cell: crossed, not crossed, or not watched
    pressure_crossed_at: float | None = None   # when the host saw the last crossing (monotonic)

    def set_on_pressure(self, action: str | None) -> list[str]:
        """%container limits --on-pressure warn|interrupt (None: not given);
        the note for the user.  SpecError for another word."""
        if action is None:
            return []
        action = self.on_pressure = options.parse("on_pressure", action, options.LIMITS)
        return [f"session {self.name!r}: on memory pressure ({PRESSURE_FRACTION * 100:.0f}% of "
                f"the limit), {'interrupt the cell' if action == 'interrupt' else 'warn'}"]

    @property
    def pressure_now(self) -> bool | None:
        """While a cell runs (the panel's ticks): has it crossed the threshold
        yet?  None when nothing watches it."""
        cell_watch = self._cell_watch
        return None if cell_watch is None else cell_watch.crossed_at is not None

    def _pressure_request(self, request: dict) -> dict:
        """An execute request with the words of its MemoryError."""
        words = pressure_words(self.limits.memory)
        return {**request, "pressure_words": words} if words and request["type"] == "execute" \
            else request

    def _pressure_begin(self) -> None:
        """At a cell's start: watch its container's memory (nothing without a limit)."""
        self._pressure_end()                      # one a request left behind (it raised)
        self._pressure_seen = None
        container, limit = self._container, self.limits.memory
        if limit is None or container is None or container.cgroup is None:
            return
        try:
            watch = self._watch_of(container, int(limit * PRESSURE_FRACTION))
            if watch is not None:
                waiter = self._waiter_of(watch)
                waiter.arm(lambda: self._pressure_crossed(container))
                self._cell_watch = waiter
        except (CgroupError, OSError):
            return                                # not watched: memory_pressure stays null

    def _waiter_of(self, watch) -> WatchWaiter:
        """The waiter kept for ``watch``, or a new one (its thread started)."""
        kept = self._watch_waiter
        if kept is not None and kept.watch is watch and kept.thread.is_alive():
            return kept
        self._stop_waiter()
        self._watch_waiter = WatchWaiter(watch)
        return self._watch_waiter

    def _stop_waiter(self) -> None:
        waiter, self._watch_waiter = self._watch_waiter, None
        if waiter is not None:
            waiter.stop()

    def _watch_of(self, container, threshold: int):
        """The container's watch, made on its first cell (and again for a new limit)."""
        kept = self._memory_watch
        if kept is not None and kept[1] is container and kept[2] == threshold:
            return kept[0]
        self._pressure_forget()
        watch = memory_watch(container.cgroup, threshold)
        self._memory_watch = (watch, container, threshold) if watch is not None else None
        return watch

    def _pressure_forget(self) -> None:
        """Close the watch of a container that is gone (client.py's _discard) or replaced."""
        self._stop_waiter()                       # its thread polls the watch: stopped first
        kept, self._memory_watch = self._memory_watch, None
        if kept is not None:
            try:
                kept[0].close()
            except OSError:
                pass                              # the group went with its container

    def _pressure_crossed(self, container) -> None:
        """The watch's thread, at the crossing: interrupt the cell if asked."""
        if self.on_pressure != "interrupt" or container.state is not State.RUNNING:
            return
        try:
            container.signal(PRESSURE_SIGNAL)
        except (LifecycleError, ProcessLookupError):
            pass                                  # it died meanwhile: the verdict says how

    def _pressure_end(self) -> None:
        cell_watch, self._cell_watch = self._cell_watch, None
        if cell_watch is not None:
            self.pressure_crossed_at = cell_watch.disarm()   # monotonic; benchmarks/pressure.py reads it
            self._pressure_seen = self.pressure_crossed_at is not None
            if not kept_between_cells(cell_watch.watch):
                self._stop_waiter()               # a single-threaded process forks its launchers

    def _pressure_warnings(self) -> list[str]:
        """The footer's warning for a cell that crossed the threshold."""
        if not self._pressure_seen:
            return []
        limit = stats_contract.format_bytes(self.limits.memory)
        did = "the cell was interrupted" if self.on_pressure == "interrupt" else "the cell went on"
        return [f"memory crossed {PRESSURE_FRACTION * 100:.0f}% of the {limit} limit: {did} "
                f"(--on-pressure {self.on_pressure})"]
