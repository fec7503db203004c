"""File operations for root on trees a container wrote: a build's upper dir,
a layer, a state dir.

Such a tree is hostile input.  The container could plant a symlink at any
component (``etc -> /``), nest directories deeper than Python's recursion
limit, leave directories without permission bits, or (through a bind mount
left behind) put a host directory inside the tree.  Three rules follow:

* a path is resolved beneath its root, never following a symlink at any
  component and never leaving the root (``open_beneath``): ``openat2`` with
  ``RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS`` where the
  kernel has it (5.6+), else a walk of ``O_NOFOLLOW`` dirfds, one component
  at a time;
* a tree is walked or removed without recursion and with a bounded number of
  open fds, whatever its depth (``walk``, ``remove_tree``); a symlink is an
  entry like any other (unlinked, never followed), and a mount point is
  never entered;
* one bad entry is reported and skipped: ``remove_tree`` returns what it
  could not remove instead of raising, so a caller cleaning up after many
  containers logs it and goes on to the next.

Example::

    fd = open_beneath(upper, "etc/passwd", os.O_RDONLY)   # ELOOP if etc is a symlink
    for leftover in remove_tree("/run/sbk-123-abc"):
        print(leftover)                                  # path: reason

The two resolvers themselves are beneath.py's; which one this process uses
(``_have_openat2``) is decided here, once.  Imports: syscalls and beneath.
"""
from __future__ import annotations

import collections
import contextlib
import errno
import os
import re
import stat
from collections.abc import Callable, Iterator

from . import syscalls
from .beneath import (DIR_FLAGS, RESOLVE, joined, open_by_walk, open_with_openat2, opened_root,
                      shortened, split_beneath)


def _log():
    """The module's logger; logging is imported when something is to be said
    (the launcher imports this module on every container's start)."""
    import logging
    return logging.getLogger(__name__)

# Open fds a walk keeps at once, deepest first: a deeper tree reopens a parent
# through '..' of its child and checks that it is the same directory (dev, ino).
FD_CAP = 64
# Most entries remove_tree reports (a directory of a million bad entries is one report).
REPORT_CAP = 100

_openat2_works: bool | None = None     # None: not tried yet on this kernel


class NotRemoved(collections.namedtuple("NotRemoved", "path reason")):
    """An entry remove_tree left (``path``), and why (``reason``)."""
    __slots__ = ()

    def __str__(self) -> str:
        return f"{shortened(self.path)}: {self.reason}"


# --- open_beneath

def open_beneath(root: int | str, relpath: str, flags: int = os.O_RDONLY, mode: int = 0o644, *,
                 cross_mounts: bool = True) -> int:
    """An fd for ``relpath`` beneath ``root`` (a dirfd or a trusted path).

    No component may be a symlink (ELOOP), '..' or absolute (EXDEV); with
    ``cross_mounts=False`` none may be a mount point (EXDEV).  ``""`` or
    ``"."`` is the root itself.  Errors are OSError with the full path."""
    parts = split_beneath(root, relpath)
    with opened_root(root) as root_fd:
        if _have_openat2():
            return open_with_openat2(root_fd, root, relpath, flags, mode, cross_mounts)
        return open_by_walk(root_fd, root, parts, flags, mode, cross_mounts)


@contextlib.contextmanager
def parent_beneath(root: int | str, relpath: str) -> Iterator[tuple[int, str]]:
    """(dirfd of the parent, last name) of ``relpath`` beneath ``root``, for
    the *at calls (``os.unlink(name, dir_fd=fd)``); the dirfd is closed after."""
    parts = split_beneath(root, relpath)
    if not parts:
        raise OSError(errno.EINVAL, "the root itself has no parent beneath the root", joined(root, relpath))
    fd = open_beneath(root, "/".join(parts[:-1]), os.O_PATH | os.O_DIRECTORY)
    try:
        yield fd, parts[-1]
    finally:
        os.close(fd)


def lstat_beneath(root: int | str, relpath: str) -> os.stat_result | None:
    """lstat of ``relpath`` beneath ``root``; None if it or a parent is missing,
    or if a parent is not a real directory (a symlink, a file)."""
    try:
        with parent_beneath(root, relpath) as (fd, name):
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.EXDEV):
            return None
        raise


def read_beneath(root: int | str, relpath: str, limit: int = 1 << 20) -> bytes | None:
    """The bytes of a regular file beneath ``root`` (at most ``limit``), or
    None if it is missing or anything but a regular file reached without
    symlinks (a FIFO does not block: it is opened non-blocking and refused)."""
    try:
        fd = open_beneath(root, relpath, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.EXDEV, errno.ENXIO):
            return None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read(limit)


def _have_openat2() -> bool:
    global _openat2_works
    if _openat2_works is None:
        probe = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.close(syscalls.openat2(probe, ".", os.O_PATH | os.O_CLOEXEC, 0, RESOLVE))
            _openat2_works = True
        except OSError as error:    # ENOSYS: before 5.6; EPERM/EINVAL: a seccomp filter, an old header
            _openat2_works = False
            _log().debug("openat2 unavailable (%s): resolving beneath roots by a dirfd walk", error)
        finally:
            os.close(probe)
    return _openat2_works


def entry_path(dir_fd: int, name: str) -> str:
    """A path naming entry ``name`` of the open directory ``dir_fd`` for calls
    that take no dir_fd (xattrs, tarfile): /proc/self/fd/N is the very
    directory that was opened, and ``name`` is one component, so the only
    link a non-following call (lstat, lgetxattr) meets is that magic one."""
    return f"/proc/self/fd/{dir_fd}/{name}"


# --- walking and removing trees

class _Frame:
    """One directory on the path from the top of a tree to where a walk is."""
    __slots__ = ("name", "fd", "dev", "ino", "names", "incomplete", "shown")

    def __init__(self, name: str, fd: int, info: os.stat_result):
        self.name, self.fd, self.dev, self.ino = name, fd, info.st_dev, info.st_ino
        self.names: list[str] = []      # what is left to visit, last first
        self.incomplete = False         # something below could not be removed
        self.shown = False              # walk: yielded already


class _DirPath:
    """The open directories from the top of a tree down to the current one,
    without recursion.  Only the deepest FD_CAP frames hold an fd: going up
    past them reopens the parent as '..' of the child and checks that it is
    the directory that was entered (dev, ino), so a tree moved meanwhile
    stops the walk instead of steering it elsewhere."""

    def __init__(self, parent_fd: int, top_path: str, *, unlock: bool):
        self.parent_fd, self.top_path, self.unlock = parent_fd, top_path, unlock
        self.frames: list[_Frame] = []
        self.mounts = set() if _have_openat2() else _mount_points_under(top_path)

    @property
    def top(self) -> _Frame:
        return self.frames[-1]

    def fd_above(self) -> int:
        """The fd of the directory holding the current one."""
        return self.frames[-1].fd if self.frames else self.parent_fd

    def path(self, name: str | None = None) -> str:
        if not self.frames:
            return self.top_path
        names = [frame.name for frame in self.frames[1:]] + ([name] if name else [])
        return os.path.join(self.top_path, *names)

    def push(self, name: str) -> _Frame:
        """Enter directory ``name`` of the current one (the top first): not a
        symlink, not a mount point (below the top), listed at once."""
        fd = self._open_dir(self.fd_above(), name)
        try:
            frame = _Frame(name, fd, os.fstat(fd))
            frame.names = sorted(os.listdir(fd), reverse=True)
        except BaseException:
            os.close(fd)
            raise
        self.frames.append(frame)
        if len(self.frames) > FD_CAP and self.frames[-FD_CAP - 1].fd is not None:
            os.close(self.frames[-FD_CAP - 1].fd)
            self.frames[-FD_CAP - 1].fd = None
        return frame

    def pop(self) -> _Frame:
        """Leave the current directory (its fd is closed); its parent has an fd after."""
        frame = self.frames.pop()
        try:
            if self.frames and self.top.fd is None:
                self.top.fd = self._reopen_parent(frame)
        finally:
            os.close(frame.fd)
        return frame

    def close(self) -> None:
        for frame in self.frames:
            if frame.fd is not None:
                os.close(frame.fd)
        self.frames.clear()

    def _open_dir(self, at: int, name: str) -> int:
        below_top = bool(self.frames)
        try:
            fd = self._open_nofollow(at, name, DIR_FLAGS, below_top)
        except PermissionError:
            if not self.unlock:
                raise
            fd = self._open_locked(at, name, below_top)
        if self.unlock:
            _let_owner_in(fd)
        return fd

    def _open_nofollow(self, at: int, name: str, flags: int, below_top: bool) -> int:
        """Open one component; EXDEV if it is a mount point below the top."""
        if below_top and _have_openat2():
            try:
                return syscalls.openat2(at, name, flags | os.O_CLOEXEC, 0,
                                        RESOLVE | syscalls.RESOLVE_NO_XDEV)
            except OSError as error:
                raise OSError(error.errno, _mount_or(error), self.path(name)) from None
        try:
            fd = os.open(name, flags | os.O_CLOEXEC, dir_fd=at)
        except OSError as error:
            raise OSError(error.errno, error.strerror, self.path(name)) from None
        if below_top and (os.fstat(fd).st_dev != self.frames[0].dev
                          or self.mounts and self.path(name) in self.mounts):
            os.close(fd)
            raise OSError(errno.EXDEV, "a mount point: not entered", self.path(name))
        return fd

    def _open_locked(self, at: int, name: str, below_top: bool) -> int:
        """A directory without r-x for us (a layer's 0500, a container's 0000):
        give the owner rwx through an O_PATH fd (fchmod refuses those), then open it."""
        path_fd = self._open_nofollow(at, name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, below_top)
        try:
            mode = stat.S_IMODE(os.fstat(path_fd).st_mode)
            os.chmod(f"/proc/self/fd/{path_fd}", mode | 0o700)   # the magic link is that very inode
            return os.open(".", DIR_FLAGS, dir_fd=path_fd)
        finally:
            os.close(path_fd)

    def _reopen_parent(self, child: _Frame) -> int:
        fd = os.open("..", DIR_FLAGS, dir_fd=child.fd)
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != (self.top.dev, self.top.ino):
            os.close(fd)
            raise OSError(errno.ESTALE, "the tree was moved while it was walked: stopped there",
                          self.path())
        return fd


def _mount_or(error: OSError) -> str:
    return "a mount point: not entered" if error.errno == errno.EXDEV else error.strerror


def _let_owner_in(fd: int) -> None:
    """rwx for the owner of a directory about to be emptied (unlinking needs w)."""
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode & 0o700 != 0o700:
        with contextlib.suppress(PermissionError):   # not ours (rootless, another uid): try anyway
            os.fchmod(fd, mode | 0o700)


def _mount_points_under(top: str) -> set[str]:
    """Mount points below ``top`` (without openat2 a bind mount of the same
    file system has the same st_dev: mountinfo is the only way to see it)."""
    prefix = os.path.realpath(top).rstrip("/") + "/"
    try:
        with open("/proc/self/mountinfo", "rb") as handle:
            lines = handle.read().decode(errors="surrogateescape").splitlines()
    except OSError:
        return set()
    points = {_unescape(line.split(" ")[4]) for line in lines if len(line.split(" ")) > 4}
    return {point for point in points if point.startswith(prefix)}


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def walk(root: int | str) -> Iterator[tuple[str, int, list[str]]]:
    """Every directory under ``root`` (itself first), as ``(relative dir,
    dir fd, sorted entry names)``, top-down and depth-first in name order, as
    ``os.walk`` with sorted lists gives it; but without recursion, without
    following symlinks and without entering mount points.  The fd is valid
    until the next step: use it with dir_fd= or ``entry_path``."""
    with opened_root(root) as root_fd:
        path = _DirPath(root_fd, joined(root, ""), unlock=False)
        try:
            path.push(".")
            while path.frames:
                frame = path.top
                if not frame.shown:          # first visit: show it, then go below
                    frame.shown = True
                    names = sorted(frame.names)
                    yield "/".join(f.name for f in path.frames[1:]), frame.fd, names
                    frame.names = [name for name in reversed(names) if _is_real_dir(frame.fd, name)]
                if frame.names:
                    path.push(frame.names.pop())
                else:
                    path.pop()
        finally:
            path.close()


def _is_real_dir(dir_fd: int, name: str) -> bool:
    return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)


def remove_tree(path: str, *, dir_fd: int | None = None) -> list[NotRemoved]:
    """``rm -rf`` for a tree a container wrote; what it could not remove is
    logged and returned (empty: all gone, or it was not there).

    ``path`` is the tree (its parent is trusted: /run, a store's work dir),
    or with ``dir_fd`` one name in that open directory.  Symlinks are
    unlinked, never followed; directories without permission bits are
    opened by giving their owner rwx; a mount point inside is left as it is
    (with what it shows) and reported; any depth is fine."""
    parent, name = (".", path) if dir_fd is not None else os.path.split(os.path.abspath(path))
    if "/" in name or name in ("", ".", ".."):
        raise OSError(errno.EINVAL, "remove_tree takes one name under dir_fd", path)
    report = _Report(joined(parent if dir_fd is None else dir_fd, name))
    try:
        with opened_root(parent if dir_fd is None else dir_fd) as parent_fd:
            _remove_named(parent_fd, name, report)
    except FileNotFoundError:       # no parent: nothing to remove
        pass
    left = report.done()
    for entry in left:
        _log().warning("could not remove %s", entry)
    return left


def _remove_named(parent_fd: int, name: str, report: "_Report") -> None:
    try:
        info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    except OSError as error:
        report.add(report.top, error)
        return
    if stat.S_ISDIR(info.st_mode):
        _remove_dir(parent_fd, name, report)
    else:
        _unlink(parent_fd, name, lambda: report.top, report)


class _Report:
    def __init__(self, top: str):
        self.top, self.entries, self.more = top, [], 0

    def add(self, path: str, error: OSError | str) -> None:
        if len(self.entries) < REPORT_CAP:
            reason = error if isinstance(error, str) else (error.strerror or str(error))
            self.entries.append(NotRemoved(path, reason))
        else:
            self.more += 1

    def done(self) -> list[NotRemoved]:
        entries = list(self.entries)
        if self.more:
            entries.append(NotRemoved(self.top, f"and {self.more} more entries not removed"))
        return entries


def _remove_dir(parent_fd: int, name: str, report: _Report) -> None:
    path = _DirPath(parent_fd, report.top, unlock=True)
    try:
        path.push(name)
    except OSError as error:
        report.add(report.top, error)
        return
    try:
        while path.frames:
            frame = path.top
            if frame.names:
                _remove_entry(path, frame, frame.names.pop(), report)
                continue
            done = path.pop()
            if done.incomplete:
                if path.frames:
                    path.top.incomplete = True
                continue
            _rmdir(path.fd_above(), done.name, lambda: path.path(done.name) if path.frames else report.top,
                   report)
    except OSError as error:        # the tree moved under us: the rest stays, said once
        report.add(path.path() if path.frames else report.top, error)
    finally:
        path.close()


def _remove_entry(path: _DirPath, frame: _Frame, name: str, report: _Report) -> None:
    try:
        info = os.stat(name, dir_fd=frame.fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    except OSError as error:
        frame.incomplete = True
        report.add(path.path(name), error)
        return
    if not stat.S_ISDIR(info.st_mode):
        if not _unlink(frame.fd, name, lambda: path.path(name), report):
            frame.incomplete = True
        return
    try:
        path.push(name)
    except OSError as error:
        frame.incomplete = True
        report.add(error.filename or path.path(name), error)


def _unlink(dir_fd: int, name: str, shown: Callable[[], str], report: _Report) -> bool:
    """``shown()`` is the path for the report: made only on error (a deep tree's is long)."""
    try:
        os.unlink(name, dir_fd=dir_fd)
        return True
    except FileNotFoundError:
        return True
    except OSError as error:
        report.add(shown(), error)
        return False


def _rmdir(dir_fd: int, name: str, shown: Callable[[], str], report: _Report) -> None:
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as error:
        report.add(shown(), error)
