"""Which cgroup driver this host gives us: v2, v1 or null.

Detect, never assume: the answer comes from this process's mounts
(/proc/self/mountinfo), its groups (/proc/self/cgroup) and which of those
it may write to, never from a fixed /sys/fs/cgroup.

- v2 is possible when a cgroup2 is mounted and our own v2 group is writable
  (root, or a delegated subtree); its controllers are those listed in our
  group's cgroup.controllers.
- v1 is possible when hierarchies with memory, cpu, cpuacct, pids, blkio or
  freezer are mounted and our own group in them is writable.
- The one with the memory controller wins, then the one with more
  controllers, v2 on a tie.  A hybrid host (v1 controllers beside an empty
  cgroup2 at /sys/fs/cgroup/unified) so picks v1: its cgroup2 has none.
- A writable v2 group without controllers still beats nothing (freeze,
  kill, cpu time); else null, whose reason says what was missing.
- A user's process inside a delegated ceiling (delegation.py) finds its
  own group writable and makes its containers there, under the ceiling, on
  v2 and v1 alike.  v1's cpu controller refuses (EINVAL) a child quota above
  an ancestor's, where v2 just lets the ancestor bound it: so on v1 under a
  CPU quota (a ceiling, a container engine's limit) a container's CPU limit
  is capped at that quota (``CappedV1Driver``) instead of failing to start.

``proc_root`` and ``root`` (what mount points are relative to) are
parameters so that tests run against a fake cgroupfs in a temp dir.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from ..spec import Limits
from .base import Cgroup, CgroupDriver, CgroupError
from .null import NullDriver
from .v1 import CONTROLLERS as V1_CONTROLLERS
from .v1 import CPU_PERIOD as V1_CPU_PERIOD
from .v1 import V1Cgroup, V1Driver
from .v2 import LEAF, V2Driver

DELEGATE_HINT = ("not root and no delegated cgroup v2 subtree "
                 "(run as root, or under systemd-run --user --scope -p Delegate=yes)")


@dataclass(frozen=True)
class CgroupMount:
    fstype: str              # "cgroup" (v1) or "cgroup2"
    root: str                # the group of the hierarchy that is mounted here
    mount_point: str
    options: frozenset[str]  # super options; a v1 mount's controllers are among them


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """The cgroup and cgroup2 mounts of a /proc/PID/mountinfo text."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        separator = fields.index("-", 6)   # after a varying number of optional fields
        fstype = fields[separator + 1]
        if fstype in ("cgroup", "cgroup2"):
            options = frozenset(fields[separator + 3].split(","))
            mounts.append(CgroupMount(fstype, _unescape(fields[3]), _unescape(fields[4]), options))
    return mounts


def _unescape(path: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for escaped, plain in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(escaped, plain)
    return path


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/PID/cgroup -> {controller: path}; the v2 line "0::/x" is key ""."""
    membership = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                membership[controller] = parts[2]
    return membership


def group_dir(mount: CgroupMount, path: str, root: str = "/") -> str | None:
    """Directory of group ``path`` under ``mount``; None if not mounted there."""
    relative = os.path.relpath(path, mount.root)
    if relative == ".." or relative.startswith("../"):
        return None
    return os.path.normpath(os.path.join(root, mount.mount_point.lstrip("/"), relative))


def _writable(directory: str, names: tuple[str, ...]) -> bool:
    return os.access(directory, os.W_OK) and all(
        os.access(os.path.join(directory, n), os.W_OK) for n in names)


def _not_writable(directory: str) -> str:
    why = DELEGATE_HINT if os.geteuid() != 0 else "the cgroup file system is mounted read-only"
    return f"{directory} is not writable: {why}"


def v2_candidate(mounts: list[CgroupMount], membership: dict[str, str],
                 root: str = "/") -> V2Driver | str:
    """A V2Driver for our own v2 group, or why there is none."""
    if "" not in membership:
        return "cgroup v2: this process is in no v2 group (no 0:: line in /proc/self/cgroup)"
    path = membership[""]
    if os.path.basename(path) == LEAF:   # V2Driver moved us there: its parent is ours
        path = os.path.dirname(path)
    for mount in (m for m in mounts if m.fstype == "cgroup2"):
        directory = group_dir(mount, path, root)
        if directory is None or not os.path.isdir(directory):
            continue
        if not _writable(directory, ("cgroup.procs", "cgroup.subtree_control")):
            return "cgroup v2: " + _not_writable(directory)
        try:
            return V2Driver(directory)
        except CgroupError as error:
            return f"cgroup v2: {error.strerror}"
    return f"cgroup v2: no cgroup2 mount shows our group {path}"


def v1_candidate(mounts: list[CgroupMount], membership: dict[str, str],
                 root: str = "/") -> V1Driver | str:
    """A V1Driver for our own group in each v1 hierarchy, or why there is none."""
    parents: dict[str, str] = {}
    refused = []
    for mount in (m for m in mounts if m.fstype == "cgroup"):
        for controller in sorted(mount.options & set(V1_CONTROLLERS)):
            if controller in parents or controller not in membership:
                continue
            directory = group_dir(mount, membership[controller], root)
            if directory is None or not os.path.isdir(directory):
                continue
            if _writable(directory, ("cgroup.procs",)):
                parents[controller] = directory
            else:
                refused.append(directory)
    if parents:
        quota = ancestor_cpu_quota(parents["cpu"]) if "cpu" in parents else None
        return V1Driver(parents) if quota is None else CappedV1Driver(parents, quota)
    if refused:
        return "cgroup v1: " + _not_writable(refused[0])
    return "cgroup v1: no memory, cpu, pids, blkio or freezer hierarchy is mounted"


def detect_driver(proc_root: str = "/proc", root: str = "/") -> CgroupDriver:
    """The driver for this process on this host (see the module docstring)."""
    try:
        with open(os.path.join(proc_root, "self", "mountinfo"), encoding="utf-8") as file:
            mounts = parse_mountinfo(file.read())
        with open(os.path.join(proc_root, "self", "cgroup"), encoding="utf-8") as file:
            membership = parse_proc_cgroup(file.read())
    except OSError as error:
        return NullDriver(f"cannot read {error.filename}: {error.strerror} (is /proc mounted?)")
    v2 = v2_candidate(mounts, membership, root)
    v1 = v1_candidate(mounts, membership, root)
    usable = [d for d in (v2, v1) if isinstance(d, CgroupDriver) and d.controllers]
    if usable:
        return max(usable, key=lambda d: ("memory" in d.controllers, len(d.controllers)))
    if isinstance(v2, V2Driver):
        return v2
    reasons = [c if isinstance(c, str) else f"cgroup {c.version}: no controllers" for c in (v2, v1)]
    return NullDriver("; ".join(reasons))


def ancestor_cpu_quota(directory: str) -> float | None:
    """The smallest CPU quota (cores) of ``directory`` and its ancestors in a v1
    cpu hierarchy, or None when none has one; walks up while the files exist."""
    smallest = None
    while directory != "/" and os.path.exists(os.path.join(directory, "cpu.cfs_quota_us")):
        try:
            with open(os.path.join(directory, "cpu.cfs_quota_us"), encoding="ascii") as file:
                quota = int(file.read())
            with open(os.path.join(directory, "cpu.cfs_period_us"), encoding="ascii") as file:
                period = int(file.read())
        except (OSError, ValueError):
            break
        if quota > 0 and period > 0:
            cores = quota / period
            smallest = cores if smallest is None else min(smallest, cores)
        directory = os.path.dirname(directory)
    return smallest


def _capped(limits: Limits, cores: float) -> Limits:
    if limits.cpus is None or limits.cpus <= cores:
        return limits
    # a quota of exactly the ancestor's: rounded down to whole microseconds of the period
    return dataclasses.replace(limits, cpus=int(cores * V1_CPU_PERIOD) / V1_CPU_PERIOD)


class CappedV1Cgroup(V1Cgroup):
    """A v1 group whose CPU limit is capped at its ancestors' quota, also live."""

    cap: float

    def set(self, limits: Limits) -> None:
        super().set(_capped(limits, self.cap))


class CappedV1Driver(V1Driver):
    """V1Driver under an ancestor's CPU quota: asks above it get the quota."""

    def __init__(self, parents: dict[str, str], cap: float):
        super().__init__(parents)
        self.cap = cap
        self.reason += f"; CPU limits capped at {cap:g} (an ancestor's quota)"

    def create(self, name: str, limits: Limits) -> Cgroup:
        group = super().create(name, _capped(limits, self.cap))
        # the same object, now capping its live changes too (V1Driver builds a plain V1Cgroup)
        group.__class__ = CappedV1Cgroup
        group.cap = self.cap
        return group
