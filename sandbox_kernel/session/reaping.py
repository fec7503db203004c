"""Zombie children of an agent, reaped when a cell ends.

A cell that forks and never waits (``os.fork()`` in a loop, a library that
forgets its children) leaves zombies of the agent.  The agent is not PID 1,
so nothing else reaps them, and each one holds a slot of the container's
pids limit: after a few fork bombs every later ``subprocess.run`` fails
until the container is restarted.  So the agents (agent.py, plain_agent.py,
through agent_core.AgentCore) call ``ChildReaper.reap()`` before and after
every cell and every command.

Exit codes stay right.  A zombie is reaped only when no live object of the
session will wait for it:

* ``subprocess.Popen`` (and so ``asyncio``'s subprocesses, which are Popen
  objects too): every Popen made after ``install()`` is in a WeakSet; one
  whose ``returncode`` is still None owns its pid, so ``p.wait()`` in a later
  cell gets the real exit code.  While a Popen is being built (in another
  thread: between its fork and its ``pid`` being set) nothing is reaped.
* ``multiprocessing``: the started ``Process`` objects (``join``,
  ``exitcode``), the forkserver and the resource tracker.  (A Process
  started in another thread, whose child exits between its fork and
  ``start()`` recording it, at the very moment a cell ends, is the one
  window left.)

What is left are children that only a raw pid refers to (``os.fork``,
``os.posix_spawn``, ``pty.fork``): once such a child has exited and the cell
that made it has ended, ``os.waitpid`` on it gets ChildProcessError.  Wait
for a raw fork in the cell that made it, or use subprocess/multiprocessing.

Standard library only, and Python 3.7 syntax: the plain agent runs this on
an image's own python3.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import weakref

_INSTALLED = "_sbk_reaper"        # marks the wrapped Popen.__init__


class ChildReaper:
    """Reaps this process's zombie children that nothing of the session owns."""

    def __init__(self, proc: str = "/proc"):
        self.proc = proc
        self.popens = weakref.WeakSet()   # Popen objects made since install()
        self.starting = 0                 # Popen.__init__ calls under way
        self.reaped = 0                   # zombies reaped, in all
        self._lock = threading.Lock()

    def install(self) -> None:
        """Register every subprocess.Popen from now on (once per process)."""
        original = subprocess.Popen.__init__
        if getattr(original, _INSTALLED, None) is not None:
            return
        reaper = self

        @functools.wraps(original)          # same name, doc and signature (__wrapped__)
        def __init__(popen, *args, **kwargs):
            with reaper._lock:
                reaper.starting += 1
            try:
                original(popen, *args, **kwargs)
                reaper.popens.add(popen)
            finally:
                with reaper._lock:
                    reaper.starting -= 1
        setattr(__init__, _INSTALLED, self)
        subprocess.Popen.__init__ = __init__

    def reap(self) -> int:
        """Reap the zombie children no live Popen or multiprocessing object
        will wait for; how many were reaped."""
        if not self.any_child_exited():
            return 0
        # Zombies first, owners second: a pid cannot be reused before its
        # zombie is reaped, so an owner made after the listing cannot own
        # one of the listed zombies, and one made before it is seen below.
        zombies = self.zombie_children()
        if not zombies:
            return 0
        owned = self.owned_pids()
        if owned is None:                 # a Popen is being started: its pid is not known yet
            return 0
        count = 0
        for pid in zombies - owned:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:     # reaped meanwhile by a waiter of the user's
                continue
            count += done == pid
        self.reaped += count
        return count

    def owned_pids(self) -> set | None:
        """Pids some live object will wait for; None while a Popen is being built."""
        with self._lock:
            if self.starting:
                return None
            popens = list(self.popens)
        owned = {p.pid for p in popens if p.returncode is None and isinstance(p.pid, int)}
        owned |= _multiprocessing_pids()
        return owned

    def any_child_exited(self) -> bool:
        """Whether some child (of any thread) is a zombie, asked with one
        waitid(2) that reaps nothing (WNOWAIT): a cell almost never leaves
        one, and the scan of /proc below costs each cell ~0.1 ms twice (a
        round trip of ``pass`` is ~4 ms).  A /proc other than this process's
        (a test's) is always scanned."""
        if self.proc != "/proc":
            return True
        try:
            return os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:         # no child at all
            return False
        except (AttributeError, OSError):   # no waitid (not Linux): scan
            return True

    def zombie_children(self) -> set:
        """Pids of this process's children that are zombies."""
        return {pid for pid in self.children() if self._state(pid) == "Z"}

    def children(self) -> set:
        """This process's children (of every thread), from /proc."""
        me = os.getpid()
        tasks_dir = f"{self.proc}/{me}/task"
        if not os.path.exists(f"{tasks_dir}/{me}/children"):   # no CONFIG_PROC_CHILDREN
            return self._children_by_scan(me)
        found = set()
        for task in os.listdir(tasks_dir):
            try:
                with open(f"{tasks_dir}/{task}/children") as handle:
                    found.update(int(pid) for pid in handle.read().split())
            except (FileNotFoundError, ProcessLookupError):   # the thread ended meanwhile
                continue
        return found

    def _children_by_scan(self, me: int) -> set:
        found = set()
        for name in os.listdir(self.proc):
            if name.isdigit() and self._stat_fields(int(name))[1:2] == [str(me)]:
                found.add(int(name))
        return found

    def _state(self, pid: int) -> str | None:
        fields = self._stat_fields(pid)
        return fields[0] if fields else None

    def _stat_fields(self, pid: int) -> list:
        """/proc/PID/stat after the command's ")": state, ppid, ...; [] if gone."""
        try:
            with open(f"{self.proc}/{pid}/stat", "rb") as handle:
                text = handle.read()
        except (FileNotFoundError, ProcessLookupError):
            return []
        return text.rpartition(b")")[2].decode("ascii", "replace").split()


def _multiprocessing_pids() -> set:
    """Children that multiprocessing will wait for, if it was imported."""
    owned = set()
    process = sys.modules.get("multiprocessing.process")
    for child in list(getattr(process, "_children", ()) or ()):
        popen = getattr(child, "_popen", None)
        if popen is not None and getattr(popen, "returncode", None) is None:
            owned.add(getattr(popen, "pid", None))
    tracker = sys.modules.get("multiprocessing.resource_tracker")
    owned.add(getattr(getattr(tracker, "_resource_tracker", None), "_pid", None))
    forkserver = sys.modules.get("multiprocessing.forkserver")
    owned.add(getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None))
    owned.discard(None)
    return owned
