"""What the side panel's comm carries: the stats contract in a small envelope.

Pure functions of session snapshots (``SessionSnapshot``, session/stats.py)
and records; channel.py takes the snapshots and sends the messages.  Of the
project this imports only the stats contract (session/stats.py).

Kernel -> frontend (``comm_msg`` data; metadata ``{"event": ...}`` says the same)::

    {"protocol": 1,
     "event":   "snapshot" | "cell_start" | "tick" | "cell_end",
     "reason":  "open" | "request" | "announce"         (snapshot only)
     "kernel":  "sandbox" | "magics",                    who sends it
     "time":    1732750000.5,                            unix seconds, informational
     "sessions": [{"stats": CONTRACT,   the session as a whole: cell.wall is its uptime,
                                        cpu/io since its container started, status null
                   "state": "running" | "paused" | "not started" | "stopped" | ...,
                   "uptime": 12.5 | null, "network": "none"}],
     "running": {"session", "cell_id", "execution_count", "elapsed"} | null,
     "cell":    RECORD | null,                           cell_end only
     "history": [RECORD, ...],                           snapshot only, oldest first
     "policy":  POLICY | null}                           snapshot only: the sandbox kernel's

    POLICY = {"name": "classroom" | "trusted", "text": "classroom (caps: memory 1 GiB, ...)",
              "caps": {"memory": 1073741824 | null, "cpus", "pids", "timeout", "disk",
                       "sessions"},                       null: no cap
              "networks", "images", "import_dirs", "pull_registries", "build_bases":
                       [...] | null (null: any), "build_networks": [...],
              "host_builds": bool, "remove_any": bool}    (session/policy.py, Policy.as_dict)

    RECORD = {"session": "default", "cell_id": "5f0c..." | null,
              "execution_count": 3 | null, "stats": CONTRACT,
              "footer": "beside" | "output" | "off"}   where the cell's footer goes

CONTRACT is ``session/stats.py``'s dict, unchanged: a figure the host cannot
give is null, never 0.  ``cell_id`` is the notebook cell's id, from the
``cellId`` JupyterLab puts in an execute_request's metadata (the panel
scrolls to it); ``execution_count`` is the number the notebook shows
(the magics' own kernel count, not the container's).

Frontend -> kernel: ``{"request": "stats"}`` (as comm_open data or comm_msg
data) asks for a snapshot.
"""
from __future__ import annotations

import time
from collections.abc import Iterable

from ..session import stats as stats_contract

PROTOCOL_VERSION = 1
TARGET = "sandbox_kernel.stats"
EVENTS = ("snapshot", "cell_start", "tick", "cell_end")


def session_entry(snapshot: stats_contract.SessionSnapshot) -> dict:
    """One session's current figures, from one Session.snapshot(): the
    contract for the session as a whole (cell.wall is its uptime, cpu/io since
    its container started, status null), its state, uptime and network."""
    figures = stats_contract.cell_figures(None, snapshot.counters, peaks_reset=True)
    contract = stats_contract.build_stats(
        session=snapshot.name, image=snapshot.image, limits=snapshot.limits,
        execution_count=snapshot.execution_count, wall=snapshot.uptime, figures=figures,
        status=None, trusted_output=snapshot.trust_output)
    return {"stats": contract, "state": snapshot.state, "uptime": snapshot.uptime,
            "network": snapshot.network}


def cell_record(session_name: str, stats: dict, *, cell_id: str | None,
                execution_count: int | None, footer: str = "beside") -> dict:
    """A row of the panel's table.  The notebook's count wins over the
    contract's.  ``footer``: where the cell's footer goes (beside, output,
    off); with the magics the labextension draws it from this row."""
    if execution_count is None:
        execution_count = (stats.get("cell") or {}).get("execution_count")
    return {"session": session_name, "cell_id": cell_id, "execution_count": execution_count,
            "stats": stats_contract.json_safe(stats), "footer": footer}


def message(event: str, *, kind: str, sessions: Iterable[stats_contract.SessionSnapshot],
            running: dict | None = None, cell: dict | None = None, history=None,
            reason: str | None = None, policy: dict | None = None) -> dict:
    """The comm's data for ``event``; ``sessions``: one Session.snapshot() of
    each session (the channel takes them; nothing here touches a session)."""
    if event not in EVENTS:
        raise ValueError(f"event {event!r} is not one of {', '.join(EVENTS)}")
    data = {"protocol": PROTOCOL_VERSION, "event": event, "kernel": kind, "time": time.time(),
            "sessions": [session_entry(s) for s in sessions], "running": running, "cell": cell}
    if event == "snapshot":
        data["reason"] = reason
        data["history"] = list(history or ())
        data["policy"] = policy
    return stats_contract.json_safe(data)

