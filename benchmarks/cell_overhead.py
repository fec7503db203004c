"""What a %%container cell costs over the same cell run in the kernel itself,
through a real ipykernel driven by jupyter_client, side by side in one run.

    sudo .venv/bin/python benchmarks/cell_overhead.py [--runs 30] [--cold 5]

Two comparisons, each as medians (and p90) in milliseconds and a ratio:

  warm round trip   execute_request to execute_reply of a trivial cell
                    (``x = 1``), run in the kernel vs with ``%%container``
                    in a session whose container is already running
  cold first cell   the first ``%%container`` cell of a new session (container
                    start + the agent's IPython start + the cell) vs
                    ``python -c "import IPython"`` (an IPython import alone)

The machine is shared and noisy: runs are interleaved, one of each in turn.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from jupyter_client import KernelManager

TRIVIAL = "x = 1"


class Kernel:
    def __init__(self):
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel()
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def round_trip(self, code: str) -> float:
        """Seconds from sending the request to its execute_reply."""
        started = time.perf_counter()
        reply = self.kc.execute(code, reply=True, timeout=120)
        elapsed = time.perf_counter() - started
        if reply["content"]["status"] != "ok":
            raise SystemExit(f"cell failed: {code!r}: {reply['content']}")
        return elapsed

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)


def import_ipython() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import IPython"], check=True)
    return time.perf_counter() - started


def measure(kernel: Kernel, runs: int, cold: int) -> dict[str, list[float]]:
    kernel.round_trip("%load_ext sandbox_kernel")
    kernel.round_trip(f"%%container --name warm --no-stats\n{TRIVIAL}")   # start it
    timings = {name: [] for name in ("local", "container", "cold", "import")}
    for _ in range(runs):
        timings["local"].append(kernel.round_trip(TRIVIAL))
        timings["container"].append(kernel.round_trip(f"%%container --name warm --no-stats\n{TRIVIAL}"))
    for i in range(cold):
        timings["cold"].append(kernel.round_trip(f"%%container --name cold{i} --no-stats\n{TRIVIAL}"))
        kernel.round_trip(f"%container stop --name cold{i}")
        timings["import"].append(import_ipython())
    return timings


def row(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"  {name:<36} {statistics.median(values) * 1000:9.1f} {p90 * 1000:9.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="warm round trips of each")
    parser.add_argument("--cold", type=int, default=5, help="cold first cells (new sessions)")
    args = parser.parse_args()
    kernel = Kernel()
    try:
        t = measure(kernel, args.runs, args.cold)
    finally:
        kernel.close()
    med = {name: statistics.median(values) for name, values in t.items()}
    print(f"  {'':<36} {'median ms':>9} {'p90 ms':>9}")
    print(row("trivial cell, in the kernel", t["local"]))
    print(row("trivial cell, %%container (warm)", t["container"]))
    print(f"  -> %%container round trip = {med['container'] / med['local']:.1f} x the local cell "
          f"(+{(med['container'] - med['local']) * 1000:.1f} ms)")
    print(row("first %%container cell (cold)", t["cold"]))
    print(row('python -c "import IPython"', t["import"]))
    print(f"  -> cold first cell = {med['cold'] / med['import']:.1f} x one IPython import")


if __name__ == "__main__":
    main()
