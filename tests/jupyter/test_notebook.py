"""A notebook run top to bottom by nbclient, as CI and nbconvert run one."""
from __future__ import annotations

import nbformat
from nbclient import NotebookClient

STATS_MIME = "application/vnd.sandbox-kernel.stats+json"


def test_a_notebook_of_container_cells_runs_top_to_bottom(tmp_path):
    cells = [
        "%load_ext sandbox_kernel",
        "%%container --name nb --memory 256M\nimport numpy as np\ntotal = int(np.arange(10).sum())\nprint(total)",
        "%%container --name nb -o total\ntotal += 1",
        "print(total)",
        "%container stats --name nb",
        "%container stop --name nb",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [cell.outputs for cell in notebook.cells]
    assert [o.text for o in outputs[1] if o.output_type == "stream"] == ["45\n"]
    assert any(STATS_MIME in o.get("data", {}) for o in outputs[1])
    assert [o.text for o in outputs[3] if o.output_type == "stream"] == ["46\n"]
    footer = [o.data[STATS_MIME] for o in outputs[1] if STATS_MIME in o.get("data", {})][0]
    assert footer["limits"]["memory"] == 256 << 20
    # the footer survives the notebook format (it is plain JSON) for nbconvert and viewers
    assert "text/plain" in [o for o in outputs[1] if STATS_MIME in o.get("data", {})][0].data
