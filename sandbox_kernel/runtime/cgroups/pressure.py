"""Memory pressure: a file descriptor that becomes ready the moment a
group's memory crosses a threshold, so that the owner learns it at once
without reading the counters in a loop.

    watch = memory_watch(cgroup, threshold)     # None: this driver has none (why_not says)
    poll.register(watch.fileno(), watch.events)
    ... ready: if watch.crossed(): act
    watch.close()

v1: a memory threshold (``cgroup.event_control``, "EVENTFD USAGE_FD BYTES")
on memory.usage_in_bytes: the kernel signals the eventfd each time usage
crosses it, up or down; ``crossed`` reads the usage to tell which.

v2: ``memory.high`` set to the threshold (below memory.max), and
memory.events watched: the kernel notifies a file change (POLLPRI on an
open descriptor, as inotify sees IN_MODIFY) when its "high" count goes up.
``crossed`` then lifts memory.high again ("max"), so that the group is not
throttled while its owner decides what to do; ``close`` lifts it too.

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


class MemoryWatch:
    """The descriptor and how to read it; a subclass per driver."""

    events = select.POLLIN

    def fileno(self) -> int:
        raise NotImplementedError

    def crossed(self) -> bool:
        """After the descriptor was ready: True if usage is at or past the threshold."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class V1Watch(MemoryWatch):
    def __init__(self, directory: str, threshold: int):
        self.usage_path = os.path.join(directory, "memory.usage_in_bytes")
        self.threshold = threshold
        self.efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            self.usage_fd = os.open(self.usage_path, os.O_RDONLY | os.O_CLOEXEC)
            control = os.path.join(directory, "cgroup.event_control")
            with open(control, "w") as out:
                out.write(f"{self.efd} {self.usage_fd} {threshold}")
        except OSError as error:
            os.close(self.efd)
            if getattr(self, "usage_fd", None) is not None:
                os.close(self.usage_fd)
            raise CgroupError(error.errno, f"memory threshold on {directory}: {error.strerror}") \
                from None

    def fileno(self) -> int:
        return self.efd

    def crossed(self) -> bool:
        try:
            os.eventfd_read(self.efd)
        except BlockingIOError:
            pass
        return int(os.pread(self.usage_fd, 64, 0) or b"0") >= self.threshold

    def close(self) -> None:
        os.close(self.efd)                # the kernel drops the threshold with it
        os.close(self.usage_fd)


class V2Watch(MemoryWatch):
    events = select.POLLPRI               # kernfs: a changed file is POLLPRI|POLLERR

    def __init__(self, group: V2Cgroup, threshold: int):
        self.dir = group.dir
        self.fd = os.open(self.dir.file("memory.events"), os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.seen = self._high_count()    # the read also arms the notification
            self.dir.write("memory.high", str(threshold))
        except OSError:
            os.close(self.fd)
            raise
        self.lifted = False

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
        hit, self.seen = count > self.seen, count
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
