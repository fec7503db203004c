"""Comm messages from a container, made inert for the browser (the host
side's pure functions; comm_relay.py relays them).

A container's comms reach the frontend's widget manager, which renders
their state: the HTML and HTMLMath widgets' ``value`` as innerHTML, any
widget's ``description`` as HTML when its ``description_allow_html`` is
set, an Output widget's ``outputs`` through the rendermime, styles and
layouts as CSS, media from a URL.  Unless the session trusts its output:

* only the target ``jupyter.widget``, and only ipywidgets' own modules
  (WIDGET_MODULES): another module's views render as they like;
* HTML-bearing values through sanitize.py's HTML cleaner (and LaTeX's
  javascript: links neutralised where the view typesets text);
* Output widgets' outputs through sanitize.sanitize_bundle, as displays are;
* style and layout values that load a resource (url(), image()...) dropped,
  media given by URL made a blob of their bytes;
* what a view is made of (_model_*, _view_*) fixed at open: an update may
  not change it.

Buffers whose path leads to a value that was rewritten go, so that they
cannot put it back.  Targets of the kernel's own (sandbox_kernel.*) are
refused even when the output is trusted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .protocol import COMM_ID_LIMIT
from . import sanitize
from .sanitize import neutralise_script_urls, sanitize_bundle

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_TARGETS = ("jupyter.widget",)
RESERVED_TARGET = "sandbox_kernel"                 # the side panel's and any of ours
WIDGET_MODULES = frozenset({"@jupyter-widgets/controls", "@jupyter-widgets/base",
                            "@jupyter-widgets/output"})
HTML_MODELS = frozenset({"HTMLModel", "HTMLMathModel"})
HTML_FIELDS = ("value", "placeholder")
TYPESET_MODELS = frozenset({"LabelModel", "HTMLMathModel"})   # MathJax reads their text
MEDIA_MODELS = frozenset({"ImageModel", "VideoModel", "AudioModel"})
FIXED_PREFIXES = ("_model_", "_view_")
_LOADS_RESOURCE = re.compile(r"(?i)(?:url|image|image-set|cross-fade|element|expression|src)\s*\(|"
                             r"\\|<|@import")


def widget_view(value) -> dict | None:
    """A widget-view+json value as frontends read it (which model to show),
    rebuilt from its three fields; None when it is anything else."""
    if not isinstance(value, dict):
        return None
    model_id, major, minor = value.get("model_id"), value.get("version_major"), value.get("version_minor")
    if not (isinstance(model_id, str) and 0 < len(model_id) <= COMM_ID_LIMIT
            and type(major) is int and type(minor) is int):
        return None
    return {"model_id": model_id, "version_major": major, "version_minor": minor}


def split_widget_view(data: dict) -> tuple[dict, dict | None]:
    """(the bundle without its widget view, the view checked, or None)."""
    if WIDGET_VIEW not in data:
        return data, None
    rest = {mime: value for mime, value in data.items() if mime != WIDGET_VIEW}
    return rest, widget_view(data[WIDGET_VIEW])


def clean_bundle(data: dict, metadata: dict) -> tuple[dict, dict]:
    """A display bundle inert, its widget view kept (sanitize.py drops it)."""
    rest, view = split_widget_view(data)
    clean = sanitize_bundle(rest, metadata)
    shown = dict(clean.data) if (rest or not view) else {}
    if view is not None:
        shown[WIDGET_VIEW] = view
    return shown, clean.metadata


def refusal(target_name: str, state, trusted: bool) -> str | None:
    """Why a container may not open this comm, or None."""
    if target_name.startswith(RESERVED_TARGET):
        return f"the comm target {target_name[:80]!r} is the kernel's own"
    if trusted:
        return None
    if target_name not in WIDGET_TARGETS:
        return (f"comm target {target_name[:80]!r}: only widgets (jupyter.widget) come from the "
                f"container")
    state = state if isinstance(state, dict) else {}
    for key in ("_model_module", "_view_module"):
        module = state.get(key)
        if module is not None and module not in WIDGET_MODULES:
            return f"widget module {str(module)[:80]!r}: only ipywidgets' own widgets come from the container"
    return None


@dataclass
class WidgetFacts:
    """What one comm's earlier messages said that its next ones are read by."""
    model: str = ""
    allow_html: bool = False
    description: str | None = None

    def clean_state(self, state: dict, opening: bool) -> tuple[dict, set]:
        """``state`` inert, and the keys rewritten (their buffers go)."""
        state = dict(state)
        if not opening:
            for key in [k for k in state if k.startswith(FIXED_PREFIXES)]:
                del state[key]
        elif isinstance(state.get("_model_name"), str):
            self.model = state["_model_name"]
        rewritten = self._description(state)
        if self.model in HTML_MODELS:
            for key in set(HTML_FIELDS) & set(state):
                state[key] = _html(state[key])
                rewritten.add(key)
        if self.model in TYPESET_MODELS and isinstance(state.get("value"), str):
            state["value"] = neutralise_script_urls(state["value"]) or ""
            rewritten.add("value")
        if self.model == "OutputModel" and "outputs" in state:
            state["outputs"] = clean_outputs(state["outputs"])
            rewritten.add("outputs")
        if self.model in MEDIA_MODELS and state.get("format") == "url":
            state["format"] = "png"              # the bytes as an image, never fetched
        if self.model.endswith("StyleModel") or self.model == "LayoutModel":
            rewritten |= _drop_resources(state)
        return state, rewritten | self.guarded()

    def guarded(self) -> set:
        """The fields this model's view renders as HTML or typesets: a buffer
        never sets them (it would pass by the sanitiser)."""
        fields = {"description"}
        if self.model in HTML_MODELS:
            fields.update(HTML_FIELDS)
        if self.model in TYPESET_MODELS:
            fields.add("value")
        if self.model == "OutputModel":
            fields.add("outputs")
        return fields

    def _description(self, state: dict) -> set:
        """The description inert: HTML when the widget renders it so (as
        text, else, whose LaTeX is typeset); the keys rewritten."""
        if "description_allow_html" in state:
            self.allow_html = state["description_allow_html"] is True
        if isinstance(state.get("description"), str):
            self.description = state["description"]
        if self.description is None:
            return set()
        if self.allow_html and ("description" in state or "description_allow_html" in state):
            state["description"] = _html(self.description)   # also the one sent before
        elif "description" in state:
            state["description"] = neutralise_script_urls(self.description) or ""
        else:
            return set()
        return {"description"}


def _html(value) -> str:
    return (neutralise_script_urls(sanitize.clean_html(value)) or "") if isinstance(value, str) else ""


def _drop_resources(state: dict) -> set:
    gone = {key for key, value in state.items()
            if isinstance(value, str) and _LOADS_RESOURCE.search(value)}
    for key in gone:
        del state[key]
    return gone


def clean_outputs(outputs) -> list:
    """An Output widget's outputs as a display's would be: bundles
    sanitised, streams and errors as text, anything else dropped."""
    kept = []
    for output in outputs if isinstance(outputs, list) else []:
        kind = output.get("output_type") if isinstance(output, dict) else None
        if kind in ("display_data", "execute_result", "update_display_data") \
                and isinstance(output.get("data"), dict):
            metadata = output.get("metadata") if isinstance(output.get("metadata"), dict) else {}
            data, metadata = clean_bundle(output["data"], metadata)
            kept.append({**output, "data": data, "metadata": metadata})
        elif kind == "stream" and isinstance(output.get("text"), str):
            name = output.get("name") if output.get("name") in ("stdout", "stderr") else "stdout"
            kept.append({"output_type": "stream", "name": name, "text": output["text"]})
        elif kind == "error" and all(isinstance(output.get(k), str) for k in ("ename", "evalue")):
            lines = output.get("traceback") if isinstance(output.get("traceback"), list) else []
            kept.append({"output_type": "error", "ename": output["ename"], "evalue": output["evalue"],
                         "traceback": [line for line in lines if isinstance(line, str)]})
    return kept


def clean_data(data: dict, buffers: list, facts_of, opening: bool = False) -> tuple[dict, list]:
    """A comm message's data and buffers, inert.  ``facts_of(model_id)``:
    the WidgetFacts of a comm of this container (None for the message's
    own comm), or None when the id is not one: update_states entries
    of other models go (the frontend would open comms with their ids)."""
    if isinstance(data.get("state"), dict):
        state, rewritten = facts_of(None).clean_state(data["state"], opening)
        data = {**data, "state": state}
        return data, _drop_buffers(data, buffers, lambda path: path[:1] and path[0] in rewritten)
    if data.get("method") == "update_states" and isinstance(data.get("states"), dict):
        return _clean_states(data, buffers, facts_of)
    return data, buffers


def _clean_states(data: dict, buffers: list, facts_of) -> tuple[dict, list]:
    states, rewritten = {}, {}
    for model_id, entry in data["states"].items():
        facts = facts_of(model_id)
        if facts is None or not isinstance(entry, dict) or not isinstance(entry.get("state"), dict) \
                or entry.get("model_name") != facts.model \
                or entry.get("model_module") not in WIDGET_MODULES:
            continue                             # made as it was opened, or not at all
        state, keys = facts.clean_state(entry["state"], opening=False)
        states[model_id] = {**entry, "state": state}
        rewritten[model_id] = keys
    data = {**data, "states": states}

    def gone(path) -> bool:
        return len(path) < 3 or path[0] not in states or path[2] in rewritten[path[0]]
    return data, _drop_buffers(data, buffers, gone)


def _drop_buffers(data: dict, buffers: list, gone) -> list:
    """Buffers (and their buffer_paths, which pair with them by index) that
    ``gone(path)`` says go; ``data`` is changed in place."""
    paths = data.get("buffer_paths")
    if not isinstance(paths, list):
        return buffers if "buffer_paths" not in data else []
    kept_paths, kept = [], []
    for path, buffer in zip(paths, buffers):
        if isinstance(path, list) and not gone(path):
            kept_paths.append(path)
            kept.append(buffer)
    data["buffer_paths"] = kept_paths
    return kept
