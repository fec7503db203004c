"""Every option a user gives a container, declared once: its name, what its
value is, the runtime's parser that checks it, its help, its default, the
policy cap it is checked against, and the faces it applies to.

    face         how a user gives it
    RUN          sandbox-kernel run --memory 512M -- CMD          (cli.py)
    CELL         %%container --memory 512M                        (magics)
    LIMITS       %container limits --memory 512M                  (commands.py)
    KERNEL       a sandbox kernel's setting: sandbox-kernel install --memory 2G,
                 c.SandboxKernel.memory, SANDBOX_KERNEL_MEMORY    (kernel/settings.py)

The faces' parsers and help are generated from ``OPTIONS`` (``add_arguments``,
``arguments``): an option added here shows up in each face it names.  A
value is checked by ``parse``, the one function that turns what a user
typed into a limit (or a network, an image...): the runtime's ``parse_*``
functions (runtime/spec.py) behind the face's own rule for "none".

The ``%container`` subcommands and the image actions have one help text
each here too (``SUBCOMMANDS``, ``IMAGE_ACTIONS``), for the CLI's
``images``, ``%container`` and the magics' docstrings.

May import runtime.spec and runtime.image_basics (and runtime.images, inside
``parse``, for an image name); nothing of IPython, traitlets or the faces.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..runtime.image_basics import HOST
from ..runtime.spec import (DEFAULT_DISK, Limits, SpecError, parse_cpus, parse_duration, parse_env,
                            parse_mount, parse_network, parse_pids, parse_size, parse_workdir)

RUN, CELL, LIMITS, KERNEL = "sandbox-kernel run", "%%container", "%container limits", "kernel setting"
FACES = (RUN, CELL, LIMITS, KERNEL)
NO_LIMIT = ("", "none", "unlimited")      # what lifts a limit, in the faces where "none" does
DEFAULT_SESSION = "default"
LIMIT_FIELDS = ("memory", "cpus", "pids", "timeout", "disk")    # runtime.spec.Limits'

VALUE, REPEAT, SWITCH = "value", "repeat", "switch"     # how an option takes its value


def _image(text) -> str:
    """An image name that exists (ImageNotFound otherwise); its name as given."""
    from ..runtime import images
    images.resolve(str(text))
    return str(text)


@dataclass(frozen=True)
class Option:
    """One option.  ``faces``: where it applies.  ``defaults``: face ->
    the default as a user would type it (shown in the help; the argparse
    default too, except for KERNEL, where None means "not given" so that the
    settings' precedence can see what was).  ``lifts``: the faces where
    "none" (or "unlimited", or "") means no limit.  ``restart``: a running
    session takes it on restart.  ``cap``: the Policy field it is checked
    against (session/policy.py).  ``face_help``: a face where the option
    means something else than ``help`` says."""
    name: str
    type: str                                       # what the value is: size, cores, duration...
    help: str
    faces: tuple[str, ...]
    parser: Callable | None = None                  # text -> value; SpecError if bad
    defaults: Mapping[str, str | None] = field(default_factory=dict)
    cap: str | None = None
    lifts: tuple[str, ...] = ()
    restart: bool = False
    kind: str = VALUE
    flags: tuple[str, ...] = ()                     # short forms, e.g. -i
    metavar: str | None = None
    dest: str | None = None
    face_help: Mapping[str, str] = field(default_factory=dict)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


FOOTER_MODES = ("beside", "output", "off")
FOOTER_WORDS = {"on": "beside", "true": "beside", "1": "beside", "yes": "beside",
                "false": "off", "0": "off", "no": "off"}     # the old on/off switch and Bool


def parse_footer(text) -> str:
    """Where the stats footer goes: beside (drawn by the labextension under
    the cell, from the reply's metadata or the panel's comm: the outputs are
    only the code's), output (a display_data after the cell's outputs, for
    frontends without the extension) or off.  True/on is beside, False/off
    is off, as the old switch had it."""
    word = str(text).strip().lower()
    word = FOOTER_WORDS.get(word, word)
    if word not in FOOTER_MODES:
        raise SpecError("footer", str(text).strip(), "beside, output or off")
    return word


def parse_idle_pause(text) -> float | None:
    """--idle-pause: a duration (10m, 30s), or none/off/never: no idle pause
    (its own word in every face: it is no limit the policy caps)."""
    if str(text).strip().lower() in (*NO_LIMIT, "off", "never"):
        return None
    return parse_duration(text, "idle pause")


def parse_on_pressure(text) -> str:
    """--on-pressure: warn or interrupt."""
    word = str(text).strip().lower()
    if word not in ("warn", "interrupt"):
        raise SpecError("on pressure", str(text).strip(), "warn or interrupt")
    return word


def parse_allow_option(text) -> tuple[str, ...]:
    """--allow: the runtime's parse_allow (names, or "*"), with "none" and ""
    for no destination in every face: "none" is no name to allow."""
    if isinstance(text, str) and text.strip().lower() in ("", "none"):
        return ()
    from ..runtime.spec import parse_allow
    return parse_allow(text)


def parse_rate_option(text) -> int | None:
    """--rate: the runtime's parse_rate (bits/s), with none/unlimited for no
    limit in every face (its own word: no cap of the policy is a Limits field)."""
    if text is None or str(text).strip().lower() in NO_LIMIT:
        return None
    from ..runtime.spec import parse_rate
    return parse_rate(text)


NETWORK_OPTIONS = ("net", "allow", "rate")     # a session's network: kept for a restart


def _size(field_name: str) -> Callable:
    return lambda text: parse_size(text, field_name)


OPTIONS: tuple[Option, ...] = (
    Option("name", "session", "the session: one container per name, kept between cells",
           (CELL, LIMITS), defaults={CELL: DEFAULT_SESSION, LIMITS: DEFAULT_SESSION}),
    Option("memory", "size", "memory limit, swap included, e.g. 512M, 2G",
           (RUN, CELL, LIMITS, KERNEL), _size("memory"), {KERNEL: "1G"}, cap="max_memory",
           lifts=(KERNEL,)),
    Option("cpus", "cores", "CPU cores, e.g. 0.5, 2", (RUN, CELL, LIMITS, KERNEL), parse_cpus,
           {KERNEL: "1"}, cap="max_cpus", lifts=(KERNEL,)),
    Option("pids", "count", "most processes and threads, e.g. 256", (RUN, CELL, LIMITS, KERNEL),
           parse_pids, {RUN: "256", KERNEL: "256"}, cap="max_pids", lifts=(RUN, KERNEL)),
    Option("timeout", "duration", "time limit of each cell, e.g. 30s, 2m: interrupted, then killed",
           (RUN, CELL, LIMITS, KERNEL), lambda text: parse_duration(text, "timeout"),
           {KERNEL: None}, cap="max_timeout", lifts=(KERNEL,),
           face_help={RUN: "wall time limit of the command, e.g. 30s, 2m: then killed"}),
    Option("disk", "size", "size of the writable layer, e.g. 1G", (RUN, LIMITS), _size("disk"),
           {RUN: "1G"}, cap="max_disk", restart=True),
    Option("net", "network", "network: none (loopback only), host, or bridge (its own address "
           "behind the host's NAT, root; egress only to the --allow names)",
           (RUN, CELL, LIMITS, KERNEL), parse_network, {RUN: "none", KERNEL: "none"}, restart=True,
           metavar="none|host|bridge"),
    Option("allow", "names", "with --net bridge: the domain names the session may reach (and their "
           "subdomains), comma separated, e.g. pypi.org,files.pythonhosted.org; '*': any "
           "destination; none: nothing leaves (the default)", (RUN, CELL, LIMITS, KERNEL),
           lambda text: parse_allow_option(text), {KERNEL: None}, restart=True, metavar="NAMES"),
    Option("rate", "bandwidth", "with --net bridge: the bandwidth each way, e.g. 10mbit, 500kbit "
           "(bits per second); none: no limit (the default)", (RUN, CELL, LIMITS, KERNEL),
           lambda text: parse_rate_option(text), {KERNEL: None}, restart=True, metavar="RATE"),
    Option("image", "image", "the image, e.g. host or busybox: sandbox-kernel images and %container "
           "images list them",
           (RUN, CELL, LIMITS, KERNEL), _image, {RUN: HOST, KERNEL: HOST}, restart=True),
    Option("idle_pause", "duration", "pause the session (cgroup freezer: no CPU, memory kept) after "
           "it ran nothing for this long, e.g. 10m; the next cell resumes it",
           (LIMITS, KERNEL), lambda text: parse_idle_pause(text), {KERNEL: None},
           metavar="DURATION|none"),
    Option("on_pressure", "action", "when a cell's memory crosses 90% of the limit: interrupt (a "
           "MemoryError in the cell; its variables and the container stay) or warn (the footer says "
           "so); past the limit the cell is OOM-killed either way", (LIMITS,), parse_on_pressure,
           metavar="warn|interrupt"),
    Option("footer", "place", "where the stats footer goes: beside (under the cell, drawn by the "
           "labextension; the outputs stay the code's), output (a display_data after the outputs, "
           "for frontends without it) or off; %container footer changes it",
           (KERNEL,), parse_footer, {KERNEL: "beside"}, metavar="beside|output|off"),
    Option("mount", "mount", "bind a host path into the container (repeatable)", (RUN,),
           parse_mount, kind=REPEAT, metavar="SRC:DST[:ro]"),
    Option("workdir", "path", "working directory inside", (RUN,), parse_workdir,
           {RUN: "/workspace"}),
    Option("workspace", "path", "host directory shown at /workspace (default: a fresh one)", (RUN,)),
    Option("env", "env", "set an environment variable (repeatable)", (RUN,), parse_env,
           kind=REPEAT, metavar="NAME=VALUE"),
    Option("report", "switch", "print an isolate-style report to stderr when the command ends",
           (RUN,), kind=SWITCH),
    Option("report_json", "file", "write the report as JSON to FILE", (RUN,), metavar="FILE"),
    Option("input", "names", "variables of this kernel to copy into the container first, "
           "e.g. -i df,n", (CELL,), kind=REPEAT, flags=("-i",), metavar="NAMES"),
    Option("output", "names", "variables to copy back into this kernel afterwards, e.g. -o result",
           (CELL,), kind=REPEAT, flags=("-o",), metavar="NAMES"),
    Option("shell", "switch", "run the cell as a /bin/sh script in the same container, with live "
           "output", (CELL,), kind=SWITCH),
    Option("no_stats", "switch", "no stats footer under this cell", (CELL,), kind=SWITCH),
    Option("no_raise_error", "switch", "an exception in the container does not fail this cell",
           (CELL,), kind=SWITCH),
    Option("trust_output", "switch", "show the session's HTML, JavaScript, Markdown and SVG output "
           "as it is, from this cell on (off by default: scripts are dropped, markup sanitised)",
           (CELL,), kind=SWITCH),
    Option("no_trust_output", "switch", "sanitise the session's output again (the default)", (CELL,),
           kind=SWITCH),
)

# %container's subcommands and image actions: one help each, for every face that lists them
SUBCOMMANDS = {
    "status": "name, image, limits, state, pid, uptime, current figures",
    "limits": "show the limits, or change them",
    "restart": "a fresh container (its variables are lost)",
    "stop": "destroy the container",
    "pause": "freeze the container (no CPU, memory kept); the next cell resumes it",
    "resume": "thaw a paused container",
    "stats": "the last cells' figures; on/off turns the footer on or off",
    "footer": "where the footer goes: beside (under the cell), output (an output) or off",
    "push": "copy variables of this kernel into the container",
    "pull": "copy variables of the container into this kernel",
    "exec": "run a program in the container: exec -- CMD ARGS",
    "sessions": "the sessions of this kernel",
    "on": "every following cell runs in the container",
    "off": "cells run in this kernel again",
    "images": "the images there are",
    "image": "manage images: ls, import PATH, inspect NAME, rm NAME, pull REF, build NAME",
}
IMAGE_ACTIONS = {
    "ls": "the images there are",
    "import": "import a rootfs dir/tar, an OCI layout or a docker save tar",
    "inspect": "layers, environment, command and sizes of an image",
    "rm": "remove an image (and the layers only it used)",
    "pull": "pull from a registry (OCI distribution API)",
    "build": "run a script in a container of BASE, keep its writes as a new layer (docker commit)",
}
IMAGE_ARGUMENTS = {
    "path": "a directory or tar file on this machine",
    "reference": "[REGISTRY/]NAME[:TAG][@DIGEST]",
    "base": "the base image",
    "script": "the /bin/sh script, e.g. 'apk add curl'",
}


# ---------------------------------------------------------------------------
# Reading the schema (at call time: a test may add an option)


def for_face(face: str) -> list[Option]:
    return [option for option in OPTIONS if face in option.faces]


def names(face: str) -> tuple[str, ...]:
    return tuple(option.name for option in for_face(face))


def get(name: str) -> Option:
    """The option ``name``; KeyError naming the options there are."""
    for option in OPTIONS:
        if option.name == name:
            return option
    raise KeyError(f"unknown option {name!r}: one of {', '.join(o.name for o in OPTIONS)}")


def defaults(face: str) -> dict:
    """name -> the face's default as typed (None: no limit, or not given)."""
    return {option.name: option.defaults.get(face) for option in for_face(face)}


def limit_names(face: str) -> tuple[str, ...]:
    """The options of ``face`` that "none" lifts (KERNEL: memory, cpus, pids, timeout)."""
    return tuple(option.name for option in for_face(face) if face in option.lifts)


def help_for(option: Option | str, face: str, *, with_default: bool = True) -> str:
    """The option's help in ``face``: its words, then its default, whether
    "none" lifts it there, and whether a running session takes it on restart."""
    option = get(option) if isinstance(option, str) else option
    words = option.face_help.get(face, option.help)
    default = option.defaults.get(face)
    notes = [f"default {_shown(default)}"] if with_default and default is not None else []
    if face in option.lifts:
        missing = with_default and face in option.defaults and default is None
        notes.append("none: no limit, the default" if missing else "none: no limit")
    if option.restart and face in (CELL, LIMITS):
        notes.append("on restart")
    return f"{words} ({'; '.join(notes)})" if notes else words


def _shown(value: str) -> str:
    return repr(value) if value.isalpha() else value


# ---------------------------------------------------------------------------
# Parsing a value: the one function


def parse(name: str, text, face: str):
    """What a user typed as option ``name`` in ``face``, checked by the
    runtime's parser: a limit in bytes, cores, seconds..., a network, an
    image name.  None where "none" lifts it in this face (or nothing was
    given); SpecError (ImageNotFound for an image) when it is not valid."""
    option = get(name)
    if text is None or (face in option.lifts and str(text).strip().lower() in NO_LIMIT):
        return None
    if option.parser is None:
        return text
    return option.parser(text)


def limits(strings: Mapping, face: str) -> Limits:
    """runtime.spec.Limits from what a user typed ("512M", "1.5", "30s");
    the limits not given: none (the disk: its default size)."""
    parsed = {name: parse(name, strings.get(name), face) for name in LIMIT_FIELDS}
    if parsed["disk"] is None:
        parsed["disk"] = DEFAULT_DISK
    return Limits(**parsed)


# ---------------------------------------------------------------------------
# Generating a face's parser


def arguments(face: str) -> list[tuple[tuple[str, ...], dict]]:
    """(flags, keyword arguments) of ``add_argument`` for each option of
    ``face``: for an argparse parser, or for IPython's ``@argument``."""
    return [_argument(option, face) for option in for_face(face)]


def _argument(option: Option, face: str) -> tuple[tuple[str, ...], dict]:
    kwargs: dict = {"help": literal(help_for(option, face))}
    if option.dest:
        kwargs["dest"] = option.dest
    if option.metavar:
        kwargs["metavar"] = option.metavar
    if option.kind == SWITCH:
        kwargs["action"] = "store_true"
    elif option.kind == REPEAT:
        kwargs.update(action="append", default=[])
    elif face != KERNEL and option.defaults.get(face) is not None:
        kwargs["default"] = option.defaults[face]
    return (*option.flags, option.flag), kwargs


def argument(name: str, face: str) -> tuple[tuple[str, ...], dict]:
    """(flags, keyword arguments) of ``add_argument`` for the option ``name`` in ``face``."""
    return _argument(get(name), face)


def add_arguments(parser: argparse.ArgumentParser, face: str) -> None:
    """Every option of ``face`` on ``parser``, with its help."""
    for flags, kwargs in arguments(face):
        parser.add_argument(*flags, **kwargs)


def literal(text: str) -> str:
    """A help text as argparse shows it: argparse expands %-formats, and
    the help texts speak of %container."""
    return text.replace("%", "%%")


def subcommand_lines() -> str:
    """The %container subcommands, one a line, for a docstring or a help."""
    width = max(map(len, SUBCOMMANDS))
    return "\n".join(f"%container {name.ljust(width)}  {text}" for name, text in SUBCOMMANDS.items())


__all__ = ["Option", "OPTIONS", "FACES", "RUN", "CELL", "LIMITS", "KERNEL", "SpecError", "parse",
           "limits", "arguments", "add_arguments", "for_face", "names", "defaults", "help_for"]
