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

The image store's work directories (``tmp/sbk-<pid>-<kind>-<hex>`` of an
import, pull or build, and ``sbk-<pid>-image-<hex>.json``) are swept the
same way, by every store command and by ``reap_stale``: an import killed
mid-way leaves nothing once the next one runs (issue 15).

``--net bridge`` leaves more on a dead owner's behalf: its resolver (a
dnsmasq), its nftables chains, sets and map elements, maybe its veth, and
the bridge once nobody uses it.  Their records are in net_records.RUN_DIR,
named by the container: ``reap_stale`` hands them to ``net_bridge.reap_stale``
(imported only when that directory holds a record or the bridge exists, so
a host with no bridge container now never imports pyroute2).

Imports: safe_fs, cgroups and image_basics (store_root); net_bridge inside
``_reap_networks``.
"""
from __future__ import annotations

import os
import re
import signal
import stat
import tempfile
import time

from . import safe_fs
from .cgroups import CgroupDriver
from .image_basics import store_root


def _log():
    """The module's logger; logging (~3 ms) is imported only when something
    is to be said: a start from `sandbox-kernel run` says nothing."""
    import logging
    return logging.getLogger(__name__)


_NAME = re.compile(r"^sbk-(\d+)-[0-9a-f]+")
# the store's work in progress: sbk-<pid>-<kind>-<hex>, or its image file sbk-<pid>-image-<hex>.json
_STORE_WORK = re.compile(r"^sbk-(\d+)-[a-z]+-[0-9a-f]+(?:\.json)?$")
STATE_PARENTS = ("/run", "/tmp")


def owner_of(name: str) -> int | None:
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


def owner_alive(pid: int) -> bool:
    """True while the process can still clean up after itself: not gone, not a
    zombie (an owner killed with its user's ceiling stays one until its parent
    reaps it, and never removes anything again)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat_line = handle.read()
    except OSError:
        return False   # no /proc (or it went): kill() said it exists
    # the state follows the command's closing parenthesis (the command may hold any byte)
    return stat_line[stat_line.rfind(b")") + 2:][:1] == b"Z"


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
    return removed + _reap_own_store() + _reap_networks()


NET_RUN_DIR = "/run/sandbox-kernel-net"   # net_records.RUN_DIR (that module imports this one)
NET_BRIDGE = "sbk-br0"                     # net_records.BRIDGE


def _reap_networks() -> list[str]:
    """A dead owner's --net bridge pieces; root's only (they are root's)."""
    if os.geteuid() != 0 or not _networks_recorded():
        return []
    from . import net_bridge
    try:
        return net_bridge.reap_stale(orphaned)
    except OSError as error:   # NetError, NetFilterError: logged, a start never fails for it
        _log().warning("could not remove a dead owner's bridge network: %s", error)
        return []


def _networks_recorded() -> bool:
    """Whether the sweep could find anything: a container's or the bridge's
    record in NET_RUN_DIR, or the bridge itself (made before its record).
    When there is none (the lock file at most: every bridge container has
    ended), the sweep is skipped: importing net_bridge and its thread cost
    a start 5-16 ms, and the joined thread made the next fork wait."""
    try:
        names = os.listdir(NET_RUN_DIR)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:   # EACCES and the like: let the sweep say what it is
        return True
    return any(name.endswith(".json") for name in names) or \
        os.path.lexists(f"/sys/class/net/{NET_BRIDGE}")


def _reap_own_store() -> list[str]:
    """The work left in the current user's image store (SANDBOX_KERNEL_IMAGES
    respected) by imports, pulls and builds that died: one listdir of its
    tmp/, and never an error that could fail a container's start."""
    try:
        return reap_store_work(os.path.join(store_root(), "tmp"))
    except (OSError, ValueError) as error:
        _log().warning("could not sweep the image store's work directories: %s", error)
        return []


def reap_store_work(tmp_dir: str) -> list[str]:
    """Remove the work directories (and image temp files) in a store's
    ``tmp_dir`` whose process is gone and that belong to the caller; returns
    what was removed.  Cheap when there is nothing: one listdir."""
    return _reap_state_dirs(tmp_dir, _store_work_owner, files_too=True, quiet=True)


def _store_work_owner(name: str) -> int | None:
    match = _STORE_WORK.match(name)
    return int(match.group(1)) if match else None


def reap_state_dirs_of(uid: int, parents=None) -> list[str]:
    """Root: remove another user's container state directories whose owner
    process is gone (a kernel killed with its user's ceiling before it could
    remove them: `delegate --remove`, a hub server's stop).  Real directories
    owned by ``uid`` only; their contents go by safe_fs, no link followed."""
    removed = []
    for parent in parents or sorted({*STATE_PARENTS, tempfile.gettempdir()}):
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            owner = owner_of(name)
            if owner is None or owner_alive(owner):
                continue
            path = os.path.join(parent, name)
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(info.st_mode) and info.st_uid == uid and remove_state_dir(path):
                removed.append(path)
    return removed


def remove_state_dir(path: str) -> bool:
    """Remove a container's state directory, whatever the container left in
    it; what cannot go is logged (safe_fs) and False returned, never raised."""
    return not safe_fs.remove_tree(path)


def _reap_state_dirs(parent: str, owner=owner_of, *, files_too: bool = False,
                     quiet: bool = False) -> list[str]:
    """The orphaned state dirs of this user in ``parent`` that were removed
    (``owner(name)``: the pid a name says made it, None if not ours;
    ``files_too``: regular files so named go as well; ``quiet``: a parent
    we must not sweep is skipped without a warning, as another user's store
    is by a command that only lists it)."""
    try:
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return []
    removed = []
    try:
        if not _entries_stay_put(parent_fd, parent, quiet):
            return []
        for name in _listdir(parent_fd):
            if name.startswith("sbk-") and _ours_and_orphaned(parent_fd, parent, name, owner, files_too) \
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
        _log().warning("could not remove %s: %s", os.path.join(parent, name), error)
        return False


def _entries_stay_put(parent_fd: int, parent: str, quiet: bool = False) -> bool:
    """Whether only we (or root) can rename or replace our entries in parent:
    it is ours or root's, and others cannot write it, or it is sticky (/tmp)."""
    info = os.fstat(parent_fd)
    if quiet and (info.st_uid not in (0, os.geteuid()) or info.st_mode & 0o022
                  and not info.st_mode & stat.S_ISVTX):
        return False
    if info.st_uid not in (0, os.geteuid()):
        _log().warning("not reaping state dirs in %s: it belongs to uid %d", parent, info.st_uid)
        return False
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        _log().warning("not reaping state dirs in %s: others can write it and it is not sticky", parent)
        return False
    return True


def _ours_and_orphaned(parent_fd: int, parent: str, name: str, owner_of_name=owner_of,
                       files_too: bool = False) -> bool:
    """A real directory (not a symlink to one; or a regular file, if
    ``files_too``), owned by us, whose owner pid is gone."""
    owner = owner_of_name(name)
    if owner is None or owner == os.getpid() or owner_alive(owner):
        return False
    try:
        info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except OSError as error:
        _log().warning("skipping %s: lstat failed: %s", os.path.join(parent, name), error.strerror)
        return False
    kind_ok = stat.S_ISDIR(info.st_mode) or files_too and stat.S_ISREG(info.st_mode)
    return kind_ok and info.st_uid == os.geteuid()


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
