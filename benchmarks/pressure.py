"""From memory pressure to the MemoryError in the cell (issue 23): how long
a cell that grows a list keeps running after its container's memory crossed
90% of the limit, with ``--on-pressure interrupt``.

    sudo .venv/bin/python benchmarks/pressure.py [--runs 30] [--memory 256M] [--step 1M]

Each run: a cell appends STEP-sized touched bytearrays until the MemoryError
comes, and notes time.monotonic() where it catches it (CLOCK_MONOTONIC is
the same in the container: no time namespace).  The host notes when its
watch thread woke from poll() on the cgroup's event (Session's
``pressure_crossed_at``).  The difference is reported as p50 and p99 in
milliseconds, with the cgroup driver; nothing is asserted.
"""
from __future__ import annotations

import argparse
import statistics

CELL = """
import time
chunks = []
caught = None
try:
    for _ in range({steps}):
        chunks.append(bytearray({step}))
        chunks[-1][::4096] = b"x" * len(chunks[-1][::4096])
except MemoryError:
    caught = time.monotonic()
del chunks
print(repr(caught))
"""


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def one_run(session, memory: int, step: int) -> float | None:
    """Milliseconds from the host's crossing to the cell's MemoryError; None if it did not come."""
    out = []
    code = CELL.format(steps=2 * memory // step, step=step)
    result = session.execute(code, on_output=lambda kind, c: out.append(c.get("text", "")))
    caught = "".join(out).strip()
    if result.status != "ok" or caught in ("", "None") or session.pressure_crossed_at is None:
        return None
    return (float(caught) - session.pressure_crossed_at) * 1000


def main(argv=None) -> None:
    from sandbox_kernel.runtime.container import _host_driver
    from sandbox_kernel.runtime.spec import Limits, parse_size
    from sandbox_kernel.session.client import Session
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--memory", default="256M")
    parser.add_argument("--step", default="1M", help="how much the cell adds at a time")
    args = parser.parse_args(argv)
    memory, step = parse_size(args.memory, "memory"), parse_size(args.step, "step")
    delays, missed = [], 0
    with Session("bench-pressure", limits=Limits(memory=memory)) as session:
        session.set_on_pressure("interrupt")
        for _ in range(args.runs):
            delay = one_run(session, memory, step)
            if delay is None:
                missed += 1
            else:
                delays.append(delay)
    print(f"cgroup driver: {_host_driver().version}; memory {args.memory}, steps of {args.step}; "
          f"{len(delays)} runs ({missed} without a MemoryError)")
    if delays:
        print(f"crossing -> MemoryError in the cell: p50 {statistics.median(delays):.2f} ms, "
              f"p99 {percentile(delays, 0.99):.2f} ms, max {max(delays):.2f} ms")


if __name__ == "__main__":
    main()
