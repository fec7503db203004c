"""The side panel in a real JupyterLab 4 and a real Notebook 7, in Debian's
chromium: a notebook on the sandbox kernel (512M) runs a cell that holds
110 MiB, then one that goes past the limit.  The panel must show, live and
after, a peak of at least 100 MiB against a 512 MiB limit, a row per cell,
the second one "oom"; a click on a row makes its cell the active one.  The
same through the magics in an ordinary python3 kernel, where the panel first
says "not sandboxed".

Screenshots go to tests/browser/artifacts/ (gitignored).  With
SANDBOX_KERNEL_UPDATE_SCREENSHOT=1, the JupyterLab one also becomes
docs/side-panel.png, the README's picture.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
BUILT_PANEL = REPO / "sandbox_kernel" / "panel" / "labextension" / "static" / "style.js"


def cannot_run() -> str | None:
    if os.geteuid() != 0:
        return "the browser tier runs cells in real containers: it needs root"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no {CHROMIUM}: apt-get install chromium (scripts/install does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "no playwright (pip install -e '.[test]'; never `playwright install`)"
    if not BUILT_PANEL.exists():
        return f"the side panel is not built ({BUILT_PANEL} is missing): run scripts/install"
    return None


_why = cannot_run()
if _why is not None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, so scripts/install prepared the browser tier, yet {_why}",
                    pytrace=False)
    pytest.skip(_why, allow_module_level=True)

from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
MIB = 1 << 20
PANEL = "#sandbox-kernel-stats"
HOLD_110M = "import time\nx = b'\\x01' * (110 << 20)   # 110 MiB, touched\ntime.sleep(4)\nlen(x)"
PAST_LIMIT = "y = b'\\x01' * (1 << 30)   # 1 GiB under a 512M limit: out of memory"
CELL_TIMEOUT = 120_000        # ms: a cell, its container start included
URL = {"lab": "lab/tree/{name}", "notebook": "notebooks/{name}"}


def write_notebook(root: Path, name: str, kernel: str, display: str, sources: list[str]) -> None:
    cells = [{"cell_type": "code", "execution_count": None, "id": f"cell-{i}", "metadata": {},
              "outputs": [], "source": source} for i, source in enumerate(sources)]
    notebook = {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
                "metadata": {"kernelspec": {"name": kernel, "display_name": display,
                                            "language": "python"},
                             "language_info": {"name": "python"}}}
    (root / name).write_text(json.dumps(notebook))


def open_notebook(page, server, name: str) -> None:
    """Open the notebook and wait until its kernel is up and idle: a cell run
    before the kernel is connected makes JupyterLab ask which kernel to use
    (a "Select Kernel" dialog that then takes every click)."""
    page.goto(server.url(URL[server.app].format(name=name)))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    page.wait_for_selector(PANEL, state="attached")
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', state="attached",
                           timeout=120_000)


def show_panel(page, wait_for_itself: int) -> None:
    """The panel opens itself once a notebook turns out sandboxed; else (or
    for a notebook that is not, yet) View > Show Sandbox Stats opens it."""
    if wait_for_itself:
        try:
            page.locator(PANEL).wait_for(state="visible", timeout=wait_for_itself)
            return
        except PlaywrightTimeout:
            pass
    page.locator(".lm-MenuBar-itemLabel", has_text="View").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Show Sandbox Stats").first.click()
    page.locator(PANEL).wait_for(state="visible", timeout=15_000)


def widen_panel(page, pixels: int) -> None:
    """Drag JupyterLab's right sidebar wider, for the picture (every column shows)."""
    left = page.locator(PANEL).bounding_box()["x"]
    handles = page.locator("#jp-main-split-panel > .lm-SplitPanel-handle:visible")
    near = [box for box in (h.bounding_box() for h in handles.all()) if box and abs(box["x"] - left) < 20]
    if not near:
        return                                          # Notebook 7: wide enough already
    x, y = near[0]["x"] + near[0]["width"] / 2, near[0]["y"] + near[0]["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - pixels, y, steps=5)
    page.mouse.up()


def run_cell(page, index: int) -> None:
    """Shift+Enter in the cell, until its prompt says it ran or is queued
    ([*] or [n]): on a loaded machine a key can reach the editor before the
    notebook listens."""
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    prompt = cell.locator(".jp-InputArea-prompt")
    for _ in range(3):
        cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")
        try:
            page.wait_for_function("node => !/\\[\\s*\\]/.test(node.textContent)",
                                   arg=prompt.element_handle(), timeout=10_000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"cell {index} did not start: its prompt is {prompt.inner_text()!r}")


def figure(page, selector: str) -> int | None:
    """A data-value of the panel (bytes), None when the panel says unknown."""
    text = page.locator(f"{PANEL} {selector}").first.get_attribute("data-value")
    return None if text in (None, "null") else int(float(text))


def wait_for_figure(page, selector: str, at_least: int, timeout: int = CELL_TIMEOUT) -> None:
    page.wait_for_function(
        """([selector, atLeast]) => {
             const node = document.querySelector(selector);
             const value = node && node.getAttribute('data-value');
             return value !== null && value !== 'null' && Number(value) >= atLeast;
           }""", arg=[f"{PANEL} {selector}", at_least], timeout=timeout)


def rows(page, status: str):
    return page.locator(f"{PANEL} tr.sbk-row[data-status='{status}']")


def check_the_cells(page, hold_index: int, oom_index: int, shot: str) -> None:
    """The scenario both kernels share, from the cell that holds 110 MiB on."""
    run_cell(page, hold_index)
    # live, while the cell runs: the running row, then the memory in a tick
    page.locator(f"{PANEL} tr.sbk-row-running").wait_for(timeout=CELL_TIMEOUT)
    wait_for_figure(page, ".sbk-memory-current", 100 * MIB)
    assert page.locator(f"{PANEL} .sbk-memory-limit").first.inner_text() == "512 MiB"

    # after it: its row, ok, peak >= 100 MiB, and the gauge's peak too
    ok_row = rows(page, "ok").first
    ok_row.wait_for(timeout=CELL_TIMEOUT)
    assert int(ok_row.get_attribute("data-memory-peak")) >= 100 * MIB
    assert figure(page, ".sbk-memory-peak") >= 100 * MIB
    assert page.locator(f"{PANEL} .sbk-memory-limit").first.inner_text() == "512 MiB"
    assert "512 MiB" in page.locator(f"{PANEL} .sbk-limits").first.inner_text()
    ok_cells = ok_row.locator("td").all_inner_texts()
    assert "n/a" not in ok_cells[2:5], ok_cells                  # wall, CPU, peak are measured

    run_cell(page, oom_index)
    oom_row = rows(page, "oom").first
    oom_row.wait_for(timeout=CELL_TIMEOUT)
    assert "oom" in oom_row.inner_text()
    page.wait_for_timeout(1500)                                 # let the output settle for the picture
    widen_panel(page, 200)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{shot}.png"))
    page.locator(PANEL).screenshot(path=str(ARTIFACTS / f"{shot}-panel.png"))

    # a click on the ok row makes the cell that held 110 MiB the active one
    ok_row.click()
    active = page.locator(".jp-Notebook .jp-Cell.jp-mod-active")
    active.wait_for()
    assert "110 << 20" in active.inner_text(), (
        f"row {ok_row.get_attribute('data-execution-count')} / {ok_row.get_attribute('data-cell-id')}")


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_side_panel_with_the_sandbox_kernel(app, start_server, page, tmp_path, sandbox_kernel_name):
    root = tmp_path / "root"
    root.mkdir()
    write_notebook(root, "panel.ipynb", sandbox_kernel_name, "Python 3 (sandbox, 512M)",
                   [HOLD_110M, PAST_LIMIT])
    server = start_server(app, root)
    open_notebook(page, server, "panel.ipynb")
    show_panel(page, wait_for_itself=CELL_TIMEOUT)
    page.locator(f"{PANEL} .sbk-session").first.wait_for(timeout=CELL_TIMEOUT)
    assert page.locator(f"{PANEL} .sbk-not-sandboxed-label").count() == 0
    check_the_cells(page, 0, 1, f"{app}-sandbox-kernel")
    if app == "lab" and os.environ.get("SANDBOX_KERNEL_UPDATE_SCREENSHOT") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copy(ARTIFACTS / f"{app}-sandbox-kernel.png", REPO / "docs" / "side-panel.png")


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_side_panel_with_the_magics(app, start_server, page, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    write_notebook(root, "magics.ipynb", "python3", "Python 3 (ipykernel)",
                   ["%load_ext sandbox_kernel",
                    "%%container --memory 512M\n" + HOLD_110M,
                    "%%container\n" + PAST_LIMIT])
    server = start_server(app, root)
    open_notebook(page, server, "magics.ipynb")
    show_panel(page, wait_for_itself=0)
    page.locator(f"{PANEL} .sbk-not-sandboxed-label").wait_for(timeout=CELL_TIMEOUT)

    run_cell(page, 0)                       # the extension opens the comm from the kernel
    page.locator(f"{PANEL} .sbk-no-session").wait_for(timeout=CELL_TIMEOUT)
    check_the_cells(page, 1, 2, f"{app}-magics")
    # the table counts as the notebook does: the 110 MiB cell is [2]
    assert rows(page, "ok").first.get_attribute("data-execution-count") == "2"
