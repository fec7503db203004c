"""doctor's "ceiling" row: the per-user ceiling over this process, read from
the ceiling's own files (sandbox-kernel delegate, cgroups/delegation.py).

Like doctor.py it reads files and never raises; it names the delegation
tree's base without importing the cgroup drivers.
"""
from __future__ import annotations

import os

BASE = "sandbox-kernel-users"   # cgroups/delegation.py's BASE (a test keeps them equal)


def read_text(path: str) -> str | None:
    """A file's text, or None when it is absent or unreadable (a doctor reports, never raises)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def describe(dirs: dict[str, str]) -> str:
    """"alice: memory 128 MiB (in use 3 MiB), cpus 1, pids 200 (in use 4); set by root in ..."."""
    user = os.path.basename(next(iter(dirs.values())))
    where = dirs.get("memory") or next(iter(dirs.values()))
    return f"{user}: " + ", ".join(_figures(dirs)) + f"; set by root in {where}"


def ceiling_dirs(own_dirs: dict[str, str]) -> dict[str, str]:
    """controller -> the per-user ceiling above this process (delegation.py's tree:
    .../sandbox-kernel-users/USER/user/...), for those of its hierarchies inside one."""
    found = {}
    for controller, directory in own_dirs.items():
        head, marker, rest = directory.partition(f"/{BASE}/")
        user = rest.split("/", 1)[0]
        if marker and user:
            found[controller] = f"{head}/{BASE}/{user}"
    return found


def _figures(dirs: dict[str, str]) -> list[str]:
    """What the ceiling's own files say: limit (and use) of memory, cpus, pids."""
    def number(controller: str, name: str) -> str | None:
        text = read_text(os.path.join(dirs.get(controller, "/nonexistent"), name))
        return None if text is None else text.split()[0] if text.split() else None
    memory = number("memory", "memory.max") or number("memory", "memory.limit_in_bytes")
    used = number("memory", "memory.current") or number("memory", "memory.usage_in_bytes")
    quota = number("cpu", "cpu.max") or number("cpu", "cpu.cfs_quota_us")
    period = (read_text(os.path.join(dirs.get("cpu", "/nonexistent"), "cpu.max")) or "").split()[1:] \
        or [number("cpu", "cpu.cfs_period_us") or "100000"]
    figures = [f"memory {_size(memory)} (in use {_size(used)})",
               f"cpus {_cores(quota, period[0])}",
               f"pids {_unlimited(number('pids', 'pids.max'))} "
               f"(in use {number('pids', 'pids.current') or '?'})"]
    return figures


def _unlimited(text: str | None) -> str:
    if text is None or (text != "max" and not text.lstrip("-").isdigit()):
        return "?"
    return "no limit" if text in ("max", "-1") or int(text) >= 1 << 62 else text


def _size(text: str | None) -> str:
    shown = _unlimited(text)
    if not shown.isdigit():
        return shown
    value = int(shown)
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value} B"


def _cores(quota: str | None, period: str) -> str:
    shown = _unlimited(quota)
    return f"{int(shown) / int(period):g}" if shown.isdigit() and period.isdigit() else shown


def inherited_memory_limit(directory: str | None) -> str | None:
    """The smallest memory limit of this cgroup and the ancestors shown (a pod's,
    in its cgroup namespace), e.g. "memory 2 GiB at /sys/fs/cgroup"; None if none."""
    smallest, where = None, None
    while directory and directory != "/":
        text = read_text(os.path.join(directory, "memory.max")) \
            or read_text(os.path.join(directory, "memory.limit_in_bytes"))
        if text is None:
            break
        shown = _unlimited(text.strip())
        if shown.isdigit() and (smallest is None or int(shown) < smallest):
            smallest, where = int(shown), directory
        directory = os.path.dirname(directory)
    return None if smallest is None else f"memory {_size(str(smallest))} at {where}"


def ceiling_row(own_dirs: dict[str, str], euid: int, user: str) -> tuple | None:
    """(ok, detail, fix) of doctor's ceiling row; None for root outside any ceiling."""
    dirs = ceiling_dirs(own_dirs)
    if dirs:
        return True, describe(dirs), None
    if euid == 0:
        return None
    inherited = inherited_memory_limit(own_dirs.get("memory"))
    if inherited is not None:   # a pod's limits, a systemd slice's: they bound all containers
        return (True, f"no delegated ceiling, but this process's cgroup is held to {inherited}: "
                "every container started from here shares it", None)
    return (False, "this process is under no per-user ceiling: its containers are limited one "
            "by one, not together",
            f"as root: sandbox-kernel delegate {user} --memory 4G --cpus 2 --pids 1024, and "
            "start this user's server inside it (sandbox_kernel.hub does)")
