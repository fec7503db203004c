"""SVG of untrusted output: parsed as XML and rebuilt from an allowlist of
elements and attributes (no script, foreignObject, handler, animation or
external reference).

Part of the output sanitiser (sanitize.py says why, and lists its parts).

Imports the stdlib, sanitize_css and sanitize_urls.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from xml.sax.saxutils import escape as xml_escape, quoteattr

from .sanitize_css import clean_declarations, clean_stylesheet, new_scope
from .sanitize_urls import DATA_IMAGE, neutralise_script_urls

# ---------------------------------------------------------------------------
# SVG: parsed as XML and rebuilt from an allowlist

SVG_NS, XLINK_NS = "http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"
SVG_ELEMENTS = frozenset("""svg g defs symbol use path rect circle ellipse line polyline polygon text
tspan textPath title desc clipPath mask linearGradient radialGradient stop pattern marker image style
switch""".split())
SVG_ATTRIBUTES = frozenset("""id class style transform d x y x1 y1 x2 y2 cx cy r rx ry width height
points viewBox preserveAspectRatio version fill fill-opacity fill-rule stroke stroke-width
stroke-opacity stroke-linecap stroke-linejoin stroke-miterlimit stroke-dasharray stroke-dashoffset
opacity clip-path clip-rule clipPathUnits mask maskUnits maskContentUnits font-family font-size
font-weight font-style font-variant font-stretch text-anchor dominant-baseline alignment-baseline
baseline-shift letter-spacing word-spacing text-decoration dx dy rotate textLength lengthAdjust
gradientUnits gradientTransform spreadMethod fx fy offset stop-color stop-opacity patternUnits
patternContentUnits patternTransform markerWidth markerHeight markerUnits refX refY orient
visibility display overflow shape-rendering color paint-order vector-effect xml:space type
marker-start marker-mid marker-end""".split())
_LOCAL_REF = re.compile(r"#[\w.:\-]+")
_LOCAL_URL = re.compile(r"\s*url\(\s*['\"]?#[\w.:\-]+['\"]?\s*\)\s*")


def clean_svg(text: str) -> str | None:
    """The SVG rebuilt from SVG_ELEMENTS and SVG_ATTRIBUTES: no script,
    foreignObject, handler, animation (which can set an href), link or
    external reference; None when it is no well-formed SVG."""
    if re.search(r"<!ENTITY", text, re.I):
        return None                      # entity expansion: not for figures
    try:
        root = ElementTree.fromstring(text.encode("utf-8"))
    except ElementTree.ParseError:
        return None
    if _local_name(root.tag) != "svg":
        return None
    out: list[str] = []
    _write_svg(root, out, new_scope(), top=True)
    return neutralise_script_urls("".join(out))


def _local_name(tag) -> str:
    if not isinstance(tag, str):
        return ""                        # a comment or processing instruction
    namespace, _, name = tag[1:].partition("}") if tag.startswith("{") else (SVG_NS, "", tag)
    return name if namespace == SVG_NS else ""


def _write_svg(element, out: list[str], scope: str, top: bool = False) -> None:
    name = _local_name(element.tag)
    if name not in SVG_ELEMENTS:
        out.append(xml_escape(element.tail or "") if not top else "")
        return                            # with its content: <script>, <foreignObject>, <a>...
    attributes = _svg_attributes(element, name, skip=("class",) if top else ())
    if top:                               # its class is the scope of its <style> rules
        attributes = f' xmlns="{SVG_NS}" xmlns:xlink="{XLINK_NS}" class="{scope}"' + attributes
    out.append(f"<{name}{attributes}>")
    if name == "style":
        out.append(xml_escape(clean_stylesheet(element.text or "", scope=scope)))
    else:
        out.append(xml_escape(element.text or ""))
        for child in element:
            _write_svg(child, out, scope)
    out.append(f"</{name}>")
    if not top:
        out.append(xml_escape(element.tail or ""))


def _svg_attributes(element, name: str, skip=()) -> str:
    kept = []
    for key, value in element.attrib.items():
        attribute = _svg_attribute_name(key)
        if attribute in skip:
            continue
        value = _svg_attribute_value(attribute, value, name)
        if value is not None:
            kept.append(f" {attribute}={quoteattr(value)}")
    return "".join(kept)


def _svg_attribute_name(key: str) -> str:
    if key.startswith("{"):
        namespace, _, local = key[1:].partition("}")
        if namespace == XLINK_NS and local == "href":
            return "xlink:href"
        if namespace == "http://www.w3.org/XML/1998/namespace":
            return f"xml:{local}"
        return ""
    return key


def _svg_attribute_value(attribute: str, value: str, element: str) -> str | None:
    if attribute in ("href", "xlink:href"):
        if _LOCAL_REF.fullmatch(value.strip()):
            return value.strip()
        if element == "image" and DATA_IMAGE.match(value.strip()):
            return value.strip()
        return None
    if attribute not in SVG_ATTRIBUTES:
        return None                       # on* handlers, and anything we do not know
    if attribute == "style":
        return clean_declarations(value) or None
    if "url(" in value.lower().replace(" ", "") and not _LOCAL_URL.fullmatch(value):
        return None
    return value
