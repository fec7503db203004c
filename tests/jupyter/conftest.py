"""Jupyter tier: a real ipykernel driven through jupyter_client, as a frontend
would drive it, with sandbox_kernel's extension loaded.  Needs root (the
cells run in real containers).

Every wait is bounded: ``Kernel.run`` gives up after its timeout and the
test fails; kernels are shut down (or killed) at teardown.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

import pytest

from jupyter_client import KernelManager


def pytest_collection_modifyitems(config, items):
    """Not as root: every test of this tier skips with the reason (a skip at
    module level in a conftest is an error, not a skip)."""
    if os.geteuid() == 0:
        return
    reason = pytest.mark.skip(reason="the jupyter tier runs cells in real containers as root; "
                                     "the rootless tier covers a user's kernel")
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here + os.sep):
            item.add_marker(reason)

STATS_MIME = "application/vnd.sandbox-kernel.stats+json"


@dataclass
class Ran:
    reply: dict
    messages: list = field(default_factory=list)   # (arrival, msg_type, content, header date)

    def of(self, msg_type: str) -> list[dict]:
        return [content for _, kind, content, _ in self.messages if kind == msg_type]

    @property
    def stdout(self) -> str:
        return "".join(c["text"] for c in self.of("stream") if c["name"] == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(c["text"] for c in self.of("stream") if c["name"] == "stderr")

    @property
    def error_text(self) -> str:
        return "\n".join("\n".join(c["traceback"]) + f"\n{c['ename']}: {c['evalue']}"
                         for c in self.of("error"))

    @property
    def footers(self) -> list[dict]:
        return [c["data"][STATS_MIME] for c in self.of("display_data") if STATS_MIME in c["data"]]


class Kernel:
    """One ipykernel (the venv's python3 kernelspec) and a blocking client."""

    def __init__(self, cwd: str):
        self.km = KernelManager(kernel_name="python3")
        argv0 = self.km.kernel_spec.argv[0]
        assert argv0 in ("python", "python3", sys.executable), (
            f"kernelspec {self.km.kernel_spec.resource_dir} runs {argv0}, not this venv's python")
        self.km.start_kernel(cwd=cwd)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    @property
    def pid(self) -> int:
        return self.km.provisioner.process.pid

    def run(self, code: str, timeout: float = 90) -> Ran:
        return self.collect(self.kc.execute(code, allow_stdin=False), timeout)

    def collect(self, msg_id: str, timeout: float = 90, until=None) -> Ran:
        """iopub messages of msg_id until the kernel is idle, then its reply.
        ``until(ran)`` true: return early (the cell still runs)."""
        deadline = time.monotonic() + timeout
        ran = Ran(reply={})
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no idle within {timeout} s; got {ran.messages}"
            try:
                msg = self.kc.get_iopub_msg(timeout=min(remaining, 1))
            except Exception:        # queue.Empty
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "status" and msg["content"]["execution_state"] == "idle":
                break
            ran.messages.append((time.monotonic(), kind, msg["content"], msg["header"]["date"]))
            if until is not None and until(ran):
                return ran
        ran.reply = self.reply(msg_id, deadline)
        return ran

    def reply(self, msg_id: str, deadline: float) -> dict:
        while time.monotonic() < deadline:
            try:
                msg = self.kc.get_shell_msg(timeout=max(deadline - time.monotonic(), 0.1))
            except Exception:
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg["content"]
        raise AssertionError("no execute_reply in time")

    def shutdown(self) -> None:
        self.kc.stop_channels()
        if self.km.is_alive():
            self.km.shutdown_kernel(now=False)


def start_kernel(tmp_path_factory) -> Kernel:
    kernel = Kernel(str(tmp_path_factory.mktemp("kernel")))
    ran = kernel.run("%load_ext sandbox_kernel")
    assert ran.reply["status"] == "ok", ran.error_text
    ran = kernel.run("%container footer output")      # the tests read the footer as an output
    assert ran.reply["status"] == "ok", ran.error_text
    return kernel


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """A kernel shared by a module's tests (each uses its own --name)."""
    kernel = start_kernel(tmp_path_factory)
    yield kernel
    kernel.shutdown()


@pytest.fixture
def fresh_kernel(tmp_path_factory):
    """A kernel of this test alone (for shutdown and kill tests)."""
    kernel = start_kernel(tmp_path_factory)
    yield kernel
    if kernel.km.is_alive():
        kernel.shutdown()
    else:
        kernel.kc.stop_channels()
        kernel.km.cleanup_resources()


def descendants(pid: int) -> set[int]:
    """Every process below pid (children, their children, ...)."""
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as handle:
                    children = {int(p) for p in handle.read().split()}
            except OSError:
                continue
            todo += list(children - found)
            found |= children
    return found


def leftovers_of(kernel_pid: int, processes: set[int]) -> dict:
    """What the kernel's containers could leave: sbk-PID- cgroups and state
    directories, and processes that were below the kernel."""
    from sandbox_kernel.runtime.cgroups import detect_driver
    prefix = f"sbk-{kernel_pid}-"
    cgroups = [p for p in detect_driver().leftovers() if os.path.basename(p).startswith(prefix)]
    state_dirs = [name for parent in ("/run", "/tmp") if os.path.isdir(parent)
                  for name in os.listdir(parent) if name.startswith(prefix)]
    alive = sorted(pid for pid in processes if _alive(pid))
    return {"cgroups": sorted(cgroups), "state_dirs": sorted(state_dirs), "processes": alive}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for_nothing_left(kernel_pid: int, processes: set[int], timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        left = leftovers_of(kernel_pid, processes)
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.fixture
def leftovers():
    """descendants(pid) before, then wait(pid, processes) -> what is left."""
    from types import SimpleNamespace
    return SimpleNamespace(descendants=descendants, wait=wait_for_nothing_left)
