"""``sandbox-kernel top``: every container on this machine, like top.

Root sees every user's containers (the cards, runtime/cards.py) and every
per-user ceiling (runtime/cgroups/delegation.py); a user sees their own.
Each row: user, session, kernel, image, memory/cpu/pids against the
container's limits and the user's ceiling, uptime, and the bytes through its
veth where it has one.  ``--json`` prints one snapshot; ``snapshot()`` is the
same dict, for the JupyterHub admin page (sandbox_kernel/hub).

The snapshot's shape (version 1)::

    {"version": 1, "time": float, "host": str, "cgroup": "v1"|"v2"|"null",
     "ceilings": [{"user", "uid", "memory", "cpus", "pids",
                   "usage": {"memory", "memory_peak", "pids", "cpu_seconds",
                             "oom_kills", "cpu_percent"}}],
     "containers": [{"name", "user", "uid", "owner_pid", "kind", "session", "role" ("spare": a
                     session's standby for its next restart, or None),
                     "kernel_id", "language", "image", "network", "started",
                     "uptime", "limits": {"memory", "cpus", "pids"},
                     "usage": {"memory", "memory_peak", "pids", "cpu_seconds",
                               "cpu_percent", "oom_kills"},
                     "ceiling": {"memory", "cpus", "pids"} | None,
                     "net": {"rx_bytes", "tx_bytes"} | None}]}

A figure the host cannot give is None, never 0; ``cpu_percent`` needs an
earlier snapshot (``snapshot(previous)``), else None.  ``net`` counts from
the container's side: what it received and sent.

Imports: the runtime (cards, the delegation, the driver detection).
"""
from __future__ import annotations

import json
import os
import re
import socket
import sys
import time

from .runtime import cards
from .runtime.cgroups import delegation

VERSION = 1
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")   # a card is its owner's input: no paths
USAGE_KEYS = ("memory", "memory_peak", "pids", "cpu_seconds", "cpu_percent", "oom_kills")


def snapshot(previous: dict | None = None) -> dict:
    """One JSON-safe picture of the machine's containers and ceilings (see above)."""
    now = time.time()
    ceilings = {c.uid: c for c in _visible_ceilings()}
    before = _cpu_by_key(previous)
    elapsed = now - previous["time"] if previous else None
    rows = [_container(card, ceilings.get(card.uid), before, elapsed) for card in cards.scan()]
    return {
        "version": VERSION, "time": now, "host": socket.gethostname(), "cgroup": _driver(),
        "ceilings": [_ceiling(c, before, elapsed) for c in ceilings.values()],
        "containers": sorted(rows, key=lambda r: (r["user"], r["started"])),
    }


def _visible_ceilings() -> list[delegation.Ceiling]:
    """Root: every user's; a user: their own (the base cannot be listed)."""
    if os.geteuid() == 0:
        return delegation.ceilings()
    own = delegation.ceiling_of(os.geteuid())
    return [own] if own is not None else []


def _driver() -> str:
    try:
        return delegation.hierarchies()[0]
    except delegation.DelegationError:
        return "null"


def _cpu_by_key(previous: dict | None) -> dict:
    if not previous:
        return {}
    found = {("user", c["uid"]): c["usage"]["cpu_seconds"] for c in previous.get("ceilings", ())}
    found.update({("container", c["name"]): c["usage"]["cpu_seconds"]
                  for c in previous.get("containers", ())})
    return found


def _percent(now: float | None, before: float | None, elapsed: float | None) -> float | None:
    if now is None or before is None or not elapsed or elapsed <= 0:
        return None
    return round(max(0.0, now - before) / elapsed * 100, 1)


def _ceiling(ceiling: delegation.Ceiling, before: dict, elapsed: float | None) -> dict:
    usage = ceiling.usage()
    figures = dict.fromkeys(USAGE_KEYS)
    if usage is not None:
        figures.update(memory=usage.memory, memory_peak=usage.memory_peak, pids=usage.pids,
                       cpu_seconds=usage.cpu_seconds, oom_kills=usage.oom_kills)
        figures["cpu_percent"] = _percent(usage.cpu_seconds, before.get(("user", ceiling.uid)),
                                          elapsed)
    return {"user": ceiling.user, "uid": ceiling.uid, **_ceiling_limits(ceiling),
            "usage": figures}


def _ceiling_limits(ceiling: delegation.Ceiling | None) -> dict | None:
    if ceiling is None:
        return None
    return {"memory": ceiling.memory, "cpus": ceiling.cpus, "pids": ceiling.pids}


def _container(card: cards.Card, ceiling, before: dict, elapsed: float | None) -> dict:
    stats = card.stats()
    usage = dict.fromkeys(USAGE_KEYS)
    if stats is not None:
        usage.update(memory=stats.memory_current, memory_peak=stats.memory_peak,
                     pids=stats.pids_current, cpu_seconds=stats.cpu_usage,
                     oom_kills=stats.oom_kills)
        usage["cpu_percent"] = _percent(stats.cpu_usage, before.get(("container", card.name)),
                                        elapsed)
    labels = card.labels
    return {
        "name": card.name, "user": card.user, "uid": card.uid, "owner_pid": card.owner_pid,
        "kind": labels.get("kind"), "session": labels.get("session"), "role": labels.get("role"),
        "kernel_id": labels.get("kernel_id"), "language": labels.get("language"),
        "image": card.image, "network": card.network, "started": card.started,
        "uptime": round(card.uptime, 1),
        "limits": {k: card.limits.get(k) for k in ("memory", "cpus", "pids")},
        "usage": usage, "ceiling": _ceiling_limits(ceiling), "net": _net(card.net_host_ifname),
    }


def _net(ifname: str | None) -> dict | None:
    """The veth's counters, turned round: the host side's tx is what the container received."""
    if not ifname or not _IFNAME.match(ifname):
        return None
    base = f"/sys/class/net/{ifname}/statistics"
    try:
        with open(f"{base}/tx_bytes", encoding="ascii") as tx, \
             open(f"{base}/rx_bytes", encoding="ascii") as rx:
            return {"rx_bytes": int(tx.read()), "tx_bytes": int(rx.read())}
    except (OSError, ValueError):
        return None


# -- the screen -------------------------------------------------------------------

def _size(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value}B"


def _of(used, limit, show=str) -> str:
    return f"{'-' if used is None else show(used)}/{'-' if limit is None else show(limit)}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _cpu(usage: dict, limit) -> str:
    percent = "-" if usage["cpu_percent"] is None else f"{usage['cpu_percent']:g}%"
    return f"{percent}/{'-' if limit is None else f'{limit:g}'}"


def _kernel(row: dict) -> str:
    """What runs the container: "python 3f2a1b9c" (language, kernel id), else its kind."""
    name = row["language"] or row["kind"] or "-"
    return f"{name} {row['kernel_id'][:8]}" if row["kernel_id"] else name


def render(snap: dict) -> str:
    """The screen: the ceilings, then one row per container (used/limit)."""
    lines = [f"sandbox-kernel top  {snap['host']}  cgroup {snap['cgroup']}  "
             f"{len(snap['containers'])} containers  {time.strftime('%H:%M:%S')}", ""]
    if snap["ceilings"]:
        lines.append(f"{'CEILING':<16} {'MEMORY':>15} {'CPU':>12} {'PIDS':>11}")
        for c in snap["ceilings"]:
            u = c["usage"]
            lines.append(f"{c['user'][:16]:<16} {_of(u['memory'], c['memory'], _size):>15} "
                         f"{_cpu(u, c['cpus']):>12} {_of(u['pids'], c['pids']):>11}")
        lines.append("")
    header = (f"{'USER':<12} {'SESSION':<12} {'KERNEL':<16} {'IMAGE':<16} {'MEMORY':>15} "
              f"{'CPU':>10} {'PIDS':>9} {'UPTIME':>8} {'NET rx/tx':>13}  CEILING")
    lines.append(header)
    for r in snap["containers"]:
        u, lim, ceil = r["usage"], r["limits"], r["ceiling"]
        net = _of(r["net"]["rx_bytes"], r["net"]["tx_bytes"], _size) if r["net"] else "-"
        ceiling = (f"{_size(ceil['memory'])} {ceil['cpus'] or '-'}cpu {ceil['pids'] or '-'}p"
                   if ceil else "-")
        session = (r["session"] or "-") + ("*" if r.get("role") == "spare" else "")   # * a spare
        lines.append(f"{r['user'][:12]:<12} {session[:12]:<12} "
                     f"{_kernel(r)[:16]:<16} {r['image'][:16]:<16} "
                     f"{_of(u['memory'], lim['memory'], _size):>15} {_cpu(u, lim['cpus']):>10} "
                     f"{_of(u['pids'], lim['pids']):>9} {_duration(r['uptime']):>8} {net:>13}  "
                     f"{ceiling}")
    if not snap["containers"]:
        lines.append("(no containers)")
    if any(r.get("role") == "spare" for r in snap["containers"]):
        lines.append("* a spare: the session's standby container, taken at its next restart")
    return "\n".join(lines)


def main(args) -> int:
    if args.json:
        print(json.dumps(snapshot(), indent=1))
        return 0
    if args.delay <= 0 or args.iterations < 0:
        print("sandbox-kernel top: --delay must be above 0 and --iterations at least 0",
              file=sys.stderr)
        return 2
    return _loop(args.delay, args.iterations)


def _loop(delay: float, iterations: int) -> int:
    clear = "\033[H\033[2J" if sys.stdout.isatty() else ""
    if os.geteuid() != 0:
        print("(not root: only your own containers and ceiling are shown)")
    previous, count = None, 0
    try:
        while True:
            previous = snapshot(previous)
            print(clear + render(previous), flush=True)
            count += 1
            if iterations and count >= iterations:
                return 0
            time.sleep(delay)
    except KeyboardInterrupt:
        return 0
