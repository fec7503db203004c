"""A notebook run top to bottom by nbclient, as CI and nbconvert run one.

Issue 17: by default the saved outputs are only what the code produced, on
the sandbox kernel and with the magics (the footer is beside the cell, drawn
by the labextension); ``%container footer output`` puts the footer back in
the outputs for tools without the extension.
"""
from __future__ import annotations

import nbformat
from nbclient import NotebookClient

import kernel_fixtures as kf  # tests/jupyter is on pytest's pythonpath (pyproject)

STATS_MIME = "application/vnd.sandbox-kernel.stats+json"
DEFAULT = "sbk-notebook-default"
SAME_CELLS = [
    "data = [1, 3, 2]\nprint('sum', sum(data))",
    "import sys\nprint('to stderr', file=sys.stderr)",
    "from IPython.display import HTML, display\ndisplay(HTML('<b>shown</b>'))",
    "sorted(data)",
    "raise ValueError('expected in this notebook')",
    "len(data)",
]


def _run(cells: list[str], kernel: str, path, *, allow_errors: bool = False):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(notebook, timeout=180, startup_timeout=120, kernel_name=kernel,
                   allow_errors=allow_errors, resources={"metadata": {"path": str(path)}}).execute()
    saved = path / f"{kernel}.ipynb"
    nbformat.write(notebook, str(saved))
    return nbformat.read(str(saved), as_version=4)


def _footers(notebook) -> list:
    return [o for cell in notebook.cells for o in cell.outputs if STATS_MIME in o.get("data", {})]


def _comparable(output) -> tuple:
    """An output without what differs by nature: an error's traceback text."""
    if output.output_type == "error":
        return ("error", output.ename, output.evalue)
    if output.output_type == "stream":
        return ("stream", output.name, output.text)
    return (output.output_type, output.get("execution_count"), dict(output.data))


def test_a_notebook_of_container_cells_runs_top_to_bottom(tmp_path):
    cells = [
        "%load_ext sandbox_kernel\n%container footer output",
        "%%container --name nb --memory 256M\nimport numpy as np\ntotal = int(np.arange(10).sum())\nprint(total)",
        "%%container --name nb -o total\ntotal += 1",
        "print(total)",
        "%container stats --name nb",
        "%container stop --name nb",
    ]
    notebook = _run(cells, "python3", tmp_path)
    outputs = [cell.outputs for cell in notebook.cells]
    assert [o.text for o in outputs[1] if o.output_type == "stream"] == ["45\n"]
    assert any(STATS_MIME in o.get("data", {}) for o in outputs[1])
    assert [o.text for o in outputs[3] if o.output_type == "stream"] == ["46\n"]
    footer = [o.data[STATS_MIME] for o in outputs[1] if STATS_MIME in o.get("data", {})][0]
    assert footer["limits"]["memory"] == 256 << 20
    # the footer survives the notebook format (it is plain JSON) for nbconvert and viewers
    assert "text/plain" in [o for o in outputs[1] if STATS_MIME in o.get("data", {})][0].data


def test_by_default_the_magics_save_only_what_the_code_produced(tmp_path):
    notebook = _run(["%load_ext sandbox_kernel",
                     "%%container --name clean\nprint('in the container')\n6 * 7"], "python3", tmp_path)
    assert not _footers(notebook)
    assert [_comparable(o) for o in notebook.cells[1].outputs] == [
        ("stream", "stdout", "in the container\n"), ("display_data", None, {"text/plain": "42"})]


def test_the_sandbox_kernel_saves_the_outputs_ipykernel_would(tmp_path):
    """The same notebook on the sandbox kernel (installed as the installer
    installs it) and on ipykernel: equal outputs, no footer among them."""
    data = tmp_path / "jupyter"
    kf.install_kernelspec(str(data), DEFAULT, footer=True)
    with kf.jupyter_path(str(data)):
        sandboxed = _run(SAME_CELLS, DEFAULT, tmp_path, allow_errors=True)
    plain = _run(SAME_CELLS, "python3", tmp_path, allow_errors=True)
    assert not _footers(sandboxed)
    for mine, theirs in zip(sandboxed.cells, plain.cells):
        assert [_comparable(o) for o in mine.outputs] == [_comparable(o) for o in theirs.outputs]
        assert mine.execution_count == theirs.execution_count
    nbformat.validate(sandboxed)
