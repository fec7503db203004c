"""The sandbox kernel against a plain ipykernel, side by side in one run:
the execute round trip of ``pass`` and ``print(1)`` (median and p99), and
kernel start to the first cell's reply.

    sudo .venv/bin/python benchmarks/kernel_roundtrip.py [--cells 300] [--starts 8]

A round trip is execute_request sent to execute_reply and the idle status
received, through jupyter_client, as a frontend sees it.  The sandbox
kernel's stats go with every reply (the footer beside the cell, its default:
the cell's stats in the execute_reply's metadata), and its container runs
with the built-in defaults.  Start is KernelManager.start_kernel() to
the reply of a first ``pass``.  The machine is shared and noisy: the two
kernels take turns cell by cell, so that a burst of load hits both alike.
Targets (issue 22): round trip at most 1.03x plain ipykernel, start at most 1.05x.
Both starts include what jupyter_client's wait_for_ready spends after the
kernel_info reply (reading IOPub until 0.2 s pass without a message), the
same for both kernels; the kernels' own difference is in the rest.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import queue
import statistics
import sys
import tempfile
import time
import uuid

from jupyter_client import KernelManager

from sandbox_kernel.kernel import install

PLAIN, SANDBOX = "python3", "sbk-benchmark"
_ipc_dir: str | None = None


def kernelspecs(data_dir: str) -> None:
    """This venv's plain ipykernel and sandbox kernel, side by side; their
    sockets (ipc: no TCP port to pick, no plain-text warning) and a private
    IPython profile (no user's startup files, no history database shared
    with every other kernel on the machine) in data_dir."""
    global _ipc_dir
    plain = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
             "display_name": "Python 3", "language": "python"}
    install.write_kernelspec(os.path.join(data_dir, "kernels", PLAIN), plain)
    install.write_kernelspec(os.path.join(data_dir, "kernels", SANDBOX), install.kernel_json({}))
    os.environ["JUPYTER_PATH"] = data_dir
    os.environ["IPYTHONDIR"] = os.path.join(data_dir, "ipython")
    _ipc_dir = data_dir


@contextlib.contextmanager
def restored(keys):
    """os.environ's ``keys`` as they were before, whatever the block set
    (kernelspecs() sets JUPYTER_PATH and IPYTHONDIR for a run)."""
    saved = {key: os.environ.get(key) for key in keys}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Kernel:
    def __init__(self, name: str):
        ipc = {"transport": "ipc", "ip": os.path.join(_ipc_dir, uuid.uuid4().hex[:8])} if _ipc_dir else {}
        self.km = KernelManager(kernel_name=name, **ipc)
        self.km.start_kernel()
        self.kc = self.km.client()
        self.kc.start_channels()

    def roundtrip(self, code: str, timeout: float = 60) -> float:
        """Seconds from execute_request to its reply and idle (the kernel
        sends the reply first, then idle: waiting for them in turn adds nothing)."""
        start = time.perf_counter()
        msg_id = self.kc.execute(code, allow_stdin=False)
        deadline = time.monotonic() + timeout
        self._wait(self.kc.get_shell_msg, deadline,
                   lambda msg: msg["parent_header"].get("msg_id") == msg_id)
        self._wait(self.kc.get_iopub_msg, deadline,
                   lambda msg: msg["parent_header"].get("msg_id") == msg_id
                   and msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle")
        return time.perf_counter() - start

    @staticmethod
    def _wait(get, deadline: float, wanted) -> None:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no reply in time")
            try:
                if wanted(get(timeout=remaining)):
                    return
            except queue.Empty:
                pass

    def stop(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)


def start_to_first_reply(name: str) -> float:
    start = time.perf_counter()
    kernel = Kernel(name)
    try:
        kernel.kc.wait_for_ready(timeout=120)
        kernel.roundtrip("pass", timeout=120)
        return time.perf_counter() - start
    finally:
        kernel.stop()


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def measure_roundtrips(cells: int) -> dict:
    kernels = {name: Kernel(name) for name in (PLAIN, SANDBOX)}
    timings = {(name, code): [] for name in kernels for code in ("pass", "print(1)")}
    try:
        for kernel in kernels.values():
            kernel.kc.wait_for_ready(timeout=120)
            for _ in range(20):                       # warm up: imports, caches
                kernel.roundtrip("pass")
                kernel.roundtrip("print(1)")
        for _ in range(cells):
            for code in ("pass", "print(1)"):
                for name, kernel in kernels.items():
                    timings[(name, code)].append(kernel.roundtrip(code))
    finally:
        for kernel in kernels.values():
            kernel.stop()
    return timings


def measure_starts(starts: int) -> dict:
    timings = {PLAIN: [], SANDBOX: []}
    for _ in range(starts):
        for name in timings:
            timings[name].append(start_to_first_reply(name))
    return timings


def report(roundtrips: dict, starts: dict) -> None:
    ms = 1000
    print(f"{'':28}{'plain ipykernel':>18}{'sandbox kernel':>18}{'ratio':>8}")
    for code in ("pass", "print(1)"):
        for label, stat in (("median", statistics.median), ("p99", p99)):
            plain, sandbox = stat(roundtrips[(PLAIN, code)]), stat(roundtrips[(SANDBOX, code)])
            print(f"{f'round trip {code!r} {label}':28}{plain * ms:>15.2f} ms{sandbox * ms:>15.2f} ms"
                  f"{sandbox / plain:>7.2f}x")
    plain, sandbox = statistics.median(starts[PLAIN]), statistics.median(starts[SANDBOX])
    print(f"{'start to first reply median':28}{plain * ms:>15.0f} ms{sandbox * ms:>15.0f} ms"
          f"{sandbox / plain:>7.2f}x")
    print(f"(targets: round trip <= 1.03x, start <= 1.05x; {len(roundtrips[(PLAIN, 'pass')])} cells "
          f"per kind, {len(starts[PLAIN])} starts each, interleaved)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=300, help="cells of each kind per kernel")
    parser.add_argument("--starts", type=int, default=8, help="kernel starts of each kind")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.exit(2, "kernel_roundtrip.py: the sandbox kernel needs root here (sandbox-kernel doctor)\n")
    with tempfile.TemporaryDirectory(prefix="sbk-bench-") as data_dir:
        kernelspecs(data_dir)
        starts = measure_starts(args.starts)
        roundtrips = measure_roundtrips(args.cells)
    report(roundtrips, starts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
