"""Output from a container, made inert for the browser (issue 13).

JupyterLab (and every other frontend) trusts the outputs of live execution:
a ``text/html`` with ``<img onerror>``, a ``Javascript(...)`` or a
``javascript:`` link in Markdown runs in the page with the user's Jupyter
authority (the contents, terminals and kernels APIs).  The code in a
container is untrusted, so its output bundles are filtered here, before any
frontend sees them, unless the session trusts its output
(``Session(trust_output=True)``, ``%%container --trust-output``).

Each mime type is in one of three tables (``classify``):

* PASS: data that the frontends render without running anything from it
  (images, if base64; text; LaTeX, its javascript: links neutralised; JSON;
  vega specs that load no URL, without their embed options; plotly);
* SANITISED: markup that is rebuilt from an allowlist: ``text/html`` and
  ``text/markdown`` through nh3 (ammonia), ``image/svg+xml`` through an XML
  walk of our own;
* everything else is dropped: scripts, widget views, bokeh/holoviews
  loaders, and types we do not know (a new renderer may run code).

The parts::

    sanitize.py         the bundle: which mime types pass, are rebuilt or are dropped
    sanitize_urls.py    javascript: URLs in any text a renderer may make a link of
    sanitize_css.py     style attributes and <style> blocks from an allowlist, scoped
    sanitize_markup.py  HTML and Markdown through nh3
    sanitize_svg.py     SVG through an XML walk of our own

Pure functions: ``sanitize_bundle(data, metadata)`` is the entry point.
"""
from __future__ import annotations

import importlib
import re

from .sanitize_urls import has_script_url, neutralise_script_urls  # noqa: F401 -- moved; tests use them here

# The markup cleaners load nh3, xml.etree and xml.sax (with urllib.request)
# only when a bundle has HTML, Markdown or SVG in it: a kernel whose cells
# print text never pays for them (some 20 ms of its start).  ID_PREFIX and
# the clean_* functions moved; callers and tests still read them here.
_LAZY = {"ID_PREFIX": "sanitize_markup", "clean_html": "sanitize_markup",
         "clean_markdown": "sanitize_markup", "clean_svg": "sanitize_svg"}


def __getattr__(name: str):
    """ID_PREFIX, clean_html, clean_markdown, clean_svg: from their modules, at first use."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__package__}.{_LAZY[name]}"), name)

STATS_MIME = "application/vnd.sandbox-kernel.stats+json"

PASS = frozenset({
    "text/plain",                       # shown as text (ANSI colours become escaped spans)
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp",  # <img src="data:...">
    "application/json",                 # a tree of values
    "application/vnd.plotly.v1+json",   # figure data for plotly.js
    STATS_MIME,                         # the stats contract: no renderer
})
_VEGA = re.compile(r"application/vnd\.vega(lite)?\.v\d+(\.\d+)*\+json")   # specs for vega-embed
_PASS_PATTERNS = (_VEGA,)
# A vega spec with a "url" anywhere is dropped: it loads data from the Jupyter
# server's own API with the user's cookies (and can send it on).  Its top-level
# "usermeta" goes: vega-embed reads its options there, and their sourceHeader
# and sourceFooter are HTML written into the "View Source" window.
VEGA_LOADING_KEY = "url"
VEGA_EMBED_OPTIONS = "usermeta"
# LaTeX passes with one check: MathJax's \href makes links, so a javascript:
# URL in it is neutralised as in Markdown.
CHECKED_TEXT = frozenset({"text/latex"})
SANITISED = frozenset({"text/html", "text/markdown", "image/svg+xml"})
RESERVED_METADATA = ("sandbox_kernel",)   # the host's own marks (the footer's)
# Images are base64 text: a frontend that pastes it into src="data:..." (an
# HTML export without autoescape) must not get a quote or a tag from it.
BASE64_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"})
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]*")


def classify(mime: str) -> str:
    """pass, checked, sanitise or drop."""
    if mime in PASS or any(p.fullmatch(mime) for p in _PASS_PATTERNS):
        return "pass"
    if mime in CHECKED_TEXT:
        return "checked"
    if mime in SANITISED:
        return "sanitise"
    return "drop"


class CleanBundle(tuple):
    """``(data, metadata)``, inert; ``.dropped``: the mime types left out."""

    def __new__(cls, data: dict, metadata: dict, dropped: list[str]):
        bundle = super().__new__(cls, (data, metadata))
        bundle.dropped = dropped
        return bundle

    @property
    def data(self) -> dict:
        return self[0]

    @property
    def metadata(self) -> dict:
        return self[1]


def sanitize_bundle(data: dict, metadata: dict) -> CleanBundle:
    """(data, metadata) of a display_data, execute_result or
    update_display_data, inert for the browser.  A bundle left with nothing
    to show gets a text/plain saying what was not shown."""
    clean, dropped = {}, []
    for mime, value in data.items():
        kept = _clean_value(mime, value)
        if kept is None:
            dropped.append(mime)
        else:
            clean[mime] = kept
    if not clean and dropped:
        clean["text/plain"] = (f"[not shown: {', '.join(dropped)} from the container; "
                               f"active output is off (--trust-output turns it on)]")
    return CleanBundle(clean, _clean_metadata(metadata, dropped), dropped)


def _clean_value(mime: str, value):
    kind = classify(mime)
    if kind == "pass":
        if mime in BASE64_IMAGES:
            return value if isinstance(value, str) and _BASE64.fullmatch(value) else None
        return _clean_vega(value) if _VEGA.fullmatch(mime) else value
    if kind == "drop" or not isinstance(value, str):
        return None                      # markup and LaTeX are strings on the wire
    if kind == "checked":
        return neutralise_script_urls(value)
    cleaner = {"text/html": "clean_html", "text/markdown": "clean_markdown",
               "image/svg+xml": "clean_svg"}[mime]
    return __getattr__(cleaner)(value)


def _clean_vega(spec) -> dict | None:
    """A vega or vega-lite spec without embed options; None if it loads a URL."""
    if not isinstance(spec, dict):
        return None
    todo = [spec]
    while todo:
        value = todo.pop()
        if isinstance(value, dict):
            if VEGA_LOADING_KEY in value:
                return None
            todo.extend(value.values())
        elif isinstance(value, list):
            todo.extend(value)
    return {key: value for key, value in spec.items() if key != VEGA_EMBED_OPTIONS}


def _clean_metadata(metadata: dict, dropped: list[str]) -> dict:
    """Metadata is JSON the frontends read as hints (isolated, width, height);
    none of it runs.  Entries of dropped types and the host's reserved keys go."""
    return {key: value for key, value in metadata.items()
            if key not in dropped and key not in RESERVED_METADATA}

