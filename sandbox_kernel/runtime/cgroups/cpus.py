"""A cpus limit as CPU affinity: which CPUs a container's processes may run on.

A cpus limit is a quota of CPU time (cpu.max, cpu.cfs_quota_us): it says
nothing about *where*, so inside the container ``len(os.sched_getaffinity(0))``
still counts every CPU of the host, and BLAS, OpenMP, joblib and the like
start a thread per host CPU, which the quota then throttles.  So a limit of
``cpus`` also pins the container to ``ceil(cpus)`` CPUs, never more than
the owner itself may use (its own affinity, which lies within its cpuset):

    driver                 at the start                 a live change
    v1                     cpuset.cpus of the group     cpuset.cpus again
    v2 with cpuset         cpuset.cpus of the group     cpuset.cpus again
    v2 without, null       init's sched_setaffinity,    the host's sched_setaffinity
                           before the workload exists   on every thread inside

The kernel applies a cpuset to every task that joins it and, on a write, to
every task in it.  v2 has cpuset only where the parent delegates it (the
v2 guest of the tests does not); the null driver has no group at all.

Without a cpuset the pinning is advice, not a limit: a process may widen its
own affinity again (the quota still holds on v1 and v2).

Which CPUs: the least used by the sibling sbk- groups (their cpuset.cpus, or
without a cpuset their first process's affinity), ties broken by a rotating
start, so containers spread over the CPUs instead of all taking CPU 0.

The container's environment says the same count in THREAD_VARIABLES (below;
container._environment), unless the user or the image set one.  What then
sees the limit: len(os.sched_getaffinity(0)), OpenBLAS (numpy's), OpenMP,
joblib/loky and scikit-learn's n_jobs=-1; os.cpu_count() only from Python
3.13 (PYTHON_CPU_COUNT): before, it counts the host's online CPUs.  A live
change moves the CPUs, but not the variables of processes already running.
"""
from __future__ import annotations

import collections
import itertools
import math
import os
import random

from .base import PREFIX, CgroupError

# Where a tie in use is broken: rotates per group within this process; a
# random start so that two owners (two kernels) do not both begin at CPU 0.
_rotation = itertools.count(random.randrange(1 << 16))


def allowed_cpus() -> list[int]:
    """The CPUs this process may use: what a container may be given at most."""
    return sorted(os.sched_getaffinity(0))


def cpu_count_for(limit: float | None, allowed: list[int] | None = None) -> int | None:
    """How many CPUs a cpus limit pins to: ceil(limit), at least 1, at most
    the allowed ones; None without a limit (the container keeps the owner's)."""
    if limit is None:
        return None
    allowed = allowed_cpus() if allowed is None else allowed
    return max(1, min(math.ceil(round(limit, 6)), len(allowed)))


def choose(count: int, allowed: list[int], in_use: collections.Counter) -> list[int]:
    """``count`` of the allowed CPUs, the least used first; ties go by a
    rotating start, so that equally used CPUs are taken in turn."""
    start = next(_rotation) % len(allowed)
    by_use = sorted(range(len(allowed)),
                    key=lambda i: (in_use[allowed[i]], (i - start) % len(allowed)))
    return sorted(allowed[i] for i in by_use[:count])


def parse_list(text: str) -> list[int]:
    """A kernel CPU list ("0-3,8,10-11"; "" is none) as a list of numbers."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


def format_list(cpus: list[int]) -> str:
    """The kernel's list format: runs of consecutive CPUs as "a-b"."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def siblings(parent: str, own_name: str) -> list[str]:
    """The other sbk- groups in ``parent`` (other containers, of any owner)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    return [os.path.join(parent, n) for n in names
            if n.startswith(PREFIX) and n != own_name and os.path.isdir(os.path.join(parent, n))]


def cpuset_use(parent: str, own_name: str) -> collections.Counter:
    """How many sibling groups' cpuset.cpus name each CPU."""
    use: collections.Counter = collections.Counter()
    for group in siblings(parent, own_name):
        try:
            with open(os.path.join(group, "cpuset.cpus"), encoding="ascii") as file:
                use.update(parse_list(file.read()))
        except (OSError, ValueError):
            continue   # removed meanwhile, or not yet written
    return use


def affinity_use(parent: str, own_name: str) -> collections.Counter:
    """How many sibling groups' first process may run on each CPU (no cpuset:
    the affinity their init gave itself is the record)."""
    use: collections.Counter = collections.Counter()
    for group in siblings(parent, own_name):
        try:
            with open(os.path.join(group, "cgroup.procs"), encoding="ascii") as file:
                first = file.readline().strip()
            if first:
                use.update(os.sched_getaffinity(int(first)))
        except (OSError, ValueError):
            continue   # removed or exited meanwhile
    return use


def pin_processes(pids: list[int], cpus: list[int]) -> None:
    """Set the affinity of every thread of ``pids`` (a live change where no
    cpuset does it: sched_setaffinity acts on one thread, and a BLAS pool's
    threads already exist).  Threads that end meanwhile are skipped; one
    started during the change from a thread not yet moved keeps the old set
    (without a cpuset the set is advice, not a limit: see above)."""
    for pid in pids:
        try:
            threads = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
        except (FileNotFoundError, ProcessLookupError):
            continue
        for tid in threads:
            try:
                os.sched_setaffinity(tid, cpus)
            except ProcessLookupError:
                continue
            except OSError as error:
                raise CgroupError(error.errno, f"sched_setaffinity(thread {tid} of pid {pid}, "
                                  f"{format_list(cpus)}): {error.strerror}") from None


def placement(limit: float | None, current: list[int] | None, in_use) -> list[int]:
    """The CPUs for a group with cpus ``limit``: all allowed ones without a
    limit; else ``current`` if it still fits (a live change to the same
    count moves nothing), else a fresh choice by ``in_use()`` (a Counter)."""
    allowed = allowed_cpus()
    count = cpu_count_for(limit, allowed)
    if count is None:
        return allowed
    if current and len(current) == count and set(current) <= set(allowed):
        return current
    return choose(count, allowed, in_use())


THREAD_VARIABLES = (
    "OMP_NUM_THREADS",          # OpenMP: libgomp, LLVM's libomp (scikit-learn, PyTorch, ...)
    "OPENBLAS_NUM_THREADS",     # OpenBLAS, numpy's and scipy's wheels
    "MKL_NUM_THREADS",          # Intel MKL (conda's numpy)
    "BLIS_NUM_THREADS",         # BLIS
    "VECLIB_MAXIMUM_THREADS",   # Apple Accelerate
    "NUMEXPR_NUM_THREADS",      # numexpr (pandas' eval)
    "PYTHON_CPU_COUNT",         # Python >= 3.13: os.cpu_count() and os.process_cpu_count()
)
"""What thread pools read for their size, set to the CPU count of a cpus
limit (joblib sets the same ones in its workers)."""


def thread_environment(limit: float | None) -> dict[str, str]:
    """THREAD_VARIABLES set to the count a cpus limit pins to; {} without one."""
    count = cpu_count_for(limit)
    return {} if count is None else dict.fromkeys(THREAD_VARIABLES, str(count))
