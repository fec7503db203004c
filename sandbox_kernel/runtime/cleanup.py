"""Remove what dead owners left behind.

A container's launcher cleans up when its owner dies.  If both die at once
(``killpg`` of a kernel's process group by an older client, the OOM killer,
a power cut of the session), the cgroup and the state directory stay.
Every name the runtime makes is ``sbk-<owner pid>-<random>``, so a leftover
whose owner pid is gone can be recognised and removed safely; one whose pid
is alive (maybe reused) is left alone.

State directories are looked for in /run and the temp dir, where any local
user can make an ``sbk-<pid>-x`` of their own: a deep tree, a symlink to a
directory of root's.  So only real directories (lstat: never a symlink)
owned by the caller are touched, only in parents where other users cannot
rename entries under us (root's, or sticky as /tmp), and a tree is removed
by ``safe_fs.remove_tree`` (no recursion, no symlink followed, no mount
entered).  One entry that cannot go is logged and skipped: a container's
start never fails because of what another one left.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import stat
import tempfile
import time

from . import safe_fs
from .cgroups import CgroupDriver

log = logging.getLogger(__name__)

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
        removed += _reap_state_dirs(parent)
    return removed


def remove_state_dir(path: str) -> bool:
    """Remove a container's state directory, whatever the container left in
    it; what cannot go is logged (safe_fs) and False returned, never raised."""
    return not safe_fs.remove_tree(path)


def _reap_state_dirs(parent: str) -> list[str]:
    """The orphaned state dirs of this user in ``parent`` that were removed."""
    try:
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return []
    removed = []
    try:
        if not _entries_stay_put(parent_fd, parent):
            return []
        for name in _listdir(parent_fd):
            if name.startswith("sbk-") and _ours_and_orphaned(parent_fd, parent, name) \
                    and _remove_state_entry(parent_fd, parent, name):
                removed.append(os.path.join(parent, name))
    finally:
        os.close(parent_fd)
    return removed


def _remove_state_entry(parent_fd: int, parent: str, name: str) -> bool:
    """remove_tree reports what it cannot remove; anything else is logged
    here: one bad entry never stops a container's start."""
    try:
        return not safe_fs.remove_tree(name, dir_fd=parent_fd)
    except OSError as error:
        log.warning("could not remove %s: %s", os.path.join(parent, name), error)
        return False


def _entries_stay_put(parent_fd: int, parent: str) -> bool:
    """Whether only we (or root) can rename or replace our entries in parent:
    it is ours or root's, and others cannot write it, or it is sticky (/tmp)."""
    info = os.fstat(parent_fd)
    if info.st_uid not in (0, os.geteuid()):
        log.warning("not reaping state dirs in %s: it belongs to uid %d", parent, info.st_uid)
        return False
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        log.warning("not reaping state dirs in %s: others can write it and it is not sticky", parent)
        return False
    return True


def _ours_and_orphaned(parent_fd: int, parent: str, name: str) -> bool:
    """A real directory (not a symlink to one), owned by us, whose owner pid is gone."""
    owner = owner_of(name)
    if owner is None or owner_alive(owner):
        return False
    try:
        info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except OSError as error:
        log.warning("skipping %s: lstat failed: %s", os.path.join(parent, name), error.strerror)
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()


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


def _listdir(directory: int | str) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []
