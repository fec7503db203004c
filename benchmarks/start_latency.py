"""Start-to-exit of /bin/true: sandbox-kernel's Python API against bubblewrap
and unshare(1), all run from this one process, side by side.

    sudo .venv/bin/python benchmarks/start_latency.py [--runs 50]

Prints medians and p90 in milliseconds and each one's ratio to bwrap.  This
machine is shared and noisy: the runs are interleaved (one of each in turn)
so that a burst of load hits all contenders alike.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

from sandbox_kernel.runtime.container import Container
from sandbox_kernel.runtime.spec import ContainerSpec, Limits

BWRAP_ROOT = ["--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
              "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
              "--proc", "/proc", "--dev", "/dev"]


def sandbox_kernel(spawn: str):
    spec = ContainerSpec(command=("/bin/true",), limits=Limits(memory=256 << 20, pids=64))

    def run() -> None:
        with Container(spec, spawn=spawn) as box:
            box.start()
            result = box.wait()
        assert result.status == "ok", result
    return run


def command(argv: list[str]):
    def run() -> None:
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
    return run


def contenders() -> dict:
    found = {"sandbox-kernel (fork)": sandbox_kernel("fork"),
             "sandbox-kernel (zygote)": sandbox_kernel("zygote"),
             "sandbox-kernel (exec)": sandbox_kernel("exec")}
    if shutil.which("bwrap"):
        found["bwrap --unshare-all"] = command(
            ["bwrap", "--unshare-all", "--die-with-parent", *BWRAP_ROOT, "/bin/true"])
    if shutil.which("unshare"):
        found["unshare -fmpuin"] = command(["unshare", "-fmpuin", "/bin/true"])
    return found


def measure(runs: int) -> dict[str, list[float]]:
    timings = {name: [] for name in contenders()}
    runners = contenders()
    for run in runners.values():  # warm caches once
        run()
    for _ in range(runs):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            timings[name].append((time.perf_counter() - start) * 1000)
    return timings


def report(timings: dict[str, list[float]]) -> str:
    base = statistics.median(timings.get("bwrap --unshare-all", [float("nan")]))
    lines = [f"{'':26} {'median ms':>10} {'p90 ms':>8} {'x bwrap':>8}"]
    for name, values in timings.items():
        median = statistics.median(values)
        p90 = statistics.quantiles(values, n=10)[-1]
        lines.append(f"{name:26} {median:10.2f} {p90:8.2f} {median / base:8.2f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    print(f"start to exit of /bin/true, {args.runs} runs each, interleaved")
    print(report(measure(args.runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
