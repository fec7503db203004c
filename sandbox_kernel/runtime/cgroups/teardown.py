"""Taking down a whole cgroup subtree another user may have built: every
process killed, every group removed bottom-up, without recursion (a user can
nest groups deeply), bounded in time.  delegation.remove() uses it.
"""
from __future__ import annotations

import errno
import os
import signal
import time

from .base import CgroupError
from .files import CgroupDir, poll_until

REMOVE_SECONDS = 5.0


def kill_frozen(top: str) -> None:
    """v1 has no cgroup.kill: freeze the subtree so that nothing forks between
    the listing and the kill (a frozen task dies once thawed), kill, thaw."""
    freezer = CgroupDir(top)
    freezer.write("freezer.state", "FROZEN")
    try:
        poll_until(lambda: freezer.read_once("freezer.state").strip() == "FROZEN")
        _kill_all(subtree(top))
    finally:
        freezer.write("freezer.state", "THAWED")


def subtree(top: str) -> list[str]:
    """Every group under top, top first; iterative, so a deep tree is no problem."""
    found, pending = [], [top]
    while pending:
        directory = pending.pop()
        found.append(directory)
        try:
            with os.scandir(directory) as entries:
                pending.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            continue
    return found


def empty_and_remove(top: str) -> None:
    deadline = time.monotonic() + REMOVE_SECONDS
    while True:
        groups = subtree(top)
        _kill_all(groups)
        for directory in reversed(groups):   # children before their parents
            _rmdir_when_empty(directory, deadline)
        if not os.path.isdir(top):
            return
        if time.monotonic() >= deadline:   # a new child appeared meanwhile, again and again
            raise CgroupError(errno.EBUSY, f"{top} could not be emptied in "
                                               f"{REMOVE_SECONDS:g} s")


def _kill_all(groups: list[str]) -> None:
    top = CgroupDir(groups[0])
    if top.has("cgroup.kill"):   # v2, Linux >= 5.14: the whole subtree at once
        top.write("cgroup.kill", "1")
        return
    for directory in groups:
        for pid in CgroupDir(directory).pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue


def _rmdir_when_empty(directory: str, deadline: float) -> None:
    def removed() -> bool:
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            return True
        except OSError as error:
            if error.errno != errno.EBUSY:
                raise CgroupError(error.errno, f"rmdir {directory}: {error.strerror}") from None
            _kill_all([directory])   # a process forked after the kill, or still dying
            return False
        return True
    if not poll_until(removed, max(0.1, deadline - time.monotonic()), 0.02):
        raise CgroupError(errno.EBUSY, f"rmdir {directory}: still busy after "
                                           f"{REMOVE_SECONDS:g} s (a process in state D?)")
