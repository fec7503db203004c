"""The project's only ctypes module: thin wrappers over the Linux system calls
that Python 3.11's ``os`` module lacks.

Every wrapper raises ``OSError(errno, "<call> failed: <strerror>", path)`` on
failure, as pyroute2 does, so callers catch ``PermissionError``,
``FileNotFoundError`` and friends instead of checking return codes.

The libc handle is module state so that tests can inject a fake (``set_libc``).
"""
from __future__ import annotations

import ctypes
import os
import struct

# --- namespace flags (linux/sched.h)
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# --- mount flags (linux/mount.h)
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

# --- prctl options (linux/prctl.h)
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
# securebits (linux/securebits.h): uid 0 gets no capabilities from execve, for good
SECBIT_NOROOT = 1 << 0
SECBIT_NOROOT_LOCKED = 1 << 1
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

_libc = ctypes.CDLL(None, use_errno=True)   # the process's own libc: find_library ran `ldconfig -p`


def set_libc(libc) -> None:
    """Swap the libc handle (tests inject a recorder here)."""
    global _libc
    _libc = libc


def _check(result: int, call: str, path: str | None = None) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{call} failed: {os.strerror(err)}", path)
    return result


def _b(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source: str | None, target: str, fstype: str | None = None,
          flags: int = 0, data: str | None = None) -> None:
    result = _libc.mount(_b(source), _b(target), _b(fstype),
                         ctypes.c_ulong(flags), _b(data))
    _check(result, f"mount({fstype or 'bind'})", target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), ctypes.c_int(flags)), "umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    # glibc has no wrapper: call the system call by number.
    result = _libc.syscall(ctypes.c_long(_SYSCALL_NR["pivot_root"]),
                           _b(new_root), _b(put_old))
    _check(result, "pivot_root", new_root)


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    args = [ctypes.c_ulong(a) for a in (arg2, arg3, arg4, arg5)]
    return _check(_libc.prctl(ctypes.c_int(option), *args), f"prctl({option})")


def set_pdeathsig(signum: int) -> None:
    prctl(PR_SET_PDEATHSIG, signum)


def set_process_name(name: str) -> None:
    """The name ps shows (comm, 15 bytes); unlike a write to /proc/self/comm it
    works after the privilege drop has made /proc/self root's."""
    raw = ctypes.create_string_buffer(name.encode()[:15])
    _check(_libc.prctl(ctypes.c_int(PR_SET_NAME), ctypes.c_char_p(raw.value),
                       ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)), "prctl(PR_SET_NAME)")


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_seccomp_filter(program: bytes) -> None:
    """Install a classic-BPF seccomp filter (a bytes string of sock_filter)."""
    count = len(program) // 8
    buffer = ctypes.create_string_buffer(program, len(program))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = struct.pack("HxxxxxxP", count, ctypes.addressof(buffer))
    fprog_buffer = ctypes.create_string_buffer(fprog, len(fprog))
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog_buffer))


# capset(2): header {version, pid}, data[2] {effective, permitted, inheritable}
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def capset_clear() -> None:
    """Clear the effective, permitted and inheritable capability sets."""
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    result = _libc.syscall(ctypes.c_long(_SYSCALL_NR["capset"]), header, data)
    _check(result, "capset")


def capget_effective() -> int:
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    result = _libc.syscall(ctypes.c_long(_SYSCALL_NR["capget"]), header, data)
    _check(result, "capget")
    return data[0] | (data[3] << 32)


_SYSCALL_NUMBERS = {
    "x86_64": {"pivot_root": 155, "capget": 125, "capset": 126},
    "aarch64": {"pivot_root": 41, "capget": 90, "capset": 91},
}
_SYSCALL_NR = _SYSCALL_NUMBERS.get(os.uname().machine, _SYSCALL_NUMBERS["x86_64"])


def write_proc_file(path: str, text: str) -> None:
    """One write(2) of text, as /proc and /sys files want (uid_map, comm, ...)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


# --- openat2(2) (linux/openat2.h): path resolution the kernel keeps beneath a dirfd
RESOLVE_NO_XDEV = 0x01        # refuse to cross a mount point (bind mounts too)
RESOLVE_NO_MAGICLINKS = 0x02  # refuse /proc/<pid>/fd/* style links
RESOLVE_NO_SYMLINKS = 0x04    # refuse every symlink, the last component's too
RESOLVE_BENEATH = 0x08        # refuse absolute paths and '..' out of the dirfd
_OPENAT2_NR = 437             # the same on every architecture (the unified table of 5.x)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """openat2(2); ENOSYS on kernels before 5.6 (callers fall back to a walk)."""
    how = _OpenHow(flags, mode, resolve)
    result = _libc.syscall(ctypes.c_long(_OPENAT2_NR), ctypes.c_int(dirfd), _b(path),
                           ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    return _check(result, "openat2", path)


# --- the new mount API (linux/mount.h, fcntl.h); the numbers are the same on every architecture
_OPEN_TREE_NR, _MOVE_MOUNT_NR, _MOUNT_SETATTR_NR = 428, 429, 442
OPEN_TREE_CLONE, AT_RECURSIVE, AT_EMPTY_PATH, MOVE_MOUNT_F_EMPTY_PATH = 1, 0x8000, 0x1000, 0x4
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_IDMAP = 0x1, 0x2, 0x4, 0x100000
_AT_FDCWD = -100


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _syscall(number: int, call: str, path: str, *args) -> int:
    return _check(_libc.syscall(ctypes.c_long(number), *args), call, path)


def open_tree_clone(source: str) -> int:
    """open_tree(OPEN_TREE_CLONE | AT_RECURSIVE): a detached copy of the mount
    tree at ``source``, as an fd (Linux 5.2+)."""
    return _syscall(_OPEN_TREE_NR, "open_tree", source, ctypes.c_int(_AT_FDCWD), _b(source),
                    ctypes.c_uint(OPEN_TREE_CLONE | os.O_CLOEXEC | AT_RECURSIVE))


def mount_setattr_idmap(tree: int, source: str, userns_fd: int, attrs: int = 0) -> None:
    """mount_setattr(MOUNT_ATTR_IDMAP | attrs) on a detached tree, mapping its
    ids through the user namespace ``userns_fd`` (Linux 5.12+)."""
    attr = _MountAttr(attr_set=MOUNT_ATTR_IDMAP | attrs, userns_fd=userns_fd)
    _syscall(_MOUNT_SETATTR_NR, "mount_setattr", source, ctypes.c_int(tree), b"",
             ctypes.c_uint(AT_EMPTY_PATH | AT_RECURSIVE), ctypes.byref(attr),
             ctypes.c_size_t(ctypes.sizeof(attr)))


def move_mount_to(tree: int, target: str) -> None:
    """move_mount of a detached tree onto ``target``."""
    _syscall(_MOVE_MOUNT_NR, "move_mount", target, ctypes.c_int(tree), b"",
             ctypes.c_int(_AT_FDCWD), _b(target), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))


def fill_memory(address: int, byte: int, size: int) -> None:
    """memset of this process's own memory at ``address`` (an area /proc/self/stat
    names, such as argv's): no system call, but ctypes belongs here."""
    ctypes.memset(address, byte, size)


def write_memory(address: int, data: bytes) -> None:
    """memmove of ``data`` into this process's own memory at ``address``."""
    ctypes.memmove(address, data, len(data))
