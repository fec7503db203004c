"""Which running containers stack which image layers, as the host sees it.

A container's mountinfo names its overlay's layers neutrally (mount_apply.py),
so the host keeps its own record: each launcher holds an O_PATH descriptor
of every directory its plan's overlays stack, for as long as it lives
(``hold_lower_dirs``), and ``containers_stacking`` finds the launchers
(process name "sbk-launcher") holding a given directory open.  The image
store asks it before it removes a layer (image_store.containers_using).

Imports: mount_apply only.
"""
from __future__ import annotations

import os

from .mount_apply import Op, neutral_overlay_options


def hold_lower_dirs(plan: list[Op]) -> list[int]:
    """Open (O_PATH) every directory the plan's overlays stack, for as long
    as this launcher lives: the host's record of the image layers in use
    (``containers_stacking``), since the container's mountinfo names them
    neutrally (mount_apply.neutral_overlay_options).  One that cannot be opened
    is left to the mount plan, which reports it."""
    held = []
    for op in plan:
        if op.fstype != "overlay":
            continue
        _, names = neutral_overlay_options(op.data or "")
        for name, path in names.items():
            if name.startswith("layer"):
                try:
                    held.append(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
                except OSError:
                    continue
    return held


def containers_stacking(dirs: list[str]) -> list[int]:
    """Init pids (host) of running containers whose overlays stack any of
    ``dirs`` or a directory below one (an image built on the host stacks
    <layer>/root/usr): their launchers hold each open (hold_lower_dirs).
    Only launchers this process may look into are seen: all for root."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if _comm(pid) != "sbk-launcher":
            continue
        held = _open_paths(pid)
        if any(path == d or path.startswith(d.rstrip("/") + "/") for path in held for d in dirs):
            found.append(_init_of(int(pid)) or int(pid))
    return found


def _comm(pid: str) -> str | None:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None   # gone meanwhile


def _open_paths(pid: str) -> list[str]:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []   # gone, or another user's
    paths = []
    for fd in fds:
        try:
            paths.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue   # closed meanwhile
    return paths


def _init_of(launcher: int) -> int | None:
    """The launcher's child named sbk-init, or None (not started, or ended)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
                name, rest = handle.read().split(" (", 1)[1].rsplit(") ", 1)
        except (OSError, ValueError, IndexError):
            continue
        if name == "sbk-init" and int(rest.split()[1]) == launcher:
            return int(pid)
    return None
