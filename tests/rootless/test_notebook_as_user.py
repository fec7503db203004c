"""The sandbox kernel and %%container end to end as a user who is not root:
nbclient runs real notebooks, as CI and nbconvert would, as the user
sbk-rootless (scripts/test rootless and rootless-v2).

Without a delegated cgroup the first cell's footer says that no cgroup
enforces the limits; in a delegated cgroup v2 subtree the footer carries
the cgroup's figures and no warning.
"""
from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from sandbox_kernel.kernel import install
from sandbox_kernel.runtime.container import _host_driver

pytestmark = pytest.mark.skipif(os.geteuid() == 0, reason="runs as a user who is not root: "
                                                          "scripts/test rootless (or rootless-v2)")
STATS_MIME = "application/vnd.sandbox-kernel.stats+json"
KERNEL = "sbk-rootless-test"


@pytest.fixture
def sandbox_kernelspec(tmp_path, monkeypatch):
    """The project's kernelspec, installed by its installer into a temporary
    Jupyter data directory that JUPYTER_PATH points to."""
    spec = install.kernel_json(install.checked_settings({"memory": "512M", "pids": "128"}),
                               footer="output")      # the footer read below is an output
    install.write_kernelspec(str(tmp_path / "jupyter" / "kernels" / KERNEL), spec)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


def _run(cells: list[str], kernel: str, path) -> list:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(notebook, timeout=180, kernel_name=kernel, allow_errors=True,
                   resources={"metadata": {"path": str(path)}}).execute()
    return [cell.outputs for cell in notebook.cells]


def _footer(outputs) -> dict:
    return next(o.data[STATS_MIME] for o in outputs if STATS_MIME in o.get("data", {}))


def _text(outputs) -> str:
    return "".join(o.get("text", "") for o in outputs if o.output_type == "stream")


def _assert_limits_told(first: dict, second: dict) -> None:
    """The null driver warns in the first cell's footer only; a cgroup gives figures."""
    if _host_driver().version == "null":
        assert "not enforced by cgroups" in " ".join(first["warnings"])
        assert "warnings" not in second
        assert first["cell"]["memory_peak"] is None
    else:
        assert "warnings" not in first
        assert first["cell"]["memory_current"] > 0


def test_the_sandbox_kernel_runs_a_notebook_as_a_user(sandbox_kernelspec, tmp_path):
    outputs = _run([
        "import os\nprint(os.getuid(), os.getgid())\nx = 41",
        "print(x + 1)",
        "open('/etc/shadow')",
        "open('/etc/hostname', 'a')",
    ], sandbox_kernelspec, tmp_path)
    uid = _text(outputs[0]).split()[0]
    assert uid in ("65532", "0")   # the sandbox uid (a range is mapped), or root inside (one id)
    assert _text(outputs[1]) == "42\n"
    for cell in outputs[2:]:
        errors = [o for o in cell if o.output_type == "error"]
        assert errors and errors[0].ename == "PermissionError"
    first, second = _footer(outputs[0]), _footer(outputs[1])
    assert first["limits"]["memory"] == 512 << 20 and first["limits"]["pids"] == 128
    _assert_limits_told(first, second)


def test_container_cells_in_a_python3_kernel_as_a_user(tmp_path):
    outputs = _run([
        "%load_ext sandbox_kernel\n%container footer output",
        "%%container --name nb --memory 256M\nimport os, numpy as np\n"
        "total = int(np.arange(10).sum())\nprint(total, os.uname().nodename)",
        "%%container --name nb -o total\ntotal += 1",
        "print(total, __import__('os').getuid())",
        "%container stop --name nb",
    ], "python3", tmp_path)
    assert _text(outputs[1]) == "45 sandbox\n"
    assert _text(outputs[3]) == f"46 {os.getuid()}\n"   # this cell ran on the host, as the user
    _assert_limits_told(_footer(outputs[1]), _footer(outputs[2]))
