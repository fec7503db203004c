"""The ``%container`` subcommands, parsed and run once against the sessions.

The magics (``%container``) and the sandbox kernel are both thin faces over
``run``: they hand it the line the user typed and show the ``Output`` it
returns.  Nothing here imports IPython (the sandbox kernel has no host-side
IPython shell).

    %container status [--name N]           name, image, limits, state, pid, uptime, figures
    %container limits [--name N] [--memory 512M] [--cpus 1] [--pids 128] [--timeout 30s]
                      [--disk 1G] [--net none|host] [--image NAME]
                                           show the limits, or change them (live where
                                           the cgroup allows; net and image on restart)
    %container restart [--name N]          a fresh container (variables are lost)
    %container stop [--name N]             destroy the container
    %container stats [--name N] [on|off]   the last cells' figures; on/off: the footer
    %container push NAMES [--name N]       copy variables into the container (pickled)
    %container pull NAMES [--name N]       copy variables out of it (restricted unpickler)
    %container exec [--name N] -- CMD...   run a program in the container, like docker exec
    %container sessions                    the sessions of this kernel
    %container on [--name N] / off         every following cell runs in the container
    %container images                      the images there are (= %container image ls)
    %container image import PATH [--name N]      a rootfs dir/tar, an OCI layout, a docker save tar
    %container image inspect NAME | rm NAME | pull REF [--name N]
    %container image build NAME --from BASE --run SCRIPT [--net none|host]
                                           (or %%container build NAME --from BASE)

Every action on the host asks the sessions' policy first (policy.py): the
sandbox kernel's installer sets it (classroom by default there), the magics
run ``trusted``.  A refusal is ``PolicyRefused``, one line, and nothing was done.

A mistake (unknown subcommand or option, a missing or bad value) raises
``UsageError`` whose message is one line: what was wrong, then what is
accepted (``unknown subcommand 'frobnicate'; usage: %container
status|limits|... ...``).  No traceback, no SystemExit, no usage block: ``-h``
shows the help.
"""
from __future__ import annotations

import argparse
import html
import os
import re
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..runtime import images, layers
from ..runtime.spec import ContainerSpec, Limits, SpecError, parse_network
from . import policy as policies
from . import stats as stats_contract
from .client import Session, SessionError
from .policy import Policy, PolicyRefused

DEFAULT_SESSION = "default"
LIMIT_OPTIONS = ("memory", "cpus", "pids", "timeout", "disk")
POOL_ENV = "SANDBOX_KERNEL_POOL"
# the trusted policy's notebook directory, from the host user's own environment
NOTEBOOK_ENV = {"notebook_dir": "SANDBOX_KERNEL_NOTEBOOK_DIR",
                "notebook_root": "SANDBOX_KERNEL_NOTEBOOK_ROOT"}
DEFAULT_POOL = 1
MAX_POOL = 4


class UsageError(Exception):
    """A command line that cannot be run; the message is for the user as is."""


class HelpRequested(Exception):
    """-h: the message is the help text (shown, not an error)."""


@dataclass
class Output:
    """What a command shows: text (always), html (optional), and for pull the
    values to set in the caller's namespace."""
    text: str = ""
    html: str | None = None
    values: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------
# The sessions of one kernel


class Sessions:
    """The named sessions of one kernel, and the faces' shared switches:
    ``auto`` (the session every cell runs in, or None) and ``footer``.

    The warm pool: ``warm_up`` starts containers ahead, in the background,
    with the defaults of a new session (host image, no network, the default
    limits), so that the first ``%%container`` cell finds its container
    running.  A new session takes one whose image and network match and
    gets its limits set live (memory, cpus and pids through the cgroup, as
    ``%container limits`` does); when none matches, the pool is dropped.
    Bounded (MAX_POOL), never refilled, private to this process (each
    container's launcher lives only as long as its owner), and closed with
    the sessions.  A warm container is an ordinary container: its own
    cgroup with the limits, counted like any other.

    The policy (policy.py) is asked before every action on the host: a new
    session (how many, its limits, network and image), a change of limits,
    and every image action but ls and inspect.  ``defaults`` are a new
    session's limits when none are given (the sandbox kernel's settings: a
    second session is not unlimited); ``made`` the images this process
    built, imported or pulled (a classroom kernel removes only those);
    ``trust_output`` is set on every session made here.  The magics'
    Sessions are ``trusted`` with no defaults: as before.
    """

    def __init__(self, factory: Callable[..., Session] = Session, *, policy: Policy | None = None,
                 defaults: dict | None = None, trust_output: bool = False,
                 notebook_dir: str | None = None):
        self.factory = factory
        # the notebook's directory, the cells' working directory at the same
        # path (policy.notebook_mount says how); None: this process's working
        # directory when a session is made (the magics: ipykernel's, as the
        # server started it in the notebook's directory, or after a %cd)
        self.notebook_dir = notebook_dir
        self.policy = policy if policy is not None else policies.trusted()
        self.defaults = dict(defaults or {})      # a new session's limits as typed ("1G"), if not given
        self.trust_output = trust_output          # every session's output shown as is (session/client.py)
        self.made: set[str] = set()               # images this kernel built, imported or pulled
        self.sessions: dict[str, Session] = {}
        self.pool: list[Session] = []
        self.auto: str | None = None
        self.auto_options: dict = {}
        self.footer = True
        self.new_session_hint = "a %%container cell creates one"   # the sandbox kernel says its own

    def get(self, name: str) -> Session:
        """An existing session; UsageError naming the ones there are."""
        try:
            return self.sessions[name]
        except KeyError:
            there = ", ".join(sorted(self.sessions)) or "none yet"
            raise UsageError(f"no session named {name!r} (sessions: {there}); "
                             f"{self.new_session_hint}") from None

    def open(self, name: str = DEFAULT_SESSION, *, image=None, net=None, **limits) -> tuple[Session, list[str]]:
        """The session ``name``, created with these options if new; if it
        exists, given options change it.  Returns it and notes for the user."""
        given = {k: v for k, v in limits.items() if v is not None}
        session = self.sessions.get(name)
        if session is None:
            return self._new_session(name, image or images.HOST, net or "none", given), []
        if not given and image is None and net is None:
            return session, []
        self.check_changes(given, image, net)
        changes = session.set_limits(**given, image=image, net=net)
        return session, change_notes(session, changes)

    def _new_session(self, name: str, image: str, net: str, given: dict) -> Session:
        """A session with the given limits and the defaults for the others,
        after the policy said yes; a bad value raises before anything starts."""
        self.policy.check_sessions(len(self.sessions))
        wanted = {**{k: v for k, v in self.defaults.items() if k in LIMIT_OPTIONS}, **given}
        new_limits = parse_limits(wanted)
        self.policy.check_limits({k: getattr(new_limits, k) for k in LIMIT_OPTIONS})
        self.policy.check_network(net)
        self.policy.check_image(image)
        notebook = self.notebook_mount()
        session = self._from_pool(name, image, net, wanted, notebook)
        if session is None:
            session = self.factory(name, image=image, limits=new_limits, network=net)
            self._place(session, notebook)
        self._trust(session)
        self.sessions[name] = session
        return session

    def check_changes(self, given: dict, image: str | None, net: str | None) -> None:
        """What ``%container limits`` (or the magics' options) would change, asked of the policy."""
        self.policy.check_limit_strings(given)
        if net is not None:
            self.policy.check_network(net)
        if image is not None:
            self.policy.check_image(image)

    def notebook_mount(self) -> policies.NotebookDir:
        """The notebook's directory as the policy has it in a new session.
        Under the trusted policy (the magics: the host user's own kernel)
        SANDBOX_KERNEL_NOTEBOOK_DIR (overlay|ro|rw|none) and
        SANDBOX_KERNEL_NOTEBOOK_ROOT (DIR|parent) change it; UsageError,
        one line, for a bad value."""
        path = self.notebook_dir
        if path is None:
            try:
                path = os.getcwd()
            except FileNotFoundError:   # the directory was removed under us
                path = None
        return self._notebook_policy().notebook_mount(path)

    def _notebook_policy(self) -> Policy:
        if self.policy.name != policies.TRUSTED:
            return self.policy
        given = {key: os.environ.get(variable) for key, variable in NOTEBOOK_ENV.items()}
        try:
            return policies.with_overrides(self.policy, {k: v for k, v in given.items() if v})
        except SpecError as error:
            raise UsageError(f"{error} (from {' or '.join(NOTEBOOK_ENV.values())})") from None

    @staticmethod
    def _place(session: Session, notebook: policies.NotebookDir) -> None:
        """The notebook's directory of a session not started yet."""
        session.notebook_dir = notebook.mount
        session.workdir = notebook.workdir
        session.notebook_words = notebook.words

    def _trust(self, session: Session) -> None:
        """The kernel's trust_output on every session it makes (session/client.py
        shows such a session's output unsanitised)."""
        if self.trust_output:
            session.trust_output = True

    def close(self, name: str) -> None:
        session = self.sessions.pop(name, None)
        if session is not None:
            session.stop()

    def close_all(self) -> None:
        """Destroy every container (kernel shutdown, extension unload)."""
        self.drop_pool()
        for name in list(self.sessions):
            self.close(name)

    # -- the warm pool ---------------------------------------------------------

    def warm_up(self, size: int = DEFAULT_POOL) -> int:
        """Start ``size`` containers ahead for the sessions to come (at most
        MAX_POOL); only while there is no session and no pool yet.  Returns
        how many were started."""
        if self.sessions or self.pool:
            return 0
        notebook = self.notebook_mount()
        for _ in range(min(size, MAX_POOL)):
            session = self.factory(DEFAULT_SESSION, image=images.HOST, limits=parse_limits(self.defaults),
                                   network="none")
            self._place(session, notebook)
            self._trust(session)
            session.start_soon()
            self.pool.append(session)
        return len(self.pool)

    def drop_pool(self) -> None:
        """Destroy the containers started ahead that no session took."""
        pool, self.pool = self.pool, []
        for session in pool:
            session.stop()

    def _from_pool(self, name: str, image: str, net: str, given: dict,
                   notebook: policies.NotebookDir | None = None) -> Session | None:
        """A warm session for the new session ``name``, with the limits it
        was asked for; None if none fits (the pool is then dropped: it was
        started for sessions like this one, or in another directory)."""
        network = parse_network(net)
        mount, workdir = (notebook.mount, notebook.workdir) if notebook else (None, None)
        fits = [s for s in self.pool if s.image == image and s.network == network
                and getattr(s, "notebook_dir", None) == mount and getattr(s, "workdir", None) == workdir]
        if not fits:
            self.drop_pool()
            return None
        session = fits[0]
        self.pool.remove(session)
        session.name = name
        try:
            session.set_limits(**given)
        except (OSError, RuntimeError):   # the cgroup refused: start one cold instead
            session.stop()
            return None
        return session


def pool_size(environ=os.environ) -> int:
    """How many containers the magics start ahead: SANDBOX_KERNEL_POOL
    (0 turns the pool off); UsageError for a value that is not 0..MAX_POOL."""
    text = environ.get(POOL_ENV, "").strip()
    if not text:
        return DEFAULT_POOL
    if not text.isdigit() or int(text) > MAX_POOL:
        raise UsageError(f"{POOL_ENV}={text!r}: not a pool size; accepted: 0 (no containers "
                         f"started ahead) to {MAX_POOL}; the default is {DEFAULT_POOL}")
    return int(text)


def parse_limits(strings: dict) -> Limits:
    """Limits from what a user typed ("512M", "1.5", "30s"); SpecError if bad."""
    spec = ContainerSpec.from_strings(("-",), **{k: strings.get(k) for k in LIMIT_OPTIONS})
    return spec.limits


def change_notes(session: Session, changes: dict) -> list[str]:
    notes = []
    if changes.get("changed"):
        notes.append(f"session {session.name!r}: {', '.join(changes['changed'])} changed "
                     f"({describe_limits(session)})")
    if changes.get("restart_needed"):
        notes.append(f"session {session.name!r}: {', '.join(changes['restart_needed'])} take effect on "
                     f"restart: run %container restart --name {session.name} (variables are lost)")
    return notes


def describe_limits(session: Session) -> str:
    limits = session.limits
    return ", ".join([
        f"memory {stats_contract.format_bytes(limits.memory) if limits.memory else 'unlimited'}",
        f"cpus {limits.cpus:g}" if limits.cpus else "cpus unlimited",
        f"pids {limits.pids}" if limits.pids else "pids unlimited",
        f"timeout {stats_contract.format_seconds(limits.timeout)}" if limits.timeout else "no timeout",
        f"net {session.network}", f"image {session.image}",
    ])


# ---------------------------------------------------------------------------
# Parsing


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing and exiting: one line, what
    was wrong and what is accepted (``-h`` still shows the whole help)."""

    def parse_known_args(self, args=None, namespace=None):
        self.given = list(args or [])          # what this (sub)command was given, for error()
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        unknown = [word for word in getattr(self, "given", []) if word.startswith("-")
                   and word != "--" and word.split("=")[0] not in self._option_string_actions]
        if unknown and message.startswith(_REQUIRED):     # the likelier mistake comes first
            message = f"unrecognized arguments: {' '.join(unknown)}"
        raise UsageError(f"{self.prog}: {_plain(self, message)}")

    def exit(self, status: int = 0, message: str | None = None):
        raise UsageError(f"{self.prog}: {' '.join((message or 'cannot read this line').split())}; "
                         f"usage: {one_line_usage(self)}")

    def print_help(self, file=None):
        raise HelpRequested(self.format_help())


_REQUIRED = "the following arguments are required: "
_NEEDS_VALUE = re.compile(r"^argument (\S+?)(?:/\S+)?: expected one argument$")
_BAD_CHOICE = re.compile(r"^argument (\S+): invalid choice: (.*?) \(choose from .*\)$")
_NOUNS = {"command": "subcommand", "action": "action", "switch": "switch"}


def _plain(parser: argparse.ArgumentParser, message: str) -> str:
    """argparse's message in plain words, with the usage as what is accepted:
    one line (argparse's own is the usage, a newline, then the message)."""
    usage = one_line_usage(parser)
    if message.startswith(_REQUIRED):
        missing = message[len(_REQUIRED):]
        if missing in ("SUBCOMMAND", "ACTION"):
            return f"no {missing.lower()} given; usage: {usage}"
        named = {name: _usage_part(a).strip("[]").removesuffix("...") for a in parser._actions
                 for name in (a.option_strings[:1] or [a.metavar or a.dest])}
        return f"missing {', '.join(named.get(m, m) for m in missing.split(', '))}; usage: {usage}"
    needs_value = _NEEDS_VALUE.match(message)
    if needs_value:
        option = needs_value.group(1)
        action = next((a for a in parser._actions if option in a.option_strings), None)
        if action is None or not action.help:
            return f"{option} needs a value; usage: {usage}"
        return f"{option} needs a value: {parser._get_formatter()._expand_help(action)}"
    bad_choice = _BAD_CHOICE.match(message)
    if bad_choice:
        dest = next((a.dest for a in parser._actions
                     if a.choices and bad_choice.group(1) in (a.metavar, a.dest)), "")
        return f"unknown {_NOUNS.get(dest, 'value')} {bad_choice.group(2)}; usage: {usage}"
    if message.startswith("unrecognized arguments: "):
        return f"{_unexpected(message.split(': ', 1)[1].split())}; usage: {usage}"
    return f"{message}; usage: {usage}"


def one_line_usage(parser: argparse.ArgumentParser) -> str:
    """``%container limits [--name NAME] [--memory MEMORY] ...``: the
    accepted forms on one line, choices spelled out (a|b), without -h."""
    parts = [parser.prog]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        parts.append(_usage_part(action))
    return " ".join(parts)


def _usage_part(action: argparse.Action) -> str:
    if isinstance(action, argparse._SubParsersAction):
        return "|".join(action.choices) + " ..."
    shown = "|".join(action.choices) if action.choices else (action.metavar or action.dest.upper())
    if not action.option_strings:
        if action.nargs == argparse.REMAINDER:
            return f"{shown} [ARGS...]"
        if action.nargs == "+":
            return f"{shown}..."
        return f"[{shown}]" if action.nargs == "?" else shown
    if action.nargs == 0:
        form = action.option_strings[0]
    else:
        form = f"{action.option_strings[0]} {shown}"
    return form if action.required else f"[{form}]"


def _add_name(parser) -> None:
    parser.add_argument("--name", default=DEFAULT_SESSION, help="the session (default: %(default)s)")


def _add_limits(parser) -> None:
    parser.add_argument("--memory", help="memory limit, e.g. 512M, 2G")
    parser.add_argument("--cpus", help="CPU cores, e.g. 0.5, 2")
    parser.add_argument("--pids", help="most processes and threads, e.g. 128")
    parser.add_argument("--timeout", help="per-cell time limit, e.g. 30s, 2m")
    parser.add_argument("--disk", help="size of the writable layer, e.g. 1G (on restart)")


def build_parser() -> _Parser:
    parser = _Parser(prog="%container", description="Manage the sandbox sessions of this kernel.",
                     epilog="Examples: %container status | %container limits --memory 1G | "
                            "%container exec -- ps aux | %container pull result")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True,
                                parser_class=_Parser)
    helps = {
        "status": "name, image, limits, state, pid, uptime, current figures",
        "limits": "show the limits, or change them",
        "restart": "a fresh container (its variables are lost)",
        "stop": "destroy the container",
        "stats": "the last cells' figures; on/off turns the footer on or off",
        "push": "copy variables of this kernel into the container",
        "pull": "copy variables of the container into this kernel",
        "exec": "run a program in the container: exec -- CMD ARGS",
        "sessions": "the sessions of this kernel",
        "on": "every following cell runs in the container",
        "off": "cells run in this kernel again",
        "images": "the images there are",
        "image": "manage images: ls, import PATH, inspect NAME, rm NAME, pull REF, build NAME",
    }
    commands = {name: sub.add_parser(name, help=text, description=text) for name, text in helps.items()}
    for name in ("status", "limits", "restart", "stop", "stats", "push", "pull", "exec", "on"):
        _add_name(commands[name])
    _add_limits(commands["limits"])
    commands["limits"].add_argument("--net", help="none (loopback only) or host")
    commands["limits"].add_argument("--image", help="the image (see %%container images)")
    commands["stats"].add_argument("switch", nargs="?", choices=("on", "off"),
                                   help="show the footer under each cell, or not")
    for name in ("push", "pull"):
        commands[name].add_argument("names", nargs="+", metavar="NAMES",
                                    help="variable names, by spaces or commas")
    commands["exec"].add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD",
                                  help="the program and its arguments")
    _add_image_actions(commands["image"])
    return parser


def _add_image_actions(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True,
                                    parser_class=_Parser)
    actions.add_parser("ls", help="the images there are")
    imp = actions.add_parser("import", help="import a rootfs dir/tar, an OCI layout or a docker save tar")
    imp.add_argument("path", help="a directory or tar file on this machine")
    imp.add_argument("--name", dest="image_name", help="the image's name (default: from the file)")
    for action in ("inspect", "rm"):
        actions.add_parser(action, help=f"{action} an image").add_argument("image")
    pull = actions.add_parser("pull", help="pull from a registry (OCI distribution API)")
    pull.add_argument("reference", help="[REGISTRY/]NAME[:TAG][@DIGEST]")
    pull.add_argument("--name", dest="image_name", help="store it under this name")
    build = actions.add_parser("build", help="run a script in a container of BASE; keep its writes")
    build.add_argument("image", help="the new image's name")
    build.add_argument("--from", dest="base", required=True, help="the base image")
    build.add_argument("--run", dest="script", required=True, help="the /bin/sh script")
    build.add_argument("--net", help="the build's network: none or host (default: the policy's)")


def parse(line: str | list[str]) -> argparse.Namespace:
    """The parsed subcommand; UsageError (one line: what was wrong and what
    is accepted) or HelpRequested."""
    parser = build_parser()
    try:
        argv = shlex.split(line) if isinstance(line, str) else list(line)
    except ValueError as exc:
        raise UsageError(f"%container: {str(exc).lower()} in {line.strip()!r}: quote each "
                         f"argument whole, e.g. %container exec -- sh -c 'echo hi'") from None
    if argv and argv[-1].endswith("?") and argv[0] != "exec":    # "?", "limits?", "image rm ?"
        argv = [*argv[:-1], *filter(None, [argv[-1][:-1]]), "-h"]
    if argv[:1] and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        raise UsageError(f"%container: unknown option {argv[0]} before the subcommand; "
                         f"usage: {one_line_usage(parser)}")
    args, extra = parser.parse_known_args(argv)
    innermost = _innermost(parser, args)
    if extra:
        raise UsageError(f"{innermost.prog}: {_unexpected(extra)}; usage: {one_line_usage(innermost)}")
    if args.command == "exec":
        if args.argv[:1] == ["--"]:
            args.argv = args.argv[1:]
        if not args.argv:
            raise UsageError(f"%container exec: no command given; usage: {one_line_usage(innermost)}, "
                             f"e.g. %container exec -- ps aux")
    if args.command in ("push", "pull"):
        try:
            args.names = split_names(args.names)
        except UsageError as exc:
            raise UsageError(f"%container {args.command}: {exc}; "
                             f"usage: {one_line_usage(innermost)}") from None
    return args


def _innermost(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub)subcommand that was given: its prog and usage."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None))
            if chosen is not None:
                return _innermost(chosen, args)
    return parser


def _unexpected(extra: list[str]) -> str:
    options = [item for item in extra if item.startswith("-")]
    if options:
        return f"unknown option{'s' if len(options) > 1 else ''} {', '.join(options)}"
    return f"unexpected {'arguments' if len(extra) > 1 else 'argument'} {', '.join(map(repr, extra))}"


def split_names(items) -> list[str]:
    """["a,b", "c"] -> ["a", "b", "c"]; UsageError for what is not a name."""
    names = [n for item in items for n in str(item).split(",") if n.strip()]
    names = [n.strip() for n in names]
    bad = [n for n in names if not n.isidentifier()]
    if bad or not names:
        raise UsageError(f"not variable names: {', '.join(map(repr, bad)) or 'none given'}")
    return names


# ---------------------------------------------------------------------------
# Running


def run(line, sessions: Sessions, *, namespace: dict | None = None,
        on_output: Callable[[str, dict], None] | None = None) -> Output:
    """Parse ``line`` and run it once.  ``namespace`` is where push reads and
    pull's values go (the caller sets them from Output.values); ``on_output``
    receives exec's output as it comes."""
    try:
        args = parse(line)
    except HelpRequested as shown:
        return Output(text=str(shown))
    try:
        return _COMMANDS[args.command](args, sessions, namespace if namespace is not None else {},
                                       on_output)
    except PolicyRefused:
        raise
    except (SpecError, SessionError, images.ImageNotFound, images.ImageError, layers.LayerError,
            images.BuildError) as exc:
        text = str(exc.args[0]) if isinstance(exc, LookupError) else str(exc)
        raise UsageError(one_line(text)) from None


def one_line(text: str) -> str:
    """A message of several lines (a build's error, say) as one line."""
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def _status(args, sessions: Sessions, namespace, on_output) -> Output:
    info = sessions.get(args.name).status()
    rows = [("session", info["name"]), ("image", info["image"]), ("network", info["network"]),
            ("state", info["state"]), ("container", info["container"] or "-"),
            ("pid", str(info["pid"] or "-")),
            ("uptime", stats_contract.format_seconds(info["uptime"])),
            ("limits", describe_limits(sessions.get(args.name))),
            ("notebook dir", notebook_words(sessions.get(args.name))),
            ("policy", sessions.policy.describe()),
            ("cells", str(info["cells"]))]
    figures = info["stats"] or {}
    if figures:
        rows += [("memory", f"{stats_contract.format_bytes(figures.get('memory_current'))} "
                            f"(peak {stats_contract.format_bytes(figures.get('memory_peak'))})"),
                 ("pids", str(figures.get("pids_current"))),
                 ("cpu", f"{stats_contract.format_seconds(figures.get('cpu_user'))} user, "
                         f"{stats_contract.format_seconds(figures.get('cpu_system'))} sys"),
                 ("oom kills", str(figures.get("oom_kills")))]
    return _table_output(["", ""], rows, header=False)


def notebook_words(session: Session) -> str:
    """How the session has the notebook's directory, for status and the footer."""
    words = getattr(session, "notebook_words", None)
    if words:
        return words
    mount = getattr(session, "notebook_dir", None)
    return f"{mount.target}" if mount is not None else "not mounted: cells start in /workspace"


def footer_dir(session: Session) -> str:
    """The footer's short words for the notebook's directory: PATH rw|ro|ro+overlay, or none."""
    mount = getattr(session, "notebook_dir", None)
    if mount is None:
        return "none (cells start in /workspace)"
    mode = "ro+overlay" if mount.overlay else "ro" if mount.read_only else "rw"
    return f"{getattr(session, 'workdir', None) or mount.target} {mode}"


def _limits(args, sessions: Sessions, namespace, on_output) -> Output:
    session = sessions.get(args.name)
    given = {k: getattr(args, k) for k in (*LIMIT_OPTIONS, "net", "image") if getattr(args, k) is not None}
    if not given:
        return Output(text=f"session {session.name!r}: {describe_limits(session)}\n"
                           f"policy: {sessions.policy.describe()}")
    limits = {k: v for k, v in given.items() if k in LIMIT_OPTIONS}
    sessions.check_changes(limits, given.get("image"), given.get("net"))
    notes = change_notes(session, session.set_limits(**given))
    return Output(text="\n".join(notes) or f"session {session.name!r}: nothing changed")


def _restart(args, sessions: Sessions, namespace, on_output) -> Output:
    session = sessions.get(args.name)
    session.restart()
    return Output(text=f"session {session.name!r}: a fresh container is running ({session.status()['container']})")


def _stop(args, sessions: Sessions, namespace, on_output) -> Output:
    session = sessions.get(args.name)
    session.stop()
    return Output(text=f"session {session.name!r}: container stopped; the next cell starts a fresh one")


STATS_COLUMNS = ("#", "status", "wall", "cpu user", "cpu sys", "mem peak", "mem limit",
                 "pids", "io read", "io write", "net rx", "net tx")


def _stats(args, sessions: Sessions, namespace, on_output) -> Output:
    if args.switch:
        sessions.footer = args.switch == "on"
        return Output(text=f"stats footer {'on' if sessions.footer else 'off'}")
    session = sessions.get(args.name)
    rows = [stats_row(entry) for entry in session.cell_history]
    if not rows:
        return Output(text=f"session {session.name!r}: no cells yet")
    return _table_output(STATS_COLUMNS, rows)


def stats_row(entry: dict) -> tuple[str, ...]:
    cell = entry["cell"]
    b, s = stats_contract.format_bytes, stats_contract.format_seconds
    return (str(cell["execution_count"] if cell["execution_count"] is not None else "-"),
            str(cell["status"]), s(cell["wall"]), s(cell["cpu_user"]), s(cell["cpu_system"]),
            b(cell["memory_peak"]), b(cell["memory_limit"]) if cell["memory_limit"] else "none",
            str(cell["pids_peak"] if cell["pids_peak"] is not None else cell["pids_current"]),
            b(cell["io_read"]), b(cell["io_write"]), b(cell["net_rx"]), b(cell["net_tx"]))


def _push(args, sessions: Sessions, namespace, on_output) -> Output:
    missing = [n for n in args.names if n not in namespace]
    if missing:
        raise UsageError(f"not defined in this kernel: {', '.join(missing)}")
    session, _ = sessions.open(args.name)
    session.push({n: namespace[n] for n in args.names})
    return Output(text=f"pushed {', '.join(args.names)} into {session.name!r}")


def _pull(args, sessions: Sessions, namespace, on_output) -> Output:
    values = sessions.get(args.name).pull(args.names)
    return Output(text=f"pulled {', '.join(values)} from {args.name!r}", values=values)


def _exec(args, sessions: Sessions, namespace, on_output) -> Output:
    session, _ = sessions.open(args.name)
    code, text = session.exec_command(args.argv, on_output=on_output)
    shown = "" if on_output is not None else text
    if code != 0:
        shown += f"[{shlex.join(args.argv)} exited with code {code}]\n"
    return Output(text=shown)


def _sessions(args, sessions: Sessions, namespace, on_output) -> Output:
    if not sessions.sessions:
        return Output(text="no sessions yet: a %%container cell creates one")
    rows = []
    for name, session in sorted(sessions.sessions.items()):
        info = session.status()
        rows.append((name + (" (on)" if sessions.auto == name else ""), info["image"], info["state"],
                     info["container"] or "-", describe_limits(session)))
    return _table_output(("session", "image", "state", "container", "limits"), rows)


def _on(args, sessions: Sessions, namespace, on_output) -> Output:
    sessions.auto = args.name
    return Output(text=f"every cell now runs in container session {args.name!r}; "
                       f"%container off to run cells here again")


def _off(args, sessions: Sessions, namespace, on_output) -> Output:
    was, sessions.auto = sessions.auto, None
    return Output(text="cells run in this kernel again" if was else "container mode was not on")


def _images(args, sessions: Sessions, namespace, on_output) -> Output:
    rows = [(r["name"], r["id"], str(r["layers"]),
             images.format_size(r["size"]) if r["size"] is not None else "-", r["created"], r["source"])
            for r in images.listing()]
    return _table_output(("name", "id", "layers", "size", "created", "source"), rows)


def _image(args, sessions: Sessions, namespace, on_output) -> Output:
    progress = NotebookProgress(on_output) if on_output is not None else images.Progress()
    if args.action == "ls":
        return _images(args, sessions, namespace, on_output)
    if args.action == "inspect":
        policies.check_reference(args.image)
        return Output(text=images.describe(images.inspect(args.image)))
    if args.action == "import":
        return _import(args, sessions, progress)
    if args.action == "pull":
        return _pull_image(args, sessions, progress)
    if args.action == "rm":
        return _remove(args, sessions)
    return _build(args, sessions, on_output)


def _import(args, sessions: Sessions, progress) -> Output:
    """The policy sees the path before anything reads it; the import reads
    the real path it approved, not the name (a symlink swapped in later)."""
    from ..runtime import image_sources
    if args.image_name is not None:
        sessions.policy.check_new_name(args.image_name)
    path = sessions.policy.check_import(args.path)
    source = image_sources.open_source(path)
    name = sessions.policy.check_new_name(args.image_name or source.name)
    image = images.add_image(source, name, progress=progress)
    sessions.made.add(image.name)
    return Output(text=f"imported {image.name} ({len(image.layers)} layer(s))")


def _pull_image(args, sessions: Sessions, progress) -> Output:
    """The registry and the name are checked before a socket is opened; a pull
    replaces an image of that name, so in a policy that removes only its own,
    it may replace only its own."""
    sessions.policy.check_pull(args.reference)
    name = sessions.policy.check_new_name(args.image_name or args.reference.split("@")[0])
    if images.load(name) is not None:
        sessions.policy.check_remove(name, sessions.made)
    image = images.pull(args.reference, name, progress=progress,
                        may_contact=sessions.policy.check_contact)   # every hop: redirects, realm
    sessions.made.add(image.name)
    return Output(text=f"pulled {image.name} ({len(image.layers)} layer(s))")


def _remove(args, sessions: Sessions) -> Output:
    sessions.policy.check_remove(args.image, sessions.made)
    users = sorted(n for n, s in sessions.sessions.items() if s.image == args.image and s.running)
    if users:
        raise UsageError(f"image {args.image!r} is in use by session(s) {', '.join(users)}: "
                         f"%container stop --name {users[0]} first")
    removed = images.remove(args.image)
    sessions.made.discard(args.image)
    return Output(text=f"removed {args.image}" + (f" and {len(removed)} layer(s)" if removed else ""))


def _build(args, sessions: Sessions, on_output) -> Output:
    """A build's network, base and limits are the policy's: by default in the
    classroom, no network and the caps as its limits."""
    policy = sessions.policy
    policy.check_new_name(args.image)
    network = policy.build_network(args.net)
    policy.check_build_base(args.base)

    def show(text: str) -> None:
        if on_output is not None:
            on_output("stream", {"name": "stdout", "text": text})
    image = images.build(args.image, args.base, args.script, network=network,
                         limits=policy.build_limits(Limits()), on_output=show)
    sessions.made.add(image.name)
    return Output(text=f"built {image.name}: {args.base} + one layer (net {network})")


class NotebookProgress(images.Progress):
    """A live bar in the notebook: one display, updated in place (through
    on_output's display_data / update_display_data with a display_id)."""

    INTERVAL = 0.25

    def __init__(self, on_output):
        self.on_output = on_output
        self.label, self.total, self.done, self.shown_at = "", None, 0, 0.0
        self.display_id = ""

    def start(self, label, total):
        self.label, self.total, self.done = label, total, 0
        self.display_id = f"sbk-progress-{secrets.token_hex(4)}"
        self._show("display_data", "")

    def advance(self, count):
        self.done += count
        if time.monotonic() - self.shown_at > self.INTERVAL:
            self._show("update_display_data", "")

    def end(self, note=""):
        self._show("update_display_data", note or "done")

    def _show(self, kind: str, note: str) -> None:
        self.shown_at = time.monotonic()
        size = images.format_size(self.done)
        text = f"{self.label}: {size}" + (f" of {images.format_size(self.total)}" if self.total else "")
        text += f" {note}" if note else ""
        bar = f'<progress value="{self.done}" max="{self.total}"></progress>' if self.total else ""
        self.on_output(kind, {"data": {"text/plain": text,
                                       "text/html": f"<div>{html.escape(self.label)} {bar} "
                                                    f"{html.escape(text[len(self.label) + 2:])}</div>"},
                              "metadata": {}, "transient": {"display_id": self.display_id}})


_COMMANDS = {"status": _status, "limits": _limits, "restart": _restart, "stop": _stop,
             "stats": _stats, "push": _push, "pull": _pull, "exec": _exec,
             "sessions": _sessions, "on": _on, "off": _off, "images": _images, "image": _image}


# ---------------------------------------------------------------------------
# Tables


def _table_output(columns, rows, header: bool = True) -> Output:
    return Output(text=text_table(columns, rows, header), html=html_table(columns, rows, header))


def text_table(columns, rows, header: bool = True) -> str:
    lines = ([tuple(columns)] if header else []) + [tuple(r) for r in rows]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(columns))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines)


def html_table(columns, rows, header: bool = True) -> str:
    head = ("<tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in columns) + "</tr>") if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="sandbox-kernel-table">{head}{body}</table>'
