"""Helpers of the sandbox kernel's tests (test_kernel.py, test_conformance.py,
test_kernel_install.py), which ``import kernel_fixtures``: tests/jupyter is on
pytest's pythonpath (pyproject.toml); conftest.py belongs to the magics' tests.

A test kernelspec is installed into a temporary Jupyter data directory with
the project's own installer, and JUPYTER_PATH points there; kernels are
driven through jupyter_client as a frontend drives them.  Every wait is
bounded.

Kernels talk over Unix sockets (transport "ipc"), not TCP: with TCP,
jupyter_client picks free ports and the kernel binds them later, and with
many kernels starting on a busy machine another process can take a port in
between ("Address already in use": the kernel dies at start).
"""
from __future__ import annotations

import atexit
import contextlib
import os
import queue
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field

from jupyter_client import KernelManager

from sandbox_kernel.kernel import install

STATS_MIME = "application/vnd.sandbox-kernel.stats+json"

_IPC_DIR = tempfile.mkdtemp(prefix="kernel-ipc-")
atexit.register(shutil.rmtree, _IPC_DIR, True)


def install_kernelspec(data_dir: str, name: str, settings: dict | None = None, *,
                       footer: bool | str = "output") -> str:
    """A kernelspec of this venv's sandbox kernel in DATA_DIR/kernels/NAME,
    written by the project's installer (install.kernel_json, write_kernelspec).
    The footer as an output by default, for the tests that read it there
    (footer=True: the kernel's own default, beside: in the reply's metadata)."""
    spec = install.kernel_json(install.checked_settings(settings or {}), footer=footer)
    return install.write_kernelspec(os.path.join(data_dir, "kernels", name), spec)


from jupyter_env import jupyter_path  # noqa: E402,F401 -- tests/ is on the path (pyproject); tests use kf.jupyter_path


@dataclass
class Ran:
    reply: dict
    messages: list = field(default_factory=list)      # (msg_type, content, header)

    def of(self, msg_type: str) -> list[dict]:
        return [content for kind, content, _ in self.messages if kind == msg_type]

    @property
    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.messages]

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

    @property
    def result(self) -> str | None:
        results = self.of("execute_result")
        return results[-1]["data"]["text/plain"] if results else None


class SandboxKernel:
    """One sandbox kernel process and a blocking client."""

    def __init__(self, kernel_name: str, *, env: dict | None = None, cwd: str | None = None,
                 ready_timeout: float = 60):
        self.km = KernelManager(kernel_name=kernel_name, transport="ipc",
                                ip=os.path.join(_IPC_DIR, uuid.uuid4().hex[:8]))
        kwargs = {"cwd": cwd} if cwd else {}
        if env is not None:
            kwargs["env"] = {**os.environ, **env}
        self.km.start_kernel(**kwargs)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=ready_timeout)

    @property
    def pid(self) -> int:
        return self.km.provisioner.process.pid

    def send(self, code: str, **kwargs) -> str:
        return self.kc.execute(code, allow_stdin=False, **kwargs)

    def run(self, code: str, timeout: float = 90, **kwargs) -> Ran:
        return self.collect(self.send(code, **kwargs), timeout)

    def collect(self, msg_id: str, timeout: float = 90, until=None) -> Ran:
        """iopub messages of msg_id until idle, then the reply; ``until(ran)``
        true returns early (the cell still runs)."""
        deadline = time.monotonic() + timeout
        ran = Ran(reply={})
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no idle within {timeout} s; got {ran.messages}"
            try:
                msg = self.kc.get_iopub_msg(timeout=min(remaining, 1))
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "status":
                if msg["content"]["execution_state"] == "idle":
                    break
                continue
            ran.messages.append((kind, msg["content"], msg["header"]))
            if until is not None and until(ran):
                return ran
        ran.reply = self.shell_reply(msg_id, deadline)
        return ran

    def shell_reply(self, msg_id: str, deadline: float) -> dict:
        while time.monotonic() < deadline:
            try:
                msg = self.kc.get_shell_msg(timeout=max(deadline - time.monotonic(), 0.1))
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg["content"]
        raise AssertionError("no shell reply in time")

    def request(self, method: str, *args, timeout: float = 60, **kwargs) -> dict:
        """complete, inspect, is_complete, history: the reply content."""
        msg_id = getattr(self.kc, method)(*args, **kwargs)
        return self.shell_reply(msg_id, time.monotonic() + timeout)

    def control(self, msg_type: str, content: dict | None = None, timeout: float = 30) -> dict:
        """A request on the control channel (usage_request...): the reply message."""
        msg = self.kc.session.msg(msg_type, content or {})
        self.kc.control_channel.send(msg)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                reply = self.kc.control_channel.get_msg(timeout=1)
            except queue.Empty:
                continue
            if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                return reply
        raise AssertionError(f"no {msg_type} reply in {timeout} s")

    def shutdown(self) -> None:
        self.kc.stop_channels()
        if self.km.is_alive():
            self.km.shutdown_kernel(now=False)
        else:
            self.km.cleanup_resources()


def ok(ran: "Ran") -> "Ran":
    """The cell's run, after checking it ended ok (else its error and stderr)."""
    assert ran.reply["status"] == "ok", ran.error_text + ran.stderr
    return ran


@contextlib.contextmanager
def kernels_of_one_test(default_name: str):
    """start(name=default_name, env=None) -> SandboxKernel; all shut down at the end."""
    started = []

    def start(name: str = default_name, env: dict | None = None) -> SandboxKernel:
        kernel = SandboxKernel(name, env=env)
        started.append(kernel)
        return kernel
    try:
        yield start
    finally:
        for kernel in started:
            kernel.shutdown()


def descendants(pid: int) -> set[int]:
    """Every process below pid."""
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


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def leftovers(kernel_pid: int, processes: set[int]) -> dict:
    """What the containers of a kernel could leave on the host: processes
    that were below it, sbk-PID- cgroups, state directories and mounts."""
    from sandbox_kernel.runtime.cgroups import detect_driver
    prefix = f"sbk-{kernel_pid}-"
    cgroups = [p for p in detect_driver().leftovers() if os.path.basename(p).startswith(prefix)]
    state_dirs = [name for parent in ("/run", "/tmp") if os.path.isdir(parent)
                  for name in os.listdir(parent) if name.startswith(prefix)]
    with open("/proc/self/mountinfo") as handle:
        mounts = [line.split()[4] for line in handle if prefix in line]
    return {"processes": sorted(p for p in processes if alive(p)), "cgroups": sorted(cgroups),
            "state_dirs": sorted(state_dirs), "mounts": mounts}


def wait_for_nothing_left(kernel_pid: int, processes: set[int], timeout: float = 15) -> tuple[dict, float]:
    """(what is left, seconds it took to be gone) polling every 20 ms."""
    start = time.monotonic()
    while True:
        left = leftovers(kernel_pid, processes)
        elapsed = time.monotonic() - start
        if not any(left.values()) or elapsed > timeout:
            return left, elapsed
        time.sleep(0.02)
