"""Fast starts (issue 8): every figure against its baseline, in one run.

    sudo .venv/bin/python benchmarks/fast_start.py [--runs 50] [--sessions 50] [--quick]

Medians over --runs runs each (interleaved, one of each in turn: this machine
is shared and noisy, and a burst of load then hits every contender alike):

  bare start     start to exit of /bin/true through the Python API (fork and
                 zygote paths) vs ``bwrap --unshare-all --die-with-parent`` and
                 ``unshare -fmpuin``, all from this process (start_latency.py)
  first cell     the first ``%%container`` cell of a session in an ipykernel
                 with the magics loaded, to its reply:
                   pool      a second after ``%load_ext`` (the warm pool's
                             container is up)
                   run all   sent at once after ``%load_ext`` in a fresh kernel
                             (waits for the zygote and the container started ahead)
                   cold      a new ``--name`` session (no pool: container start +
                             the agent's IPython shell + the cell)
                 vs ``python -c "import IPython"`` and a plain ipykernel's start
                 (start_kernel to the reply of a first ``pass``)
  round trip     a warm ``pass`` cell in the sandbox kernel vs a plain ipykernel,
                 execute_request to reply and idle (kernel_roundtrip.py)
  memory         RSS and PSS of one idle session alone, and per extra session
                 of --sessions idle sessions (its launcher, init and agent;
                 the zygote is shared, shown once) (session_memory.py)
  50 at once     --sessions sessions started together (Session.start_soon),
                 time until every one has answered a first cell; all removed after

The targets are the issue's; the last column says whether this run met each.
Nothing is asserted: speed is reported, never tested.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import kernel_roundtrip
import session_memory
import start_latency
from sandbox_kernel.runtime.cgroups import detect_driver
from sandbox_kernel.session.client import Session, prewarm

MiB = 1 << 20
WARM_PAUSE = 1.0     # seconds between %load_ext and the first cell: a person reading


# ---------------------------------------------------------------------------
# measurements


def bare_starts(runs: int) -> dict[str, list[float]]:
    """ms per contender.  Runs first: the fork path needs this process single-threaded."""
    return start_latency.measure(runs)


def import_ipython() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import IPython"], check=True)
    return time.perf_counter() - started


def cell(kernel: kernel_roundtrip.Kernel, code: str, timeout: float = 120) -> float:
    """Seconds from execute_request to its reply; exits if the cell failed."""
    started = time.perf_counter()
    reply = kernel.kc.execute(code, reply=True, timeout=timeout, allow_stdin=False)
    elapsed = time.perf_counter() - started
    if reply["content"]["status"] != "ok":
        raise SystemExit(f"fast_start: cell failed: {code!r}: {reply['content'].get('evalue')}")
    return elapsed


def first_cells(runs: int) -> dict[str, list[float]]:
    """pool, cold and IPython import, interleaved, in one kernel with the magics."""
    timings = {"pool": [], "cold": [], "import": []}
    kernel = kernel_roundtrip.Kernel(kernel_roundtrip.PLAIN)
    try:
        kernel.kc.wait_for_ready(timeout=120)
        cell(kernel, "%load_ext sandbox_kernel")
        cell(kernel, "%%container --name warmup\nx = 1")         # caches, once
        for index in range(runs):
            cell(kernel, "%unload_ext sandbox_kernel")           # every session removed
            cell(kernel, "%load_ext sandbox_kernel")             # the pool starts one ahead
            time.sleep(WARM_PAUSE)
            timings["pool"].append(cell(kernel, "%%container\nx = 1"))
            timings["cold"].append(cell(kernel, f"%%container --name cold{index}\nx = 1"))
            timings["import"].append(import_ipython())
    finally:
        kernel.stop()
    return timings


def fresh_kernels(runs: int) -> dict[str, list[float]]:
    """Kernel starts (plain and sandbox, to the first reply) and, in each
    fresh plain kernel, the first %%container cell sent at once after %load_ext."""
    timings = {"plain start": [], "sandbox start": [], "run all": []}
    for _ in range(runs):
        timings["sandbox start"].append(kernel_roundtrip.start_to_first_reply(kernel_roundtrip.SANDBOX))
        started = time.perf_counter()
        kernel = kernel_roundtrip.Kernel(kernel_roundtrip.PLAIN)
        try:
            kernel.kc.wait_for_ready(timeout=120)
            cell(kernel, "pass")
            timings["plain start"].append(time.perf_counter() - started)
            cell(kernel, "%load_ext sandbox_kernel")
            timings["run all"].append(cell(kernel, "%%container\nx = 1"))
        finally:
            kernel.stop()
    return timings


def quiet(kind, content) -> None:
    pass


def sessions_at_once(count: int) -> dict:
    """One idle session alone, then ``count`` started together: memory and time."""
    prewarm()
    figures = {}
    with Session("bench-one") as one:
        one.execute("x = 1", on_output=quiet)
        time.sleep(1)
        figures["one"] = session_memory.measure(session_memory.session_pids(one))
        figures["one uss"] = private_bytes(session_memory.session_pids(one))
    sessions = [Session(f"bench-{index}") for index in range(count)]
    try:
        started = time.perf_counter()
        for session in sessions:
            session.start_soon()
        for session in sessions:
            result = session.execute("x = 1", on_output=quiet)
            if result.status != "ok":
                raise SystemExit(f"fast_start: a session did not come up: {result.message}")
        figures["all up"] = time.perf_counter() - started
        time.sleep(1)
        pids = [pid for s in sessions for pid in session_memory.session_pids(s)]
        figures["many"] = session_memory.measure(pids)
        figures["many uss"] = private_bytes(pids)
        from sandbox_kernel.runtime import zygote
        figures["zygote"] = session_memory.measure([zygote.shared().process.pid])
    finally:
        for session in sessions:
            session.close()
    figures["baseline"] = session_memory.plain_ipython()
    figures["left"] = ours_left()
    return figures


def private_bytes(pids: list[int]) -> int:
    """USS: pages only these processes map (Private_Clean + Private_Dirty)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as handle:
                total += sum(int(line.split()[1]) * 1024 for line in handle
                             if line.startswith(("Private_Clean:", "Private_Dirty:")))
        except OSError:
            continue
    return total


def ours_left(timeout: float = 10) -> list[str]:
    """cgroups of this process's containers still there (launchers remove theirs)."""
    prefix = f"sbk-{os.getpid()}-"
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in detect_driver().leftovers() if os.path.basename(p).startswith(prefix)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


# ---------------------------------------------------------------------------
# the report


def med(values) -> float:
    return statistics.median(values)


def row(label, value, unit, baseline_label="", baseline=None, target=None, ratio_of=None) -> str:
    """One line: figure, baseline, ratio, target and whether it is met.
    ``target`` is (limit, kind): kind "ratio" compares the ratio, else the figure."""
    ratio = value / baseline if baseline else None
    shown_ratio = f"{ratio:6.2f}x" if ratio is not None else " " * 7
    base = f"{baseline_label} {baseline:.1f} {unit}" if baseline is not None else baseline_label
    verdict = ""
    if target is not None:
        limit, kind = target
        subject = ratio if kind == "ratio" else value
        verdict = f"<= {limit:g}{'x' if kind == 'ratio' else ' ' + unit}: " + \
                  ("met" if subject is not None and subject <= limit else "NOT met")
    return f"  {label:<40} {value:9.1f} {unit:<4} {base:<44} {shown_ratio}  {verdict}"


def report(args, bare, first, fresh, trips, memory) -> str:
    ms = 1000.0
    lines = [f"fast starts: medians of {args.runs} runs each (interleaved), {os.cpu_count()} cpus, "
             f"load average {os.getloadavg()[0]:.1f} at the end"]
    bwrap = med(bare["bwrap --unshare-all"]) if "bwrap --unshare-all" in bare else None
    lines.append("/bin/true, start to exit")
    for name, values in bare.items():
        if name.startswith("sandbox-kernel"):
            target = (1.0, "ratio") if name != "sandbox-kernel (exec)" else None
            lines.append(row(name, med(values), "ms", "bwrap", bwrap, target))
    if "unshare -fmpuin" in bare:
        lines.append(row("unshare -fmpuin (reference)", med(bare["unshare -fmpuin"]), "ms", "bwrap", bwrap))
    imp = med(first["import"]) * ms
    plain_start = med(fresh["plain start"]) * ms
    lines.append("first %%container cell, to its reply")
    for key, label in (("pool", "pool: a second after %load_ext"), ("run all", "run all: at once after %load_ext"),
                       ("cold", "cold: a new --name session")):
        source = first if key in first else fresh
        value = med(source[key]) * ms
        lines.append(row(label, value, "ms", "50 ms", 50.0, (50.0, "ms")))
        lines.append(row("", value, "ms", 'python -c "import IPython"', imp, (0.25, "ratio")))
        lines.append(row("", value, "ms", "plain ipykernel start", plain_start))
    lines.append(row("sandbox kernel start to first reply", med(fresh["sandbox start"]) * ms, "ms",
                     "plain ipykernel start", plain_start))
    lines.append("warm round trip of 'pass' (request to reply and idle)")
    plain, sandbox = med(trips[(kernel_roundtrip.PLAIN, "pass")]), med(trips[(kernel_roundtrip.SANDBOX, "pass")])
    lines.append(row("sandbox kernel, warm 'pass'", sandbox * ms, "ms", "plain ipykernel", plain * ms,
                     (1.1, "ratio")))
    count = args.sessions
    one_rss, one_pss = memory["one"]
    many_rss, many_pss = memory["many"]
    extra_rss = (many_rss - one_rss) / max(count - 1, 1) / MiB
    extra_pss = (many_pss - one_pss) / max(count - 1, 1) / MiB
    base_rss, base_pss = memory["baseline"]
    lines.append("idle sessions (launcher + init + agent; the zygote is shared)")
    lines.append(row("one session alone, RSS", one_rss / MiB, "MiB", "plain IPython shell", base_rss / MiB))
    lines.append(row("one session alone, PSS", one_pss / MiB, "MiB", "plain IPython shell", base_pss / MiB))
    lines.append(row(f"{count} sessions, RSS per extra session", extra_rss, "MiB", "", None, (25.0, "MiB")))
    lines.append(row(f"{count} sessions, PSS per extra session", extra_pss, "MiB"))
    extra_uss = (memory["many uss"] - memory["one uss"]) / max(count - 1, 1) / MiB
    lines.append(row(f"{count} sessions, USS per extra session", extra_uss, "MiB"))
    lines.append(row("the zygote (once per kernel), RSS", memory["zygote"][0] / MiB, "MiB"))
    lines.append(row("the zygote (once per kernel), PSS", memory["zygote"][1] / MiB, "MiB"))
    lines.append(f"{count} sessions started at once")
    lines.append(row("all answered a first cell", memory["all up"], "s", "", None, (5.0, "s")))
    lines.append(f"  removed after: {'yes' if not memory['left'] else 'NO: ' + ', '.join(memory['left'])}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="runs of each timing (>= 50 for the report)")
    parser.add_argument("--sessions", type=int, default=50, help="idle sessions started at once")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 3 runs, 3 sessions")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.sessions = 3, 3
    if os.geteuid() != 0:
        parser.exit(2, "fast_start.py: the containers need root here (sandbox-kernel doctor)\n")
    bare = bare_starts(args.runs)
    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()  # a kernel has threads
    saved = {key: os.environ.get(key) for key in ("JUPYTER_PATH", "IPYTHONDIR")}
    with tempfile.TemporaryDirectory(prefix="sbk-bench-") as data_dir:
        kernel_roundtrip.kernelspecs(data_dir)       # sets both, into data_dir
        try:
            first = first_cells(args.runs)
            fresh = fresh_kernels(args.runs)
            trips = kernel_roundtrip.measure_roundtrips(args.runs)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    memory = sessions_at_once(args.sessions)
    print(report(args, bare, first, fresh, trips, memory))
    return 1 if memory["left"] else 0


if __name__ == "__main__":
    sys.exit(main())
