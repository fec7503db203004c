"""The kernel's connection: ZeroMQ over ipc (unix sockets) in a private
directory bound into the container, so the kernel needs no network at
all (its container may run with --net none) and nothing listens on a
port any local user could reach.

On the host::

    <parent>/sbk-<pid>-<hex>-prov-XXXXXXXX/   0700, the server's user: nobody else gets in
        k/                           0700, the kernel's user (as root: 65532); bound
            kernel.json              0600: the kernel's connection file (the HMAC key)
            kernel-1 ... kernel-5    the sockets the kernel binds

and inside the container ``k/`` is KERNEL_DIR (/run/jupyter-kernel), where
no other container and no other user can see it.  The kernel manager
keeps its own copy of the connection info (its connection file in
Jupyter's runtime directory, 0600, as for any kernel) with ``ip`` the host
path of the sockets; the kernel's copy names the same sockets by their
path inside.  The key is in these two files only: not in argv, not in the
environment.

The directory is named as the runtime names what a process owns
(``sbk-<owner pid>-<hex>``): if the server dies without cleaning up (kill
-9), its containers go by their lifelines, and this directory goes with
the next reap of dead owners' leftovers (runtime/cleanup.py reap_stale,
which every process's first container start runs).

Imports: the runtime's safe_fs (removing the directory) and settings' KERNEL_DIR.
"""
from __future__ import annotations

import json
import os
import secrets
import tempfile

from ..runtime import safe_fs
from .settings import KERNEL_DIR

SOCKET_PREFIX = "kernel"             # the sockets are <dir>/kernel-<port>, as jupyter_client names them
CONNECTION_FILE = "kernel.json"


def _parent() -> str:
    """Where the runtime's reaper looks (/run, the temp dir), and short: a
    unix socket's path holds at most 107 bytes."""
    return "/run" if os.access("/run", os.W_OK | os.X_OK) else tempfile.gettempdir()


class ConnectionDir:
    """The private directory of one kernel id (kept across its restarts)."""

    def __init__(self, owner: tuple[int, int] | None):
        """``owner``: the host (uid, gid) of the kernel's user, who gets
        ``k/`` (None: this process's user, who has it already)."""
        prefix = f"sbk-{os.getpid()}-{secrets.token_hex(4)}-prov-"
        self.outer = tempfile.mkdtemp(prefix=prefix, dir=_parent())   # mode 0700
        self.host_dir = os.path.join(self.outer, "k")
        os.mkdir(self.host_dir, 0o700)
        self._owner = owner
        if owner is not None:
            os.chown(self.host_dir, *owner)

    @property
    def host_ip(self) -> str:
        """The kernel manager's ``ip`` for transport ipc: the sockets' host path prefix."""
        return os.path.join(self.host_dir, SOCKET_PREFIX)

    def write(self, info: dict) -> str:
        """The kernel's connection file (0600, the kernel's user's), its path inside."""
        inside = dict(info, transport="ipc", ip=f"{KERNEL_DIR}/{SOCKET_PREFIX}")
        inside = {k: v.decode() if isinstance(v, bytes) else v for k, v in inside.items()}
        path = os.path.join(self.host_dir, CONNECTION_FILE)
        partial = path + ".new"
        self.clear()     # the kernel's user may have left anything under these names
        # O_EXCL: never through a link or into a file someone left there
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if self._owner is not None:
                os.fchown(fd, *self._owner)
            with os.fdopen(fd, "w") as handle:
                fd = None
                json.dump(inside, handle)
        finally:
            if fd is not None:
                os.close(fd)
        os.replace(partial, path)
        return f"{KERNEL_DIR}/{CONNECTION_FILE}"

    def clear(self) -> None:
        """Remove what the last kernel left (its sockets, its rewritten
        connection file) before the next binds the same names."""
        try:
            names = os.listdir(self.host_dir)
        except FileNotFoundError:
            return
        for name in names:
            try:
                os.unlink(os.path.join(self.host_dir, name))
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                pass    # a directory the kernel made: remove() takes it with the rest

    def remove(self) -> None:
        safe_fs.remove_tree(self.outer)
