"""Fast starts (issues 8 and 22): every figure of issue 22's table against
its baseline, in one run, with p50 and p99.

    sudo .venv/bin/python benchmarks/fast_start.py [--runs 50] [--sessions 50] [--quick]

p50 and p99 over --runs runs each (interleaved, one of each in turn: this
machine is shared and noisy, and a burst of load then hits every contender
alike); run it on two checkouts side by side (PYTHONPATH=the other one) for
a before and after:

  bare start     start to exit of /bin/true through the Python API (fork and
                 zygote paths) vs ``bwrap --unshare-all --die-with-parent`` and
                 ``unshare -fmpuin``, all from this process (start_latency.py)
  200 in a row   starts per second of 200 /bin/true containers started,
                 waited for and removed one after the other (a grader's loop)
                 vs 200 bwrap runs, in --runs/10 blocks
  shell          ``sandbox-kernel run -- true`` as a shell runs it (a new
                 process, the package's bytecode compiled) vs bwrap and
                 ``python3 -c pass``
  first cell     the first ``%%container`` cell of a session in an ipykernel
                 with the magics loaded, to its reply:
                   cold      a new ``--name`` session a second after another
                             session's first cell (the pool's next container)
                   run all   sent at once after ``%load_ext`` in a fresh kernel
                             (waits for the zygote and the container started ahead)
                   pool      a second after ``%load_ext`` (the warm pool's
                             container is up)
                 run all and the kernel start also with the user's fork server
                 on (SANDBOX_KERNEL_FORKSERVER_IDLE, off by default; its first
                 run starts the daemon, the later ones find it warm)
                 vs ``python -c "import IPython"`` and a plain ipykernel's start
                 (start_kernel to the reply of a first ``pass``)
  kernel start   start_kernel to the reply of a first ``pass``, sandbox kernel
                 vs plain ipykernel
  round trip     a warm ``pass`` cell in the sandbox kernel vs a plain ipykernel,
                 execute_request to reply and idle (kernel_roundtrip.py)
  restart        after an out-of-memory cell (a session with a spare, as the
                 kernel's and the magics' sessions have), from the death seen to
                 the next cell's reply (Session API, a second's pause between)
  memory         RSS and PSS of one idle session alone, and per extra session
                 of --sessions idle sessions (its launcher, init and agent;
                 the zygote is shared, shown once) (session_memory.py;
                 --no-memory leaves these out)
  50 at once     --sessions sessions started together (Session.start_soon),
                 time until every one has answered a first cell; all removed after

The targets are the issue's; the last column says whether this run met each.
Nothing is asserted: speed is reported, never tested.
"""
from __future__ import annotations

import argparse
import compileall
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import kernel_roundtrip
import sandbox_kernel
import session_memory
import start_latency
from sandbox_kernel.runtime.cgroups import detect_driver
from sandbox_kernel.runtime.container import Container
from sandbox_kernel.runtime.spec import ContainerSpec, Limits
from sandbox_kernel.session.client import Session, prewarm

MiB = 1 << 20
WARM_PAUSE = 1.0     # seconds between %load_ext and the first cell: a person reading
BURST = 200          # starts in a row
OOM_LIMIT = 256 << 20
NOT_MEASURED: dict = {}


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
            time.sleep(WARM_PAUSE)                              # a person writing the next cell
            timings["cold"].append(cell(kernel, f"%%container --name cold{index}\nx = 1"))
            timings["import"].append(import_ipython())
    finally:
        kernel.stop()
    return timings


FORK_SERVER_ON = {"SANDBOX_KERNEL_FORKSERVER_IDLE": "60"}   # the per-user fork server, opt-in


def fresh_kernels(runs: int) -> dict[str, list[float]]:
    """Kernel starts (plain and sandbox, to the first reply) and, in each
    fresh plain kernel, the first %%container cell sent at once after
    %load_ext; each also with the user's fork server on (forkserver.py,
    off by default), warm from the runs before, taking turns."""
    timings = {"plain start": [], "sandbox start": [], "run all": [],
               "sandbox start, fork server": [], "run all, fork server": []}
    for _ in range(runs):
        for suffix, env in (("", {}), (", fork server", FORK_SERVER_ON)):
            with environment(env):
                timings["sandbox start" + suffix].append(
                    kernel_roundtrip.start_to_first_reply(kernel_roundtrip.SANDBOX))
                timings["run all" + suffix].append(run_all(timings["plain start"] if not env else []))
    return timings


def run_all(plain_starts: list[float]) -> float:
    """A fresh plain kernel (its start to a first reply goes to ``plain_starts``),
    then the first %%container cell sent at once after %load_ext."""
    started = time.perf_counter()
    kernel = kernel_roundtrip.Kernel(kernel_roundtrip.PLAIN)
    try:
        kernel.kc.wait_for_ready(timeout=120)
        cell(kernel, "pass")
        plain_starts.append(time.perf_counter() - started)
        cell(kernel, "%load_ext sandbox_kernel")
        return cell(kernel, "%%container\nx = 1")
    finally:
        kernel.stop()


@contextlib.contextmanager
def environment(changes: dict):
    """os.environ with ``changes`` (kernels started meanwhile inherit them)."""
    with kernel_roundtrip.restored(changes):
        os.environ.update(changes)
        yield


def starts_in_a_row(blocks: int) -> dict[str, list[float]]:
    """Starts per second of BURST /bin/true containers in a row through the
    Python API (a grader's loop: start, wait, remove), block by block, each
    followed by BURST bwrap runs (interleaved: a burst of load hits both)."""
    spec = ContainerSpec(command=("/bin/true",), limits=Limits(memory=256 << 20, pids=64))
    bwrap = shutil.which("bwrap")
    rates = {"sandbox-kernel": [], **({"bwrap": []} if bwrap else {})}
    argv = ["bwrap", "--unshare-all", "--die-with-parent", *start_latency.BWRAP_ROOT, "/bin/true"]
    for _ in range(blocks):
        started = time.perf_counter()
        for _ in range(BURST):
            with Container(spec) as box:
                box.start()
                if box.wait().status != "ok":
                    raise SystemExit("fast_start: /bin/true failed in a container")
        rates["sandbox-kernel"].append(BURST / (time.perf_counter() - started))
        if bwrap:
            started = time.perf_counter()
            for _ in range(BURST):
                subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
            rates["bwrap"].append(BURST / (time.perf_counter() - started))
    return rates


def shell_runs(runs: int) -> dict[str, list[float]]:
    """Seconds of ``sandbox-kernel run -- true`` as a shell runs it (a new
    process), against bwrap and ``python3 -c pass``, interleaved.  The
    package's bytecode is compiled first, as an installed package has it."""
    package = os.path.dirname(sandbox_kernel.__file__)
    compileall.compile_dir(package, quiet=1)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    commands = {"run": [os.path.join(os.path.dirname(sys.executable), "sandbox-kernel"), "run", "--", "true"],
                "python3 -c pass": [sys.executable, "-c", "pass"]}
    if shutil.which("bwrap"):
        commands["bwrap"] = ["bwrap", "--unshare-all", "--die-with-parent", *start_latency.BWRAP_ROOT,
                             "/bin/true"]
    timings = {name: [] for name in commands}
    for index in range(runs + 1):
        for name, argv in commands.items():
            started = time.perf_counter()
            subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, env=env)
            if index:                                  # the first round warms the caches
                timings[name].append(time.perf_counter() - started)
    return timings


OOM_CELL = "hog = b'x' * (1 << 30)"      # far over OOM_LIMIT: the agent is killed


def restarts_after_oom(runs: int) -> dict[str, list[float]]:
    """Seconds from an out-of-memory death (the container seen dead) to the
    reply of the next cell, sent at once: the dead container removed, a
    fresh one in its place, the cell.  ``restart``: a session with a spare
    (as the kernel's and the magics' sessions have); ``no spare``: one
    without (a start in the restart's path, as before issue 22), taking
    turns.  Between deaths a pause (a person reads the report); ``plain``:
    the next cell after a cell that did not die, for comparison."""
    timings = {"restart": [], "no spare": [], "plain": []}
    limits = Limits(memory=OOM_LIMIT, pids=256)
    with Session("bench-oom", limits=limits) as spare, Session("bench-oom-cold", limits=limits) as cold:
        spare.keep_spare = True                       # as the registry's sessions have it
        for session in (spare, cold):
            session.execute("x = 1", on_output=quiet)
        for _ in range(runs):
            for key, session in (("restart", spare), ("no spare", cold)):
                time.sleep(WARM_PAUSE)
                timings[key].append(death_to_next_reply(session))
            started = time.perf_counter()
            spare.execute("pass", on_output=quiet)
            timings["plain"].append(time.perf_counter() - started)
    return timings


def death_to_next_reply(session: Session) -> float:
    started = time.perf_counter()
    died = session.execute(OOM_CELL, on_output=quiet)
    if died.status != "oom":
        raise SystemExit(f"fast_start: the memory bomb ended {died.status}: {died.message}")
    if session.execute("pass", on_output=quiet).status != "ok":
        raise SystemExit("fast_start: the cell after the out-of-memory death failed")
    return time.perf_counter() - started - died.stats["cell"]["wall"]


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


def p99(values) -> float:
    return kernel_roundtrip.p99(list(values))


def row(label, values, unit, baseline_label="", baseline=None, target=None, scale=1.0) -> str:
    """One line: p50 and p99 of the figure, the baseline's p50, the ratio of
    the p50s, the target and whether this run met it.  ``target`` is
    (limit, kind): kind "ratio" compares the ratio, "min ratio" the ratio
    from below, else the figure's p50.  ``values`` is a list (or one number)."""
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    value, tail = med(values) * scale, p99(values) * scale
    base = None if baseline is None else \
        (med(baseline) if isinstance(baseline, (list, tuple)) else baseline) * scale
    ratio = value / base if base else None
    shown_ratio = f"{ratio:6.2f}x" if ratio is not None else " " * 7
    shown_base = f"{baseline_label} {base:.1f} {unit}" if base is not None else baseline_label
    verdict = ""
    if target is not None:
        limit, kind = target
        subject = value if kind == "figure" else ratio
        met = subject is not None and (subject >= limit if kind == "min ratio" else subject <= limit)
        shown_limit = f"{limit:g}{'x' if 'ratio' in kind else ' ' + unit}"
        verdict = f"{'>=' if kind == 'min ratio' else '<='} {shown_limit}: " + ("met" if met else "NOT met")
    return f"  {label:<38} {value:8.1f} {tail:8.1f} {unit:<4} {shown_base:<40} {shown_ratio}  {verdict}"


HEADER = f"  {'':<38} {'p50':>8} {'p99':>8} {'':<4} {'baseline (p50)':<40} {'ratio':>7}  target"


def issue_rows(args, bare, burst, shell, first, fresh, trips, oom) -> list[str]:
    """The issue's table (issue 22), row by row, each against its baseline."""
    ms = 1000.0
    bwrap = bare.get("bwrap --unshare-all")
    lines = ["the issue's figures", HEADER, "/bin/true, start to exit, Python API"]
    for name, values in bare.items():
        if name.startswith("sandbox-kernel"):
            target = (1.0, "ratio") if name != "sandbox-kernel (exec)" else None
            lines.append(row(name, values, "ms", "bwrap", bwrap, target))
    if "unshare -fmpuin" in bare:
        lines.append(row("unshare -fmpuin (reference)", bare["unshare -fmpuin"], "ms", "bwrap", bwrap))
    lines.append(f"{BURST} starts of /bin/true in a row (a grader's loop), starts per second")
    if "bwrap" in burst:
        lines.append(row("sandbox-kernel, Python API", burst["sandbox-kernel"], "/s", "bwrap", burst["bwrap"],
                         (0.8, "min ratio")))
    else:
        lines.append(row("sandbox-kernel, Python API", burst["sandbox-kernel"], "/s"))
    lines.append("`sandbox-kernel run -- true` from a shell")
    lines.append(row("sandbox-kernel run -- true", shell["run"], "ms", "target", 40.0 / ms, (40.0, "figure"), ms))
    for name in ("bwrap", "python3 -c pass"):
        if name in shell:
            lines.append(row("", shell["run"], "ms", name, shell[name], None, ms))
    imp, plain_start = first["import"], fresh["plain start"]
    lines.append("first %%container cell, to its reply")
    lines.append(row("cold: a new --name session", first["cold"], "ms", "target", 20.0 / ms, (20.0, "figure"), ms))
    lines.append(row("run all: at once after %load_ext", fresh["run all"], "ms", "target", 50.0 / ms,
                     (50.0, "figure"), ms))
    lines.append(row("", fresh["run all"], "ms", 'python -c "import IPython"', imp, None, ms))
    lines.append(row("  the same, fork server on (opt-in)", fresh["run all, fork server"], "ms", "off",
                     fresh["run all"], None, ms))
    lines.append(row("pool: a second after %load_ext", first["pool"], "ms", 'python -c "import IPython"', imp,
                     None, ms))
    lines.append("the sandbox kernel")
    lines.append(row("start to first reply", fresh["sandbox start"], "ms", "plain ipykernel", plain_start,
                     (1.05, "ratio"), ms))
    lines.append(row("  the same, fork server on (opt-in)", fresh["sandbox start, fork server"], "ms",
                     "plain ipykernel", plain_start, None, ms))
    lines.append(row("warm round trip of 'pass'", trips[(kernel_roundtrip.SANDBOX, "pass")], "ms",
                     "plain ipykernel", trips[(kernel_roundtrip.PLAIN, "pass")], (1.03, "ratio"), ms))
    if oom is NOT_MEASURED:
        return lines + ["  restart after an out-of-memory cell: not measured (--skip-oom)"]
    lines.append(row("restart after an out-of-memory cell", oom["restart"], "ms", "target", 20.0 / ms,
                     (20.0, "figure"), ms))
    lines.append(row("", oom["restart"], "ms", "no spare (as before)", oom["no spare"], None, ms))
    lines.append(row("  (next cell's reply, no death before)", oom["plain"], "ms", "", None, None, ms))
    return lines


def memory_rows(args, memory) -> list[str]:
    count = args.sessions
    one_rss, one_pss = memory["one"]
    many_rss, many_pss = memory["many"]
    extra_rss = (many_rss - one_rss) / max(count - 1, 1) / MiB
    extra_pss = (many_pss - one_pss) / max(count - 1, 1) / MiB
    base_rss, base_pss = memory["baseline"]
    extra_uss = (memory["many uss"] - memory["one uss"]) / max(count - 1, 1) / MiB
    return [
        "idle sessions (launcher + init + agent; the zygote is shared)",
        row("one session alone, RSS", one_rss / MiB, "MiB", "plain IPython shell", base_rss / MiB),
        row("one session alone, PSS", one_pss / MiB, "MiB", "plain IPython shell", base_pss / MiB),
        row(f"{count} sessions, RSS per extra session", extra_rss, "MiB", "", None, (25.0, "figure")),
        row(f"{count} sessions, PSS per extra session", extra_pss, "MiB"),
        row(f"{count} sessions, USS per extra session", extra_uss, "MiB"),
        row("the zygote (once per kernel), RSS", memory["zygote"][0] / MiB, "MiB"),
        row("the zygote (once per kernel), PSS", memory["zygote"][1] / MiB, "MiB"),
        f"{count} sessions started at once",
        row("all answered a first cell", memory["all up"], "s", "", None, (5.0, "figure")),
        f"  removed after: {'yes' if not memory['left'] else 'NO: ' + ', '.join(memory['left'])}",
    ]


def report(args, figures: dict) -> str:
    lines = [f"fast starts: p50 and p99 of {args.runs} runs each (interleaved), {os.cpu_count()} cpus, "
             f"load average {os.getloadavg()[0]:.1f} at the end"]
    lines += issue_rows(args, figures["bare"], figures["burst"], figures["shell"], figures["first"],
                        figures["fresh"], figures["trips"], figures["oom"])
    if "memory" in figures:
        lines += memory_rows(args, figures["memory"])
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="runs of each timing (>= 50 for the report)")
    parser.add_argument("--sessions", type=int, default=50, help="idle sessions started at once")
    parser.add_argument("--no-memory", action="store_true", help="leave out the idle sessions' memory rows")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 3 runs, 3 sessions")
    parser.add_argument("--skip-oom", action="store_true",
                        help="leave out the restart after an out-of-memory cell (e.g. for a checkout "
                             "on PYTHONPATH that containers cannot see)")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.sessions = 3, 3
    if os.geteuid() != 0:
        parser.exit(2, "fast_start.py: the containers need root here (sandbox-kernel doctor)\n")
    figures = {"bare": bare_starts(args.runs), "burst": starts_in_a_row(max(args.runs // 10, 3))}
    figures["shell"] = shell_runs(args.runs)
    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()  # a kernel has threads
    with kernel_roundtrip.restored(("JUPYTER_PATH", "IPYTHONDIR")), \
            tempfile.TemporaryDirectory(prefix="sbk-bench-") as data_dir:
        kernel_roundtrip.kernelspecs(data_dir)       # sets both, into data_dir
        figures["first"] = first_cells(args.runs)
        figures["fresh"] = fresh_kernels(args.runs)
        figures["trips"] = kernel_roundtrip.measure_roundtrips(args.runs)
    figures["oom"] = NOT_MEASURED if args.skip_oom else restarts_after_oom(args.runs)
    if not args.no_memory:
        figures["memory"] = sessions_at_once(args.sessions)
    print(report(args, figures))
    left = figures.get("memory", {}).get("left") or ours_left()
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
