"""The kernel's connection: ZeroMQ over ipc (unix sockets) in a private
directory bound into the container, so the kernel needs no network at
all (its container may run with --net none) and nothing listens on a
port any local user could reach.

On the host::

    <parent>/sbk-<pid>-<hex>-prov-XXXXXXXX/   0700, the server's user: nobody else gets in
        k/                   0700, the kernel's user (as root: 65532), bound into the container
            kernel.json      0600: the kernel's connection file (the HMAC key)
            kernel-1 ... 5   the sockets the kernel binds, until claimed
        s/                   0700, the server's user: the sockets the server connects to

and inside the container ``k/`` is KERNEL_DIR (/run/jupyter-kernel), where
no other container and no other user can see it.  The kernel manager
keeps its own copy of the connection info (its connection file in
Jupyter's runtime directory, 0600, as for any kernel) with ``ip`` the host
path of ``s/kernel``; the kernel's copy names ``/run/jupyter-kernel/kernel``.
The key is in these two files only: not in argv, not in the environment.

Why ``s/``: the kernel may write ``k/``, so it could put a symbolic link
there where a socket should be, pointing at any unix socket of the host,
and the server (root) would follow it at its next (re)connect.  So the
server never connects through ``k/``: once the kernel has bound its
sockets, each is checked to be a socket of the kernel's user and moved
(rename: the same socket, bound by inode) into ``s/``, which the container
cannot see; a socket moved is checked again where nothing can change it.
A kernel that puts anything else there fails its start in one line.

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
import stat
import tempfile
import time

from ..runtime import safe_fs
from .settings import KERNEL_DIR

SOCKET_PREFIX = "kernel"             # the sockets are <dir>/kernel-<port>, as jupyter_client names them
CONNECTION_FILE = "kernel.json"
PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
CLAIM_STEP = 0.02


class SocketClaimError(RuntimeError):
    """The kernel's sockets are not what a kernel binds; one line."""


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
        self.sockets_dir = os.path.join(self.outer, "s")
        os.mkdir(self.host_dir, 0o700)
        os.mkdir(self.sockets_dir, 0o700)
        self._owner = owner
        if owner is not None:
            os.chown(self.host_dir, *owner)

    @property
    def host_ip(self) -> str:
        """The kernel manager's ``ip`` for transport ipc: the claimed sockets' path prefix."""
        return os.path.join(self.sockets_dir, SOCKET_PREFIX)

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
        connection file, whatever it made) before the next binds the same names."""
        for directory in (self.host_dir, self.sockets_dir):
            try:
                fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                for name in os.listdir(fd):
                    safe_fs.remove_tree(name, dir_fd=fd)    # never through a link, any depth
            finally:
                os.close(fd)

    def claim(self, info: dict, running, timeout: float) -> bool:
        """Move each socket the kernel bound from k/ to s/ once it is there
        (a socket of the kernel's user); False if ``running()`` turned false
        first (the kernel died: the manager sees it), SocketClaimError past
        ``timeout`` or for anything but a socket."""
        pending = [f"{SOCKET_PREFIX}-{info[port]}" for port in PORTS]
        deadline = time.monotonic() + timeout
        while pending:
            pending = [name for name in pending if not self._claim_one(name)]
            if not pending:
                return True
            if not running():
                return False
            if time.monotonic() > deadline:
                raise SocketClaimError(f"the kernel did not bind its sockets within {timeout:g} s "
                                       f"(missing: {', '.join(pending)} in {KERNEL_DIR})")
            time.sleep(CLAIM_STEP)
        return True

    def _claim_one(self, name: str) -> bool:
        """True once ``name`` is in s/; False while the kernel has not bound it."""
        try:
            found = os.lstat(os.path.join(self.host_dir, name))
        except FileNotFoundError:
            return False
        self._check_socket(found, name)
        try:
            os.rename(os.path.join(self.host_dir, name), os.path.join(self.sockets_dir, name))
        except FileNotFoundError:    # unlinked meanwhile (a kernel binding again)
            return False
        moved = os.lstat(os.path.join(self.sockets_dir, name))
        try:
            self._check_socket(moved, name)        # swapped between the two looks?
        except SocketClaimError:
            os.unlink(os.path.join(self.sockets_dir, name))
            raise
        return True

    def _check_socket(self, info: os.stat_result, name: str) -> None:
        owner = self._owner[0] if self._owner is not None else os.geteuid()
        if not stat.S_ISSOCK(info.st_mode) or info.st_uid != owner:
            kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else f"mode {oct(info.st_mode)}"
            raise SocketClaimError(f"{KERNEL_DIR}/{name} is not a socket the kernel bound ({kind}, "
                                   f"uid {info.st_uid}): the kernel is not started")

    def remove(self) -> None:
        safe_fs.remove_tree(self.outer)
