"""The stats footer beside the outputs (issue 17), in a real JupyterLab 4 and
a real Notebook 7: under each sandboxed cell the labextension draws the
footer, which wraps to the cell's width (its box is no wider than the
cell's); the saved .ipynb has no footer among its outputs but the stats in
each cell's metadata, so a reopened notebook shows the footers again; and
``%container footer output`` brings the footer back as an output.  The
same for ``%%container`` cells in an ordinary python3 kernel (the footer
from the side panel's cell_end).

The browser tier's conditions and helpers are test_side_panel.py's.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from browser.test_side_panel import open_notebook, run_cell, write_notebook  # skips as it does

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

STATS_MIME = "application/vnd.sandbox-kernel.stats+json"
FOOTER = ".jp-SandboxFooter"
CELL = ".jp-Notebook .jp-Cell"
CELL_TIMEOUT = 120_000        # ms: a cell, its container start included
NARROW = {"width": 900, "height": 900}     # the side panel takes its share: the footer must wrap


def cell_footer(page, index: int):
    return page.locator(CELL).nth(index).locator(FOOTER)


def wait_for_footer(page, index: int) -> None:
    cell_footer(page, index).wait_for(timeout=CELL_TIMEOUT)


def boxes(page, index: int) -> dict:
    """The footer's and its cell's widths, the footer's height and the
    height of one of its parts (a line), and whether its content overflows."""
    return page.evaluate(
        """([selector, index]) => {
             const cell = document.querySelectorAll(selector)[index];
             const footer = cell.querySelector(':scope > .jp-SandboxFooter');
             const part = footer.querySelector('.jp-SandboxFooter-part');
             return {cell: cell.getBoundingClientRect().width,
                     footer: footer.getBoundingClientRect().width,
                     height: footer.getBoundingClientRect().height,
                     line: part.getBoundingClientRect().height,
                     overflows: footer.scrollWidth > footer.clientWidth + 1,
                     right: footer.getBoundingClientRect().right,
                     cellRight: cell.getBoundingClientRect().right};
           }""", [CELL, index])


def assert_fits_and_wraps(page, index: int) -> None:
    box = boxes(page, index)
    assert box["footer"] <= box["cell"] + 0.5 and box["right"] <= box["cellRight"] + 0.5, box
    assert not box["overflows"], box
    assert box["height"] >= 1.8 * box["line"], f"the footer did not wrap to a second line: {box}"


def save_and_read(page, path: Path, until) -> dict:
    """Ctrl+S, then the saved notebook once ``until(notebook)`` holds."""
    page.locator(CELL).first.locator(".jp-InputArea-editor").click()
    deadline = time.monotonic() + 60
    notebook = None
    while time.monotonic() < deadline:
        page.keyboard.press("Control+s")
        page.wait_for_timeout(1500)
        notebook = json.loads(path.read_text())
        if until(notebook):
            return notebook
    raise AssertionError(f"the saved notebook never held what was expected: {notebook}")


def footer_outputs(cell: dict) -> list:
    return [o for o in cell.get("outputs", []) if STATS_MIME in o.get("data", {})]


def kept_stats(cell: dict) -> dict | None:
    return ((cell.get("metadata") or {}).get("sandbox_kernel") or {}).get("stats")


def check_reopened(page, server, name: str, indexes: list[int]) -> None:
    """A reopened notebook shows the last run's footers, from the cells' metadata."""
    open_notebook(page, server, name)
    for index in indexes:
        wait_for_footer(page, index)


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_the_sandbox_kernels_footer_is_beside_each_cell_and_wraps(
        app, start_server, browser, tmp_path, sandbox_kernel_name):
    root = tmp_path / "root"
    root.mkdir()
    write_notebook(root, "beside.ipynb", sandbox_kernel_name, "Python 3 (sandbox, 512M)",
                   ["print('hello')", "x = 6 * 7\nx", "%container footer output\nprint('as before')"])
    server = start_server(app, root)
    context = browser.new_context(viewport=NARROW)
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        open_notebook(page, server, "beside.ipynb")
        for index in (0, 1):
            run_cell(page, index)
            wait_for_footer(page, index)
            assert "status ok" in " ".join(cell_footer(page, index).inner_text().split())
            assert_fits_and_wraps(page, index)
        run_cell(page, 2)
        page.locator(CELL).nth(2).locator(".jp-OutputArea-output", has_text="status ok").wait_for(
            timeout=CELL_TIMEOUT)
        assert cell_footer(page, 2).count() == 0         # an output now, not beside

        saved = save_and_read(page, root / "beside.ipynb",
                              lambda nb: all(kept_stats(c) for c in nb["cells"][:2])
                              and footer_outputs(nb["cells"][2]))
        cells = saved["cells"]
        for cell in cells[:2]:
            assert not footer_outputs(cell), cell["outputs"]
            assert kept_stats(cell)["cell"]["status"] == "ok"
            assert kept_stats(cell)["limits"]["memory"] == 512 << 20
        assert [o["output_type"] for o in cells[1]["outputs"]] == ["execute_result"]
        assert footer_outputs(cells[2]) and kept_stats(cells[2]) is None
        check_reopened(page, server, "beside.ipynb", [0, 1])
        assert cell_footer(page, 2).count() == 0

        # the cell runs again, on the host only now: the last run had no footer
        editor = page.locator(CELL).nth(0).locator(".jp-InputArea-editor")
        editor.click()
        page.keyboard.press("Control+a")
        page.keyboard.type("%container status")
        run_cell(page, 0)
        page.locator(CELL).nth(0).locator(".jp-OutputArea-output", has_text="on the host").wait_for(
            timeout=CELL_TIMEOUT)
        cell_footer(page, 0).wait_for(state="detached", timeout=30_000)
        assert cell_footer(page, 1).count() == 1
    finally:
        context.close()


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_the_magics_footer_is_beside_each_container_cell(app, start_server, page, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    write_notebook(root, "magics.ipynb", "python3", "Python 3 (ipykernel)",
                   ["%load_ext sandbox_kernel", "%%container --memory 256M\nprint('in the box')"])
    server = start_server(app, root)
    open_notebook(page, server, "magics.ipynb")
    run_cell(page, 0)
    page.locator(CELL).nth(0).locator(".jp-InputArea-prompt", has_text="1").wait_for(
        timeout=CELL_TIMEOUT)
    run_cell(page, 1)
    wait_for_footer(page, 1)
    assert "256 MiB" in cell_footer(page, 1).inner_text()
    box = boxes(page, 1)
    assert box["footer"] <= box["cell"] + 0.5 and not box["overflows"], box
    assert cell_footer(page, 0).count() == 0           # %load_ext ran on the host

    saved = save_and_read(page, root / "magics.ipynb", lambda nb: kept_stats(nb["cells"][1]))
    assert not any(footer_outputs(cell) for cell in saved["cells"])
    assert kept_stats(saved["cells"][1])["limits"]["memory"] == 256 << 20
    assert ["".join(o.get("text", "")) for o in saved["cells"][1]["outputs"]] == ["in the box\n"]
