"""Resolving a path beneath a root without leaving it, the two ways.

``open_with_openat2``: the kernel's (5.6+), ``openat2`` with
RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS (and NO_XDEV
where mounts are refused).  ``open_by_walk``: the same rules by hand, one
component at a time, each opened O_NOFOLLOW from its parent's dirfd.  Which
one a process uses, and the API built on them (open_beneath, walk,
remove_tree), is safe_fs.py's; this module only resolves.

Imports: syscalls only.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator

from . import syscalls

RESOLVE = syscalls.RESOLVE_BENEATH | syscalls.RESOLVE_NO_SYMLINKS | syscalls.RESOLVE_NO_MAGICLINKS
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def split_beneath(root: int | str, relpath: str) -> list[str]:
    """The components of ``relpath``; EXDEV if it is absolute or has '..'."""
    if relpath.startswith("/"):
        raise OSError(errno.EXDEV, "an absolute path is not beneath the root", joined(root, relpath))
    parts = [part for part in relpath.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise OSError(errno.EXDEV, "'..' is refused beneath a root", joined(root, relpath))
    return parts


@contextlib.contextmanager
def opened_root(root: int | str) -> Iterator[int]:
    """``root`` as an fd: itself if it is one, else opened (O_PATH) and closed after."""
    if isinstance(root, int):
        yield root
        return
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)   # the root path is trusted
    try:
        yield fd
    finally:
        os.close(fd)


def open_with_openat2(root_fd: int, root, relpath: str, flags: int, mode: int, cross_mounts: bool) -> int:
    resolve = RESOLVE | (0 if cross_mounts else syscalls.RESOLVE_NO_XDEV)
    if not flags & os.O_CREAT and flags & os.O_TMPFILE != os.O_TMPFILE:
        mode = 0           # openat2 takes a mode only where one is used (EINVAL otherwise)
    for _ in range(8):     # EAGAIN: a rename or mount raced the resolution; the kernel asks to retry
        try:
            return syscalls.openat2(root_fd, relpath or ".", flags | os.O_CLOEXEC, mode, resolve)
        except OSError as error:
            if error.errno != errno.EAGAIN:
                raise OSError(error.errno, f"open beneath the root failed: {os.strerror(error.errno)}",
                              joined(root, relpath)) from None
    raise OSError(errno.EAGAIN, "open beneath the root kept racing renames", joined(root, relpath))


def open_by_walk(root_fd: int, root, parts: list[str], flags: int, mode: int, cross_mounts: bool) -> int:
    """openat2's rules by hand: each directory opened O_NOFOLLOW from its parent."""
    fd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root_fd)
    try:
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            step_flags = (flags | os.O_NOFOLLOW) if last else (os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW)
            child = _open_step(fd, part, step_flags, mode, root, parts[:index + 1])
            if not cross_mounts and os.fstat(child).st_dev != os.fstat(fd).st_dev:
                os.close(child)
                raise OSError(errno.EXDEV, "a mount point is refused beneath the root",
                              joined(root, "/".join(parts[:index + 1])))
            os.close(fd)
            fd = child
        if not parts:
            return _reopen_root(fd, flags, mode)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_step(fd: int, part: str, flags: int, mode: int, root, done: list[str]) -> int:
    try:
        child = os.open(part, flags | os.O_CLOEXEC, mode, dir_fd=fd)
        if flags & os.O_PATH and stat.S_ISLNK(os.fstat(child).st_mode):
            os.close(child)        # O_PATH|O_NOFOLLOW gives the link itself: refused as openat2 does
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
        return child
    except OSError as error:
        code = error.errno
        with contextlib.suppress(OSError):
            if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                code = errno.ELOOP     # as openat2 says it, whatever O_DIRECTORY made of it
        raise OSError(code, f"open beneath the root failed: {os.strerror(code)}",
                      joined(root, "/".join(done))) from None


def _reopen_root(path_fd: int, flags: int, mode: int) -> int:
    if flags & os.O_PATH:
        return path_fd
    try:
        return os.open(".", flags | os.O_CLOEXEC, mode, dir_fd=path_fd)
    finally:
        os.close(path_fd)


def joined(root, relpath: str) -> str:
    if isinstance(root, int):
        with contextlib.suppress(OSError):
            root = os.readlink(f"/proc/self/fd/{root}")
    return os.path.join(str(root), relpath.lstrip("/"))


def shortened(path: str) -> str:
    return path if len(path) <= 300 else f"{path[:150]}...({path.count('/')} levels)...{path[-120:]}"
