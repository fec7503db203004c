"""Idmapped bind mounts (mount_setattr MOUNT_ATTR_IDMAP, Linux 5.12+): a
host directory whose files of its owner show as the workload's inside, and
whose new files are the owner's on the host.

The map is a user namespace made for the purpose: a helper child unshares
one and waits while we (root of the host's user namespace) write its maps
through the host's /proc; its namespace fd is what mount_setattr takes.
Where the file system (or a mount below the source) cannot be idmapped, or
the kernel is too old, ``bind`` says so (False) and the caller binds plainly.

Imports: syscalls only.
"""
from __future__ import annotations

import errno
import os

from . import syscalls as sc

# where the file system cannot be idmapped, or the kernel is older than 5.12
_NO_IDMAP = (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.EOPNOTSUPP)


def bind(source: str, target: str, owner: tuple[int, int], user: tuple[int, int],
         flags: int) -> bool:
    """Bind ``source`` at ``target`` (which exists) with the host ``owner``'s
    (uid, gid) shown as ``user``'s, and the nosuid, nodev and read-only bits
    of the MS_* ``flags``.  False (nothing mounted) where it cannot be
    idmapped; any other failure is raised."""
    try:
        userns = _idmap_userns(f"{owner[0]} {user[0]} 1\n", f"{owner[1]} {user[1]} 1\n")
    except OSError as error:
        if error.errno not in _NO_IDMAP:
            raise
        return False
    try:
        tree = sc.open_tree_clone(source)
        try:
            sc.mount_setattr_idmap(tree, source, userns, _mount_attrs(flags))
            sc.move_mount_to(tree, target)
        finally:
            os.close(tree)
    except OSError as error:
        if error.errno not in _NO_IDMAP:
            raise
        return False
    finally:
        os.close(userns)
    return True


def _mount_attrs(flags: int) -> int:
    attrs = 0
    for ms_bit, attr in ((sc.MS_RDONLY, sc.MOUNT_ATTR_RDONLY), (sc.MS_NOSUID, sc.MOUNT_ATTR_NOSUID),
                         (sc.MS_NODEV, sc.MOUNT_ATTR_NODEV)):
        if flags & ms_bit:
            attrs |= attr
    return attrs


def _idmap_userns(uid_map: str, gid_map: str) -> int:
    """An fd of a new user namespace with these maps, for MOUNT_ATTR_IDMAP.
    A child unshares it and waits; we (root of the host's user namespace)
    write its maps through the host's /proc (still mounted: this runs before
    pivot_root), where the child's pid is the host's, read from /proc/self."""
    to_parent_r, to_parent_w = os.pipe()
    to_child_r, to_child_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(to_parent_r)
            os.close(to_child_w)
            sc.unshare(sc.CLONE_NEWUSER)
            os.write(to_parent_w, os.readlink("/proc/self").encode())
            os.close(to_parent_w)
            os.read(to_child_r, 1)
            code = 0
        finally:
            os._exit(code)
    os.close(to_parent_w)
    os.close(to_child_r)
    try:
        host_pid = os.read(to_parent_r, 32).decode()
        if not host_pid.isdigit():
            raise OSError(errno.EPERM, "idmap: the helper could not make a user namespace")
        for name, text in (("uid_map", uid_map), ("gid_map", gid_map)):
            sc.write_proc_file(f"/proc/{host_pid}/{name}", text)
        return os.open(f"/proc/{host_pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(to_parent_r)
        os.close(to_child_w)
        os.waitpid(pid, 0)
