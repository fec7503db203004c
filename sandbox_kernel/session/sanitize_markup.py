"""HTML and Markdown of untrusted output, through nh3 (ammonia: html5ever's
parser, an allowlist, re-serialised), their <style> blocks through
sanitize_css and their URLs through sanitize_urls.

Part of the output sanitiser (sanitize.py says why, and lists its parts).

Imports nh3, sanitize_css and sanitize_urls.
"""
from __future__ import annotations

import re

import nh3

from .sanitize_css import clean_declarations, clean_stylesheet, new_scope
from .sanitize_urls import DATA_IMAGE, neutralise_script_urls

# HTML, through nh3 (ammonia: html5ever's parser, an allowlist, re-serialised)

ID_PREFIX = "sbk-out-"      # ids of untrusted output cannot clobber the page's own

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
        return value if tag == "img" and attribute == "src" and DATA_IMAGE.match(value.strip()) else None
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

