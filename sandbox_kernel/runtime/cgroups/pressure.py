"""Memory pressure: a file descriptor that becomes ready the moment a
group's memory crosses a threshold, so that the owner learns it at once
without reading the counters in a loop.

    watch = memory_watch(cgroup, threshold)     # None: this driver has none (why_not says)
    watch.begin()                               # each cell: forget what came before
    poll.register(watch.fileno(), watch.events)
    ... ready: if watch.crossed(): act
    watch.end()
    watch.close()                               # with the group

A watch is made once per group and kept: registering a v1 threshold costs
the kernel a synchronize_rcu() (15-50 ms here), too much for every cell.

What counts is the memory the kernel cannot give back: usage minus the
file cache it may drop (``file`` - ``shmem``; no swap here).  A cell that
reads a big host file fills the cache up to the limit, and the kernel
reclaims it: that is no pressure.  So every event is checked against
memory.stat, and only memory that stays counts.

v1: a memory threshold (``cgroup.event_control``, "EVENTFD USAGE_FD BYTES")
on memory.usage_in_bytes, and the "low" vmpressure level on the same
eventfd (it fires whenever the group reclaims: anonymous memory growing
while the cache is dropped keeps usage near the limit, with no further
crossing to see).

v2: ``memory.high`` set to the threshold (below memory.max), and
memory.events watched: the kernel notifies a file change (POLLPRI on an
open descriptor, as inotify sees IN_MODIFY) when its "high" count goes up
(at most every 10 ms).  Once the memory that stays crossed, ``crossed``
lifts memory.high again ("max"), so that the group is not throttled while
its owner decides what to do; ``close`` lifts it too.

A cell that starts with the group already past the threshold (memory an
earlier cell keeps, say the one the watch just stopped) did not cross it,
and may be the cell that frees it: it is not flagged for it.  v1 flags it
again once it went below and crosses back up (the usage threshold fires
both ways); v2 leaves memory.high lifted for such a cell (arming it below
the usage would throttle the cell at once), so a cell that frees and grows
again meets the limit itself.

The null driver (no cgroup) has none: ``why_not`` says so.  Nothing here
runs a loop or a thread: the caller polls the descriptor.
"""
from __future__ import annotations

import errno
import os
import select

from .base import Cgroup, CgroupError
from .v1 import V1Cgroup
from .v2 import V2Cgroup


def _stat(text: str) -> dict:
    return {key: int(value) for key, _, value in
            (line.partition(" ") for line in text.splitlines()) if value.strip().isdigit()}


def kept_memory(usage: int, stat_text: str) -> int:
    """Usage minus the file cache the kernel may drop (v1: total_cache -
    total_shmem, v2: file - shmem): what a group holds for good."""
    stat = _stat(stat_text)
    if "total_cache" in stat:
        droppable = stat["total_cache"] - stat.get("total_shmem", 0)
    else:
        droppable = stat.get("file", 0) - stat.get("shmem", 0)
    return usage - max(droppable, 0)


class MemoryWatch:
    """The descriptor and how to read it; a subclass per driver."""

    events = select.POLLIN
    threshold = 0

    started_past = False    # the cell began with the group past the threshold

    def _past(self, usage: int, stat_text) -> bool:
        """Whether the memory that stays is at or past the threshold;
        ``stat_text`` is memory.stat's text, or a function that reads it
        (only read when usage alone is past)."""
        if usage < self.threshold:
            return False
        return kept_memory(usage, stat_text() if callable(stat_text) else stat_text) >= self.threshold

    def _counts(self, past: bool) -> bool:
        """A crossing counts unless the cell started past and has not been
        below since (see the module docstring)."""
        if not past:
            self.started_past = False
        return past and not self.started_past

    def fileno(self) -> int:
        raise NotImplementedError

    def begin(self) -> None:
        """Before a cell: what happened between cells is not the cell's."""

    def end(self) -> None:
        """After a cell."""

    def crossed(self) -> bool:
        """After the descriptor was ready: True if usage is at or past the threshold."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class V1Watch(MemoryWatch):
    def __init__(self, directory: str, threshold: int):
        self.threshold = threshold
        self.efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.fds: list[int] = []
        try:
            self.usage_fd = self._open(os.path.join(directory, "memory.usage_in_bytes"))
            self.stat_fd = self._open(os.path.join(directory, "memory.stat"))
            levels = self._open(os.path.join(directory, "memory.pressure_level"))
            control = os.path.join(directory, "cgroup.event_control")
            for line in (f"{self.efd} {self.usage_fd} {threshold}", f"{self.efd} {levels} low"):
                with open(control, "w") as out:
                    out.write(line)
        except OSError as error:
            self.close()
            raise CgroupError(error.errno, f"memory threshold on {directory}: {error.strerror}") \
                from None

    def _open(self, path: str) -> int:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.fds.append(fd)
        return fd

    def fileno(self) -> int:
        return self.efd

    def begin(self) -> None:
        self._drain()
        self.started_past = self._past_now()

    def _past_now(self) -> bool:
        usage = int(os.pread(self.usage_fd, 64, 0) or b"0")
        return self._past(usage, lambda: os.pread(self.stat_fd, 65536, 0).decode())

    def _drain(self) -> None:
        try:
            os.eventfd_read(self.efd)
        except BlockingIOError:
            pass

    def crossed(self) -> bool:
        self._drain()
        return self._counts(self._past_now())

    def close(self) -> None:
        os.close(self.efd)                # the kernel drops the threshold with it
        for fd in self.fds:
            os.close(fd)
        self.fds = []


class V2Watch(MemoryWatch):
    events = select.POLLPRI               # kernfs: a changed file is POLLPRI|POLLERR

    def __init__(self, group: V2Cgroup, threshold: int):
        self.dir = group.dir
        self.fd = os.open(self.dir.file("memory.events"), os.O_RDONLY | os.O_CLOEXEC)
        self.threshold = threshold
        try:
            self.seen = self._high_count()    # the read also arms the notification
            self.dir.write("memory.high", str(threshold))
        except OSError:
            os.close(self.fd)
            raise
        self.lifted = False

    def begin(self) -> None:
        self.seen = self._high_count()
        self.started_past = self._past_now()
        if self.started_past:
            self._lift()                  # not below the usage: the cell would be throttled at once
        elif self.lifted:
            self.dir.write("memory.high", str(self.threshold))
            self.lifted = False

    def _past_now(self) -> bool:
        usage = int(self.dir.read_once("memory.current"))
        return self._past(usage, lambda: self.dir.read_once("memory.stat"))

    def end(self) -> None:
        self._lift()                      # between cells nothing is throttled

    def _high_count(self) -> int:
        for line in os.pread(self.fd, 4096, 0).decode().splitlines():
            key, _, value = line.partition(" ")
            if key == "high":
                return int(value)
        return 0

    def fileno(self) -> int:
        return self.fd

    def crossed(self) -> bool:
        count = self._high_count()
        went_up, self.seen = count > self.seen, count
        if not went_up or self.started_past:
            return False
        hit = self._counts(self._past_now())
        if hit:
            self._lift()
        return hit

    def _lift(self) -> None:
        if not self.lifted:
            self.lifted = True
            try:
                self.dir.write("memory.high", "max")
            except OSError as error:
                if error.errno not in (errno.ENOENT, errno.ENODEV):   # the group is gone
                    raise

    def close(self) -> None:
        try:
            self._lift()
        finally:
            os.close(self.fd)


def why_not(cgroup: Cgroup) -> str | None:
    """None when ``memory_watch`` can watch this group; else why not."""
    if isinstance(cgroup, V1Cgroup):
        memory = cgroup.dirs.get("memory")
        if memory is None or not memory.has("cgroup.event_control"):
            return "no memory controller with cgroup.event_control (cgroup v1)"
        return None
    if isinstance(cgroup, V2Cgroup):
        if "memory" not in cgroup.controllers or not cgroup.dir.has("memory.high"):
            return "no memory controller with memory.high (cgroup v2)"
        return None
    return "no cgroup here (the null driver): memory pressure cannot be watched"


def memory_watch(cgroup: Cgroup, threshold: int) -> MemoryWatch | None:
    """A watch of the group's memory crossing ``threshold`` bytes; None
    where ``why_not`` says there is none.  CgroupError when the kernel refuses."""
    if why_not(cgroup) is not None:
        return None
    if isinstance(cgroup, V1Cgroup):
        return V1Watch(cgroup.dirs["memory"].path, threshold)
    return V2Watch(cgroup, threshold)
