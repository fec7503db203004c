"""A plain ipykernel against the same ipykernel wrapped by the
sandbox-provisioner (`sandbox-kernel install --wrap python3`), side by side
in one run, through jupyter_client as a frontend drives them.

    sudo .venv/bin/python benchmarks/provisioner.py [--runs 10] [--trips 200]

  start        start_kernel to the first kernel_info reply (wait_for_ready):
               a process vs a container (cgroup, namespaces, mounts) with the
               same process inside; target at most 1.2x
  round trip   execute_request to execute_reply of ``x = 1`` on a running
               kernel; target at most 1.05x

The plain ipykernel runs as jupyter_client starts it by default (tcp on
loopback), and once more over ipc sockets, the wrapped kernel's transport:
the ratio against that one is the container's own cost.

Medians and p90 in milliseconds, and the ratios.  The machine is shared and
noisy: starts are interleaved (one of each in turn), round trips too.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

from jupyter_client.manager import KernelManager, start_new_kernel

from sandbox_kernel.kernel import install

WRAPPED = "python3-bench-sandboxed"


PLAIN, PLAIN_IPC = "python3", "python3 over ipc"
KINDS = (PLAIN, PLAIN_IPC, WRAPPED)


def start_once(kind: str) -> tuple[float, object, object]:
    """(seconds to the first kernel_info reply, manager, client)."""
    started = time.perf_counter()
    if kind == PLAIN_IPC:
        # the sockets' directory goes in stop() (a kernel outlives this function)
        sockets = tempfile.TemporaryDirectory(prefix="sbk-bench-ipc-")
        km = KernelManager(kernel_name=PLAIN, transport="ipc", ip=os.path.join(sockets.name, "kernel"))
        km.sbk_sockets = sockets
        km.start_kernel()
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=120)
    else:
        km, kc = start_new_kernel(kernel_name=kind, startup_timeout=120)
    return time.perf_counter() - started, km, kc


def stop(km, kc) -> None:
    kc.stop_channels()
    km.shutdown_kernel(now=True)
    sockets = getattr(km, "sbk_sockets", None)
    if sockets is not None:
        sockets.cleanup()


def round_trip(kc) -> float:
    started = time.perf_counter()
    reply = kc.execute("x = 1", reply=True, timeout=60)
    elapsed = time.perf_counter() - started
    if reply["content"]["status"] != "ok":
        raise SystemExit(f"cell failed: {reply['content']}")
    return elapsed


def measure_starts(runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(runs):
        for name in times:
            elapsed, km, kc = start_once(name)
            times[name].append(elapsed)
            stop(km, kc)
    return times


def measure_trips(trips: int) -> dict[str, list[float]]:
    kernels = {kind: start_once(kind)[1:] for kind in KINDS}
    times: dict[str, list[float]] = {name: [] for name in kernels}
    try:
        for name, (_, kc) in kernels.items():
            for _ in range(10):         # warm up both
                round_trip(kc)
        for _ in range(trips):
            for name, (_, kc) in kernels.items():
                times[name].append(round_trip(kc))
    finally:
        for km, kc in kernels.values():
            stop(km, kc)
    return times


def summary(label: str, times: dict[str, list[float]], target: float) -> None:
    for kind, values in times.items():
        ordered = sorted(values)
        p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
        print(f"{label:11} {kind:24} median {statistics.median(values) * 1000:8.1f} ms   "
              f"p90 {p90 * 1000:8.1f} ms   (n={len(values)})")
    wrapped = statistics.median(times[WRAPPED])
    for baseline in (PLAIN, PLAIN_IPC):
        print(f"{label:11} ratio wrapped / {baseline:16} {wrapped / statistics.median(times[baseline]):.2f}x "
              f"(target at most {target}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="starts of each kernel")
    parser.add_argument("--trips", type=int, default=200, help="round trips on each kernel")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (sudo): containers with cgroup limits")
    with tempfile.TemporaryDirectory(prefix="sbk-bench-prov-") as data:
        install.install_wrapped("python3", {}, name=WRAPPED, prefix=data)
        os.environ["JUPYTER_PATH"] = os.path.join(data, "share", "jupyter")
        summary("start", measure_starts(args.runs), 1.2)
        summary("round trip", measure_trips(args.trips), 1.05)


if __name__ == "__main__":
    main()
