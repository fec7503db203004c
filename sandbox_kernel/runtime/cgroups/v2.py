"""cgroup v2: one unified hierarchy.

The parent of every group is the cgroup this process runs in (detect.py
finds it), so a delegated subtree (systemd ``Delegate=yes``, a container
with its own cgroup namespace) is used as it is::

    <own cgroup>/                cgroup.subtree_control: +cpu +io +memory +pids
    <own cgroup>/leaf/           this process, once it had to move (below)
    <own cgroup>/sbk-NAME/       one container: memory.max, cpu.max, pids.max,
                                 cpuset.cpus where cpuset is delegated (cpus.py)

The no-internal-process rule: a non-root cgroup that has processes cannot
enable controllers for its children (EBUSY).  Then our own processes move
into a child ``leaf`` first, as systemd and container engines do.
"""
from __future__ import annotations

import errno
import os

from ..spec import Limits
from ..stats import CgroupStats, v2_stats
from . import cpus as cpu_placement
from .base import PREFIX, Cgroup, CgroupDriver, CgroupError
from .files import CgroupDir, check_name, kill_pids, poll_until, remove_when_empty

CONTROLLERS = ("cpu", "io", "memory", "pids", "cpuset")
CPU_PERIOD = 100_000   # microseconds; cpu.max is "quota period"
LEAF = "leaf"
MOVE_ROUNDS = 50       # processes may fork while we move them into leaf

STATS_FILES = {
    None: ("cpu.stat",),     # core file: usage even without the cpu controller
    "memory": ("memory.current", "?memory.peak", "memory.max", "memory.events",
               "?memory.stat"),   # shmem: the writable layer's files are memory
    "cpu": ("cpu.max",),
    "pids": ("pids.current", "?pids.peak", "pids.max", "?pids.events"),
    "io": ("?io.stat",),
}

DELEGATE_FIX = ("run as root, or in a delegated cgroup "
                "(systemd-run --user --scope -p Delegate=yes ...)")


def missing_controller(controller: str, where: str) -> CgroupError:
    return CgroupError(errno.EOPNOTSUPP, f"{controller} controller not available in {where}: "
                       f"enable it in the parent's cgroup.subtree_control "
                       f"(echo +{controller} > .../cgroup.subtree_control) or delegate it")


class V2Driver(CgroupDriver):
    """Makes groups below ``parent``, the directory of our own cgroup."""

    version = "v2"

    def __init__(self, parent: str):
        self.parent = CgroupDir(parent)
        available = self.parent.read_once("cgroup.controllers").split()
        self.controllers = tuple(c for c in CONTROLLERS if c in available)
        self.reason = f"cgroup v2; groups under {parent}"

    def create(self, name: str, limits: Limits) -> Cgroup:
        check_name(name)
        self.enable_controllers()
        path = self.parent.file(name)
        try:
            os.mkdir(path)
        except FileExistsError:
            raise CgroupError(errno.EEXIST, f"{path} exists: a leftover of an earlier "
                                            f"run? destroy it or rmdir {path}") from None
        except OSError as error:
            raise CgroupError(error.errno, f"mkdir {path}: {error.strerror}; {DELEGATE_FIX}") from None
        group = V2Cgroup(name, path, self.controllers)
        try:
            group.set(limits)
        except CgroupError:
            group.destroy()
            raise
        return group

    def enable_controllers(self) -> None:
        """Enable ours in the parent's cgroup.subtree_control, for every group below it."""
        enabled = self.parent.read_once("cgroup.subtree_control").split()
        missing = [c for c in self.controllers if c not in enabled]
        if not missing:
            return
        change = " ".join("+" + c for c in missing)
        try:
            self.parent.write("cgroup.subtree_control", change)
        except CgroupError as error:
            if error.errno != errno.EBUSY:
                raise
            self.move_into_leaf()
            self.parent.write("cgroup.subtree_control", change, DELEGATE_FIX)

    def move_into_leaf(self) -> None:
        """Move every process of the parent into parent/leaf (the
        no-internal-process rule); bounded, since they may fork meanwhile."""
        leaf = CgroupDir(self.parent.file(LEAF))
        try:
            os.makedirs(leaf.path, exist_ok=True)
        except OSError as error:
            raise CgroupError(error.errno, f"mkdir {leaf.path}: {error.strerror}; "
                                           f"{DELEGATE_FIX}") from None
        for _ in range(MOVE_ROUNDS):
            pids = self.parent.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    leaf.write("cgroup.procs", str(pid))
                except CgroupError as error:
                    if error.errno != errno.ESRCH:   # it exited meanwhile
                        raise
        raise CgroupError(errno.EBUSY, f"{self.parent.path} still has processes after "
                                       f"{MOVE_ROUNDS} rounds of moving them into {leaf.path}")

    def leftovers(self) -> list[str]:
        try:
            names = os.listdir(self.parent.path)
        except FileNotFoundError:
            return []
        return sorted(self.parent.file(n) for n in names
                      if n.startswith(PREFIX) and os.path.isdir(self.parent.file(n)))


class V2Cgroup(Cgroup):
    def __init__(self, name: str, path: str, controllers: tuple[str, ...]):
        self.name = name
        self.dir = CgroupDir(path)
        self.controllers = controllers
        self.limits = Limits()
        self._pids_peak_stale = False   # pids.peak could not be reset

    def join_files(self) -> list[str]:
        return [self.dir.file("cgroup.procs")]

    def add(self, pid: int) -> None:
        self.dir.write("cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        return self.dir.pids()

    def set(self, limits: Limits) -> None:
        for controller, wanted in (("memory", limits.memory), ("cpu", limits.cpus),
                                   ("pids", limits.pids)):
            if wanted is not None and controller not in self.controllers:
                raise missing_controller(controller, os.path.dirname(self.dir.path))
        if "memory" in self.controllers:
            self.dir.write("memory.max", _max(limits.memory))
            if self.dir.has("memory.swap.max"):   # absent without swap accounting
                self.dir.write("memory.swap.max", "max" if limits.memory is None else "0")
        if "cpu" in self.controllers:
            quota = "max" if limits.cpus is None else str(round(limits.cpus * CPU_PERIOD))
            self.dir.write("cpu.max", f"{quota} {CPU_PERIOD}")
        if "pids" in self.controllers:
            self.dir.write("pids.max", _max(limits.pids))
        self._place_cpus(limits.cpus)
        self.limits = limits

    def _place_cpus(self, limit: float | None) -> None:
        """Pin the group to ceil(limit) CPUs (cpus.py): through cpuset.cpus
        where the parent delegates cpuset (the kernel applies it to every
        task, also live); else the init binds itself at start, and a live
        change sets the affinity of every thread in the group from here."""
        parent = os.path.dirname(self.dir.path)
        if "cpuset" in self.controllers:
            self.cpus = cpu_placement.placement(
                limit, self.cpus, lambda: cpu_placement.cpuset_use(parent, self.name))
            self.dir.write("cpuset.cpus", cpu_placement.format_list(self.cpus),
                           "the CPUs must be among the parent's cpuset.cpus.effective")
            return
        self.cpus = cpu_placement.placement(
            limit, self.cpus, lambda: cpu_placement.affinity_use(parent, self.name))
        cpu_placement.pin_processes(self.pids(), self.cpus)

    def child_affinity(self) -> list[int] | None:
        if "cpuset" in self.controllers or self.limits.cpus is None:
            return None
        return self.cpus

    def stats(self) -> CgroupStats:
        # a pids peak from before the reset would mislead: not read, so None
        unread = "pids.peak" if self._pids_peak_stale else None
        names = [n for c, files in STATS_FILES.items()
                 if c is None or c in self.controllers for n in files if n.lstrip("?") != unread]
        return v2_stats({n.lstrip("?"): self.dir.read(n) for n in names})

    def reset_peaks(self) -> bool:
        """Write to memory.peak (Linux >= 6.12) and pids.peak, through the
        descriptors stats() reads; True if the memory peak was reset.  A
        pids.peak that cannot be reset is reported as None from then on."""
        if "memory" not in self.controllers:
            return False
        if "pids" in self.controllers:   # absent or refused alike: None from now on
            self._pids_peak_stale = not self.dir.reset("pids.peak")
        return self.dir.reset("memory.peak")

    def freeze(self) -> None:
        self.dir.write("cgroup.freeze", "1")
        if not poll_until(lambda: "frozen 1" in self.dir.read_once("cgroup.events")):
            raise CgroupError(errno.ETIMEDOUT, f"{self.dir.path} did not report 'frozen 1' "
                                               "in cgroup.events in time")

    def thaw(self) -> None:
        self.dir.write("cgroup.freeze", "0")

    def kill(self) -> None:
        if self.dir.has("cgroup.kill"):   # Linux >= 5.14: the kernel kills them all
            self.dir.write("cgroup.kill", "1")
            return
        # Older kernels: freeze so nothing forks between the listing and the kill
        self.freeze()
        try:
            kill_pids(self.dir.pids())
        finally:
            self.thaw()

    def destroy(self) -> None:
        try:
            if self.dir.present():
                self.kill()
                remove_when_empty([self.dir], self.kill)
        except CgroupError as error:
            if error.errno not in (errno.ENOENT, errno.ENODEV):   # removed meanwhile
                raise
        finally:
            self.dir.close()


def _max(value: int | None) -> str:
    return "max" if value is None else str(value)
