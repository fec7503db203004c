"""Output from a container cannot act with the user's Jupyter authority
(issue 13), in a real JupyterLab in Debian's chromium.

One server, one page per face (the sandbox kernel; %%container in an
ordinary python3 kernel).  Each page runs one cell of hostile outputs: a
JavaScript output, an HTML event handler, HTML inside Markdown, an SVG with
a script (as image/svg+xml and inline in HTML) and ``javascript:`` links
(clicked).  Each tries to write its own file into the server's root dir
through the contents API, with the page's XSRF cookie, as an attacker's
script would.  None may appear.  A pandas table, a matplotlib figure and
LaTeX must still render.  Last, a %%container --trust-output cell runs the
same JavaScript, which must write its file: the payload works, and the page
had the time to run every other one.
"""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from browser.test_side_panel import CELL_TIMEOUT, cannot_run, run_cell, write_notebook

_why = cannot_run()
if _why is not None:
    pytest.skip(_why, allow_module_level=True)   # test_side_panel fails it under CI=true

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
HAS_PANDAS = importlib.util.find_spec("pandas") is not None
WRITE_WAIT = 30.0           # s: the trusted script's file to appear (the positive control)

# Python run in the container: put(NAME) is JavaScript that PUTs NAME into the
# server's root with the page's _xsrf cookie.  No spaces, quotes, <, > or %, so
# it fits an attribute, a javascript: URL and a Markdown link as it is.
PUT = r'''
from IPython.display import display, HTML, Javascript, Markdown, SVG
def put(name):
    return ("fetch('/api/contents/" + name + "',{method:'PUT',credentials:'same-origin',"
            "headers:{'X-XSRFToken':decodeURIComponent((document.cookie.match(/_xsrf=([^;]+)/)"
            "||[0,''])[1]),'Content-Type':'application/json'},"
            "body:JSON.stringify({type:'file',format:'text',content:'written'})})")
'''

HOSTILE = PUT + r'''
display(Javascript(put('{face}-js.txt')))
display(HTML('<img src=x onerror="' + put('{face}-onerror.txt') + '">'))
display(Markdown('markdown <img src=x onerror="' + put('{face}-markdown.txt') + '">\n\n'
                 '[md-link-{face}](javascript:' + put('{face}-md-link.txt') + ')'))
display(SVG('<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20"><script>'
            + put('{face}-svg.txt') + '</script><rect width="20" height="20"/></svg>'))
display(HTML('<svg width="20" height="20"><script>' + put('{face}-svg-html.txt') + '</script></svg>'
             '<svg width="20" height="20" onload="' + put('{face}-svg-onload.txt') + '"></svg>'))
# JupyterLab opens a link in a new tab unless it has a target, or is an SVG <a>:
# both of these run their script in the page when clicked
display(HTML('<a target="_self" href="javascript:' + put('{face}-link.txt') + '">html-link-{face}</a> '
             '<svg width="200" height="20"><a href="javascript:' + put('{face}-svg-link.txt') + '">'
             '<text x="0" y="15">svg-link-{face}</text></a></svg>'))
'''

SURVIVORS = r'''
import matplotlib.pyplot as plt
from IPython.display import display, Markdown, Math
display(Math(r"\int_0^1 x^2 \, dx = \frac{1}{3}"))
display(Markdown(r"inline math $x<y$ in Markdown"))
plt.figure(figsize=(3, 2))
plt.plot([1, 3, 2])
plt.show()
''' + ('import pandas\ndisplay(pandas.DataFrame({"alpha": [1, 2], "beta": ["x", "y"]}))\n'
       if HAS_PANDAS else "")

TRUSTED = PUT + "display(Javascript(put('trusted-js.txt')))\n"

def open_page(context, server, name: str):
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(server.url(f"lab/tree/{name}"))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    return page


def wait_for_outputs(page, index: int, count: int) -> None:
    """Cell ``index`` finished ([n]) and shows at least ``count`` outputs."""
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    page.wait_for_function(
        """([node, count]) => /\\[\\d+\\]/.test(node.querySelector('.jp-InputArea-prompt').textContent)
                              && node.querySelectorAll('.jp-OutputArea-output').length >= count""",
        arg=[cell.element_handle(), count], timeout=CELL_TIMEOUT)


def click_links(page, face: str) -> None:
    """The javascript: links, clicked as a curious user would.  The Markdown
    and HTML links keep their text when sanitised; the SVG one goes with its
    <svg> (it is looked for once the HTML link, its neighbour, shows)."""
    for text in (f"md-link-{face}", f"html-link-{face}", f"svg-link-{face}"):
        link = page.get_by_text(text, exact=True).first
        if not text.startswith("svg-"):
            link.wait_for(timeout=CELL_TIMEOUT)
        if link.count():
            link.click(no_wait_after=True)


def check_survivors(page, index: int) -> None:
    """The table, the figure and the LaTeX of cell ``index`` render."""
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.locator(".jp-RenderedLatex mjx-container").first.wait_for(timeout=CELL_TIMEOUT)
    cell.locator(".jp-RenderedMarkdown mjx-container").first.wait_for(timeout=CELL_TIMEOUT)
    figure = cell.locator(".jp-RenderedImage img[src^='data:image/png']").first
    figure.wait_for(timeout=CELL_TIMEOUT)
    assert figure.evaluate("img => img.complete && img.naturalWidth > 100")
    if HAS_PANDAS:
        table = cell.locator("table.dataframe").first
        table.wait_for(timeout=CELL_TIMEOUT)
        assert table.locator("tbody tr").count() == 2
        header = table.locator("thead th").nth(1)
        assert header.inner_text() == "alpha"
        assert header.evaluate("th => getComputedStyle(th).textAlign") == "right"   # pandas' own style


def wait_for_file(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.25)
    return path.exists()


def test_output_from_containers_cannot_write_through_the_server(start_server, browser, tmp_path,
                                                                 sandbox_kernel_name):
    root = tmp_path / "root"
    root.mkdir()
    write_notebook(root, "sandbox.ipynb", sandbox_kernel_name, "Python 3 (sandbox, 512M)",
                   [HOSTILE.replace("{face}", "sandbox"), SURVIVORS])
    write_notebook(root, "magics.ipynb", "python3", "Python 3 (ipykernel)",
                   ["%load_ext sandbox_kernel",
                    "%%container --name web\n" + HOSTILE.replace("{face}", "magics"),
                    "%%container --name web\n" + SURVIVORS,
                    "%%container --name mine --trust-output\n" + TRUSTED])
    server = start_server("lab", root)
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    console: list[str] = []
    context.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    pages = []
    try:
        sandbox = open_page(context, server, "sandbox.ipynb")
        pages.append(sandbox)
        run_cell(sandbox, 0)
        wait_for_outputs(sandbox, 0, 6)
        click_links(sandbox, "sandbox")
        run_cell(sandbox, 1)
        check_survivors(sandbox, 1)

        magics = open_page(context, server, "magics.ipynb")
        pages.append(magics)
        for index in range(2):
            run_cell(magics, index)
        wait_for_outputs(magics, 1, 6)
        click_links(magics, "magics")
        run_cell(magics, 2)
        check_survivors(magics, 2)
        run_cell(magics, 3)

        # the positive control: trusted JavaScript writes its file
        assert wait_for_file(root / "trusted-js.txt", WRITE_WAIT), (
            "the trusted JavaScript wrote no file: the payload or the page is broken")
        written = sorted(p.name for p in root.iterdir() if p.suffix == ".txt" and p.name != "trusted-js.txt")
        assert written == [], f"output from a container wrote through the server: {written}"
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        for page, name in zip(pages, ("sandbox", "magics")):
            try:
                page.screenshot(path=str(ARTIFACTS / f"output-safety-{name}.png"), full_page=True)
            except Exception as error:   # noqa: BLE001 -- the picture is only a help
                print(f"no screenshot of {name}: {error}")
        (ARTIFACTS / "output-safety-console.log").write_text("\n".join(console))
        context.close()
