"""The one cgroup interface the runtime uses, whatever the host has.

When each call happens (parent = the owning process on the host, child = the
container's init before it runs any user code):

    parent   driver.create(name, limits)   make the group, write its limits
    child    cgroup.join_files()           init joins (thread_join_files: by itself)
    parent   cgroup.stats()                at any time; pread of open files
    parent   cgroup.set(limits)            change limits live
    parent   cgroup.reset_peaks()          before a cell, where the host can
    parent   cgroup.freeze() / thaw()
    parent   cgroup.kill()                 every process in the group, now
    parent   cgroup.destroy()              kill, wait for empty, rmdir; idempotent

Drivers: v2.py (unified), v1.py (per-controller hierarchies), null.py (no
usable cgroups: rlimits and /proc only).  detect.py picks one.  Every group a
driver creates is named with the ``sbk-`` prefix.
"""
from __future__ import annotations

import abc

from ..spec import Limits
from ..stats import CgroupStats

PREFIX = "sbk-"


class CgroupError(OSError):
    """A cgroup operation failed; the message names the file and the fix."""


class Cgroup(abc.ABC):
    """One container's group of processes."""

    name: str
    limits: Limits
    tracks_members = False   # True: the container must add() its init (null driver)
    cpus: list[int] | None = None   # where a cpus limit pins the group (cpus.py)

    def warning(self) -> str | None:
        """What a user must know about these limits (the null driver's: not enforced)."""
        return None

    @abc.abstractmethod
    def join_files(self) -> list[str]:
        """Paths of the cgroup.procs files a process writes "0" to, to join."""

    def thread_join_files(self) -> list[str] | None:
        """Files a single-threaded process writes "0" to, to join without the
        kernel's global cgroup_threadgroup_rwsem; None where there are none.
        Writing a process to cgroup.procs takes that lock for writing, which
        waits for an RCU grace period (5-15 ms) unless another migration just
        took it: every container started on its own (a `run`, a kernel's
        first cell, a restart) waited so.  Linux skips the lock for a thread
        moving itself (v1's ``tasks``: 0.4 ms against 8-13 ms on this 6.18; an
        older kernel takes it, and the join is as slow as before).  v2's
        cgroup.threads is for threaded groups only, which ours are not."""
        return None

    def child_rlimits(self) -> list[tuple[int, int]]:
        """rlimits the container's processes must set themselves (null driver)."""
        return []

    def child_affinity(self) -> list[int] | None:
        """CPUs the container's init binds itself to before the workload
        exists, where no cpuset does it (cpus.py); None: nothing to bind."""
        return None

    @abc.abstractmethod
    def add(self, pid: int) -> None:
        """Move a process (by host pid) into the group."""

    @abc.abstractmethod
    def set(self, limits: Limits) -> None:
        """Write new limits; raises CgroupError if the host refuses one."""

    @abc.abstractmethod
    def stats(self) -> CgroupStats:
        """Current figures; a figure the driver cannot give is None."""

    @abc.abstractmethod
    def pids(self) -> list[int]:
        """Host pids of the processes in the group."""

    def pids_of_one_hierarchy(self) -> list[int]:
        """pids() as one hierarchy lists them: the same processes once a
        start's joins are done (v1 reads one file instead of one per
        controller), for a look that needs a member, not a census."""
        return self.pids()

    def reset_peaks(self) -> bool:
        """Reset memory/pids peaks where the host allows it; True if it did."""
        return False

    def freeze(self) -> None:
        raise CgroupError(95, "freezing needs the freezer controller (cgroup v1) or cgroup v2")

    def thaw(self) -> None:
        raise CgroupError(95, "thawing needs the freezer controller (cgroup v1) or cgroup v2")

    @abc.abstractmethod
    def kill(self) -> None:
        """SIGKILL every process in the group."""

    @abc.abstractmethod
    def destroy(self) -> None:
        """Kill what is left, wait until empty, remove the group; idempotent."""


class CgroupDriver(abc.ABC):
    """Makes groups on one host; ``version`` is "v2", "v1" or "null"."""

    version: str
    reason: str = ""            # why this driver (for doctor), esp. for null
    controllers: tuple[str, ...] = ()

    @abc.abstractmethod
    def create(self, name: str, limits: Limits) -> Cgroup:
        """Create the group ``name`` (which starts with sbk-) with limits set."""

    @abc.abstractmethod
    def leftovers(self) -> list[str]:
        """Paths of sbk- groups under this driver's parent (for cleanup and tests)."""
