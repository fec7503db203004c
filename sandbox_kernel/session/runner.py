"""One cell runner for both faces: the ``%%container`` magics in an ordinary
IPython kernel (magics/magics.py) and the sandbox kernel (kernel/kernel.py).

Where a cell goes, in order (``CellRunner.run``)::

    open the session        commands.Sessions.open (new, or changed by the options)
    face.opened             the face shows the notes (and applies its own switches)
    split -i / -o names     commands.split_names
    push -i                 Session.push, from the face's namespace
    panel.cell_started      the side panel's mark of the start
    execute / command       Session.execute, or Session.run_command (argv in the container)
    panel.cell_finished     the mark of the end (stats None if the cell raised), with the
                            footer's place: the labextension draws the magics' footer from it
    pull -o                 Session.pull, into the face's namespace (only after a cell that succeeded)
    face.concluded          the face says how the cell ended (errors, notices)
    face.stats              the cell's stats and the footer's place (the sandbox kernel puts
                            them in the execute_reply's metadata)
    face.footer             the stats footer as an output (stats.footer_bundle), last; only
                            where the footer's place is "output"

Where the footer goes (``footer_place``): "beside" by default, where the
outputs stay what the code produced and the labextension draws the stats
under the cell (from the reply's metadata in the sandbox kernel, from the
side panel's cell_end with the magics, whose reply ipykernel makes);
"output" for frontends without the extension (a display_data, as before);
"off".  The Sessions' ``footer`` says it (``%container footer``,
``%container stats on|off``, the kernel's setting), and a cell's own
``footer=False`` (--no-stats) turns it off for that cell.

The faces are output adapters: a ``Face`` says how outputs, errors and the
footer reach their frontend; the runner never imports IPython or ipykernel.
A step that fails raises ``StepFailed``: the step's name (open, names,
push, execute, pull) and the error it had, for the face to say (one line
for the user's mistakes); the runner keeps no state of that cell, so the
next one runs as usual.  Open, names, push and pull wrap only the errors
they are expected to have (a bad option, an unknown image, a variable that
cannot be copied); execute wraps every Exception (SessionBusy, a container
that cannot start), after the panel's end mark.  A KeyboardInterrupt or an
error of the face itself comes out of ``run`` as it was raised.

May import: sandbox_kernel.session (commands, client, image_agent, options, stats)
and the runtime's error types.  Never the panel (it is passed in), the
magics or the kernel.
"""
from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..runtime.images import ImageNotFound
from ..runtime.spec import SpecError
from . import commands, image_agent
from .client import SessionError, VariableError
from .options import parse_footer
from .stats import footer_bundle, with_notebook_dir

# what opening a session is expected to fail with: a bad option or value, an unknown image, a session not made
OPEN_ERRORS = (SpecError, SessionError, ImageNotFound, commands.UsageError)


class Panel(Protocol):
    """The side panel's channel (panel/channel.py StatsChannel, or NullStatsChannel)."""

    def cell_started(self, session, *, execution_count: int | None = None) -> None: ...
    def cell_finished(self, session, stats: dict | None, *, footer: str = "beside") -> None: ...


class Face(Protocol):
    """How one cell's outputs, errors and footer reach the frontend."""

    def opened(self, session, notes: list[str]) -> None: ...
    def output(self, kind: str, content: dict) -> None: ...
    def concluded(self, run: CellRun) -> None: ...
    def stats(self, stats: dict, footer: str) -> None: ...
    def footer(self, bundle: dict) -> None: ...


class StepFailed(Exception):
    """A step of the cell failed: ``step`` is open, names, push, execute or
    pull; ``error`` the exception it had (str of it is the line to show)."""

    def __init__(self, step: str, error: BaseException):
        super().__init__(str(error))
        self.step, self.error = step, error


@dataclass
class Cell:
    """One cell as a face asks for it.

    session/options   the session's name; image, net and limits for Sessions.open
    change_existing   options change an existing session (magics) or only make a new one (kernel)
    check_agent       say now if the session's image cannot run the agent (image_agent)
    command           argv to run in the container instead of ``code`` (--shell)
    inputs/outputs    -i / -o as typed ("a,b"), read from / written to the namespace
    footer            False: no footer for this cell (else the Sessions' place holds)
    execution_count   the number the panel shows for the cell (None: the agent's)
    """

    code: str
    session: str = commands.DEFAULT_SESSION
    options: dict = field(default_factory=dict)
    change_existing: bool = True
    check_agent: bool = False
    command: list[str] | None = None
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    silent: bool = False
    store_history: bool = True
    user_expressions: dict | None = None
    on_input: Callable[[str, bool], str] | None = None
    footer: bool = True
    execution_count: int | None = None


@dataclass
class CellRun:
    """What became of a cell: the session it ran in, its CellResult, and
    whether its container died and a fresh one was started for the next
    (CellResult.restarted: the session knows, the faces need not guess)."""

    session: Any
    result: Any
    restarted: bool
    command: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def failed_command(self) -> bool:
        """A command (--shell) that ran and exited with a non-zero code."""
        return self.command and self.result.exit_code not in (0, None)

    @property
    def succeeded(self) -> bool:
        """The cell ran to the end without an error (a command: with exit code 0)."""
        return self.result.status == "ok" and (not self.command or self.result.exit_code == 0)


class CellRunner:
    """Runs the cells of one face over its Sessions, marking them on its panel."""

    def __init__(self, sessions: commands.Sessions, panel: Panel):
        self.sessions = sessions
        self.panel = panel

    def open(self, name: str, options: dict, *, change_existing: bool = True):
        """(session, notes): the session ``name``, made with ``options`` if
        new; an existing one is changed by them only if ``change_existing``."""
        if not change_existing:
            existing = self.sessions.sessions.get(name)
            if existing is not None:
                return existing, []
        return self.sessions.open(name, **options)

    def host_command(self, line, *, namespace: dict | None = None,
                     on_output: Callable[[str, dict], None] | None = None) -> commands.Output:
        """A ``%container`` line, run on the host (commands.run)."""
        return commands.run(line, self.sessions, namespace=namespace, on_output=on_output)

    def footer_place(self, cell: Cell) -> str:
        """beside, output or off: the Sessions' place, off for a cell that asked."""
        return parse_footer(self.sessions.footer) if cell.footer else "off"

    def run(self, cell: Cell, face: Face, namespace: MutableMapping | None = None) -> CellRun:
        """Run ``cell`` through every step (the module's docstring has them)."""
        namespace = {} if namespace is None else namespace
        place = self.footer_place(cell)
        session, notes = self._open(cell)
        face.opened(session, notes)
        inputs, outputs = self._names(cell.inputs), self._names(cell.outputs)
        if inputs:
            self._push(session, inputs, namespace)
        result = self._execute(session, cell, face, place)
        run = CellRun(session, result, result.restarted, cell.command is not None, notes)
        if outputs and run.succeeded:
            self._pull(session, outputs, namespace)
        face.concluded(run)
        stats = with_notebook_dir(result.stats, commands.footer_dir(session))
        face.stats(stats, place)
        if place == "output":
            face.footer(footer_bundle(stats))
        return run

    def _open(self, cell: Cell):
        try:
            session, notes = self.open(cell.session, cell.options,
                                       change_existing=cell.change_existing)
            if cell.check_agent:
                image_agent.require_agent(session.image)   # an image without python3: say so now
        except OPEN_ERRORS as error:
            raise StepFailed("open", error) from None
        return session, notes

    @staticmethod
    def _names(items) -> list[str]:
        try:
            return commands.split_names(items) if items else []
        except commands.UsageError as error:
            raise StepFailed("names", error) from None

    @staticmethod
    def _push(session, names: list[str], namespace) -> None:
        missing = [n for n in names if n not in namespace]
        if missing:
            raise StepFailed("push", commands.UsageError(
                f"-i: not defined in this kernel: {', '.join(missing)}"))
        try:
            session.push({n: namespace[n] for n in names})
        except VariableError as error:
            raise StepFailed("push", error) from None

    @staticmethod
    def _pull(session, names: list[str], namespace) -> None:
        try:
            namespace.update(session.pull(names))
        except VariableError as error:
            raise StepFailed("pull", error) from None

    def _execute(self, session, cell: Cell, face: Face, place: str):
        """The cell or its command, between the panel's marks."""
        self.panel.cell_started(session, execution_count=cell.execution_count)
        result = None
        try:
            if cell.command is not None:
                result = session.run_command(cell.command, on_output=face.output)
            else:
                result = session.execute(cell.code, silent=cell.silent,
                                         store_history=cell.store_history, on_output=face.output,
                                         user_expressions=cell.user_expressions,
                                         on_input=cell.on_input)
        except Exception as error:     # SessionBusy, a container that cannot start: the face says it
            raise StepFailed("execute", error) from None
        finally:
            self.panel.cell_finished(session, result.stats if result is not None else None,
                                     footer=place)
        return result
