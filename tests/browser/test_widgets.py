"""Widgets from inside the container (issue 17), in a real JupyterLab 4 and a
real Notebook 7 on the sandbox kernel: an ``@interact`` slider moved with
the mouse changes the printed output (the frontend's comm_msg runs the
callback in the container, and its print lands in the interact's Output
widget), and a ``tqdm.notebook`` bar fills.

The browser tier's conditions and helpers are test_side_panel.py's.
"""
from __future__ import annotations

import re

import pytest

from browser.test_side_panel import open_notebook, run_cell, write_notebook  # skips as it does

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

CELL = ".jp-Notebook .jp-Cell"
CELL_TIMEOUT = 120_000        # ms: a cell, its container start included
INTERACT = ("from ipywidgets import interact\n"
            "@interact(x=(0, 10))\n"
            "def show(x=2):\n"
            "    print(f'x is {x}')")
TQDM = ("import time\nfrom tqdm.notebook import tqdm\n"
        "for _ in tqdm(range(20)):\n"
        "    time.sleep(0.1)")


def cell(page, index: int):
    return page.locator(CELL).nth(index)


def printed(page, index: int) -> str:
    return cell(page, index).locator(".jp-OutputArea-output").all_inner_texts()


def drag_slider_to_the_end(page, index: int) -> None:
    """Press the slider's handle and move the mouse to the track's right end."""
    handle = cell(page, index).locator(".widget-slider .noUi-handle").first
    track = cell(page, index).locator(".widget-slider .noUi-target").first
    handle.wait_for(timeout=CELL_TIMEOUT)
    start, line = handle.bounding_box(), track.bounding_box()
    y = start["y"] + start["height"] / 2
    page.mouse.move(start["x"] + start["width"] / 2, y)
    page.mouse.down()
    for step in range(1, 11):                  # a drag, as a hand makes it
        page.mouse.move(start["x"] + (line["x"] + line["width"] + 20 - start["x"]) * step / 10, y)
    page.mouse.up()


def run_alone(page, start_server, app: str, root, kernel: str, code: str) -> None:
    """A notebook of one cell, ``code``, opened in ``app`` and run."""
    root.mkdir()
    write_notebook(root, "widgets.ipynb", kernel, "Python 3 (sandbox, 512M)", [code])
    open_notebook(page, start_server(app, root), "widgets.ipynb")
    run_cell(page, 0)


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_an_interact_slider_moved_with_the_mouse_changes_the_printed_output(
        app, start_server, page, tmp_path, sandbox_kernel_name):
    run_alone(page, start_server, app, tmp_path / "root", sandbox_kernel_name, INTERACT)
    cell(page, 0).locator(".widget-output", has_text="x is 2").wait_for(timeout=CELL_TIMEOUT)
    drag_slider_to_the_end(page, 0)
    cell(page, 0).locator(".widget-output", has_text="x is 10").wait_for(timeout=60_000)
    assert "x is 2" not in " ".join(printed(page, 0))     # the output was replaced, not added to


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_a_tqdm_notebook_bar_fills(app, start_server, page, tmp_path, sandbox_kernel_name):
    run_alone(page, start_server, app, tmp_path / "root", sandbox_kernel_name, TQDM)
    bar = cell(page, 0).locator(".widget-hprogress .progress-bar").first
    bar.wait_for(timeout=CELL_TIMEOUT)
    page.wait_for_function("node => node.style.width === '100%'", arg=bar.element_handle(),
                           timeout=CELL_TIMEOUT)
    # the count is another widget (HTML), updated by its own message: waited for too
    cell(page, 0).locator(".widget-html-content", has_text=re.compile(r"20/20")).wait_for(
        timeout=60_000)
