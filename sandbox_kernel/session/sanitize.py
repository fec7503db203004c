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

Pure functions: ``sanitize_bundle(data, metadata)`` is the entry point.
"""
from __future__ import annotations

import html
import re
import secrets
import xml.etree.ElementTree as ElementTree
from xml.sax.saxutils import escape as xml_escape, quoteattr

import nh3

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
    cleaner = {"text/html": clean_html, "text/markdown": clean_markdown,
               "image/svg+xml": clean_svg}[mime]
    return cleaner(value)


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


# ---------------------------------------------------------------------------
# javascript: URLs wherever a renderer may make a link of text (Markdown link
# destinations, MathJax's \href, attribute values): decoded as the renderers
# decode them, one level of entities and Markdown backslash escapes.

_DANGEROUS_SCHEMES = ("javascript", "vbscript", "livescript")
# the URL parser removes tab and newlines anywhere, so "java\tscript:" is javascript:
_SCHEME = re.compile("|".join("[\t\n\r]*".join(name) + "[\t\n\r]*:" for name in _DANGEROUS_SCHEMES))
_SCHEME_CHAR = re.compile(r"[a-z0-9+.\-]")
NEUTRAL_PREFIX = "unsafe-"


def _raw_char(char: str) -> str:
    """A regex for ``char`` as a source may write it: itself in either case,
    or a numeric character reference (leading zeros, hex in either case, the
    semicolon optional)."""
    forms = {char.lower(), char.upper()}
    alternatives = [re.escape(form) for form in sorted(forms)]
    for form in sorted(forms):
        code = ord(form)
        hex_digits = "".join(f"[{d.lower()}{d.upper()}]" if d.isalpha() else d for d in f"{code:x}")
        alternatives += [f"&#0*{code};?", f"&#[xX]0*{hex_digits};?"]
    return "(?:" + "|".join(alternatives) + ")"


# what the URL parser drops between a scheme's letters (tab, LF, CR), as written
_RAW_GAP = "(?:[\t\n\r]|&Tab;|&NewLine;|" + "|".join(_raw_char(c)[3:-1] for c in "\t\n\r") + ")*"
_RAW_COLON = "(?:" + _raw_char(":")[3:-1] + r"|&colon;|\\:)"
# a dangerous scheme as it may be written in HTML or Markdown source: one level
# of character references and Markdown escapes (what renderers decode)
_RAW_SCHEME = re.compile("|".join(_RAW_GAP.join(_raw_char(c) for c in name) + _RAW_GAP + _RAW_COLON
                                  for name in _DANGEROUS_SCHEMES))


def _fully_decoded(text: str) -> str:
    for _ in range(5):
        decoded = html.unescape(re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", text))
        if decoded == text:
            break
        text = decoded
    return text.lower()


def has_script_url(text: str) -> bool:
    """Whether ``text`` still names a dangerous scheme at a scheme's start,
    after any number of entity decodings (a renderer that decodes twice)."""
    flat = _fully_decoded(text)
    return any(not _SCHEME_CHAR.fullmatch(flat[m.start() - 1] if m.start() else " ")
               for m in _SCHEME.finditer(flat))


def neutralise_script_urls(text: str) -> str | None:
    """``text`` with "unsafe-" before every javascript:/vbscript: scheme, so a
    link made of it goes nowhere; None when a scheme is still there after
    (hidden deeper than one level of encoding): the caller drops the value.
    Linear in the text: outputs can be tens of megabytes."""
    if not has_script_url(text):
        return text
    pieces, last = [], 0
    for match in _RAW_SCHEME.finditer(text):
        pieces += [text[last:match.start()], NEUTRAL_PREFIX]
        last = match.start()
    pieces.append(text[last:])
    text = "".join(pieces)
    return None if has_script_url(text) else text


# ---------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------
# HTML, through nh3 (ammonia: html5ever's parser, an allowlist, re-serialised)

ID_PREFIX = "sbk-out-"      # ids of untrusted output cannot clobber the page's own
SCOPE_PREFIX = "sbk-out-scope-"


def new_scope() -> str:
    """A class for one output's element, that its own CSS is confined to
    (random: another output cannot aim at it)."""
    return SCOPE_PREFIX + secrets.token_hex(6)

HTML_TAGS = (set(nh3.ALLOWED_TAGS) | {"tfoot", "font", "section", "main", "label", "meter",
                                      "progress", "output", "audio", "video", "source"}) \
    - {"area", "map"}
# removed with their content: script and style bodies, embedded documents, raw text
DROPPED_WITH_CONTENT = {"script", "style", "template", "noscript", "iframe", "frame", "frameset",
                        "object", "embed", "applet", "svg", "math", "xmp", "noembed",
                        "noframes", "textarea", "select", "title", "plaintext"}
_GLOBAL_ATTRIBUTES = {"class", "id", "title", "style", "lang", "dir", "align", "valign",
                      "halign", "width", "height", "colspan", "rowspan"}
HTML_ATTRIBUTES = {tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()}
HTML_ATTRIBUTES["*"] = _GLOBAL_ATTRIBUTES
HTML_ATTRIBUTES.setdefault("table", set()).update({"border", "cellpadding", "cellspacing"})
HTML_ATTRIBUTES.setdefault("font", set()).update({"color", "size", "face"})
HTML_ATTRIBUTES.setdefault("img", set()).update({"src", "alt"})
# IPython's ProgressBar and meters: numbers only
NUMERIC_ATTRIBUTES = {"progress": {"max", "value"},
                      "meter": {"min", "max", "low", "high", "optimum", "value"}}
for _tag, _names in NUMERIC_ATTRIBUTES.items():
    HTML_ATTRIBUTES.setdefault(_tag, set()).update(_names)
# IPython's Audio and Video(embed=True): the media inline as data: URLs of audio
# or video only (never a URL the browser would fetch: that would tell a server
# the notebook was opened), no poster, no track; <source> is for them
_MEDIA_FLAGS = {"src", "controls", "autoplay", "loop", "muted", "preload"}
HTML_ATTRIBUTES["audio"] = set(_MEDIA_FLAGS)
HTML_ATTRIBUTES["video"] = _MEDIA_FLAGS | {"playsinline"}
HTML_ATTRIBUTES["source"] = {"src", "type"}
MEDIA_TAGS = frozenset({"audio", "video", "source"})
_DATA_MEDIA = re.compile(r"data:(?:audio|video)/[\w.+\-]+;base64,[A-Za-z0-9+/=\s]*", re.I)
_MEDIA_TYPE = re.compile(r"(?:audio|video)/[\w.+\-]+", re.I)
_NUMBER = re.compile(r"\s*[+\-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+\-]?\d+)?\s*")
URL_SCHEMES = {"http", "https", "mailto", "ftp", "data"}
_DATA_IMAGE = re.compile(r"data:image/(png|jpeg|gif|webp|bmp);", re.I)
_URL_ATTRIBUTES = {"href", "src", "cite", "action", "background", "poster", "longdesc"}
_STYLE_OPEN = re.compile(r"<style\b", re.I)
_STYLE_CLOSE = re.compile(r"</style\s*>", re.I)


def _style_blocks(text: str) -> list[str]:
    """The bodies of the <style> blocks, found in one pass (a regex with .*?
    would rescan the text for every unclosed <style>)."""
    blocks, position = [], 0
    while (opened := _STYLE_OPEN.search(text, position)) is not None:
        body_start = text.find(">", opened.end()) + 1
        closed = _STYLE_CLOSE.search(text, body_start) if body_start else None
        if closed is None:
            break                         # nothing after can be a whole block either
        blocks.append(text[body_start:closed.start()])
        position = closed.end()
    return blocks


def _attribute_filter(tag: str, attribute: str, value: str):
    """nh3 checked the scheme; data: is for images, and audio and video in
    their own elements (their only source); styles are filtered."""
    if tag in MEDIA_TAGS and attribute in ("src", "type"):
        pattern = _DATA_MEDIA if attribute == "src" else _MEDIA_TYPE
        return value if pattern.fullmatch(value.strip()) else None
    if attribute in NUMERIC_ATTRIBUTES.get(tag, ()):
        return value if _NUMBER.fullmatch(value) else None
    if attribute in _URL_ATTRIBUTES and value.strip().lower().startswith("data:"):
        return value if tag == "img" and attribute == "src" and _DATA_IMAGE.match(value.strip()) else None
    if attribute == "style":
        return clean_declarations(value) or None
    return value


def _nh3(text: str) -> str:
    return nh3.clean(text, tags=HTML_TAGS, clean_content_tags=DROPPED_WITH_CONTENT,
                     attributes=HTML_ATTRIBUTES, attribute_filter=_attribute_filter,
                     url_schemes=URL_SCHEMES, id_prefix=ID_PREFIX, strip_comments=True,
                     link_rel="noopener noreferrer")


def clean_html(text: str) -> str | None:
    """HTML with no script, handler, script URL, frame, form, object, base or
    meta.  <style> blocks come back rebuilt by clean_stylesheet (pandas'
    table style survives; a rule that loads or hides the page does not)."""
    scope = new_scope()
    styles = [clean_stylesheet(block, ID_PREFIX, scope) for block in _style_blocks(text)]
    body = _nh3(text)
    css = "\n".join(s for s in styles if s)
    if css:
        body = f'<div class="{scope}"><style>\n{css}\n</style>\n{body}</div>'
    return neutralise_script_urls(body)


# ---------------------------------------------------------------------------
# Markdown: its raw HTML through nh3, its link destinations through
# neutralise_script_urls.  Text that is not a tag stays Markdown.

KNOWN_HTML_TAGS = frozenset("""a abbr acronym address applet area article aside audio b base basefont bdi
bdo bgsound big blink blockquote body br button canvas caption center cite code col colgroup data
datalist dd del details dfn dialog dir div dl dt em embed fieldset figcaption figure font footer form
frame frameset h1 h2 h3 h4 h5 h6 head header hgroup hr html i iframe image img input ins isindex kbd
keygen label legend li link listing main map mark marquee math menu menuitem meta meter multicol nav
nextid nobr noembed noframes noscript object ol optgroup option output p param picture plaintext pre
progress q rb rp rt rtc ruby s samp script search section select slot small source spacer span strike
strong style sub summary sup svg table tbody td template textarea tfoot th thead time title tr track
tt u ul var video wbr xmp""".split())
_TAG_START = re.compile(r"<(/?)([A-Za-z][^\s/>]*)")
_TEXT_ESCAPES = (
    (re.compile(r"&gt;"), ">"),
    (re.compile(r"&amp;(?![A-Za-z0-9#])"), "&"),      # an & that cannot start an entity
    (re.compile(r"&lt;(?![A-Za-z!/?])"), "<"),        # a < that cannot start a tag
    (re.compile(r"&nbsp;"), "\u00a0"),
)


def _escape_non_tags(text: str) -> str:
    """``<`` before a word that is no HTML element (``$x<y$``, ``a<b2``) as
    &lt;, so that nh3 does not take the rest of the line for a tag."""
    def one(match):
        if match.group(2).lower() in KNOWN_HTML_TAGS:
            return match.group()
        return "&lt;" + match.group()[1:]
    return _TAG_START.sub(one, text)


# $...$ and $$...$$ as JupyterLab's Markdown renderer finds them
_MATH = re.compile(r"\$\$.+?\$\$|\$[^$\n]+?\$", re.S)


def _math_without_lt(text: str) -> str:
    """``<`` in math as TeX's ``\\lt``: the same symbol, and no tag for nh3
    to take ``$x<y$`` for (only ``<`` goes, so a wrong guess at what is math
    can only make markup less, never more)."""
    return _MATH.sub(lambda m: m.group().replace("<", "\\lt "), text)


def clean_markdown(text: str) -> str | None:
    body = _nh3(_escape_non_tags(_math_without_lt(text)))
    for pattern, plain in _TEXT_ESCAPES:       # nh3 escaped Markdown's own > and &
        body = pattern.sub(plain, body)
    return neutralise_script_urls(body)


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
        if element == "image" and _DATA_IMAGE.match(value.strip()):
            return value.strip()
        return None
    if attribute not in SVG_ATTRIBUTES:
        return None                       # on* handlers, and anything we do not know
    if attribute == "style":
        return clean_declarations(value) or None
    if "url(" in value.lower().replace(" ", "") and not _LOCAL_URL.fullmatch(value):
        return None
    return value
