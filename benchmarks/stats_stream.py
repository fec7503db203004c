"""What the side panel's updates cost the kernel while a cell runs.

    sudo .venv/bin/python benchmarks/stats_stream.py [--seconds 20] [--runs 3] [--kernel sandbox|magics|both]

A cell that sleeps in its container for ``--seconds`` runs twice per round
in one kernel: once with no panel listening (no comm of sandbox_kernel.stats
open: the channel builds and sends nothing), once with a comm open as the
panel opens it (a tick a second, each reading the cgroup and sending the
stats contract on iopub).  The kernel process's CPU time over each cell is
the sum of its threads' on-CPU time (/proc/PID/task/*/schedstat, ns), so
the noise of this shared machine (other processes' load) does not count;
the container's own processes are not the kernel's and are left out.

Printed: the kernel's CPU over the cell, as a share of one core, without
and with the panel (medians), the difference (the panel's cost), the ticks
received, and the cost per tick.  Target (issue 5): under 1% of a core.
Kernels: the sandbox kernel (this venv's kernelspec, built-in defaults) and
an ordinary ipykernel with ``%load_ext sandbox_kernel`` and ``%%container``.
"""
from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid

from jupyter_client import KernelManager

from sandbox_kernel.kernel import install

TARGET = "sandbox_kernel.stats"
SANDBOX, PLAIN = "sbk-benchmark", "python3"


def kernelspecs(data_dir: str) -> None:
    plain = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
             "display_name": "Python 3", "language": "python"}
    install.write_kernelspec(os.path.join(data_dir, "kernels", PLAIN), plain)
    install.write_kernelspec(os.path.join(data_dir, "kernels", SANDBOX), install.kernel_json({}))
    os.environ["JUPYTER_PATH"] = data_dir


def on_cpu_seconds(pid: int) -> float:
    """Every thread's time on a CPU so far (schedstat's first field, ns)."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as handle:
                total += int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass                                  # a thread that just ended
    return total / 1e9


class Kernel:
    """A kernel, a client, and a thread that reads iopub (counting comm messages)."""

    def __init__(self, name: str):
        self.km = KernelManager(kernel_name=name)
        self.km.start_kernel()
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)
        self.pid = self.km.provisioner.process.pid
        self.comm_msgs = 0
        self.opened_by_kernel: list[str] = []
        self.idle: dict[str, threading.Event] = {}
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read_iopub, daemon=True)
        self._reader.start()

    def _read_iopub(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.kc.get_iopub_msg(timeout=0.2)
            except Exception:             # queue.Empty, or the channel closing
                continue
            kind, parent = msg["msg_type"], msg["parent_header"].get("msg_id")
            if kind == "comm_msg":
                self.comm_msgs += 1
            elif kind == "comm_open" and msg["content"].get("target_name") == TARGET:
                self.opened_by_kernel.append(msg["content"]["comm_id"])
            elif kind == "status" and msg["content"]["execution_state"] == "idle" and parent in self.idle:
                self.idle[parent].set()

    def run(self, code: str, timeout: float) -> None:
        msg = self.kc.session.msg("execute_request", {
            "code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True})
        done = self.idle[msg["header"]["msg_id"]] = threading.Event()
        self.kc.shell_channel.send(msg)
        if not done.wait(timeout):
            raise TimeoutError(f"the cell did not finish within {timeout:g} s: {code!r}")

    def comm(self, kind: str, comm_id: str, **content) -> None:
        self.kc.shell_channel.send(self.kc.session.msg(kind, {"comm_id": comm_id, **content}))

    def close(self) -> None:
        self._stop.set()
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)


def measure(kernel: Kernel, cell: str, seconds: float) -> tuple[float, float, int]:
    """(kernel CPU seconds, wall seconds, comm messages) over one cell."""
    before_msgs, before_cpu, start = kernel.comm_msgs, on_cpu_seconds(kernel.pid), time.monotonic()
    kernel.run(cell, timeout=seconds + 120)
    wall, cpu = time.monotonic() - start, on_cpu_seconds(kernel.pid) - before_cpu
    time.sleep(0.3)                               # the last messages reach the reader
    return cpu, wall, kernel.comm_msgs - before_msgs


def bench(label: str, kernel: Kernel, cell: str, seconds: float, runs: int) -> None:
    kernel.run(cell.replace(f"sleep({seconds})", "sleep(0.1)"), timeout=180)   # warm: container up
    for comm_id in kernel.opened_by_kernel:       # a frontend without the panel refuses these
        kernel.comm("comm_close", comm_id, data={})
    without, with_panel, messages = [], [], []
    panel_comm = uuid.uuid4().hex
    for _ in range(runs):
        cpu, wall, _ = measure(kernel, cell, seconds)
        without.append(cpu / wall)
        kernel.comm("comm_open", panel_comm, target_name=TARGET, data={"request": "stats"})
        cpu, wall, count = measure(kernel, cell, seconds)
        with_panel.append(cpu / wall)
        messages.append(count)
        kernel.comm("comm_close", panel_comm, data={})
        time.sleep(0.5)
    base, panel = statistics.median(without), statistics.median(with_panel)
    ticks = statistics.median(messages)
    cost = panel - base
    per_message_ms = cost * seconds / ticks * 1000 if ticks else float("nan")
    print(f"{label:<22} {100 * base:>8.3f}% {100 * panel:>10.3f}% {100 * cost:>+9.3f}% "
          f"{ticks:>6.0f} {per_message_ms:>9.2f}   {'ok' if cost < 0.01 else 'OVER 1%'}")
    print(f"{'':<22} runs without: {', '.join(f'{100 * v:.3f}%' for v in without)}; "
          f"with: {', '.join(f'{100 * v:.3f}%' for v in with_panel)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each cell sleeps")
    parser.add_argument("--runs", type=int, default=3, help="cells with and without the panel")
    parser.add_argument("--kernel", choices=("sandbox", "magics", "both"), default="both")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("stats_stream: the cells run in containers: run as root", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="sbk-bench-") as data_dir:  # removed at the end
        kernelspecs(data_dir)
        return run(args)


def run(args) -> int:
    sleep = f"import time; time.sleep({args.seconds})"
    cases = []
    if args.kernel in ("sandbox", "both"):
        cases.append(("sandbox kernel", SANDBOX, sleep, None))
    if args.kernel in ("magics", "both"):
        cases.append(("magics (%%container)", PLAIN, f"%%container\n{sleep}", "%load_ext sandbox_kernel"))
    print(f"kernel CPU while a {args.seconds:g} s cell runs, share of one core "
          f"(median of {args.runs}); target: the panel costs < 1% of a core")
    print(f"{'kernel':<22} {'no panel':>9} {'panel open':>11} {'cost':>10} {'msgs':>6} "
          f"{'ms/msg':>9}")
    for label, name, cell, setup in cases:
        kernel = Kernel(name)
        try:
            if setup:
                kernel.run(setup, timeout=60)
            bench(label, kernel, cell, args.seconds, args.runs)
        finally:
            kernel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
