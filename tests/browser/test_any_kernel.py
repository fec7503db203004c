"""Stats for any language (issue 18): an R notebook on the "ir" kernel
wrapped by the sandbox provisioner (256M), in a real JupyterLab in Debian's
chromium.  The kernel has no stats comm: the side panel gets its gauges and
sparklines from the server's stats endpoint, says why there is no per-cell
table, and when a cell takes R past the limit, the panel and a JupyterLab
notification say in plain words that the R kernel ran out of memory (not
just "kernel died").

Screenshots go to tests/browser/artifacts/ (gitignored).
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest


def _fixtures():
    path = Path(__file__).resolve().parent / "any_kernel_fixtures.py"
    spec = importlib.util.spec_from_file_location("sbk_browser_any_kernel_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fixtures = _fixtures()
side = fixtures.load_sibling("test_side_panel")      # skips this module as it skips itself
_why = fixtures.why_no_r()
if _why is not None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, so scripts/install prepared the browser tier, yet {_why}", pytrace=False)
    pytest.skip(_why, allow_module_level=True)

wrapped_ir = fixtures.wrapped_ir
pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]

MIB = 1 << 20
PANEL = side.PANEL
SMALL = 'x <- rnorm(4e6)   # 32 MB of doubles\nSys.sleep(3)\ncat("mean", mean(x), "\\n")'
PAST_LIMIT = "y <- rep(1.5, 2^27)   # 1 GiB of doubles under a 256M limit: out of memory"
OOM_WORDS = "ran out of memory"


def write_r_notebook(root: Path, name: str, kernel: str, display: str) -> None:
    cells = [{"cell_type": "code", "execution_count": None, "id": f"cell-{i}", "metadata": {},
              "outputs": [], "source": source} for i, source in enumerate([SMALL, PAST_LIMIT])]
    notebook = {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
                "metadata": {"kernelspec": {"name": kernel, "display_name": display, "language": "R"},
                             "language_info": {"name": "R"}}}
    (root / name).write_text(json.dumps(notebook))


def dismiss_restart_dialog(page) -> None:
    """JupyterLab's own "Kernel Restarting" dialog (it says only that the
    kernel died), closed so that the picture shows the panel and the toast."""
    dialog = page.locator(".jp-Dialog", has_text="Kernel Restarting")
    try:
        dialog.wait_for(timeout=10_000)
    except side.PlaywrightTimeout:
        return
    dialog.locator("button", has_text="Ok").first.click()
    dialog.wait_for(state="detached", timeout=10_000)


def test_r_notebook_gauges_and_out_of_memory_notification(start_server, page, tmp_path, wrapped_ir):
    root = tmp_path / "root"
    root.mkdir()
    write_r_notebook(root, "r.ipynb", wrapped_ir, fixtures.WRAPPED_IR_DISPLAY)
    server = start_server("lab", root)
    side.open_notebook(page, server, "r.ipynb")
    side.show_panel(page, wait_for_itself=side.CELL_TIMEOUT)   # it opens itself: the kernel is sandboxed

    # the gauges, from the endpoint: the R kernel's memory against its 256 MiB limit
    page.locator(f"{PANEL} .sbk-session").first.wait_for(timeout=side.CELL_TIMEOUT)
    assert page.locator(f"{PANEL} .sbk-not-sandboxed-label").count() == 0
    assert page.locator(f"{PANEL} .sbk-memory-limit").first.inner_text() == "256 MiB"
    side.wait_for_figure(page, ".sbk-memory-current", 1 * MIB)   # R itself is in the cgroup
    assert "The R kernel runs whole inside one container" in \
        page.locator(f"{PANEL} .sbk-no-per-cell").inner_text()
    assert page.locator(f"{PANEL} tr.sbk-row").count() == 0

    # a cell holding 32 MB shows in the gauge and draws the sparklines
    side.run_cell(page, 0)
    side.wait_for_figure(page, ".sbk-memory-current", 30 * MIB)
    page.locator(f"{PANEL} .sbk-spark[data-spark='memory'] polyline").first.wait_for(
        state="attached", timeout=side.CELL_TIMEOUT)

    # past the limit: the panel and a notification say it in plain words
    side.run_cell(page, 1)
    death = page.locator(f"{PANEL} .sbk-death[data-reason='oom'] .sbk-death-text").first
    death.wait_for(timeout=side.CELL_TIMEOUT)
    assert OOM_WORDS in death.inner_text() and "R kernel" in death.inner_text()
    toast = page.locator(".jp-toast-message", has_text=OOM_WORDS).first
    toast.wait_for(timeout=30_000)
    assert "256 MiB" in toast.inner_text(), toast.inner_text()
    dismiss_restart_dialog(page)
    page.wait_for_timeout(1000)                  # the toast has slid in, for the picture
    side.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(side.ARTIFACTS / "lab-r-kernel-oom.png"))

    # the kernel came back (a new container): the gauges go on after the death
    page.locator(f"{PANEL} .sbk-state", has_text="running").first.wait_for(timeout=side.CELL_TIMEOUT)
    assert page.locator(f"{PANEL} .sbk-death").count() == 1
