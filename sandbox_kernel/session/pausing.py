"""Pause and resume a session's container through the cgroup freezer
(``%container pause`` / ``resume``, ``--idle-pause``): a part of Session
(client.py).

A paused container uses no CPU; its memory stays.  Every request that needs
the agent (a cell, a completion, push, pull...) goes through
``Session._busy``, which calls ``_wake`` first: a paused session resumes by
itself, and the cell that woke it says how long that took (``resume_note``,
one line on stderr).  ``status()`` and the panel read the cgroup's files,
which a frozen group still answers, and call the state "paused".

``idle_pause`` (seconds, or None): a session that ran nothing for that long
is paused by a timer, armed when a request ends and cancelled when the next
one begins; nothing polls, and nothing of this is in the cell's path but
one check.  The timer pauses only when no request holds the session: a
request that begins meanwhile waits for the freeze to finish (``_pausing``)
and then thaws it.

Imports the runtime's cgroup errors and container states, and options; reads
Session's _container, _lock and name.
"""
from __future__ import annotations

import threading
import time

from ..runtime.cgroups import CgroupError
from ..runtime.container import State
from . import options
from .errors import SessionError


class Pausing:
    """Session's freezer (client.py)."""

    idle_pause: float | None = None      # seconds of idleness before a pause; None: never
    _paused: object = None               # the container that is frozen (None: none is)
    _paused_at: float | None = None
    _woke: tuple[float, float] | None = None   # (seconds it was paused, seconds the thaw took)
    _idle_timer: threading.Timer | None = None

    @property
    def _pausing(self) -> threading.Lock:
        """Serialises freeze and thaw (the idle timer's thread and a request's);
        dict.setdefault is atomic, so two threads get the same lock."""
        return self.__dict__.setdefault("_pausing_lock", threading.Lock())

    @property
    def paused(self) -> bool:
        """True while this session's current container is frozen."""
        container = self._container
        return container is not None and self._paused is container

    def _state_word(self, container) -> str:
        """figures.py's state, "paused" while frozen (status(), the panel)."""
        word = super()._state_word(container)
        return "paused" if word == "running" and self.paused else word

    def pause(self) -> str:
        """Freeze the container; the words for the user.  SessionError when
        none runs or the cgroup cannot freeze (the null driver)."""
        with self._pausing:
            if not self._freeze():
                return f"session {self.name!r} is already paused"
        return (f"session {self.name!r} paused: its processes are frozen (no CPU; memory kept); "
                f"the next cell or %container resume wakes it")

    def resume(self) -> str:
        """Thaw the container (nothing if it is not paused); the words for the user."""
        with self._pausing:
            woke = self._thaw()
        self._woke = None                 # said here, not by the next cell
        if woke is None:
            return f"session {self.name!r} is not paused"
        return f"session {self.name!r} resumed in {woke[1] * 1000:.1f} ms"

    def _freeze(self) -> bool:
        """Freeze the running container (False: it already is); the caller holds _pausing."""
        container = self._container
        if container is None or container.state is not State.RUNNING:
            raise SessionError(f"session {self.name!r}: no container runs, nothing to pause")
        if self._paused is container:
            return False
        try:
            container.cgroup.freeze()
        except (CgroupError, OSError) as error:
            raise SessionError(f"session {self.name!r}: cannot pause: {error}") from None
        self._paused, self._paused_at = container, time.monotonic()
        return True

    def _thaw(self) -> tuple[float, float] | None:
        """(seconds paused, seconds the thaw took) if it was paused; the
        caller holds _pausing."""
        container = self._paused
        self._paused = None
        if container is None or container is not self._container:
            return None                   # that container is gone: nothing to thaw
        started = time.monotonic()
        try:
            container.cgroup.thaw()
        except (CgroupError, OSError) as error:
            raise SessionError(f"session {self.name!r}: cannot resume: {error}") from None
        return started - (self._paused_at or started), time.monotonic() - started

    def set_idle_pause(self, text: str | None) -> list[str]:
        """%container limits --idle-pause DURATION|none (None: not given):
        from the end of the next request on; the note for the user.
        SpecError for a value that is not a duration."""
        if text is None:
            return []
        seconds = options.parse("idle_pause", text, options.LIMITS)
        self.idle_pause = seconds
        when = f"after {seconds:g} s without a cell" if seconds is not None else "never"
        return [f"session {self.name!r}: pauses {when}"]

    # -- the requests' side (Session._busy) -----------------------------------------

    def _wake(self) -> None:
        """Before a request: stop the idle timer, thaw a paused container."""
        self._cancel_idle()
        with self._pausing:               # an idle pause under way finishes first
            woke = self._thaw()
        if woke is not None:
            self._woke = woke

    def resume_note(self) -> str | None:
        """Once, after a request woke the session: how long the resume took."""
        woke, self._woke = self._woke, None
        if woke is None:
            return None
        return (f"[session {self.name!r} was paused for {woke[0]:.1f} s; "
                f"resumed in {woke[1] * 1000:.1f} ms]\n")

    def _tell_resumed(self, on_output) -> None:
        note = self.resume_note()
        if note is not None and on_output is not None:
            on_output("stream", {"name": "stderr", "text": note})

    # -- the idle timer ----------------------------------------------------------------

    def _idle_again(self) -> None:
        """After a request: pause after idle_pause seconds of nothing."""
        self._cancel_idle()
        if self.idle_pause is None or self._container is None:
            return
        timer = threading.Timer(self.idle_pause, self._pause_when_idle)
        timer.daemon = True
        timer.name = f"sbk-idle-{self.name}"
        self._idle_timer = timer
        timer.start()

    def _cancel_idle(self) -> None:
        timer, self._idle_timer = self._idle_timer, None
        if timer is not None:
            timer.cancel()

    def _pause_when_idle(self) -> None:
        """The timer's thread: pause unless a request holds the session (a
        request takes _lock before _pausing, so it sees this pause and thaws)."""
        with self._pausing:
            if self._lock.locked():
                return
            try:
                self._freeze()
            except SessionError:
                pass                      # stopped, died or cannot freeze: stay awake
