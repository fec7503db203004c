"""A session's spare container: started in the background once the session
has answered a request, so that a restart (after an out-of-memory cell, a
crash, ``exit()`` or ``%container restart``) takes a running container at
once instead of waiting for a start; the next spare is then started in the
background again.  A part of Session (client.py).

A spare is as fresh as a new container: it is started from the session's
spec like any other and no request ever reaches it before it is taken
(tests/jupyter/test_pool.py shows nothing written by a session is visible
to the container that replaces it).  It is taken only if the session's
spec still equals the one it was started with (limits, image, network,
mounts, environment): a change of limits makes the next restart start a
fresh one.  ``keep_spare`` is off by default: the registry (registry.py)
turns it on for the sessions it makes while the pool is on.

Imports the runtime's Container and memory_watch; reads Session's _spec,
_closed, _abandoned, name, limits and keep_spare; sets its _memory_watch.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import threading
from dataclasses import dataclass

from ..runtime.cgroups import CgroupError
from ..runtime.cgroups.pressure import memory_watch
from ..runtime.container import Container, State
from . import labels
from .errors import SessionError
from .pressure_watch import PRESSURE_FRACTION

ROLE, SPARE = "role", "spare"   # a spare's label on its card, until its session takes it
SPARE_WAIT = 60.0     # a restart waits this long for a spare being started
# seconds between the answer and a start in the background: the answer goes
# out first (a start holds this process's GIL for a while); one a restart or
# a request needs begins at once
BACKGROUND_DELAY = 0.3


@dataclass
class Launched:
    """A started container and our ends of its channels (the socket and the
    read ends of its stdout and stderr pipes, by name)."""
    container: Container
    sock: socket.socket
    logs: dict[int, str]
    spec_key: object = None
    watch: tuple | None = None    # its memory watch, made ahead (pressure_watch.py's _memory_watch)

    def close(self) -> None:
        if self.watch is not None:
            try:
                self.watch[0].close()
            except OSError:
                pass                  # its group goes with the container just below
        self.container.destroy()
        self.sock.close()
        for fd in self.logs:
            os.close(fd)


class Spares:
    """Session's container launch and its spare (client.py)."""

    keep_spare: bool = False
    after_answer = None       # called once after the next answered request (registry.py: the pool's refill)
    _spare: Launched | None = None
    _spare_thread: threading.Thread | None = None

    @property
    def _spare_lock(self) -> threading.Lock:
        # dict.setdefault is atomic: two threads get the same lock
        return self.__dict__.setdefault("_spare_lock_object", threading.Lock())

    def _launch(self, spare: bool = False) -> Launched:
        """A container running the agent, with its socket and log pipes; a
        spare says so on its card (role "spare": top, the stats endpoint)."""
        ours, theirs = socket.socketpair()
        pipes = [os.pipe() for _ in ("stdout", "stderr")]
        try:
            spec = self._spec(theirs.fileno())
            if spare:
                spec = dataclasses.replace(spec, labels=spec.labels + ((ROLE, SPARE),))
            container = Container(spec, stdin=subprocess.DEVNULL,
                                  stdout=pipes[0][1], stderr=pipes[1][1])
            container.start()
        except BaseException:
            ours.close()
            for r, _ in pipes:
                os.close(r)
            raise
        finally:
            theirs.close()
            for _, w in pipes:
                os.close(w)
        return Launched(container, ours, {pipes[0][0]: "stdout", pipes[1][0]: "stderr"})

    def _spec_key(self):
        """What a spare must have been started with to replace the container:
        the spec, but for the socket's descriptor number."""
        return self._spec(0)

    def _spare_soon(self) -> None:
        """After a request: start the spare in the background, if wanted and
        not there yet; and call after_answer once."""
        hook, self.after_answer = self.after_answer, None
        if hook is not None and not self._closed and not self._abandoned:
            hook()
        if not self.keep_spare or self._closed or self._abandoned:
            return
        try:
            key = self._spec_key()
        except (SessionError, LookupError, ValueError, OSError):
            return                        # the image went meanwhile: a restart says so, not this answer
        with self._spare_lock:
            stale = self._spare if self._spare is not None and self._spare.spec_key != key else None
            if stale is not None:         # the limits (or image...) changed since: start another
                self._spare = None
            if self._spare is None and self._spare_thread is None:
                self._spare_hurry = threading.Event()
                self._spare_thread = threading.Thread(target=self._start_spare, args=(key,), daemon=True,
                                                      name=f"sbk-spare-{self.name}")
                self._spare_thread.start()
        if stale is not None:
            stale.close()

    def _start_spare(self, key) -> None:
        self._spare_hurry.wait(BACKGROUND_DELAY)
        launched = None
        try:
            if not (self._closed or self._abandoned):
                launched = self._launch(spare=True)
        except Exception:             # noqa: BLE001 -- a restart then starts one itself, and reports
            launched = None
        if launched is not None:
            launched.spec_key = key
            launched.watch = self._watch_ahead(launched.container)
        with self._spare_lock:
            self._spare, self._spare_thread = launched, None
        if launched is not None and (self._closed or self._abandoned):
            self._drop_spare()

    def _watch_ahead(self, container: Container) -> tuple | None:
        """The spare's memory watch (pressure_watch.py), made now rather than
        by the first cell after a restart (on cgroup v1 two writes to
        cgroup.event_control, ~15 ms on a loaded machine)."""
        limit = self.limits.memory
        if limit is None or container.cgroup is None:
            return None
        threshold = int(limit * PRESSURE_FRACTION)
        try:
            watch = memory_watch(container.cgroup, threshold)
        except (CgroupError, OSError):
            return None                   # the first cell tries again (and goes unwatched if it fails)
        return None if watch is None else (watch, container, threshold)

    def arm_memory_watch(self) -> None:
        """Make the running container's memory watch now, ahead of its first
        cell (a start in the background: the pool's, the kernel's)."""
        container = self._container
        if container is not None and self._memory_watch is None:
            watch = self._watch_ahead(container)
            if watch is not None:
                self._memory_watch = watch

    def label_container(self) -> None:
        """The running container's card says this session (a pooled one was
        started under the pool's name; registry.py renames the session)."""
        container = self._container
        if container is not None:
            container.relabel(dict(labels.for_session(self.name)))

    def _take_spare(self) -> Launched | None:
        """The spare, if it runs and was started with the session's spec now
        (waiting for one being started); None otherwise (it is destroyed)."""
        self._join_spare_thread()
        with self._spare_lock:
            spare, self._spare = self._spare, None
        if spare is None:
            return None
        if spare.container.state is State.RUNNING and spare.spec_key == self._spec_key():
            if spare.watch is not None:   # after _discard forgot the old container's
                self._memory_watch, spare.watch = spare.watch, None
            labels = dict(spare.container.spec.labels)
            labels.pop(ROLE, None)
            spare.container.relabel(labels)
            return spare
        spare.close()
        return None

    def _drop_spare(self) -> None:
        """Destroy the spare (the session stops); waits for one being started
        (one still in its delay does not start: _closed or _abandoned is set)."""
        self._join_spare_thread()
        with self._spare_lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.close()

    def _join_spare_thread(self) -> None:
        """Wait for a spare being started (cutting its delay short)."""
        thread = self._spare_thread
        if thread is not None and thread is not threading.current_thread():
            self._spare_hurry.set()
            thread.join(SPARE_WAIT)
