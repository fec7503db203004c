"""The ``%container`` subcommands, parsed and run once against the sessions.

The magics (``%container``) and the sandbox kernel are both thin faces over
``run``: they hand it the line the user typed and show the ``Output`` it
returns.  Nothing here imports IPython (the sandbox kernel has no host-side
IPython shell).

    %container status | limits | restart | stop | pause | resume | stats | footer |
               push | pull | exec | sessions | on | off | images | image ...

``footer beside|output|off`` says where the stats footer goes for the
sessions of this kernel (session/runner.py): beside the cell (drawn by the
labextension; the outputs stay the code's), as an output, or nowhere;
``stats on|off`` turns it on (where it was) or off, as it always did.

Each subcommand's help is declared once, in options.py (SUBCOMMANDS,
IMAGE_ACTIONS), and so are the options of ``%container limits``, shared
with ``sandbox-kernel run``, ``%%container`` and the kernel's settings:
``%container -h`` and ``%container limits -h`` show them.  The sessions and
the warm pool are registry.py's; the one-line usage errors usage.py's.

Every action on the host asks the sessions' policy first (policy.py: the kernel's
installer sets it, classroom by default; the magics run ``trusted``).  A refusal
is ``PolicyRefused``, one line, and nothing was done.

A mistake (unknown subcommand or option, a missing or bad value) raises
``UsageError``: one line, what was wrong and what is accepted (``unknown
subcommand 'frobnicate'; usage: %container status|limits|...``); ``-h`` helps.
Imports runtime.images/spec (layers when a command failed), and of the session
client, options, policy, registry, stats and usage.  No IPython.
"""
from __future__ import annotations

import argparse
import html
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..runtime import images
from ..runtime.spec import Limits, SpecError
from . import options, policy as policies, stats as stats_contract
from .client import Session, SessionError
from .options import DEFAULT_SESSION, NETWORK_OPTIONS  # noqa: F401 -- the magics and the kernel import it here
from .policy import PolicyRefused  # noqa: F401 -- the magics import it here
# moved to registry.py and usage.py (issue 16); the magics, kernel and tests import them here
from .registry import (  # noqa: F401
    DEFAULT_POOL, LIMIT_OPTIONS, MAX_POOL, NOTEBOOK_ENV, POOL_ENV, Sessions, change_notes,
    describe_limits, parse_limits, pool_size)
from .usage import (  # noqa: F401
    HelpRequested, OneLineParser, UsageError, one_line, one_line_usage, split_names, unexpected)


@dataclass
class Output:
    """What a command shows: text (always), html (optional), and for pull the
    values to set in the caller's namespace."""
    text: str = ""
    html: str | None = None
    values: dict = field(default_factory=dict)


HELP_DESCRIPTION = (
    "Manage the sandbox sessions of this kernel.\n\n"
    "In the sandbox kernel every cell runs in the container and %container lines (at the top of a "
    "cell) run on the host.\nIn an ordinary IPython kernel, after %load_ext sandbox_kernel, "
    "%%container [options] runs one cell in a container\nand %container manages the sessions; "
    "%container limits takes the limits %%container does.")
HELP_EPILOG = (
    "Examples:\n  %container status\n  %container limits --memory 1G --cpus 2\n"
    "  %container exec -- ps aux\n  %container pull result\n  %container footer output    "
    "(the stats footer as an output, for frontends without the labextension)\n"
    "%container SUBCOMMAND -h (or %container SUBCOMMAND?) shows a subcommand's help.")


# ---------------------------------------------------------------------------
# Parsing: the subcommands' help and the options of %container limits come
# from options.py, as do the CLI's and the kernel's


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="%container", description=HELP_DESCRIPTION, epilog=HELP_EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True,
                                parser_class=OneLineParser)
    commands = {name: sub.add_parser(name, help=text, description=text)
                for name, text in options.SUBCOMMANDS.items()}
    flags, session_name = options.argument("name", options.LIMITS)   # the session's --name
    for name in ("status", "restart", "stop", "pause", "resume", "stats", "push", "pull", "exec", "on"):
        commands[name].add_argument(*flags, **session_name)
    options.add_arguments(commands["limits"], options.LIMITS)        # --name too
    commands["stats"].add_argument("switch", nargs="?", choices=("on", "off"),
                                   help="show the footer under each cell, or not")
    commands["footer"].add_argument("place", choices=options.FOOTER_MODES,
                                    help="beside: under the cell, drawn by the labextension (the "
                                         "outputs stay the code's); output: as an output, for "
                                         "frontends without it; off: none")
    for name in ("push", "pull"):
        commands[name].add_argument("names", nargs="+", metavar="NAMES",
                                    help="variable names, by spaces or commas")
    commands["exec"].add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD",
                                  help="the program and its arguments")
    _add_image_actions(commands["image"])
    return parser


def _add_image_actions(parser) -> None:
    helps, arguments = options.IMAGE_ACTIONS, options.IMAGE_ARGUMENTS
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True,
                                    parser_class=OneLineParser)
    actions.add_parser("ls", help=helps["ls"])
    imp = actions.add_parser("import", help=helps["import"])
    imp.add_argument("path", help=arguments["path"])
    imp.add_argument("--name", dest="image_name", help="the image's name (default: from the file)")
    for action in ("inspect", "rm"):
        actions.add_parser(action, help=helps[action]).add_argument("image")
    pull = actions.add_parser("pull", help=helps["pull"])
    pull.add_argument("reference", help=arguments["reference"])
    pull.add_argument("--name", dest="image_name", help="store it under this name")
    build = actions.add_parser("build", help=helps["build"])
    build.add_argument("image", help="the new image's name")
    build.add_argument("--from", dest="base", required=True, help=arguments["base"])
    build.add_argument("--run", dest="script", required=True, help=arguments["script"])
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
    if argv and argv[-1].endswith("?") and argv[0] != "exec":    # "?", "??", "limits?", "image rm ?"
        argv = [*argv[:-1], *filter(None, [argv[-1].rstrip("?")]), "-h"]
    if argv[:1] and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        raise UsageError(f"%container: unknown option {argv[0]} before the subcommand; "
                         f"usage: {one_line_usage(parser)}")
    args, extra = parser.parse_known_args(argv)
    innermost = _innermost(parser, args)
    if extra:
        raise UsageError(f"{innermost.prog}: {unexpected(extra)}; usage: {one_line_usage(innermost)}")
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
    except (SpecError, SessionError, images.ImageNotFound, images.ImageError, images.BuildError, _layer_error()) as exc:
        text = str(exc.args[0]) if isinstance(exc, LookupError) else str(exc)
        raise UsageError(one_line(text)) from None


def _layer_error() -> type:
    from ..runtime.layers import LayerError   # tarfile, gzip: when a command failed, not at start
    return LayerError


def _status(args, sessions: Sessions, namespace, on_output) -> Output:
    info = sessions.get(args.name).status()
    rows = [("session", info["name"]), ("image", info["image"]), ("network", info.get("network_words", info["network"])),
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
    idle = session.set_idle_pause(args.idle_pause) + session.set_on_pressure(args.on_pressure) \
        if (args.idle_pause, args.on_pressure) != (None, None) else []   # pausing, pressure_watch
    given = {k: getattr(args, k) for k in (*LIMIT_OPTIONS, *NETWORK_OPTIONS, "image") if getattr(args, k) is not None}
    if not given:
        return Output(text="\n".join(idle) or f"session {session.name!r}: {describe_limits(session)}\n"
                                               f"policy: {sessions.policy.describe()}")
    limits = {k: v for k, v in given.items() if k in LIMIT_OPTIONS}
    sessions.check_changes(limits, given.get("image"), given.get("net"))
    sessions.check_egress(session, given.get("net"), given.get("allow"), given.get("rate"))
    notes = change_notes(session, session.set_limits(**given)) + idle
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
        _switch_footer(sessions, args.switch == "on")
        return Output(text=f"stats footer {'on' if sessions.footer else 'off'}")
    session = sessions.get(args.name)
    rows = [stats_row(entry) for entry in session.cell_history]
    if not rows:
        return Output(text=f"session {session.name!r}: no cells yet")
    return _table_output(STATS_COLUMNS, rows)


FOOTER_WORDS = {"beside": "beside each cell (the sandbox-kernel labextension draws it; "
                          "the outputs stay what the code produced)",
                "output": "an output after each cell's outputs (for frontends without the "
                          "labextension)",
                "off": "off"}


def _switch_footer(sessions: Sessions, on: bool) -> None:
    """stats on|off: off keeps where the footer was (``footer_when_on``),
    on brings it back there (beside if it never was on)."""
    if on:
        if not sessions.footer:
            sessions.footer = getattr(sessions, "footer_when_on", True)
    else:
        if sessions.footer:
            sessions.footer_when_on = sessions.footer
        sessions.footer = False


def _footer(args, sessions: Sessions, namespace, on_output) -> Output:
    """footer beside|output|off, for every session of this kernel; off is
    False, as ``stats off`` has it."""
    sessions.footer = False if args.place == "off" else args.place
    return Output(text=f"stats footer: {FOOTER_WORDS[args.place]}")


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
    """The registry and the name are checked before a socket is opened; a pull replaces an
    image of that name, so in a policy that removes only its own, it may replace only its own."""
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
             "stats": _stats, "footer": _footer, "push": _push, "pull": _pull, "exec": _exec,
             "sessions": _sessions, "on": _on, "off": _off, "images": _images, "image": _image,
             "pause": lambda args, sessions, *_: Output(text=sessions.get(args.name).pause()),
             "resume": lambda args, sessions, *_: Output(text=sessions.get(args.name).resume())}


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
