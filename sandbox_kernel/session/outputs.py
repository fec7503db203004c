"""What the agent sends as output, checked field by field, and what of it a
request passes on: at most its host cap (``host_output_cap``), display data
made inert for the browser unless the session trusts its output
(sanitize.py), with one note per session when something was dropped.

Everything here is about one output at a time: the exchange (exchange.py)
calls it for each output frame.  Imports protocol and sanitize.
"""
from __future__ import annotations

import json
from collections.abc import Callable

from . import sanitize
from .protocol import ProtocolError

HOST_OUTPUT_SLACK = 1 << 20   # see host_output_cap
# outputs whose bundles sanitize.py makes inert unless the session trusts its output
DISPLAY_KINDS = ("display_data", "update_display_data", "execute_result")

OnOutput = Callable[[str, dict], None]

_OUTPUT_FIELDS = {
    "stream": {"name": str, "text": str},
    "display_data": {"data": dict, "metadata": dict, "transient": dict},
    "update_display_data": {"data": dict, "metadata": dict, "transient": dict},
    "execute_result": {"execution_count": int, "data": dict, "metadata": dict},
    "error": {"ename": str, "evalue": str, "traceback": list},
    "clear_output": {"wait": bool},
}
_OPTIONAL = {"transient": dict, "metadata": dict}


def clean_output(msg: dict) -> dict:
    """The Jupyter content of an output frame, with only its known fields;
    ProtocolError when one is missing or of the wrong type."""
    kind = msg["type"]
    content = {}
    for field, kind_of in _OUTPUT_FIELDS[kind].items():
        if field not in msg and field in _OPTIONAL:
            content[field] = kind_of()
            continue
        value = msg.get(field)
        if not isinstance(value, kind_of) or (kind_of is int and isinstance(value, bool)):
            raise ProtocolError(f"{kind} frame: {field!r} must be {kind_of.__name__}, "
                                f"got {type(value).__name__}")
        content[field] = value
    if kind == "stream" and content["name"] not in ("stdout", "stderr"):
        raise ProtocolError(f"stream frame: name must be stdout or stderr, got {content['name']!r}")
    if kind == "error" and not all(isinstance(line, str) for line in content["traceback"]):
        raise ProtocolError("error frame: traceback must be a list of str")
    return content


def host_output_cap(output_limit: int) -> int:
    """Characters of output per request the host passes on.  The agent cuts a
    cell's stream text, displays and result at ``output_limit`` bytes (as
    JSON, whose escapes make them longer than the characters), and sends
    notices and an error beyond it: an agent past this cap is a cell writing
    frames of its own, and the rest of its output is dropped."""
    return 2 * output_limit + HOST_OUTPUT_SLACK


def content_size(content: dict) -> int:
    """Characters of one output: its text, every data value (those that
    are not text as JSON), its metadata, an error's value and traceback."""
    if "text" in content:
        return len(content["text"])
    if "traceback" in content:
        return len(content["evalue"]) + sum(len(line) for line in content["traceback"])
    size = sum(len(v) if isinstance(v, str) else len(json.dumps(v))
               for v in content.get("data", {}).values())
    return size + sum(len(json.dumps(content[k])) for k in ("metadata", "transient") if content.get(k))


class Display:
    """A session's way of showing display data: ``trust_output`` (settable any
    time, read at every output; False: inert for the browser) and whether
    the one note about dropped types was written already."""

    def __init__(self, trust_output: bool = False):
        self.trust_output = bool(trust_output)
        self.drop_noted = False

    def shown(self, content: dict, on_output: OnOutput) -> dict:
        """``content`` as the browser may get it; the first time a session
        drops a type, one line on stderr (through on_output) says so."""
        if self.trust_output:
            return content
        clean = sanitize.sanitize_bundle(content["data"], content["metadata"])
        if clean.dropped and not self.drop_noted:
            self.drop_noted = True
            on_output("stream", {"name": "stderr", "text": (
                f"[sandbox] not shown: {', '.join(clean.dropped)}: output from the container that "
                f"could run code in the browser is dropped, and HTML, Markdown and SVG are "
                f"sanitised (trust_output / --trust-output shows it as it is)\n")})
        return {**content, "data": clean.data, "metadata": clean.metadata}
