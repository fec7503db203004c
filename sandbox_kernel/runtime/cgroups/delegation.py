"""Per-user ceilings: a cgroup subtree delegated to a user, with limits the
user cannot lift (``sandbox-kernel delegate USER --memory 4G --cpus 2``).

The same tree on v2 (one hierarchy) and v1 (in every mounted hierarchy of
memory, cpu, cpuacct, pids, blkio, freezer, cpuset)::

    <root>/sandbox-kernel-users/              root's, no processes
    <root>/sandbox-kernel-users/USER/         root's: the ceiling's limit files
    <root>/sandbox-kernel-users/USER/user/    the user's (delegated)
    <root>/sandbox-kernel-users/USER/user/server/   the user's: enter() puts a
                                              process (a single-user server) here

``<root>`` is the hierarchy's mount point, not the caller's own cgroup, so
every root process (a hub, ``top``, a later ``delegate``) finds the same tree.

Delegation follows the kernel's rules.  v2 (Documentation/admin-guide/
cgroup-v2.rst, "Model of Delegation"): the user gets write access to the
directory and its ``cgroup.procs``, ``cgroup.threads`` and
``cgroup.subtree_control``; the resource files of a directory distribute
the parent's resources and stay root's.  v1: ownership of the directory,
``cgroup.procs`` and ``tasks`` (the chown delegation of cgroup-v1); the
ceiling is written one level up, in a group the user does not own.  Limits
are hierarchical, so nothing the user makes below can exceed them: memory
(swap included), pids and CPU time.

Users cannot see each other's: the base can be passed but not listed (0711),
a ceiling's directory is root's with the user's group (0710).

Nothing here is named ``sbk-``: the reaper and the leftover checks, which
own that prefix, never touch a ceiling.  Imports: the drivers' file helpers
and their stats readers.
"""
from __future__ import annotations

import errno
import os
import pwd
import re
from dataclasses import dataclass

from ..stats import CgroupStats
from . import teardown
from .base import CgroupError
from .detect import CgroupMount, parse_mountinfo
from .files import CgroupDir
from .v1 import CONTROLLERS as V1_CONTROLLERS
from .v1 import V1Cgroup
from .v2 import CONTROLLERS as V2_CONTROLLERS
from .v2 import LEAF as V2_LEAF
from .v2 import V2Cgroup

BASE = "sandbox-kernel-users"
DELEGATED = "user"
SERVER = "server"
UNIFIED = "unified"          # the key of the one v2 hierarchy in the path maps
CPU_PERIOD = 100_000         # microseconds, as the drivers use
MAX_DEPTH = "32"             # v2 cgroup.max.depth of a ceiling: a user's tree stays shallow
_USER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
DELEGATED_FILES = {"v2": ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control"),
                   "v1": ("cgroup.procs", "tasks")}


class DelegationError(CgroupError):
    """A ceiling could not be made, read, entered or removed; one line says why."""


@dataclass(frozen=True)
class CeilingUsage:
    memory: int | None        # bytes now: every process and container of the user
    memory_peak: int | None
    pids: int | None
    cpu_seconds: float | None
    oom_kills: int | None


@dataclass(frozen=True)
class Ceiling:
    user: str
    uid: int
    gid: int
    memory: int | None        # bytes; None: no ceiling on it
    cpus: float | None        # cores
    pids: int | None
    version: str              # "v1" | "v2"
    groups: dict              # where the ceiling is written: {"unified": dir} | {controller: dir}
    delegated: dict           # the user's group below it, same keys

    def server(self) -> dict:
        """The leaf a single-user server is entered into, same keys."""
        return {key: os.path.join(path, SERVER) for key, path in self.delegated.items()}

    def usage(self) -> CeilingUsage | None:
        """Live figures of everything under the ceiling; None once it is gone."""
        figures = _read_stats(self.version, self.groups)
        if figures is None:
            return None
        # v1 counts an OOM kill in the victim's own group only: at the ceiling it would say 0
        kills = figures.oom_kills if self.version == "v2" else None
        return CeilingUsage(figures.memory_current, figures.memory_peak, figures.pids_current,
                            figures.cpu_usage, kills)


# -- where the hierarchies are ------------------------------------------------

def hierarchies(proc_root: str = "/proc") -> tuple[str, dict[str, str]]:
    """("v2", {"unified": mount point}) or ("v1", {controller: mount point}):
    where ceilings go on this host.  As detect.py: the one with memory wins."""
    try:
        with open(os.path.join(proc_root, "self", "mountinfo"), encoding="utf-8") as file:
            mounts = parse_mountinfo(file.read())
    except OSError as error:
        raise DelegationError(error.errno, f"reading {error.filename}: {error.strerror}") from None
    unified = next((m.mount_point for m in mounts if m.fstype == "cgroup2"
                    and "memory" in _controllers_at(m.mount_point)), None)
    if unified is not None:
        return "v2", {UNIFIED: unified}
    roots = _v1_roots(mounts)
    if "memory" not in roots:
        raise DelegationError(errno.EOPNOTSUPP, "no cgroup hierarchy with the memory controller "
                              "is mounted: mount cgroup2 (or v1 memory) at /sys/fs/cgroup")
    return "v1", roots


def _controllers_at(directory: str) -> list[str]:
    try:
        with open(os.path.join(directory, "cgroup.controllers"), encoding="ascii") as file:
            return file.read().split()
    except OSError:
        return []


def _v1_roots(mounts: list[CgroupMount]) -> dict[str, str]:
    roots: dict[str, str] = {}
    for mount in (m for m in mounts if m.fstype == "cgroup"):
        for controller in sorted(mount.options & set(V1_CONTROLLERS)):
            roots.setdefault(controller, mount.mount_point)
    return {c: roots[c] for c in V1_CONTROLLERS if c in roots}


def _paths(roots: dict[str, str], *parts: str) -> dict[str, str]:
    return {key: os.path.join(root, BASE, *parts) for key, root in roots.items()}


def _distinct(paths: dict[str, str]) -> list[str]:
    """Co-mounted controllers (cpu,cpuacct) share a directory: each once."""
    return list(dict.fromkeys(paths.values()))


# -- who ----------------------------------------------------------------------

def _account(user: str) -> pwd.struct_passwd:
    """The password entry of a login name or numeric uid; refuses root."""
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise DelegationError(errno.ENOENT, f"no such user {user!r} (a login name or uid "
                                            "from the password database)") from None
    if entry.pw_uid == 0:
        raise DelegationError(errno.EINVAL, "root needs no ceiling: delegate to a user who is not root")
    if not _USER_NAME.match(entry.pw_name):
        raise DelegationError(errno.EINVAL, f"user name {entry.pw_name!r} cannot name a cgroup: "
                                            "letters, digits, '_', '.', '-' only")
    return entry


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise DelegationError(errno.EPERM, f"{what} needs root: only root can make, enter or "
                                           "remove a user's ceiling")


# -- delegate -----------------------------------------------------------------

def delegate(user: str, memory: int | None = None, cpus: float | None = None,
             pids: int | None = None) -> Ceiling:
    """Make (or change, live) the user's ceiling; root only.  Returns it as read back."""
    _need_root("delegate")
    entry = _account(user)
    version, roots = hierarchies()
    for root in _distinct(roots):
        _prepare_tree_retrying(version, root, entry)
    groups = _paths(roots, entry.pw_name)
    _write_ceiling(version, groups, memory, cpus, pids)
    ceiling = ceiling_of(entry.pw_uid)
    if ceiling is None:
        raise DelegationError(errno.EIO, f"the ceiling of {entry.pw_name} was made but cannot "
                                         f"be read back from {_distinct(groups)[0]}")
    return ceiling


def _prepare_tree_retrying(version: str, root: str, entry: pwd.struct_passwd) -> None:
    """A remove() of another user may rmdir the shared base between our mkdirs."""
    for attempt in range(3):
        try:
            return _prepare_tree(version, root, entry)
        except DelegationError as error:
            if error.errno != errno.ENOENT or attempt == 2:
                raise
    return None


def _prepare_tree(version: str, root: str, entry: pwd.struct_passwd) -> None:
    """base/ and base/USER/ root's, base/USER/user/ the user's, controllers on the way."""
    base = os.path.join(root, BASE)
    ceiling = os.path.join(base, entry.pw_name)
    delegated = os.path.join(ceiling, DELEGATED)
    if version == "v2":
        _enable_controllers(root)
    for directory in (base, ceiling, delegated):
        _make_group(directory, version)
        if version == "v2":
            _enable_controllers(directory)
    _close_to_others(base, ceiling, entry.pw_gid)
    if version == "v2":
        _write(CgroupDir(ceiling), "cgroup.max.depth", MAX_DEPTH)
    _hand_over(delegated, version, entry.pw_uid, entry.pw_gid)


def _close_to_others(base: str, ceiling: str, gid: int) -> None:
    """Students must not see each other's cgroups: the base may be passed but not
    listed, a ceiling is entered by its own user (its group) and root only."""
    try:
        os.chmod(base, 0o711)
        os.chown(ceiling, 0, gid)
        os.chmod(ceiling, 0o710)
    except OSError as error:
        raise DelegationError(error.errno, f"chmod/chown {error.filename}: {error.strerror}") from None


def _make_group(directory: str, version: str) -> None:
    try:
        os.mkdir(directory, 0o755)
    except FileExistsError:
        if os.path.islink(directory) or not os.path.isdir(directory):
            raise DelegationError(errno.EEXIST, f"{directory} exists and is not a cgroup "
                                                "directory") from None
        return
    except OSError as error:
        raise DelegationError(error.errno, f"mkdir {directory}: {error.strerror}") from None
    if version == "v1" and os.path.exists(os.path.join(directory, "cpuset.cpus")):
        _copy_cpuset(directory)


def _copy_cpuset(directory: str) -> None:
    """A new v1 cpuset has no CPUs and no memory nodes, and nothing may join it
    until both are set: the parent's, so the ceiling's CPU limit is the quota."""
    parent = CgroupDir(os.path.dirname(directory))
    group = CgroupDir(directory)
    for name in ("cpuset.cpus", "cpuset.mems"):
        _write(group, name, parent.read_once(name).strip())


def _enable_controllers(directory: str) -> None:
    group = CgroupDir(directory)
    available = set(group.read_once("cgroup.controllers").split())
    enabled = set(group.read_once("cgroup.subtree_control").split())
    missing = [c for c in V2_CONTROLLERS if c in available and c not in enabled]
    if missing:
        _write(group, "cgroup.subtree_control", " ".join("+" + c for c in missing))


def _hand_over(directory: str, version: str, uid: int, gid: int) -> None:
    """chown the directory and the delegation files, never the limit files."""
    for path in [directory] + [os.path.join(directory, n) for n in DELEGATED_FILES[version]]:
        try:
            os.chown(path, uid, gid, follow_symlinks=False)
        except FileNotFoundError:
            if not path.endswith("cgroup.threads"):   # absent before Linux 4.14
                raise DelegationError(errno.ENOENT, f"chown {path}: missing") from None
        except OSError as error:
            raise DelegationError(error.errno, f"chown {path}: {error.strerror}") from None


def _write(group: CgroupDir, name: str, value: str, fix: str = "") -> None:
    try:
        group.write(name, value, fix)
    except CgroupError as error:
        raise DelegationError(error.errno, error.strerror) from None


def _write_ceiling(version: str, groups: dict[str, str], memory: int | None,
                   cpus: float | None, pids: int | None) -> None:
    if version == "v2":
        group = CgroupDir(groups[UNIFIED])
        _write(group, "memory.max", _max(memory), "the user already uses more than that")
        if group.has("memory.swap.max"):
            _write(group, "memory.swap.max", "max" if memory is None else "0")
        _write_if_there(group, "cpu.max", f"{_quota(cpus, 'max')} {CPU_PERIOD}", cpus)
        _write_if_there(group, "pids.max", _max(pids), pids)
        return
    _write_v1_memory(CgroupDir(groups["memory"]), memory)
    cpu = CgroupDir(groups.get("cpu", os.path.join(groups["memory"], "no-cpu-hierarchy")))
    _write_if_there(cpu, "cpu.cfs_period_us", str(CPU_PERIOD), cpus)
    _write_if_there(cpu, "cpu.cfs_quota_us", _quota(cpus, "-1"), cpus,
                    "v1 refuses a ceiling below a container's own CPU quota inside it")
    pids_dir = CgroupDir(groups.get("pids", os.path.join(groups["memory"], "no-pids-hierarchy")))
    _write_if_there(pids_dir, "pids.max", _max(pids), pids)


def _write_if_there(group: CgroupDir, name: str, value: str, wanted, fix: str = "") -> None:
    """A limit file of a controller this host may lack: absent and not asked for
    is fine (nothing to lift); asked for, it is an error, never a silent no-limit."""
    if group.has(name):
        _write(group, name, value, fix)
    elif wanted is not None:
        controller = name.split(".")[0]
        raise DelegationError(errno.EOPNOTSUPP, f"no {controller} controller for the ceiling "
                                                f"({group.file(name)} is missing): enable or "
                                                f"mount {controller}, or leave that ceiling out")


def _write_v1_memory(group: CgroupDir, memory: int | None) -> None:
    """memory.limit_in_bytes, and memsw (swap included) where accounted; the
    kernel keeps memsw >= limit at every step, so the order depends on the way."""
    value = "-1" if memory is None else str(memory)
    names = ["memory.limit_in_bytes"]
    if group.has("memory.memsw.limit_in_bytes"):
        names.append("memory.memsw.limit_in_bytes")
        current = int(group.read_once("memory.limit_in_bytes"))
        if memory is None or memory > current:
            names.reverse()
    for name in names:
        _write(group, name, value, "EBUSY: the user already uses more than that")


def _max(value: int | None) -> str:
    return "max" if value is None else str(value)


def _quota(cpus: float | None, unlimited: str) -> str:
    return unlimited if cpus is None else str(max(1000, round(cpus * CPU_PERIOD)))


# -- read ---------------------------------------------------------------------

def ceiling_of(uid: int) -> Ceiling | None:
    """The ceiling delegated to ``uid``, or None; anyone may ask (files are readable)."""
    try:
        entry = pwd.getpwuid(uid)
        version, roots = hierarchies()
    except (KeyError, DelegationError):
        return None
    if not _USER_NAME.match(entry.pw_name):
        return None
    groups = _paths(roots, entry.pw_name)
    delegated = _paths(roots, entry.pw_name, DELEGATED)
    if not all(_owned_by(path, uid) for path in _distinct(delegated)):
        return None
    figures = _read_stats(version, groups)
    if figures is None:
        return None
    return Ceiling(entry.pw_name, uid, entry.pw_gid, figures.memory_limit, figures.cpu_limit,
                   figures.pids_limit, version, groups, delegated)


def _owned_by(path: str, uid: int) -> bool:
    try:
        return os.lstat(path).st_uid == uid
    except OSError:
        return False


def _read_stats(version: str, groups: dict[str, str]) -> CgroupStats | None:
    """The drivers' own readers over the ceiling's group: limits and usage."""
    try:
        if version == "v2":
            path = groups[UNIFIED]
            group = V2Cgroup(BASE, path, tuple(_controllers_at(path)))
            dirs = [group.dir]
        else:
            group = V1Cgroup(BASE, groups)
            dirs = group.hierarchies
    except OSError:
        return None
    try:
        return group.stats()
    except OSError:
        return None
    finally:
        for directory in dirs:
            directory.close()


def ceilings() -> list[Ceiling]:
    """Every delegated user's ceiling on this host, by user name."""
    try:
        _version, roots = hierarchies()
    except DelegationError:
        return []
    base = os.path.join(next(iter(roots.values())), BASE)
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return []
    found = []
    for name in names:
        try:
            uid = os.lstat(os.path.join(base, name, DELEGATED)).st_uid
        except OSError:
            continue
        ceiling = ceiling_of(uid)
        if ceiling is not None and ceiling.user == name:
            found.append(ceiling)
    return found


# -- enter ----------------------------------------------------------------------

def enter(ceiling: Ceiling, pid: int = 0) -> None:
    """Root: move process ``pid`` (0: the caller) into the user's server leaf,
    made if missing.  Only os calls, so it is safe in a preexec_fn."""
    _need_root("enter")
    for server in _distinct(ceiling.server()):
        if not os.path.isdir(os.path.dirname(server)):
            raise DelegationError(errno.ENOENT, f"{os.path.dirname(server)} is gone: was the "
                                                f"ceiling of {ceiling.user} removed?")
        target = _entry_group(server, ceiling)
        _write(CgroupDir(target), "cgroup.procs", str(pid))


def _entry_group(server: str, ceiling: Ceiling) -> str:
    """server/, made and handed over if missing; on v2, server/leaf once the
    runtime enabled controllers below server/ for its containers (then, by the
    no-internal-process rule, server/ itself can take no process: EBUSY)."""
    _make_group(server, ceiling.version)
    _hand_over(server, ceiling.version, ceiling.uid, ceiling.gid)
    if ceiling.version != "v2" or not CgroupDir(server).read_once("cgroup.subtree_control").split():
        return server
    leaf = os.path.join(server, V2_LEAF)
    _make_group(leaf, ceiling.version)
    _hand_over(leaf, ceiling.version, ceiling.uid, ceiling.gid)
    return leaf


# -- remove ---------------------------------------------------------------------

def remove(user: str) -> bool:
    """Root: kill what is left under the user's ceiling and remove every group
    of it, bottom-up.  False if there was none."""
    _need_root("remove")
    entry = _account(user)
    _version, roots = hierarchies()
    tops = [p for p in _distinct(_paths(roots, entry.pw_name)) if os.path.isdir(p)]
    if not tops:
        return False
    freezer = _paths(roots, entry.pw_name).get("freezer")
    if freezer is not None and os.path.isdir(freezer):
        teardown.kill_frozen(freezer)
    try:
        for top in tops:
            teardown.empty_and_remove(top)
            _remove_if_unused(os.path.dirname(top))
    except CgroupError as error:
        raise DelegationError(error.errno, f"removing the ceiling of {entry.pw_name}: "
                                           f"{error.strerror}") from None
    return True


def _remove_if_unused(base: str) -> None:
    """The shared base goes with its last user; another user's ceiling keeps it."""
    try:
        os.rmdir(base)
    except OSError as error:
        if error.errno not in (errno.EBUSY, errno.ENOTEMPTY, errno.ENOENT):
            raise DelegationError(error.errno, f"rmdir {base}: {error.strerror}") from None
