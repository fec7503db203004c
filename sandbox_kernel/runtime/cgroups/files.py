"""Files of one cgroup directory, and the waits around them: shared by the
v1 and v2 drivers.  Stats files are opened once and read with pread.
"""
from __future__ import annotations

import errno
import os
import signal
import threading
import time

from .base import PREFIX, CgroupError


WAIT_SECONDS = 2.0
"""How long destroy and freeze wait for the kernel before they give up."""

READ_LIMIT = 1 << 20
"""No cgroup file we read is this long; a bound on a read loop."""

PEAKS = (".peak", "memory.max_usage_in_bytes")
"""Stats files a write resets (v2's memory.peak and pids.peak, v1's memory
peak): kept open read-write where the kernel lets us."""


def check_name(name: str) -> None:
    """Every group is ``sbk-...`` so that leftovers can be found and counted."""
    if not name.startswith(PREFIX) or len(name) == len(PREFIX) or "/" in name:
        raise CgroupError(errno.EINVAL, f"cgroup name {name!r} must be {PREFIX}NAME without '/'")


def poll_until(done, timeout: float = WAIT_SECONDS, interval: float = 0.01) -> bool:
    """Call done() until it is true or timeout seconds pass; True if it became true."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def kill_pids(pids) -> None:
    """SIGKILL each pid; one that has already gone is fine."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class CgroupDir:
    """One cgroup directory and the files in it.

    Stats files are opened once and read with os.pread at offset 0, where the
    kernel renders a cgroup file afresh.  A name starting with "?" is an
    optional file, None when absent (as isolate's ``cg_read("?memory.peak")``).
    Errors are CgroupError naming the file and the value.
    """

    def __init__(self, path: str):
        self.path = path
        self._fds: dict[str, int | None] = {}   # None: optional file absent
        self._refused: set[str] = set()          # resets this kernel refused: not tried again
        # stats are read from other threads (a kernel's control thread, the side
        # panel's ticker) while destroy() closes: a read must never use a closed
        # number that was handed to someone else since
        self._fds_lock = threading.RLock()

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def has(self, name: str) -> bool:
        return os.path.exists(self.file(name))

    def present(self) -> bool:
        return os.path.isdir(self.path)

    def read(self, name: str) -> str | None:
        """Text of a stats file through its kept-open descriptor."""
        optional, name = name.startswith("?"), name.lstrip("?")
        with self._fds_lock:
            fd = self._kept_fd(name, optional)
            return None if fd is None else self._pread(fd, name)

    def _kept_fd(self, name: str, optional: bool) -> int | None:
        """The file's kept-open descriptor, opened on first use (None: an
        optional file this kernel lacks).  Call with _fds_lock held."""
        if name not in self._fds:
            self._fds[name] = self._open_stats_file(name, optional)
        return self._fds[name]

    def _open_stats_file(self, name: str, optional: bool) -> int | None:
        path = self.file(name)
        # v2 resets a *.peak for reads through the descriptor that was written
        # to, so a peak is opened read-write where the kernel lets us (reset()).
        # v1's peak too: a write through the kept descriptor costs the cell no
        # open of the file (in a kernel's process, with its threads, an open,
        # write and close cost ~0.1 ms before each cell).
        modes = (os.O_RDWR, os.O_RDONLY) if name.endswith(PEAKS) else (os.O_RDONLY,)
        for mode in modes:
            try:
                return os.open(path, mode | os.O_CLOEXEC)
            except PermissionError:
                if mode == modes[-1]:
                    raise CgroupError(errno.EACCES, f"opening {path}: permission denied") from None
            except FileNotFoundError:
                if optional:
                    return None
                raise CgroupError(errno.ENOENT, f"{path} is missing: the group was removed, "
                                                "or its controller is not enabled") from None
            except OSError as error:
                raise CgroupError(error.errno, f"opening {path}: {error.strerror}") from None
        return None

    def _pread(self, fd: int, name: str) -> str:
        chunks, offset = [], 0
        try:
            while offset < READ_LIMIT:
                chunk = os.pread(fd, 65536, offset)
                if not chunk:
                    break
                chunks.append(chunk)
                offset += len(chunk)
                if len(chunk) < 65536:
                    # a short read is the end (a cgroup file is made whole at
                    # each read from 0): another pread would make it again,
                    # and a cell reads some 16 files twice
                    break
        except OSError as error:
            raise CgroupError(error.errno, f"reading {self.file(name)}: {error.strerror}") from None
        return b"".join(chunks).decode()

    def reset(self, name: str, value: str = "reset") -> bool:
        """Write to a stats file's own descriptor; False where the kernel
        refuses.  A refusal is the kernel's answer for good (a pids.peak
        without reset, a descriptor it let us open read-only): a cell resets
        the peaks before it runs, so it is not asked again each cell."""
        with self._fds_lock:
            if name in self._refused or self._kept_fd(name, optional=True) is None:
                return False
            if not self._write_own(name, value):
                self._refused.add(name)
                return False
            return True

    def _write_own(self, name: str, value: str) -> bool:
        try:
            os.write(self._fds[name], value.encode())
        except OSError as error:
            # EINVAL/EACCES: a kernel without resettable peaks; EBADF: opened read-only
            if error.errno in (errno.EINVAL, errno.EACCES, errno.EPERM, errno.EBADF):
                return False
            raise CgroupError(error.errno, f"writing {value!r} to {self.file(name)}: "
                                           f"{error.strerror}") from None
        return True

    def read_once(self, name: str) -> str:
        """Text of a file read now, not kept open (cgroup.procs, states)."""
        path = self.file(name)
        try:
            with open(path, encoding="ascii") as file:
                return file.read()
        except OSError as error:
            raise CgroupError(error.errno, f"reading {path}: {error.strerror}") from None

    def write(self, name: str, value: str, fix: str = "") -> None:
        """One write(2) of value: the kernel parses each write on its own."""
        path = self.file(name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        except OSError as error:
            hint = f"; {fix}" if fix else ""
            raise CgroupError(error.errno, f"writing {value!r} to {path} failed: "
                                           f"{error.strerror}{hint}") from None

    def pids(self) -> list[int]:
        """Pids in cgroup.procs; a group that is gone holds none."""
        try:
            return [int(pid) for pid in self.read_once("cgroup.procs").split()]
        except CgroupError as error:
            if error.errno in (errno.ENOENT, errno.ENODEV):
                return []
            raise

    def rmdir(self) -> None:
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise CgroupError(error.errno, f"rmdir {self.path}: {error.strerror}") from None

    def close(self) -> None:
        with self._fds_lock:
            fds, self._fds = self._fds, {}
        for fd in fds.values():
            if fd is not None:
                os.close(fd)


def remove_when_empty(dirs: list[CgroupDir], kill, timeout: float = WAIT_SECONDS) -> None:
    """rmdir every dir once no process is left in any of them.

    kill() is called again while processes remain: without a freezer a
    process can fork between the kill and its death.  Bounded by timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        pids = sorted({pid for group_dir in dirs for pid in group_dir.pids()})
        if not pids:
            try:
                for group_dir in dirs:
                    group_dir.rmdir()
                return
            except CgroupError as error:
                if error.errno != errno.EBUSY:   # EBUSY: exits not yet accounted
                    raise
        if time.monotonic() >= deadline:
            raise CgroupError(errno.EBUSY, f"{dirs[0].path} still holds pids {pids} after "
                                           f"{timeout:g} s: a process in uninterruptible sleep "
                                           "(state D in /proc/PID/stat) cannot die until its I/O ends")
        if pids:
            kill()
        time.sleep(0.02)
