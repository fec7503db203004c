"""CSS of untrusted output: style attributes and <style> blocks rebuilt from an
allowlist of properties whose values cannot load anything, and the scope
(a random class) its rules are confined to.

Part of the output sanitiser (sanitize.py says why, and lists its parts).

Imports the stdlib only.
"""
from __future__ import annotations

import re
import secrets

# CSS: <style> blocks and style attributes, from an allowlist of properties
# whose values cannot load anything (no url(), no @import, no escapes)

SAFE_CSS_PROPERTIES = frozenset({
    "color", "background-color", "text-align", "vertical-align", "font-weight", "font-style",
    "font-size", "font-family", "font-variant", "text-decoration", "text-transform", "white-space",
    "line-height", "letter-spacing", "word-break", "word-wrap", "overflow-wrap",
    "border", "border-top", "border-right", "border-bottom", "border-left", "border-color",
    "border-style", "border-width", "border-collapse", "border-spacing", "border-radius",
    "padding", "padding-top", "padding-right", "padding-bottom", "padding-left",
    "width", "height", "min-width", "max-width", "min-height", "max-height",
    "opacity", "visibility", "text-indent", "caption-side", "empty-cells", "table-layout",
    # SVG presentation (matplotlib writes these in style attributes)
    "fill", "fill-opacity", "fill-rule", "stroke", "stroke-width", "stroke-opacity",
    "stroke-linecap", "stroke-linejoin", "stroke-miterlimit", "stroke-dasharray",
    "stroke-dashoffset", "clip-rule", "stop-color", "stop-opacity", "font-stretch",
    "text-anchor", "dominant-baseline", "alignment-baseline", "baseline-shift",
    "shape-rendering", "paint-order", "mix-blend-mode", "clip-path", "mask", "marker-start",
    "marker-mid", "marker-end", "filter",
})
# colours and sizes; a function only as rgb()/hsl(), a reference only as url(#id)
_CSS_VALUE = re.compile(
    r"(?:[\w\s#%.,+/\-!\"']|(?:rgba?|hsla?)\([\d\s.,%/+\-]*\)|url\(\s*#[\w.\-]+\s*\))*")
# no sibling combinators (+ ~): a scoped selector must not reach past its scope
_CSS_SELECTOR = re.compile(r"[\w\s.#:,*()>\-\[\]=\"']+")
_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.S)


def clean_declarations(text: str) -> str:
    """The declarations of a style attribute or rule that are on the allowlist."""
    kept = []
    for declaration in text.split(";"):
        name, colon, value = declaration.partition(":")
        name, value = name.strip().lower(), value.strip()
        if colon and name in SAFE_CSS_PROPERTIES and value and _safe_css_value(value):
            kept.append(f"{name}: {value}")
    return "; ".join(kept)


def _safe_css_value(value: str) -> bool:
    return "\\" not in value and "<" not in value and bool(_CSS_VALUE.fullmatch(value))


def clean_stylesheet(css: str, id_prefix: str = "", scope: str = "") -> str:
    """The rules of a <style> block whose selectors are plain and whose
    declarations are on the allowlist; at-rules (@import, @font-face, @media)
    and anything with an escape are left out.  ``#id`` selectors get
    ``id_prefix``, as nh3 gives it to the elements' ids.  With ``scope`` (a
    class of the element around the output) every selector gets
    ``.scope `` before it: the rules style this output, not the page."""
    css = _CSS_COMMENT.sub("", css)
    if "\\" in css or "<" in css or "@" in css:
        return ""
    rules = []
    for chunk in css.split("}"):
        selector, brace, body = chunk.partition("{")
        selector = selector.strip()
        if not brace or "{" in body or not _CSS_SELECTOR.fullmatch(selector):
            continue
        declarations = clean_declarations(body)
        if declarations:
            if id_prefix:
                selector = re.sub(r"#(?=[A-Za-z_])", "#" + id_prefix, selector)
            if scope:
                selector = ", ".join(f".{scope} {part.strip()}" for part in selector.split(","))
            rules.append(f"{selector} {{ {declarations}; }}")
    return "\n".join(rules)


# the class of the element around one output; a random suffix per output
SCOPE_PREFIX = "sbk-out-scope-"


def new_scope() -> str:
    """A class for one output's element, that its own CSS is confined to
    (random: another output cannot aim at it)."""
    return SCOPE_PREFIX + secrets.token_hex(6)
