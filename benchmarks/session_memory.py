"""Memory of idle sessions: RSS and PSS of one, and of many, side by side
with a plain IPython process doing nothing.

    sudo .venv/bin/python benchmarks/session_memory.py [--sessions 50]

A session is its container's processes (init, the agent) plus its launcher
on the host; the zygote is shared by all sessions of a kernel and counted
once.  PSS divides shared pages among their users, so it is the figure that
adds up: the zygote's copy-on-write pages make many sessions cheap.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

from sandbox_kernel.runtime import zygote
from sandbox_kernel.session.client import Session, prewarm

KiB = 1024


def rollup(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in bytes, from smaps_rollup."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        for line in handle:
            parts = line.split()
            if parts[0] in ("Rss:", "Pss:"):
                fields[parts[0]] = int(parts[1]) * KiB
    return fields["Rss:"], fields["Pss:"]


def session_pids(session: Session) -> list[int]:
    container = session._container  # a benchmark may look inside
    pids = [container.pid]
    for procs in container.cgroup.join_files()[:1]:
        with open(procs) as handle:
            pids += [int(p) for p in handle.read().split()]
    return pids


def measure(pids: list[int]) -> tuple[int, int]:
    rss = pss = 0
    for pid in pids:
        try:
            r, p = rollup(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
        rss, pss = rss + r, pss + p
    return rss, pss


def plain_ipython() -> tuple[int, int]:
    code = ("from IPython.core.interactiveshell import InteractiveShell; "
            "InteractiveShell.instance(); import time; print('ready', flush=True); time.sleep(60)")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    process.stdout.readline()
    figures = measure([process.pid])
    process.kill()
    process.wait()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=50)
    args = parser.parse_args()
    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()  # a kernel has threads
    prewarm()
    time.sleep(2)
    sessions = []
    try:
        for index in range(args.sessions):
            session = Session(name=f"bench-{index}")
            session.execute("x = 1", on_output=lambda kind, content: None)
            sessions.append(session)
        time.sleep(1)
        one = measure(session_pids(sessions[0]))
        many = measure([pid for s in sessions for pid in session_pids(s)])
        zygote_figures = measure([zygote.shared().process.pid]) if zygote.enabled() else (0, 0)
        baseline = plain_ipython()
    finally:
        for session in sessions:
            session.close()
    mib = 1 << 20
    print(f"{'':34} {'RSS MiB':>9} {'PSS MiB':>9}")
    print(f"{'plain IPython shell, idle':34} {baseline[0] / mib:9.1f} {baseline[1] / mib:9.1f}")
    print(f"{'one idle session':34} {one[0] / mib:9.1f} {one[1] / mib:9.1f}")
    print(f"{f'{len(sessions)} idle sessions':34} {many[0] / mib:9.1f} {many[1] / mib:9.1f}")
    print(f"{'  per session':34} {many[0] / mib / len(sessions):9.1f} {many[1] / mib / len(sessions):9.1f}")
    print(f"{'the zygote (shared, once)':34} {zygote_figures[0] / mib:9.1f} {zygote_figures[1] / mib:9.1f}")
    print(f"PSS of one session vs a plain IPython shell: {one[1] / baseline[1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
