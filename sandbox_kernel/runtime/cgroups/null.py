"""No usable cgroups: the container's processes limit themselves with rlimits.

What that cannot do, and why nothing pretends otherwise:

- memory becomes RLIMIT_AS, a cap on address space, not on resident memory:
  a program that maps much and touches little (numpy, a JVM, Go) fails
  sooner than it would under a cgroup limit; one that forks gets the cap
  per process, not for the container.
- no pids limit: RLIMIT_NPROC counts every process of the uid on the whole
  host, so it would also count (and be exhausted by) processes that are not
  the container's.
- no cpu limit: RLIMIT_CPU caps total cpu seconds, not a share of a core.
- no figures: memory, cpu, io and pids of a process tree cannot be read
  reliably from /proc (children come and go between reads), so stats() gives
  only the memory limit and None for the rest.

The group is the processes added to it, held by pidfd so that a reused pid
is never signalled; adding the container's init is enough, since killing
PID 1 of a pid namespace kills every process in it.
"""
from __future__ import annotations

import errno
import os
import resource
import select
import signal

from ..spec import Limits
from ..stats import CgroupStats
from .base import Cgroup, CgroupDriver, CgroupError
from .files import check_name, poll_until


class NullDriver(CgroupDriver):
    version = "null"

    def __init__(self, reason: str):
        self.reason = reason

    def create(self, name: str, limits: Limits) -> Cgroup:
        check_name(name)
        return NullCgroup(name, limits)

    def leftovers(self) -> list[str]:
        return []   # nothing is made on the host


class NullCgroup(Cgroup):
    def __init__(self, name: str, limits: Limits):
        self.name = name
        self.limits = limits
        self._members: dict[int, int | None] = {}   # pid -> pidfd, None without pidfd_open

    def join_files(self) -> list[str]:
        return []

    def child_rlimits(self) -> list[tuple[int, int]]:
        """(resource, limit) pairs; the container sets each as soft and hard limit."""
        if self.limits.memory is None:
            return []
        return [(resource.RLIMIT_AS, self.limits.memory)]

    def add(self, pid: int) -> None:
        try:
            self._members[pid] = os.pidfd_open(pid)
        except ProcessLookupError:
            raise CgroupError(errno.ESRCH, f"cannot add pid {pid}: no such process") from None
        except OSError:   # ENOSYS: Linux < 5.3 has no pidfds; track the bare pid
            self._members[pid] = None

    def pids(self) -> list[int]:
        return [pid for pid, pidfd in self._members.items() if _alive(pid, pidfd)]

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
        self.limits = limits

    def stats(self) -> CgroupStats:
        return CgroupStats(memory_limit=self.limits.memory)

    def kill(self) -> None:
        for pid, pidfd in self._members.items():
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
        for pidfd in self._members.values():
            if pidfd is not None:
                os.close(pidfd)
        self._members.clear()


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
    return not select.select([pidfd], [], [], 0)[0]
