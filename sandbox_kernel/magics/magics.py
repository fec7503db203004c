"""``%%container`` and ``%container``: the IPython face of sandbox sessions.

Outputs that come from the container are republished here as if the cell
had run in this kernel: stream text to sys.stdout/sys.stderr, display data
through IPython's display publisher (same data, metadata, display id),
clear_output through IPython.display.clear_output.  An exception in the
container fails this cell with the container's traceback (``ContainerError``
renders it and nothing of this side), unless --no-raise-error.

A ``%%container`` cell goes through the cell runner (session/runner.py);
this module is its output adapter (``_CellFace``) and the magics' options.
May import: IPython, the session (commands, runner, client's errors) and
the panel's NullStatsChannel; never the kernel.
"""
from __future__ import annotations

import builtins
import getpass
import shlex
import sys

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import clear_output, publish_display_data

from ..panel import NullStatsChannel
from ..session import commands, options, runner
from ..session.client import VariableError

RED, RESET = "\x1b[31m", "\x1b[0m"
HOST_ONLY_PREFIXES = ("%container", "%%container", "%unload_ext", "%reload_ext", "%load_ext")


def _cell_options(magic):
    """%%container's options as IPython's ``@argument`` decorators, from the
    one schema (session/options.py, the %%container face), in its order."""
    for flags, kwargs in reversed(options.arguments(options.CELL)):
        magic = argument(*flags, **kwargs)(magic)
    return magic


class ContainerError(Exception):
    """A sandboxed cell failed.  Shown as the container's traceback (and the
    plain-words message, if any), not as a traceback of this kernel."""

    def __init__(self, ename: str, evalue: str, traceback: list[str], message: str | None = None):
        super().__init__(f"{ename}: {evalue}" if ename else evalue)
        self.ename, self.evalue = ename, evalue
        self.container_traceback = list(traceback)
        self.message = message

    def _render_traceback_(self) -> list[str]:
        lines = list(self.container_traceback)
        if self.message:
            lines.append(f"{RED}{self.message}{RESET}")
        return lines or [f"{RED}{self}{RESET}"]


class Republisher:
    """on_output for Session.execute: shows each output here as it comes.
    The last error is kept to be raised; others are shown at once."""

    def __init__(self, keep_errors: bool):
        self.keep_errors = keep_errors
        self.error: dict | None = None

    def __call__(self, kind: str, content: dict) -> None:
        if kind == "stream":
            stream = sys.stderr if content["name"] == "stderr" else sys.stdout
            stream.write(content["text"])
            stream.flush()
        elif kind in ("display_data", "execute_result", "update_display_data"):
            extra = {"update": True} if kind == "update_display_data" else {}
            publish_display_data(content["data"], content.get("metadata") or {},
                                 transient=content.get("transient") or None, **extra)
        elif kind == "clear_output":
            clear_output(wait=content.get("wait", False))
        elif kind == "error":
            if self.error is not None or not self.keep_errors:
                self.show_error(self.error or content)
            self.error = content if self.keep_errors else None

    @staticmethod
    def show_error(content: dict) -> None:
        sys.stdout.flush()
        sys.stderr.write("\n".join(content.get("traceback") or
                                   [f"{content.get('ename')}: {content.get('evalue')}"]) + "\n")
        sys.stderr.flush()


class _CellFace:
    """The cell runner's Face for a %%container cell (session/runner.py):
    outputs through the Republisher, notes and the footer here."""

    def __init__(self, shown: Republisher, args):
        self.output = shown
        self.args = args

    def opened(self, session, notes: list[str]) -> None:
        for note in notes:
            print(note, file=sys.stderr)
        _set_trust(session, self.args)

    def concluded(self, run: runner.CellRun) -> None:
        """How the cell ended is said after the footer (ContainerMagics._end)."""

    def stats(self, stats: dict, footer: str) -> None:
        """Nothing here: ipykernel makes this cell's execute_reply, so the
        stats reach the labextension through the side panel's comm (its
        cell_end carries the cell's id, the stats contract and the
        footer's place, runner.py), which draws the footer beside the cell."""

    @staticmethod
    def footer(bundle: dict) -> None:
        publish_display_data(bundle)


def _set_trust(session, args) -> None:
    """--trust-output stays on for the session until --no-trust-output."""
    if args.trust_output and args.no_trust_output:
        raise UsageError("--trust-output and --no-trust-output: give one of them")
    if args.trust_output or args.no_trust_output:
        session.trust_output = bool(args.trust_output)


def _step_error(failed: runner.StepFailed) -> Exception:
    """What this cell fails with when a step around it failed: one line for
    a bad option, name or session; the VariableError as the container's error;
    anything else as it was raised."""
    error = failed.error
    if failed.step in ("open", "names") or isinstance(error, commands.UsageError):
        return UsageError(str(error))
    if isinstance(error, VariableError):
        return ContainerError("VariableError", str(error), [f"{RED}VariableError{RESET}: {error}"])
    return error


def _host_input(prompt: str, password: bool) -> str:
    """A container cell's input() and getpass(), asked through this kernel's
    own: ipykernel forwards them to the frontend (StdinNotImplementedError
    when it has no stdin; an interrupt ends the wait), a terminal reads them.
    Looked up at each call: ipykernel swaps them in for each cell."""
    return getpass.getpass(prompt) if password else builtins.input(prompt)


@magics_class
class ContainerMagics(Magics):
    """%%container runs a cell in a container; %container manages the sessions."""

    def __init__(self, shell, sessions: commands.Sessions):
        super().__init__(shell)
        self.sessions = sessions
        # the side panel's channel is NullStatsChannel until load_ipython_extension sets stats_channel
        self.runner = runner.CellRunner(sessions, NullStatsChannel())

    @property
    def stats_channel(self):
        return self.runner.panel

    @stats_channel.setter
    def stats_channel(self, channel) -> None:
        self.runner.panel = channel

    @magic_arguments(name="%container")
    @_cell_options
    @cell_magic("container")
    def container_cell(self, line: str, cell: str):
        """Run this cell inside a resource-limited Linux container.

        The container is started on first use and kept: variables live on
        between %%container cells of the same --name.  Limits given on the
        first cell create the session with them; on later cells they change
        it (memory, cpus and pids live; net and image on restart).

        Examples::

            %%container --memory 256M --cpus 0.5 --timeout 30s
            import numpy as np
            x = np.ones(10_000_000)

            %%container -i data -o total
            total = sum(data)

            %%container --shell
            hostname; ps aux; cat /proc/self/cgroup

            %%container --name grader --net none --no-raise-error
            exec(student_code)

        Under the cell comes a footer with the cell's figures (wall and
        cpu time, memory peak, pids, io), drawn by the sandbox-kernel
        labextension beside the outputs, which stay what the code produced:
        ``%container footer output`` makes it an output instead (for
        frontends without the extension), ``%container stats off`` hides it.

        ``%%container build NAME --from BASE`` runs the cell as a /bin/sh
        script in a container of image BASE (network host) and keeps what it
        wrote as image NAME (a docker commit)::

            %%container build tools --from busybox
            mkdir -p /opt/tools && printf '#!/bin/sh\necho hi\n' > /opt/tools/hi
            chmod +x /opt/tools/hi

        The script runs as uid 0 without capabilities: it can change what
        root owns in the image, not more.

        Output from the container is made inert for the browser: JavaScript
        and other active types are dropped, HTML, Markdown and SVG are
        sanitised (pandas tables, figures and LaTeX show as usual), because
        the code in the container is untrusted.  For your own code,
        ``--trust-output`` shows the session's output as it is from then on
        (the footer says "output trusted"); ``--no-trust-output`` ends that::

            %%container --trust-output
            from IPython.display import Javascript
            Javascript("console.log('hi')")
        """
        if line.split()[:1] == ["build"]:
            return self._build_image(line, cell)
        args = self._parse(self.container_cell, line)
        shown = Republisher(keep_errors=not args.no_raise_error)
        options = {"image": args.image, "net": args.net, "allow": args.allow, "rate": args.rate,
                   "memory": args.memory, "cpus": args.cpus, "pids": args.pids, "timeout": args.timeout}
        request = runner.Cell(
            cell, session=args.name, options=options, check_agent=True,
            command=["/bin/sh", "-c", cell] if args.shell else None,
            inputs=args.input, outputs=args.output, on_input=_host_input, footer=not args.no_stats,
            # the number the notebook shows for this cell (IPython 9 counts it up before the cell runs)
            execution_count=self.shell.displayhook.prompt_count)
        try:
            run = self.runner.run(request, _CellFace(shown, args), self.shell.user_ns)
        except runner.StepFailed as failed:
            error = _step_error(failed)
        else:
            return self._end(run, shown, args)
        raise error      # here, not in the except: no "during handling of StepFailed" in its traceback

    def _build_image(self, line: str, cell: str) -> None:
        try:
            argv = ["image", *shlex.split(line), "--run", cell]
            output = self.runner.host_command(argv, on_output=Republisher(keep_errors=False))
        except (commands.UsageError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        print(output.text)

    def _parse(self, magic, line: str):
        try:
            return parse_argstring(magic, line)
        except UsageError as exc:
            # one line: what was wrong, then what is accepted (%%container? shows the help)
            usage = " ".join(magic.parser.format_usage().lstrip(":").split()).replace(" [-h]", "")
            raise UsageError(f"%%container: {exc}; usage: {usage}") from None

    @staticmethod
    def _end(run: runner.CellRun, shown: Republisher, args) -> None:
        """Fail this cell as the container's cell failed (unless told not to)."""
        result, failed_command = run.result, run.failed_command
        if args.no_raise_error or (result.status == "ok" and not failed_command):
            if result.message:
                print(result.message, file=sys.stderr)
            return
        error = shown.error or {}
        if failed_command and not error:
            error = {"ename": "CalledProcessError", "evalue": f"the shell script exited with code "
                     f"{result.exit_code}", "traceback": []}
        ename = error.get("ename") or result.reply.get("ename") or "ContainerError"
        evalue = error.get("evalue") or result.reply.get("evalue") or ""
        traceback = error.get("traceback") or []
        if failed_command and not traceback:
            traceback = [f"{RED}{ename}{RESET}: {evalue}"]
        raise ContainerError(ename, evalue, traceback, result.message)

    @magic_arguments(name="container")
    @argument("subcommand", help="status, limits, restart, stop, stats, footer, push, pull, exec, "
                                 "sessions, on, off, images, image")
    @argument("arguments", nargs="*", help="the subcommand's arguments (%%container SUBCOMMAND -h)")
    @line_magic("container")
    def container_line(self, line: str):
        """Manage the sandbox sessions of this kernel.

        Subcommands::

            %container status [--name N]          name, image, limits, state, pid, uptime, figures
            %container limits [--name N] [--memory 1G] [--cpus 2] [--pids 256] [--timeout 1m]
                              [--net none|host] [--image NAME]
            %container restart [--name N]         a fresh container (variables are lost)
            %container stop [--name N]            destroy the container
            %container stats [--name N]           the last cells' figures
            %container stats off | on             hide or show the footer under each cell
            %container footer beside|output|off   the footer beside the cell (the default),
                                                  as an output, or none
            %container push NAMES [--name N]      copy variables into the container
            %container pull NAMES [--name N]      copy variables out of it
            %container exec [--name N] -- CMD     run a program in the container (docker exec)
            %container sessions                   the sessions of this kernel
            %container on [--name N]              every following cell runs in the container
            %container off                        cells run in this kernel again
            %container images                     the images there are
            %container image import PATH [--name N] | inspect NAME | rm NAME | pull REF

        Examples::

            %container limits --memory 1G
            %container exec -- ps aux
            %container pull result
        """
        try:
            output = self.runner.host_command(line, namespace=self.shell.user_ns,
                                              on_output=Republisher(keep_errors=False))
        except (commands.UsageError, commands.PolicyRefused) as exc:
            raise UsageError(str(exc)) from None
        self.shell.user_ns.update(output.values)
        if output.html:
            publish_display_data({"text/plain": output.text, "text/html": output.html})
        elif output.text:
            print(output.text.rstrip("\n"))

    def auto_transformer(self, lines: list[str]) -> list[str]:
        """With %container on: every cell becomes a %%container cell, except
        those that manage the sessions or the extension."""
        name = self.sessions.auto
        if name is None:
            return lines
        first = next((line.strip() for line in lines if line.strip()), "")
        if not first or first.startswith(HOST_ONLY_PREFIXES):
            return lines
        return [f"%%container --name {shlex.quote(name)}\n", *lines]
