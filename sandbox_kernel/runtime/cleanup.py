"""Remove what dead owners left behind.

A container's launcher cleans up when its owner dies.  If both die at once
(``killpg`` of a kernel's process group by an older client, the OOM killer,
a power cut of the session), the cgroup and the state directory stay.
Every name the runtime makes is ``sbk-<owner pid>-<random>``, so a leftover
whose owner pid is gone can be recognised and removed safely; one whose pid
is alive (maybe reused) is left alone.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import time

from .cgroups import CgroupDriver

_NAME = re.compile(r"^sbk-(\d+)-[0-9a-f]+")
STATE_PARENTS = ("/run", "/tmp")


def owner_of(name: str) -> int | None:
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


def owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def orphaned(path: str) -> bool:
    owner = owner_of(os.path.basename(path.rstrip("/")))
    return owner is not None and not owner_alive(owner)


def reap_stale(driver: CgroupDriver, state_parents=None) -> list[str]:
    """Kill and remove orphaned sbk- cgroups and state directories; returns
    what was removed."""
    if state_parents is None:
        # a user who cannot write /run keeps state dirs in its TMPDIR (container.py)
        state_parents = sorted({*STATE_PARENTS, tempfile.gettempdir()})
    removed = [path for path in driver.leftovers() if orphaned(path) and _remove_group(path)]
    for parent in state_parents:
        for name in _listdir(parent):
            path = os.path.join(parent, name)
            if name.startswith("sbk-") and os.path.isdir(path) and orphaned(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def _remove_group(path: str, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in _members(path):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return False
        except OSError:
            time.sleep(0.02)  # EBUSY until the killed members are reaped
    return False


def _members(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as handle:
            return [int(pid) for pid in handle.read().split()]
    except OSError:
        return []


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []
