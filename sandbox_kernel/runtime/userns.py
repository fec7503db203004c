"""Rootless containers: the user namespace every other step stands on.

When the owner is not root, the launcher's first step is ``unshare(CLONE_NEWUSER)``:
in its new user namespace it holds every capability (over that namespace and
the namespaces it then makes), so the mounts, overlay (``userxattr``), pid,
net, uts and ipc namespaces work as they do for root.  What ids exist inside
is the id map, planned here on the owner's side (``plan``) and written on the
launcher's side (``enter``)::

    range (newuidmap/newgidmap installed, the user has /etc/subuid and /etc/subgid):
        inside 0            -> the user          uid_map "0 1000 1"
        inside 1..N         -> its subordinate ids  "1 100000 65536"
        the workload runs as the sandbox uid (65532), a subordinate id on the host
    single (anything else):
        inside 0 (or the user's own id, SANDBOX_KERNEL_USERNS=self) -> the user
        setgroups is denied (the kernel's rule for an unprivileged map),
        the workload runs as that one id: 0 inside, with no capability

Either way an id inside is never more than the user on the host: a root-owned
host file shows as ``nobody`` (65534) and stays as unwritable as it is to
the user.  newuidmap is setuid root and must run outside the new namespace
(inside, its setuid bit is ignored), so the launcher forks a helper before it
unshares, tells it when to write, and waits for it::

    launcher                    helper (still in the host's user namespace)
      fork  ------------------>  waits on the go pipe
      unshare(CLONE_NEWUSER)
      go  -------------------->  newuidmap LAUNCHER ...; newgidmap LAUNCHER ...
      waitpid  <--------------  exit 0, or the tool's error on the error pipe

Imports: syscalls only.
"""
from __future__ import annotations

import errno
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass

from . import syscalls as sc

MODE_ENV = "SANDBOX_KERNEL_USERNS"     # root (default) | self
MAP_ENV = "SANDBOX_KERNEL_IDMAP"       # auto (default) | single: never use newuidmap
MODES = ("root", "self")


class IdMapError(OSError):
    """The id map cannot be planned or written; the message says how to fix it."""


@dataclass(frozen=True)
class IdMap:
    """Who is who inside.  Lines are (first id inside, first id outside, count)."""
    uid_lines: tuple[tuple[int, int, int], ...]
    gid_lines: tuple[tuple[int, int, int], ...]
    by_tool: bool            # newuidmap/newgidmap write it (a range), else the launcher itself
    workload_uid: int
    workload_gid: int

    @property
    def kind(self) -> str:
        return "range" if self.by_tool else "single"

    def as_config(self) -> dict:
        """The map as plain data (the lines and who writes them)."""
        return {"uid_lines": [list(l) for l in self.uid_lines],
                "gid_lines": [list(l) for l in self.gid_lines], "by_tool": self.by_tool}


def rootless() -> bool:
    return os.geteuid() != 0


def subordinate_range(path: str, user: str, uid: int) -> tuple[int, int] | None:
    """The first (start, count) of /etc/subuid or /etc/subgid for the user
    (by name or by number), or None."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] in (user, str(uid)) and fields[1].isdigit() \
                and fields[2].isdigit() and int(fields[2]) > 0:
            return int(fields[1]), int(fields[2])
    return None


def plan(sandbox_user: tuple[int, int], *, mode: str | None = None, idmap: str | None = None,
         etc: str = "/etc") -> IdMap:
    """The id map for this user; ``sandbox_user`` is the spec's uid:gid inside."""
    mode = mode or os.environ.get(MODE_ENV, "root")
    if mode not in MODES:
        raise IdMapError(errno.EINVAL, f"invalid {MODE_ENV} {mode!r}: expected root or self")
    uid, gid = os.geteuid(), os.getegid()
    ranged = None if mode == "self" or (idmap or os.environ.get(MAP_ENV)) == "single" \
        else _ranges(uid, etc)
    want_uid, want_gid = sandbox_user
    if ranged is not None:
        (uid_start, uid_count), (gid_start, gid_count) = ranged
        if want_uid <= uid_count and want_gid <= gid_count:   # inside 1..count are mapped
            return IdMap(((0, uid, 1), (1, uid_start, uid_count)),
                         ((0, gid, 1), (1, gid_start, gid_count)), True, want_uid, want_gid)
    inside_uid, inside_gid = (0, 0) if mode == "root" else (uid, gid)
    return IdMap(((inside_uid, uid, 1),), ((inside_gid, gid, 1),), False, inside_uid, inside_gid)


def _ranges(uid: int, etc: str):
    if shutil.which("newuidmap") is None or shutil.which("newgidmap") is None:
        return None
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    uids = subordinate_range(os.path.join(etc, "subuid"), name, uid)
    gids = subordinate_range(os.path.join(etc, "subgid"), name, uid)
    return (uids, gids) if uids and gids else None


# ------------------------------------------------------------- launcher side

def enter(idmap: IdMap) -> None:
    """unshare(CLONE_NEWUSER) and get the map written; afterwards this process
    is root inside, with every capability of the new namespace."""
    if idmap.by_tool:
        _enter_with_tools(idmap)
        return
    sc.unshare(sc.CLONE_NEWUSER)
    # An unprivileged process may map only its own ids, and a gid map only
    # after setgroups is denied (else dropping a group could grant access).
    sc.write_proc_file("/proc/self/setgroups", "deny")
    sc.write_proc_file("/proc/self/uid_map", _lines(idmap.uid_lines))
    sc.write_proc_file("/proc/self/gid_map", _lines(idmap.gid_lines))


def _enter_with_tools(idmap: IdMap) -> None:
    go_r, go_w = os.pipe()
    err_r, err_w = os.pipe()
    launcher = os.getpid()
    helper = os.fork()
    if helper == 0:
        os.close(go_w)
        os.close(err_r)
        os._exit(_write_maps_for(launcher, idmap, go_r, err_w))
    os.close(go_r)
    os.close(err_w)
    try:
        sc.unshare(sc.CLONE_NEWUSER)
    finally:
        os.write(go_w, b"1" if _in_new_userns() else b"0")
        os.close(go_w)
        _, status = os.waitpid(helper, 0)
        message = _read_all(err_r)
    if os.waitstatus_to_exitcode(status) != 0:
        raise IdMapError(errno.EPERM, f"newuidmap/newgidmap failed: {message.strip() or 'no message'} "
                            "(check /etc/subuid and /etc/subgid, or set SANDBOX_KERNEL_IDMAP=single)")


def _write_maps_for(pid: int, idmap: IdMap, go_r: int, err_w: int) -> int:
    """The helper's whole life: wait for the go, run both tools, report."""
    if os.read(go_r, 1) != b"1":
        return 1   # the launcher's unshare failed: it reports that itself
    for tool, lines in (("newuidmap", idmap.uid_lines), ("newgidmap", idmap.gid_lines)):
        argv = [tool, str(pid)] + [str(n) for line in lines for n in line]
        ran = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, check=False)
        if ran.returncode != 0:
            os.write(err_w, f"{' '.join(argv)}: {ran.stderr.decode(errors='replace')}".encode())
            return 1
    return 0


def _in_new_userns() -> bool:
    with open("/proc/self/uid_map") as handle:   # empty until the helper writes it
        return handle.read().strip() == ""


def _lines(lines) -> str:
    return "".join(f"{inside} {outside} {count}\n" for inside, outside, count in lines)


def _read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode(errors="replace")
