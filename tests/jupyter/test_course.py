"""Every notebook of the course runs top to bottom with the sandbox kernel."""
from __future__ import annotations

import glob
import os

import nbformat
import pytest
from nbclient import NotebookClient

from sandbox_kernel.kernel import install

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "notebooks", "*.ipynb")))


@pytest.fixture
def sandbox_kernelspec(tmp_path, monkeypatch):
    spec = install.kernel_json(install.checked_settings({"memory": "512M"}), footer=True)
    install.write_kernelspec(str(tmp_path / "kernels" / "python3-sandbox"), spec)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))


def test_the_course_has_notebooks():
    assert NOTEBOOKS, "notebooks/ has no .ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_top_to_bottom(path, sandbox_kernelspec, tmp_path):
    run_notebook(path, tmp_path)


def run_notebook(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    assert notebook.metadata.kernelspec.name == "python3-sandbox"
    client = NotebookClient(notebook, timeout=120, kernel_name="python3-sandbox",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    return notebook


def test_start_here_shows_the_container_not_the_host(sandbox_kernelspec, tmp_path):
    path = os.path.join(REPO, "notebooks", "00-start-here.ipynb")
    notebook = run_notebook(path, tmp_path)
    text = "".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for out in cell.outputs)
    assert "hostname: sandbox" in text
    assert "    1 " in text and "sbk-init" in text
    assert "64 MiB allocated" in text
