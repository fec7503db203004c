"""The sandbox kernel's answer to ``usage_request`` (jupyter-resource-usage's
kernel panel): the stats contract of the container plus the keys of
ipykernel's own usage_reply, filled with the container's figures.

May import: session/stats.py (json_safe), psutil if installed.  Nothing
else of the session, nor the magics or kernel.py.
"""
from __future__ import annotations

import os
import socket

from ..session.stats import json_safe


class UsageMeter:
    """usage_reply content: the stats contract (session, image, limits,
    cell) and the keys of ipykernel's own usage_reply, which
    jupyter-resource-usage's kernel panel shows: hostname, pid, kernel_cpu
    (percent), kernel_memory (bytes), cpu_count, host_cpu_percent,
    host_virtual_memory.  Here they are the container's: its memory, its CPU
    time over the wall time since the last request (since it started, the
    first time), its cpu limit as the count, and its memory limit as the
    "virtual memory" total.  An unknown figure is null, never 0."""

    def __init__(self):
        self._last: tuple[float, float] | None = None     # (cpu seconds, uptime)

    def reply(self, contract: dict, session) -> dict:
        cell, limits = contract["cell"], contract["limits"]
        cpu = self._cpu_percent(cell)
        cpu_count = limits.get("cpus") or os.cpu_count()
        content = dict(contract)
        content.update(
            hostname=socket.gethostname(), pid=os.getpid(), sandboxed=True,
            state=(session.status()["state"] if session is not None else "not started"),
            kernel_cpu=cpu, kernel_memory=cell.get("memory_current"), cpu_count=cpu_count,
            host_cpu_percent=None if cpu is None else round(cpu / cpu_count, 1),
            host_virtual_memory=memory_view(cell.get("memory_current"), limits.get("memory")))
        return json_safe(content)

    def _cpu_percent(self, cell: dict) -> float | None:
        user, system, uptime = cell.get("cpu_user"), cell.get("cpu_system"), cell.get("wall")
        if user is None or system is None or not uptime:
            return None
        total, last = user + system, self._last
        self._last = (total, uptime)
        if last is not None and uptime > last[1] and total >= last[0]:
            return round(100 * (total - last[0]) / (uptime - last[1]), 1)
        return round(100 * total / uptime, 1)


def memory_view(current, limit) -> dict | None:
    if limit:
        used = current
        free = None if current is None else max(limit - current, 0)
        percent = None if current is None else round(100 * current / limit, 1)
        return {"total": limit, "used": used, "available": free, "free": free, "percent": percent}
    try:
        import psutil
    except ImportError:
        return None
    return dict(psutil.virtual_memory()._asdict())
