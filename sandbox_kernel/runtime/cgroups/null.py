"""No usable cgroups: the container's processes limit themselves with rlimits.

What that cannot do, and why nothing pretends otherwise:

- memory becomes RLIMIT_AS, a cap on address space, not on resident memory:
  a program that maps much and touches little (numpy, a JVM, Go) fails
  sooner than it would under a cgroup limit; one that forks gets the cap
  per process, not for the container.
- pids only where it is safe: RLIMIT_NPROC counts the processes of a uid in
  a user namespace (Linux >= 5.14 charges them per namespace).  Without a
  user namespace of its own (root), the container's uid is shared with every
  other container and the limit would count theirs too: no pids limit then.
  A rootless container has its own user namespace, so its uid's count is
  its own processes (``nproc_extra``: init and the launcher, when they share
  the workload's uid inside).
- no cpu limit: RLIMIT_CPU caps total cpu seconds, not a share of a core.
  A cpus limit only pins the container to ceil(cpus) CPUs (cpus.py): its
  init binds itself before the workload exists, a live change binds every
  thread from the host; a process may widen its own affinity again.
- figures from /proc, summed over the container's process tree at the time
  of reading: memory (resident, shared pages counted per process), cpu (live
  processes plus what their reaped children used: init reaps every orphan,
  and the launcher reaps init, so nothing is lost, also after the end),
  processes and threads.  Peaks, io and OOM kills
  cannot be read this way and stay None.

The group is the processes added to it, held by pidfd so that a reused pid
is never signalled; adding the container's init is enough, since killing
PID 1 of a pid namespace kills every process in it.
"""
from __future__ import annotations

import collections
import errno
import os
import resource
import select
import signal
from typing import NamedTuple

from ..spec import Limits
from ..stats import CgroupStats
from . import cpus as cpu_placement
from .base import Cgroup, CgroupDriver, CgroupError
from .files import check_name, poll_until


WARNING = ("limits are not enforced by cgroups ({why}): memory is an address-space "
           "rlimit per process, {pids}cpu time is not limited (cpus only pins to whole CPUs); "
           "figures are from /proc")


class NullDriver(CgroupDriver):
    version = "null"

    def __init__(self, reason: str):
        self.reason = reason

    def create(self, name: str, limits: Limits) -> Cgroup:
        check_name(name)
        return NullCgroup(name, limits, self.reason)

    def leftovers(self) -> list[str]:
        return []   # nothing is made on the host


class NullCgroup(Cgroup):
    tracks_members = True   # the container adds its init: nothing else knows the tree

    def __init__(self, name: str, limits: Limits, reason: str = "no usable cgroups"):
        self.name = name
        self.limits = limits
        self.reason = reason
        self.nproc_extra: int | None = None   # set by a rootless container: see the docstring
        self._members: dict[int, int | None] = {}   # pid -> pidfd, None without pidfd_open
        self._reapers: list[int] = []   # the members' parents: their children's time is ours
        self._place_cpus(limits.cpus)

    def warning(self) -> str:
        pids = ("processes are a per-user rlimit, " if self.nproc_extra is not None
                else "processes are not limited, ")
        why = ("no cgroup v2 subtree is delegated to this user" if os.geteuid() != 0
               else "no usable cgroup on this host")   # the full reason is in doctor's output
        return WARNING.format(why=why, pids=pids)

    def join_files(self) -> list[str]:
        return []

    def child_rlimits(self) -> list[tuple[int, int]]:
        """(resource, limit) pairs; the container sets each as soft and hard limit."""
        rlimits = []
        if self.limits.memory is not None:
            rlimits.append((resource.RLIMIT_AS, self.limits.memory))
        if self.limits.pids is not None and self.nproc_extra is not None:
            rlimits.append((resource.RLIMIT_NPROC, self.limits.pids + self.nproc_extra))
        return rlimits

    def child_affinity(self) -> list[int] | None:
        return None if self.limits.cpus is None else self.cpus

    def _place_cpus(self, limit: float | None) -> None:
        """ceil(limit) CPUs (cpus.py); in use by other groups is unknown here
        (no cgroup lists them): the rotating start spreads this owner's."""
        self.cpus = cpu_placement.placement(limit, self.cpus, collections.Counter)
        cpu_placement.pin_processes([p.pid for p in process_tree(self.pids())], self.cpus)

    def add(self, pid: int) -> None:
        try:
            self._members[pid] = os.pidfd_open(pid)
            self._reapers.append(read_stats([pid])[0].ppid)
        except (IndexError, ValueError):
            pass   # exited meanwhile: its pidfd says so
        except ProcessLookupError:
            raise CgroupError(errno.ESRCH, f"cannot add pid {pid}: no such process") from None
        except OSError:   # ENOSYS: Linux < 5.3 has no pidfds; track the bare pid
            self._members[pid] = None

    def pids(self) -> list[int]:
        return [pid for pid, pidfd in list(self._members.items()) if _alive(pid, pidfd)]

    def set(self, limits: Limits) -> None:
        """New limits; RLIMIT_AS is changed live in the added processes only
        (their running children keep what they inherited)."""
        memory = resource.RLIM_INFINITY if limits.memory is None else limits.memory
        for pid in self.pids():
            try:
                resource.prlimit(pid, resource.RLIMIT_AS, (memory, memory))
            except ProcessLookupError:
                pass
            except PermissionError:
                raise CgroupError(errno.EPERM, f"prlimit(pid {pid}, RLIMIT_AS, {memory}): raising a "
                                     "hard limit needs root (CAP_SYS_RESOURCE)") from None
        self._place_cpus(limits.cpus)
        self.limits = limits

    def stats(self) -> CgroupStats:
        tree = process_tree(self.pids())
        reapers = [p for p in read_stats(self._reapers)]
        if not tree and not reapers:
            return CgroupStats(memory_limit=self.limits.memory)
        ticks = os.sysconf("SC_CLK_TCK")
        user = sum(p.user_ticks for p in tree) + sum(p.children_user_ticks for p in reapers)
        system = sum(p.system_ticks for p in tree) + sum(p.children_system_ticks for p in reapers)
        return CgroupStats(
            memory_current=sum(p.rss_pages for p in tree) * resource.getpagesize() if tree else None,
            memory_limit=self.limits.memory,
            pids_current=sum(p.threads for p in tree),
            cpu_user=round(user / ticks, 6), cpu_system=round(system / ticks, 6),
            cpu_usage=round((user + system) / ticks, 6))

    def kill(self) -> None:
        for pid, pidfd in list(self._members.items()):   # destroy() may clear it meanwhile
            try:
                if pidfd is None:
                    os.kill(pid, signal.SIGKILL)
                else:
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def destroy(self) -> None:
        self.kill()
        poll_until(lambda: not self.pids())   # bounded; there is nothing to remove
        # Take the members in one step: two threads destroying at once must not
        # both close a pidfd (the second close could hit a reused number)
        members, self._members = self._members, {}
        for pidfd in members.values():
            if pidfd is not None:
                os.close(pidfd)


def _alive(pid: int, pidfd: int | None) -> bool:
    if pidfd is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:   # it exists, under another uid
            return True
        return True
    # A pidfd becomes readable when its process exits.
    try:
        return not select.select([pidfd], [], [], 0)[0]
    except (OSError, ValueError):   # closed by a destroy() in another thread
        return False


class ProcStat(NamedTuple):
    pid: int
    ppid: int
    user_ticks: int      # utime + cutime: its own and its reaped children's
    system_ticks: int    # stime + cstime
    threads: int
    rss_pages: int
    children_user_ticks: int     # cutime alone
    children_system_ticks: int   # cstime alone


def parse_proc_stat(text: str) -> ProcStat:
    """/proc/PID/stat; the command name may hold spaces and ')', so split after the last ')'."""
    pid = int(text.split(" ", 1)[0])
    fields = text.rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state) of proc(5): field N is fields[N - 3]
    utime, stime, cutime, cstime = (int(fields[n - 3]) for n in (14, 15, 16, 17))
    return ProcStat(pid, int(fields[1]), utime + cutime, stime + cstime,
                    int(fields[20 - 3]), int(fields[24 - 3]), cutime, cstime)


def read_stats(pids: list[int], proc_root: str = "/proc") -> list[ProcStat]:
    found = []
    for pid in pids:
        try:
            with open(f"{proc_root}/{pid}/stat", encoding="utf-8", errors="replace") as handle:
                found.append(parse_proc_stat(handle.read()))
        except (OSError, ValueError, IndexError):
            continue   # gone
    return found


def process_tree(roots: list[int], proc_root: str = "/proc") -> list[ProcStat]:
    """The processes ``roots`` and all their descendants, read once from /proc."""
    if not roots:
        return []
    if len(roots) == 1 and not os.path.exists(f"{proc_root}/{roots[0]}"):
        return []
    every: dict[int, ProcStat] = {}
    for name in os.listdir(proc_root):
        if name.isdigit():
            try:
                with open(f"{proc_root}/{name}/stat", encoding="utf-8", errors="replace") as handle:
                    stat = parse_proc_stat(handle.read())
            except (OSError, ValueError, IndexError):
                continue   # exited while we read
            every[stat.pid] = stat
    children: dict[int, list[int]] = {}
    for stat in every.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    tree, todo = [], [pid for pid in roots if pid in every]
    while todo:
        pid = todo.pop()
        tree.append(every[pid])
        todo += children.get(pid, [])
    return tree
