"""Script URLs (javascript:, vbscript:) wherever a renderer may make a link of
text (Markdown link destinations, MathJax's \\href, attribute values), and
the data: images an <img> or an SVG <image> may show.

Part of the output sanitiser (sanitize.py says why, and lists its parts).

Imports the stdlib only.
"""
from __future__ import annotations

import functools
import html
import re

# data: URLs that are images of a known format, for <img src> and SVG <image href>
DATA_IMAGE = re.compile(r"data:image/(png|jpeg|gif|webp|bmp);", re.I)

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


@functools.cache
def _raw_scheme() -> re.Pattern:
    """A dangerous scheme as it may be written in HTML or Markdown source: one
    level of character references and Markdown escapes (what renderers
    decode).  Compiled at first use, not at import: some 8 ms of the kernel's
    start, for a pattern only output naming a script URL needs."""
    return re.compile("|".join(_RAW_GAP.join(_raw_char(c) for c in name) + _RAW_GAP + _RAW_COLON
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
    for match in _raw_scheme().finditer(text):
        pieces += [text[last:match.start()], NEUTRAL_PREFIX]
        last = match.start()
    pieces.append(text[last:])
    text = "".join(pieces)
    return None if has_script_url(text) else text

