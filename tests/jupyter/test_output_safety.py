"""Output from a container reaches the frontend inert (issue 13), seen on
iopub through jupyter_client, in both faces: the sandbox kernel and
%%container in a plain ipykernel.  Scripts are dropped, HTML, Markdown and
SVG sanitised; pandas tables, matplotlib figures and LaTeX arrive as usual;
with --trust-output the JavaScript passes.
"""
from __future__ import annotations

import importlib.util
import re

import pytest

import kernel_fixtures as kf  # tests/jupyter is on pytest's pythonpath (pyproject)
from sandbox_kernel.kernel import install

SANDBOX_NAME = "sbk-test-output-safety"
TRUSTED_NAME = "sbk-test-output-trusted"
STATS_MIME = kf.STATS_MIME
DISPLAY_KINDS = ("display_data", "execute_result", "update_display_data")

HOSTILE_CELL = r'''
from IPython.display import display, HTML, Javascript, Markdown, SVG
display(Javascript("window.sbk_pwned = 'js'"))
display(HTML('<b>bold</b><img src=x onerror="window.sbk_pwned = 1">'
             '<a href="jav&#x61;script:alert(1)">link</a><iframe src="/lab"></iframe>'))
display(Markdown('# Title\n\n[click](javascript:alert(1)) <img src=x onerror=alert(1)>'))
display(SVG('<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)">'
            '<script>alert(1)</script><rect width="5" height="5"/></svg>'))
handle = display(HTML("<p>before</p>"), display_id=True)
handle.update(Javascript("window.sbk_pwned = 'update'"))
Javascript("window.sbk_pwned = 'result'")
'''

SURVIVORS_CELL = r'''
import matplotlib.pyplot as plt
from IPython.display import display, Math
display(Math(r"\frac{1}{2}"))
plt.plot([1, 3, 2])
plt.show()
'''

PANDAS_CELL = '''
import pandas
pandas.DataFrame({"a": [1, 2], "b": ["x<y", "z"]})
'''

TRUSTED_CELL = 'from IPython.display import Javascript\nJavascript("window.sbk_trusted = 1")'


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A sandbox kernel of this module."""
    data = str(tmp_path_factory.mktemp("jupyter-data"))
    kf.install_kernelspec(data, SANDBOX_NAME)
    with kf.jupyter_path(data):
        kernel = kf.SandboxKernel(SANDBOX_NAME)
        yield kernel
        kernel.shutdown()


@pytest.fixture
def trusted_sandbox(tmp_path):
    """A sandbox kernel installed with --trust-output."""
    spec = install.kernel_json(install.checked_settings({}), trust_output=True, footer="output")
    install.write_kernelspec(str(tmp_path / "kernels" / TRUSTED_NAME), spec)
    with kf.jupyter_path(str(tmp_path)), kf.kernels_of_one_test(TRUSTED_NAME) as start:
        yield start()


@pytest.fixture(params=["sandbox kernel", "%%container"])
def face(request, sandbox, kernel):
    """run(code) -> Ran, in one face: the sandbox kernel or %%container in a
    plain ipykernel (conftest's kernel)."""
    if request.param == "sandbox kernel":
        return sandbox.run
    return lambda code, timeout=180: kernel.run(f"%%container --name safety\n{code}", timeout)


def bundles(ran) -> list[dict]:
    """The data of every display output but the footer."""
    return [c["data"] for kind in DISPLAY_KINDS for c in ran.of(kind)
            if STATS_MIME not in c["data"]]


def assert_inert(bundle: dict) -> None:
    assert not {"application/javascript", "text/javascript"} & set(bundle), bundle
    for mime in ("text/html", "text/markdown", "image/svg+xml"):
        text = bundle.get(mime, "")
        assert not re.search(r"<\s*(script|iframe)|\son[a-z]+\s*=", text, re.I), bundle
        assert not re.search(r"(?<![\w.+-])(javascript|jav&#x61;script):", text, re.I), bundle


def ok(ran):
    assert ran.reply["status"] == "ok", ran.error_text + ran.stderr
    return ran


def test_scripts_handlers_and_script_links_do_not_reach_the_frontend(face):
    ran = ok(face(HOSTILE_CELL))
    shown = bundles(ran)
    assert len(shown) == 7, ran.messages
    for bundle in shown:
        assert_inert(bundle)
    html, markdown, svg = shown[1]["text/html"], shown[2]["text/markdown"], shown[3]["image/svg+xml"]
    assert "<b>bold</b>" in html and "link</a>" in html
    assert markdown.startswith("# Title") and "[click](unsafe-javascript:" in markdown
    assert "<rect" in svg and "script" not in svg
    assert "application/javascript" in ran.stderr      # the session's first drop is said on stderr


def test_a_figure_and_latex_arrive_as_usual(face):
    ran = ok(face(SURVIVORS_CELL))
    shown = bundles(ran)
    assert {"text/latex": r"$\displaystyle \frac{1}{2}$", "text/plain": "<IPython.core.display.Math object>"} in shown
    pngs = [b for b in shown if "image/png" in b]
    assert pngs and pngs[0]["image/png"].startswith("iVBORw0KGgo"), shown


@pytest.mark.skipif(importlib.util.find_spec("pandas") is None, reason="pandas is not installed")
def test_a_pandas_table_arrives_with_its_style(face):
    ran = ok(face(PANDAS_CELL))
    (table,) = [b["text/html"] for b in bundles(ran) if "text/html" in b]
    assert '<table border="1" class="dataframe">' in table and "<td>x&lt;y</td>" in table
    assert re.search(r"<style[^>]*>[^<]*\.dataframe thead th\s*\{\s*text-align: right;", table), table
    assert re.search(r'<tr style="text-align: right;?">', table), table


def test_trust_output_lets_the_javascript_through_until_it_is_turned_off(kernel):
    ran = ok(kernel.run(f"%%container --name trusted --trust-output\n{TRUSTED_CELL}"))
    (shown,) = bundles(ran)
    assert shown["application/javascript"] == "window.sbk_trusted = 1"
    footer = ran.of("display_data")[-1]["data"]
    assert footer[STATS_MIME]["trusted_output"] is True and "output trusted" in footer["text/plain"]
    ran = ok(kernel.run(f"%%container --name trusted\n{TRUSTED_CELL}"))       # it stays on
    assert "application/javascript" in bundles(ran)[0]
    ran = ok(kernel.run(f"%%container --name trusted --no-trust-output\n{TRUSTED_CELL}"))
    assert "application/javascript" not in bundles(ran)[0]
    assert "trusted_output" not in ran.of("display_data")[-1]["data"][STATS_MIME]


def test_a_sandbox_kernel_installed_with_trust_output_passes_the_javascript(trusted_sandbox):
    ran = ok(trusted_sandbox.run(TRUSTED_CELL))
    (shown,) = bundles(ran)
    assert shown["application/javascript"] == "window.sbk_trusted = 1"
    footer = ran.of("display_data")[-1]["data"]
    assert footer[STATS_MIME]["trusted_output"] is True and "output trusted" in footer["text/plain"]


def test_trust_output_is_in_the_help(kernel):
    ran = ok(kernel.run("%%container?"))
    text = str(ran.reply.get("payload")) + ran.stdout
    assert "--trust-output" in text
