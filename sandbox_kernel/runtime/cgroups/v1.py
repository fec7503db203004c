"""cgroup v1: one hierarchy per controller, or a few co-mounted ("cpu,cpuacct").

In each mounted hierarchy the parent is this process's own cgroup there
(detect.py reads both from /proc/self), so a host that puts us in
memory:/process_api/ID gets memory:/process_api/ID/sbk-NAME, not a group
under the root::

    /sys/fs/cgroup/memory/process_api/ID/sbk-NAME/   memory.limit_in_bytes, memsw
    /sys/fs/cgroup/cpu/sbk-NAME/                     cpu.cfs_quota_us
    /sys/fs/cgroup/{cpuacct,pids,blkio,freezer}/sbk-NAME/
    /sys/fs/cgroup/cpuset/sbk-NAME/                  cpuset.cpus: ceil(cpus) CPUs (cpus.py)

v1 has no cgroup.kill: kill() freezes the group (so nothing forks while we
look), SIGKILLs every pid, thaws (a frozen task dies only once thawed).

blkio counts a disk's bytes only once blk-throttle is active on that disk
(on recent kernels it starts lazily, at the first rule any group sets), so
create() writes "MAJ:MIN 0", which means "no limit", for every disk: counting
starts, nothing is limited.  Where that fails, io figures are None, not 0.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Mapping

from ..spec import Limits
from ..stats import CgroupStats, parse_v1_limit, v1_stats
from . import cpus as cpu_placement
from .base import PREFIX, Cgroup, CgroupDriver, CgroupError
from .files import CgroupDir, check_name, kill_pids, poll_until, remove_when_empty

CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "blkio", "freezer", "cpuset")
CPU_PERIOD = 100_000   # microseconds

STATS_FILES = {
    "memory": ("memory.usage_in_bytes", "memory.max_usage_in_bytes",
               "memory.limit_in_bytes", "memory.oom_control",
               "?memory.stat"),   # total_shmem: the writable layer's files are memory
    "cpuacct": ("cpuacct.usage", "cpuacct.stat"),
    "cpu": ("cpu.stat", "cpu.cfs_quota_us", "cpu.cfs_period_us"),
    "pids": ("pids.current", "?pids.peak", "pids.max", "?pids.events"),
    "blkio": ("?blkio.throttle.io_service_bytes",),
}

LIMITED_BY = {"memory": "memory", "cpus": "cpu", "pids": "pids"}

MEMORY_FIX = ("EBUSY means the group already uses more than the new limit and the "
              "kernel could not reclaim it")


def missing_controller(controller: str) -> CgroupError:
    return CgroupError(errno.EOPNOTSUPP, f"{controller} controller not mounted: mount cgroup v1 "
                       f"{controller} (mount -t cgroup -o {controller} cgroup "
                       f"/sys/fs/cgroup/{controller}) or use cgroup v2")


class V1Driver(CgroupDriver):
    """Makes groups below our own cgroup in each mounted hierarchy."""

    version = "v1"

    def __init__(self, parents: Mapping[str, str], sys_block: str = "/sys/block"):
        """parents: controller -> directory of our own cgroup in its hierarchy;
        co-mounted controllers map to the same directory.  sys_block lists
        the disks whose io is counted."""
        self.parents = {c: parents[c] for c in CONTROLLERS if c in parents}
        self.sys_block = sys_block
        self.controllers = tuple(self.parents)
        self.reason = "cgroup v1; " + ", ".join(f"{c} under {p}" for c, p in self.parents.items())
        self._known_disks: tuple[list[str], list[str]] = ([], [])   # (names, MAJ:MIN)

    def _disks(self) -> list[str]:
        """MAJ:MIN of every disk in sys_block, read again only when the list of
        names changed (a disk's number does not change while it is there)."""
        names = sorted(os.listdir(self.sys_block)) if os.path.isdir(self.sys_block) else []
        if names != self._known_disks[0]:
            self._known_disks = (names, list(filter(None, (_device_of(self.sys_block, n) for n in names))))
        return self._known_disks[1]

    def create(self, name: str, limits: Limits) -> Cgroup:
        check_name(name)
        paths = {c: os.path.join(p, name) for c, p in self.parents.items()}
        made: list[str] = []
        try:
            for path in dict.fromkeys(paths.values()):
                _mkdir(path)
                made.append(path)
        except CgroupError:
            for path in reversed(made):
                CgroupDir(path).rmdir()
            raise
        group = V1Cgroup(name, paths)
        try:
            if "cpuset" in paths:
                prepare_cpuset(group.dirs["cpuset"], self.parents["cpuset"])
            group.set(limits)
            group.io_counted = "blkio" in paths and count_io(group.dirs["blkio"], self._disks())
        except CgroupError:
            group.destroy()
            raise
        return group

    def leftovers(self) -> list[str]:
        found = set()
        for parent in set(self.parents.values()):
            try:
                names = os.listdir(parent)
            except FileNotFoundError:
                continue
            found.update(os.path.join(parent, n) for n in names
                         if n.startswith(PREFIX) and os.path.isdir(os.path.join(parent, n)))
        return sorted(found)


def _device_of(sys_block: str, disk: str) -> str | None:
    try:
        with open(os.path.join(sys_block, disk, "dev"), encoding="ascii") as file:
            return file.read().strip()
    except OSError:   # gone meanwhile
        return None


def count_io(blkio: CgroupDir, devices: list[str]) -> bool:
    """Switch blkio byte counting on for every disk (MAJ:MIN, see the module
    docstring); True if it is on for at least one."""
    counted = False
    for device in devices:
        try:
            blkio.write("blkio.throttle.read_bps_device", f"{device} 0")
            counted = True
        except OSError:   # CgroupError too: a disk without a queue, or gone meanwhile
            continue
    return counted


def prepare_cpuset(cpuset: CgroupDir, parent: str) -> None:
    """A new v1 cpuset starts with empty cpuset.cpus and cpuset.mems, and no
    task may join it until both are set: the memory nodes are the parent's
    (we do not place memory), the CPUs are written by set()."""
    mems = CgroupDir(parent).read_once("cpuset.mems").strip()
    cpuset.write("cpuset.mems", mems, "the parent's memory nodes")


def _mkdir(path: str) -> None:
    try:
        os.mkdir(path)
    except FileExistsError:
        raise CgroupError(errno.EEXIST, f"{path} exists: a leftover of an earlier run? "
                                        f"destroy it or rmdir {path}") from None
    except OSError as error:
        raise CgroupError(error.errno, f"mkdir {path}: {error.strerror}; "
                                       "cgroup v1 groups can only be made as root") from None


class V1Cgroup(Cgroup):
    def __init__(self, name: str, paths: Mapping[str, str]):
        self.name = name
        by_path: dict[str, CgroupDir] = {}
        self.dirs = {c: by_path.setdefault(p, CgroupDir(p)) for c, p in paths.items()}
        self.hierarchies = list(by_path.values())
        self.limits = Limits()
        self.io_counted = False   # see count_io()
        self.clock_ticks = os.sysconf("SC_CLK_TCK")   # USER_HZ, the unit of cpuacct.stat
        self._pids_peak_stale = False

    def join_files(self) -> list[str]:
        return [d.file("cgroup.procs") for d in self.hierarchies]

    def thread_join_files(self) -> list[str]:
        return [d.file("tasks") for d in self.hierarchies]

    def add(self, pid: int) -> None:
        for hierarchy in self.hierarchies:
            hierarchy.write("cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        return sorted({pid for d in self.hierarchies for pid in d.pids()})

    def pids_of_one_hierarchy(self) -> list[int]:
        return self.hierarchies[0].pids()

    def set(self, limits: Limits) -> None:
        for field, controller in LIMITED_BY.items():
            if getattr(limits, field) is not None and controller not in self.dirs:
                raise missing_controller(controller)
        if "memory" in self.dirs:
            self._set_memory(limits.memory)
        if "cpu" in self.dirs:
            quota = -1 if limits.cpus is None else round(limits.cpus * CPU_PERIOD)
            self.dirs["cpu"].write("cpu.cfs_period_us", str(CPU_PERIOD))
            self.dirs["cpu"].write("cpu.cfs_quota_us", str(quota))
        if "pids" in self.dirs:
            self.dirs["pids"].write("pids.max", "max" if limits.pids is None else str(limits.pids))
        self._place_cpus(limits.cpus)
        self.limits = limits

    def _place_cpus(self, limit: float | None) -> None:
        """Pin the group to ceil(limit) CPUs (cpus.py): through cpuset.cpus,
        which the kernel applies to every task in the group, also live; or,
        without a cpuset hierarchy, by the init at start and from here on a
        live change."""
        cpuset = self.dirs.get("cpuset")
        if cpuset is not None:
            parent = os.path.dirname(cpuset.path)
            self.cpus = cpu_placement.placement(
                limit, self.cpus, lambda: cpu_placement.cpuset_use(parent, self.name))
            cpuset.write("cpuset.cpus", cpu_placement.format_list(self.cpus),
                         "the CPUs must be among the parent's cpuset.cpus")
            return
        parent = os.path.dirname(self.hierarchies[0].path)
        self.cpus = cpu_placement.placement(
            limit, self.cpus, lambda: cpu_placement.affinity_use(parent, self.name))
        cpu_placement.pin_processes(self.pids(), self.cpus)

    def child_affinity(self) -> list[int] | None:
        if "cpuset" in self.dirs or self.limits.cpus is None:
            return None
        return self.cpus

    def _set_memory(self, memory: int | None) -> None:
        memory_dir = self.dirs["memory"]
        value = "-1" if memory is None else str(memory)
        names = ["memory.limit_in_bytes"]
        if memory_dir.has("memory.memsw.limit_in_bytes"):   # only with swap accounting
            names.append("memory.memsw.limit_in_bytes")
            # The kernel keeps memsw >= limit at every step: raising, memsw goes
            # first; lowering, the limit goes first.
            current = parse_v1_limit(memory_dir.read_once("memory.limit_in_bytes"))
            if current is not None and (memory is None or memory > current):
                names.reverse()
        for name in names:
            memory_dir.write(name, value, MEMORY_FIX)

    def stats(self) -> CgroupStats:
        # Not read, so None: a pids peak from before the reset would mislead,
        # and uncounted io's "Total 0" would claim no io happened.  (A cell
        # reads this twice: no read, parse or copy it would throw away.)
        unread = {"pids.peak"} if self._pids_peak_stale else set()
        if not self.io_counted:
            unread.add("blkio.throttle.io_service_bytes")
        texts = {name.lstrip("?"): self.dirs[controller].read(name)
                 for controller, names in STATS_FILES.items() if controller in self.dirs
                 for name in names if name.lstrip("?") not in unread}
        return v1_stats(texts, self.clock_ticks)

    def reset_peaks(self) -> bool:
        """memory.max_usage_in_bytes takes a write of 0; pids.peak (Linux >= 6.x
        also on v1) where the kernel lets us, else it reads None from now on."""
        pids_dir = self.dirs.get("pids")
        if pids_dir is not None:   # absent or refused alike: None from now on
            self._pids_peak_stale = not pids_dir.reset("pids.peak")
        if "memory" not in self.dirs:
            return False
        memory = self.dirs["memory"]
        if not memory.reset("memory.max_usage_in_bytes", "0"):   # kept read-only: a write of its own
            memory.write("memory.max_usage_in_bytes", "0")
        return True

    def freeze(self) -> None:
        if not self._request_freeze():
            raise CgroupError(errno.ETIMEDOUT, f"{self.dirs['freezer'].path} did not reach "
                                               "FROZEN in time")

    def _request_freeze(self) -> bool:
        freezer = self.dirs.get("freezer")
        if freezer is None:
            raise CgroupError(errno.EOPNOTSUPP, "freezing needs the freezer controller: mount "
                              "cgroup v1 freezer (mount -t cgroup -o freezer cgroup "
                              "/sys/fs/cgroup/freezer)")
        freezer.write("freezer.state", "FROZEN")
        return poll_until(lambda: freezer.read_once("freezer.state").strip() == "FROZEN")

    def thaw(self) -> None:
        if "freezer" not in self.dirs:
            super().thaw()
        self.dirs["freezer"].write("freezer.state", "THAWED")

    def kill(self) -> None:
        freezer = self.dirs.get("freezer")
        use_freezer = freezer is not None and freezer.present()
        if use_freezer:
            self._request_freeze()   # best effort: kill even if some task is stuck
        try:
            kill_pids(self.pids())
        finally:
            if use_freezer:
                self.thaw()

    def destroy(self) -> None:
        try:
            if any(d.present() for d in self.hierarchies):
                # An ended container's group is empty: no freeze and thaw
                # then.  Nothing can enter an empty group but by a write to
                # cgroup.procs, and the launcher, who made the one write, is
                # gone by now (Container.destroy reaps it first).
                if self.pids():
                    self.kill()
                remove_when_empty(self.hierarchies, self.kill)
        except CgroupError as error:
            if error.errno not in (errno.ENOENT, errno.ENODEV):   # removed meanwhile
                raise
        finally:
            for hierarchy in self.hierarchies:
                hierarchy.close()
