"""Shutdown, restart and interrupt of the sandbox kernel end at once, through
jupyter_client, and never through its fallback.

jupyter_client sends shutdown_request, waits half of ``shutdown_wait_time``
(2.5 s) for the process to exit, then SIGTERMs it (logging "Kernel is
taking too long to finish, terminating"), then SIGKILLs it.  A kernel that
only exits through that fallback costs every restart and every cull on a hub
2.5 s and leaves the kernel's own teardown undone.  The checks here are that
each kernel exits by itself, with status 0 (a SIGTERMed kernel exits with
-15), with no fallback logged, within a second of the request, and that its
containers are gone.

Needs root (conftest.py skips the tier otherwise).  Every wait is bounded.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time

import pytest

import kernel_fixtures as kf  # tests/jupyter is on pytest's pythonpath (pyproject)

NAME = "sbk-test-shutdown"
KERNELS, BATCH = 20, 5
PROMPT = 1.0            # s: the "gone within 1 s"; the fallback starts at 2.5 s
FALLBACK_WORDS = ("taking too long", "terminating", "killing")

ok = kf.ok


@pytest.fixture(scope="module", autouse=True)
def kernelspecs(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("jupyter-data"))
    kf.install_kernelspec(data, NAME)
    with kf.jupyter_path(data):
        yield data


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def fallback_log(km):
    """The lines jupyter_client's manager logs meanwhile (at DEBUG, where it
    says it terminates or kills a kernel that did not exit)."""
    logger = km.log if isinstance(km.log, logging.Logger) else km.log.logger
    records, level = _Records(), logger.level
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    try:
        yield records.lines
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)


def _fallback(lines: list[str]) -> list[str]:
    return [line for line in lines if any(word in line.lower() for word in FALLBACK_WORDS)]


def _start_batch(count: int) -> list[kf.SandboxKernel]:
    """COUNT kernels started at once, each with a cell run (its container is up)."""
    started: list[kf.SandboxKernel] = []
    lock = threading.Lock()

    def start():
        kernel = kf.SandboxKernel(NAME, ready_timeout=180)
        with lock:
            started.append(kernel)
    threads = [threading.Thread(target=start) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    for kernel in started:
        assert ok(kernel.run("1 + 1", timeout=180)).result == "2"
    assert len(started) == count
    return started


def _shut_down(kernel: kf.SandboxKernel) -> dict:
    """shutdown_request through the manager; what happened, measured."""
    pid, process = kernel.pid, kernel.km.provisioner.process
    below = kf.descendants(pid)
    kernel.kc.stop_channels()
    with fallback_log(kernel.km) as lines:
        start = time.monotonic()
        kernel.km.shutdown_kernel(now=False)
        took = time.monotonic() - start
    left, _ = kf.wait_for_nothing_left(pid, below, timeout=15)
    return {"pid": pid, "took": round(took, 2), "status": process.returncode,
            "fallback": _fallback(lines), "left": {k: v for k, v in left.items() if v}}


def test_twenty_kernels_shut_down_by_themselves_at_once_and_leave_nothing():
    results, alive = [], []
    try:
        for _ in range(KERNELS // BATCH):
            alive = _start_batch(BATCH)
            while alive:
                results.append(_shut_down(alive.pop()))
    finally:
        for kernel in alive:
            kernel.shutdown()
    assert len(results) == KERNELS
    bad = [r for r in results if r["status"] != 0 or r["fallback"] or r["left"]]
    assert not bad, f"kernels that did not exit by themselves or left something: {bad}"
    slow = [r for r in results if r["took"] > PROMPT]
    assert not slow, f"kernels gone only after {PROMPT} s: {slow}; all: {sorted(r['took'] for r in results)}"


def test_a_restart_is_prompt_and_the_next_cell_works():
    kernel = kf.SandboxKernel(NAME)
    try:
        ok(kernel.run("before_restart = 1"))
        old_pid, old_process = kernel.pid, kernel.km.provisioner.process
        below = kf.descendants(old_pid)
        with fallback_log(kernel.km) as lines:
            start = time.monotonic()
            kernel.km.restart_kernel(now=False)
            took = time.monotonic() - start
        assert old_process.returncode == 0, f"the old kernel exited with {old_process.returncode}"
        assert not _fallback(lines), lines
        kernel.kc.wait_for_ready(timeout=60)
        assert kernel.pid != old_pid
        left, _ = kf.wait_for_nothing_left(old_pid, below, timeout=15)
        assert not any(left.values()), left
        assert kernel.run("before_restart").reply["ename"] == "NameError"
        assert ok(kernel.run("1 + 1")).result == "2"
        # the old process was gone within PROMPT; the rest is starting the new one
        assert took < PROMPT + 60
    finally:
        kernel.shutdown()


def test_an_interrupt_is_answered_at_once_idle_or_not_and_the_kernel_carries_on():
    kernel = kf.SandboxKernel(NAME)
    try:
        ok(kernel.run("kept = 'yes'"))
        start = time.monotonic()
        reply = kernel.control("interrupt_request", timeout=30)
        assert reply["content"]["status"] == "ok"
        assert time.monotonic() - start < PROMPT
        assert ok(kernel.run("kept")).result == "'yes'"

        msg_id = kernel.send("import time\nprint('started', flush=True)\ntime.sleep(60)")
        kernel.collect(msg_id, timeout=60, until=lambda ran: "started" in ran.stdout)
        start = time.monotonic()
        assert kernel.control("interrupt_request", timeout=30)["content"]["status"] == "ok"
        ran = kernel.collect(msg_id, timeout=30)
        assert ran.reply["ename"] == "KeyboardInterrupt"
        assert time.monotonic() - start < PROMPT + 2      # the agent's own grace is 2 s at most
        assert ok(kernel.run("kept")).result == "'yes'"
    finally:
        kernel.shutdown()


@pytest.mark.parametrize("cell", [
    "import time\nprint('started', flush=True)\ntime.sleep(600)",
    # deaf to the interrupt: the kernel must not wait out the user's grace (5 s)
    "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('started', flush=True)\n"
    "while True:\n    pass",
], ids=["sleeping", "ignoring-sigint"])
def test_a_shutdown_while_a_cell_runs_ends_the_kernel_by_itself(cell):
    kernel = kf.SandboxKernel(NAME)
    ok(kernel.run("1"))
    msg_id = kernel.send(cell)
    kernel.collect(msg_id, timeout=60, until=lambda ran: "started" in ran.stdout)
    result = _shut_down(kernel)
    assert result["status"] == 0 and not result["fallback"] and not result["left"], result
    assert result["took"] < 2.5, result      # jupyter_client's fallback would have begun


def test_a_shutdown_request_on_the_shell_channel_ends_the_kernel_at_once_too():
    """The protocol also takes shutdown_request on shell (the main thread
    handles it there): the exit must not wait for the control thread."""
    kernel = kf.SandboxKernel(NAME)
    try:
        ok(kernel.run("1"))
        pid, process = kernel.pid, kernel.km.provisioner.process
        below = kf.descendants(pid)
        start = time.monotonic()
        kernel.kc.shell_channel.send(kernel.kc.session.msg("shutdown_request", {"restart": False}))
        while process.poll() is None and time.monotonic() - start < 15:
            time.sleep(0.01)
        took = time.monotonic() - start
        assert process.returncode == 0, process.returncode
        assert took < 2.5, f"the kernel took {took:.2f} s to exit"
        left, _ = kf.wait_for_nothing_left(pid, below, timeout=15)
        assert not any(left.values()), left
    finally:
        kernel.kc.stop_channels()
        if kernel.km.is_alive():
            kernel.km.shutdown_kernel(now=True)
        else:
            kernel.km.cleanup_resources()
