"""Running the submissions: each in a fresh sandbox kernel of its own,
with nbclient, from a kernelspec in a private directory.

The kernelspec is the sandbox kernel's (kernel/install.py writes it) with
the classroom policy, no network, the cell timeout as the kernel's own
timeout, and the notebook's directory ``overlay``: the kernel starts in an
empty workspace of the submission's own (below the grader's private
temporary directory), which is all that is mounted; what a cell writes
stays in its container.  ``--data DIR`` is linked (or copied) into each
workspace, read-only in the container.  The submission's own directory, its
classmates and the gradebook are never mounted.

Imports kernel.install (the kernelspec), nbclient, nbformat, jupyter_client.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import dataclass

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from traitlets import default

from ..kernel import install
from .report import NotebookGrade, cell_verdict, notebook_verdict

KERNEL_NAME = "sbk-grade"
# nbclient's own wait for a reply beyond the kernel's cell timeout: the
# kernel stops the cell itself; this only catches a kernel that hangs.
REPLY_GRACE = 30.0


@dataclass(frozen=True)
class Limits:
    memory: str
    cpus: str
    pids: str
    timeout_cell: float          # seconds
    timeout: float               # seconds, the whole submission
    data: str | None = None      # a directory, read-only in every workspace


def write_kernelspec(kernels_dir: str, limits: Limits) -> str:
    """The sandbox kernel's kernelspec in ``kernels_dir``/sbk-grade;
    install.InstallError for a bad limit."""
    settings = install.checked_settings({"memory": limits.memory, "cpus": limits.cpus,
                                         "pids": limits.pids, "timeout": f"{limits.timeout_cell}s",
                                         "net": "none"})
    policy = install.checked_policy(settings, {"name": "classroom", "notebook_dir": "overlay"})
    spec = install.kernel_json(settings, display_name="Grader (sandbox)", policy=policy)
    return install.write_kernelspec(os.path.join(kernels_dir, KERNEL_NAME), spec)


def manager_class(kernels_dir: str) -> type:
    """An AsyncKernelManager that finds kernelspecs only in ``kernels_dir``:
    nbclient makes (and shuts down) one per submission."""
    class GradeKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _private_specs(self):
            return KernelSpecManager(kernel_dirs=[kernels_dir])
    return GradeKernelManager


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:               # another file system, or links refused
        shutil.copy2(source, target)


def make_workspace(root: str, index: int, data: str | None) -> str:
    """An empty directory of the submission's own (plus a link farm of --data)."""
    workspace = os.path.join(root, f"submission-{index:03d}")
    os.makedirs(workspace, mode=0o755)
    if data:
        shutil.copytree(data, os.path.join(workspace, os.path.basename(os.path.normpath(data))),
                        symlinks=True, copy_function=_link_or_copy)
    return workspace


class Recorder:
    """nbclient's hooks: each cell's verdict, its stats kept in the cell's
    metadata (as the labextension keeps them), and the cell running now."""

    def __init__(self):
        self.cells, self.current = [], None

    def started(self, cell, cell_index, **_):
        self.current = cell_index

    def executed(self, cell, cell_index, execute_reply, **_):
        self.current = None
        if execute_reply is None:
            return
        metadata = execute_reply.get("metadata") or {}
        if "sandbox_kernel" in metadata:
            cell.metadata["sandbox_kernel"] = metadata["sandbox_kernel"]
        self.cells.append(cell_verdict(cell_index, execute_reply.get("content"), metadata))


async def grade_one(path: str, *, index: int, limits: Limits, kernels_dir: str, work_root: str,
                    executed_path: str | None) -> NotebookGrade:
    """Run one submission top to bottom; what breaks stops only it."""
    notebook = nbformat.read(path, as_version=4)
    workspace = make_workspace(work_root, index, limits.data)
    recorder = Recorder()
    client = NotebookClient(
        notebook, kernel_name=KERNEL_NAME, kernel_manager_class=manager_class(kernels_dir),
        timeout=int(limits.timeout_cell + REPLY_GRACE), allow_errors=True,
        resources={"metadata": {"path": workspace}},
        on_cell_execute=recorder.started, on_cell_executed=recorder.executed)
    started = time.monotonic()
    # the kernel's stderr (its warnings, why it died) in a file, not over the progress bar
    with open(os.path.join(work_root, f"kernel-{index:03d}.log"), "w+b") as log:
        stopped, note = await _execute_within(client, limits.timeout, log)
        if stopped in ("killed", "error"):
            note = f"{note}: {_last_line(log)}" if _last_line(log) else note
    if stopped and recorder.current is not None:
        recorder.cells.append(cell_verdict(recorder.current, {"status": "error"}, None))
        recorder.cells[-1].verdict = stopped
    grade = NotebookGrade(path, notebook_verdict(recorder.cells, stopped), recorder.cells,
                          round(time.monotonic() - started, 3), executed_path, note)
    if executed_path:
        nbformat.write(notebook, executed_path)
    return grade


def _last_line(log) -> str:
    log.seek(0)
    lines = [line.strip() for line in log.read()[-4096:].decode(errors="replace").splitlines()]
    return next((line for line in reversed(lines) if line), "")


async def _execute_within(client, timeout: float, log) -> tuple[str | None, str]:
    """Run the notebook (the kernel's stderr to ``log``); what stopped it
    early (a verdict) and why, in words."""
    task = asyncio.ensure_future(client.async_execute(stderr=log))
    try:
        finished, _ = await asyncio.wait({task}, timeout=timeout)
        if not finished:
            # cancelled, nbclient shuts its kernel down; whatever that raises
            # (a kernel that dies as it is stopped), the verdict is the timeout
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return "timeout", f"the whole submission ran over --timeout {timeout:g}s"
        task.result()
    except CellTimeoutError:
        return "timeout", "the kernel did not answer after the cell's timeout"
    except DeadKernelError:
        return "killed", "the kernel died"
    except RuntimeError as error:     # nbclient: the kernel died before it answered
        return "error", f"the kernel did not start: {error}"
    finally:
        await _shut_down(client)
    return None, ""


async def _shut_down(client) -> None:
    # nbclient shuts its kernel down when async_execute returns or raises;
    # a cancelled one (--timeout) may still have it: stop it, then the
    # sandbox kernel removes its containers as it exits.
    manager = client.km
    if manager is not None and manager.has_kernel:
        await manager.shutdown_kernel(now=False)
