"""Start-to-exit of /bin/true: sandbox-kernel's Python API against bubblewrap
and unshare(1), all run from this one process, side by side.

    sudo .venv/bin/python benchmarks/start_latency.py [--runs 50] [--in-a-row 200]
                                                      [--breakdown 30]

Prints medians and p90 in milliseconds and each one's ratio to bwrap.  This
machine is shared and noisy: the runs are interleaved (one of each in turn)
so that a burst of load hits all contenders alike.

--in-a-row N: a grader's loop, N starts of /bin/true one after the other,
per contender (rounds of 20 interleaved): starts per second and the ratio
to bwrap's throughput.  --breakdown N: where one start's milliseconds go
(fork path: the owner's steps timed here, the launcher's,
init's and the workload's through a log descriptor their forks inherit).
"""
from __future__ import annotations

import argparse
import os
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


def in_a_row(total: int, round_size: int = 20) -> dict[str, float]:
    """Starts per second of ``total`` back-to-back starts per contender."""
    # the exec path (a fresh interpreter per start) is no grader's choice
    runners = {name: run for name, run in contenders().items() if "(exec)" not in name}
    spent = {name: 0.0 for name in runners}
    done = 0
    while done < total:
        batch = min(round_size, total - done)
        for name, run in runners.items():
            start = time.perf_counter()
            for _ in range(batch):
                run()
            spent[name] += time.perf_counter() - start
        done += batch
    return {name: total / seconds for name, seconds in spent.items()}


def report_rate(rates: dict[str, float], total: int) -> str:
    base = rates.get("bwrap --unshare-all", float("nan"))
    lines = [f"{total} starts of /bin/true in a row",
             f"{'':26} {'starts/s':>10} {'x bwrap':>8}"]
    lines += [f"{name:26} {rate:10.1f} {rate / base:8.2f}" for name, rate in rates.items()]
    return "\n".join(lines)


# -- the breakdown: each step of one start, timed where it runs -------------

LOG_FD = 250   # the launcher's processes keep it (see _timed_children)


def _log(label: str, started: float) -> None:
    os.write(LOG_FD, f"{label}\t{(time.perf_counter() - started) * 1000}\n".encode())


def _timed(owner, name: str, label: str, times: dict | None) -> None:
    """Wrap owner.name: its ms go to ``times`` (this process) or the log (a fork)."""
    real = getattr(owner, name)

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            if times is None:
                _log(label, started)
            else:
                times.setdefault(label, []).append((time.perf_counter() - started) * 1000)
    setattr(owner, name, timed)


def _timed_children() -> None:
    from sandbox_kernel.runtime import launcher, mount_apply
    real_step, real_close = launcher._step, launcher._close_fds_except

    def step(name, func, *args):
        started = time.perf_counter()
        try:
            return real_step(name, func, *args)
        finally:
            _log("init/workload: " + name.split(" /")[0][:34], started)
    launcher._step = step
    launcher._close_fds_except = lambda keep: real_close(set(keep) | {LOG_FD})
    _timed(launcher, "_join_cgroup", "launcher: move init into the cgroup", None)
    real_fork = os.fork

    def fork():
        started = time.perf_counter()
        pid = real_fork()
        if pid:   # the parent's side: its page tables copied
            _log("fork (3 per start: launcher, init, workload)", started)
        return pid
    os.fork = fork
    for kind, real in list(mount_apply._APPLY.items()):
        mount_apply._APPLY[kind] = _timed_op(kind, real)


def _timed_op(kind: str, real):
    def timed(op):
        started = time.perf_counter()
        try:
            return real(op)
        finally:
            _log(f"  mount plan: every {kind} {op.fstype or ''}".rstrip(), started)
    return timed


def breakdown(runs: int) -> str:
    """Medians per step over ``runs`` fork-path starts (sums per start for
    what happens many times in one start)."""
    import tempfile
    from sandbox_kernel.runtime import container as container_module, spawn
    owner: dict[str, list[float]] = {}
    for name in ("_prepare_host", "_launch_config", "_spawn", "_pin_layer", "_write_card",
                 "wait", "destroy"):
        _timed(container_module.Container, name, "owner: " + name.strip("_"), owner)
    _timed(spawn, "await_setup", "owner:   of which await_setup", owner)
    _timed_children()
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), LOG_FD, inheritable=False)
        run, totals = sandbox_kernel("fork"), []
        for _ in range(runs):
            started = time.perf_counter()
            run()
            totals.append((time.perf_counter() - started) * 1000)
        os.close(LOG_FD)
        log.seek(0)
        children: dict[str, list[float]] = {}
        for line in log.read().decode().splitlines():
            label, ms = line.split("\t")
            children.setdefault(label, []).append(float(ms))
    lines = [f"where one start's ms go ({runs} fork-path starts; median, or sum per start)",
             f"{'total start to exit':46} {statistics.median(totals):7.2f}"]
    lines += [f"{label:46} {statistics.median(values):7.2f}" for label, values in owner.items()]
    lines += [f"{label:46} {sum(values) / runs if len(values) > runs else statistics.median(values):7.2f}"
              for label, values in children.items()]
    return "\n".join(lines)


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
    parser.add_argument("--in-a-row", type=int, default=0, metavar="N")
    parser.add_argument("--breakdown", type=int, default=0, metavar="N")
    args = parser.parse_args()
    if args.runs:
        print(f"start to exit of /bin/true, {args.runs} runs each, interleaved")
        print(report(measure(args.runs)))
    if args.in_a_row:
        print(report_rate(in_a_row(args.in_a_row), args.in_a_row))
    if args.breakdown:
        print(breakdown(args.breakdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
