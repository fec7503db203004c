"""The agent: the process inside the container that runs the cells.

Started by the container's init, with its end of the host's socketpair
inherited as a file descriptor::

    python -m sandbox_kernel.session.agent --fd 3

It builds one IPython ``InteractiveShell`` (not an ipykernel: no ZeroMQ, no
Jupyter session) whose output machinery speaks the frames of ``protocol.py``
instead of printing:

    sys.stdout / sys.stderr  -> OutputStream   -> "stream" frames while the cell runs
    display(), figures       -> AgentDisplayPublisher -> "display_data", "clear_output"
    the cell's last value    -> AgentDisplayHook      -> "execute_result"
    a traceback              -> AgentShell._showtraceback -> "error"

then serves one request at a time until ``shutdown`` or EOF (exit 0).

Where things are: this module has the requests of a cell (Agent) and the
start-up; agent_shell.py the IPython shell, its display hooks and magics;
the agent core, shared with the plain agent and stdlib only, the rest:
agent_core.py (channel, interrupt gate, serve loop, output limit),
agent_output.py (budget, streams), agent_stdin.py (input()),
agent_command.py (the command request).

Decisions worth knowing:

* Only Python-level output is captured.  File descriptors 1 and 2 stay what
  the container gave the agent, so a C extension or a subprocess writing to
  them directly (``os.system``, ``subprocess.run`` without ``capture_output``)
  goes to the container's log, not to the notebook.  ``!cmd`` is captured:
  IPython reads its output and writes it to ``sys.stdout``.
* Output is bounded per cell: stream text, displays and the result share
  SANDBOX_KERNEL_OUTPUT_LIMIT bytes (default 1 MiB; "512K", "4M" also work).
  Past it, text is dropped inside the agent, a display or result is sent as
  the head of its text/plain with a line saying so (RichOutputs), the cell
  keeps running, and one notice on stderr says what was cut when the cell
  ends.  Errors are cut to ERROR_TEXT and ERROR_TRACEBACK characters.  So
  every frame of a cell fits protocol.cell_frame_limit, the host's bound.
* SIGINT raises KeyboardInterrupt only while a cell runs, and never while a
  frame is half written (it waits for the frame to end): an interrupt must
  not cut the protocol stream.  Idle, SIGINT is ignored.  A Python handler,
  not SIG_IGN, so that processes the cell starts get the default SIGINT.
* A child forked by the cell (os.fork, multiprocessing) has no channel: its
  output goes to file descriptors 1 and 2, and it closes its copy of the
  socket, so that the host still sees EOF when the agent exits.
* Zombies: the children a cell forked and never waited for are reaped when
  the cell ends (reaping.py), so they do not hold the container's pids
  limit; a child that a live subprocess.Popen or multiprocessing object
  will wait for is left alone, and keeps its exit code.
* Input: ``input()`` and ``getpass.getpass()`` send an ``input_request``
  frame and wait for the host's ``input_reply`` (the frontend's answer),
  when the execute request says allow_stdin; else they raise
  StdinNotImplementedError, as ipykernel does for a frontend without stdin.
  An interrupt ends the wait with KeyboardInterrupt.  Only the cell's own
  (main) thread may ask.
* As in ipykernel: cells are compiled under the names ipykernel gives them,
  ``/tmp/ipykernel_PID/HASH.py`` (CellCompiler), so SyntaxErrors, warnings,
  tracebacks and pdb read the same; ``sys.path`` is the container's: ''
  (the working directory at each import) before site-packages, and no entry
  that does not exist inside (the host's, inherited from a zygote).
* Also as in ipykernel: its own magics (%autosave %clear %less %more %man
  %subshell; the pager is the reply's payload) and storemagic's %store, so
  %lsmagic lists the same; %connect_info and %qtconsole say on stderr that
  the container never sees the connection file.  File names under the
  kernel owner's home (SANDBOX_KERNEL_OWNER_HOME, from the host, removed
  from the cells' environment) read ~/... in tracebacks, as the owner's
  ipykernel writes them; the container's own HOME is not abbreviated.  A
  refused input() raises in the one frame the cell called.
* Comms: a real comm manager behind the ``comm`` package's hooks
  (agent_comm.py), so ipywidgets' widgets open comms whose messages leave
  as frames, and the frontend's messages to them come back as requests,
  run like a cell; ``get_ipython().kernel.get_parent()`` is the frontend's
  message the host is answering (the Output widget captures by it).
* History lives in memory (the container is thrown away with the session),
  and IPython's profile directory is a private temporary one unless
  IPYTHONDIR is set: the container's HOME may not exist or be writable.

This module must stay light: it imports nothing from sandbox_kernel.runtime,
nor anything else of the host's side (client, commands).
"""
from __future__ import annotations

import argparse
import builtins
import getpass
import os
import pickle
import shutil
import sys
import tempfile

from IPython.core.completer import provisionalcompleter, rectify_completions
from IPython.core.error import StdinNotImplementedError
from IPython.utils.tokenutil import token_at_cursor

from . import protocol
from . import agent_stdin
from .agent_core import (AgentCore, Channel, RequestError, StartError, bounded_error, error,
                         field, open_channel, run_agent)
from .agent_comm import CommRequests, install_comms
from .agent_output import OutputBudget, RichOutputs, make_streams
from .agent_shell import AgentShell, compress_owner_home, make_shell
from .agent_core import container_sys_path
from .reaping import ChildReaper
from .agent_core import DEFAULT_OUTPUT_LIMIT, OUTPUT_LIMIT_ENV, parse_size  # noqa: F401 -- moved; tests/unit/test_agent.py still imports them here
from .agent_shell import murmur2_x86  # noqa: F401 -- moved; tests/unit/test_agent.py still imports it here

OWNER_HOME_ENV = "SANDBOX_KERNEL_OWNER_HOME"   # the kernel owner's HOME (client.py); not a cell's
COMPLETION_TYPES_KEY = "_jupyter_types_experimental"
ZYGOTE_PRELOAD = (
    # What InteractiveShell() and the first cells import (a traceback's
    # colouring among them) beyond this module's own imports.  A zygote
    # (runtime/zygote.py) imports these while it waits for requests, so a
    # forked agent starts without importing them: about half of its shell's
    # start, and their pages stay shared between the agents instead of one
    # copy each.
    # Plain imports: no thread, no file left open, no instance.
    "IPython.core.application", "IPython.core.completerlib", "IPython.core.crashhandler",
    "IPython.core.logger", "IPython.core.magics", "IPython.core.oinspect",
    "IPython.utils.wildcard", "sqlite3", "unicodedata", "hashlib", "decimal", "fractions",
    "executing", "pure_eval", "stack_data", "pygments.formatters.html",
    "pygments.formatters.terminal256", "pygments.lexers.python", "pygments.styles",
    # and what a fresh agent still imported after its fork (issue 16's and 17's
    # parts: the comm manager; uuid for comm ids; the shell's debugger and
    # storemagic)
    "comm", "uuid", "bdb", "platform", "runpy", "IPython.extensions.storemagic",
)


# ---------------------------------------------------------------------------
# input() and getpass(): asked of the host's frontend


class StdinForwarder(agent_stdin.StdinForwarder):
    """agent_stdin's forwarder, raising IPython's StdinNotImplementedError."""

    not_implemented = StdinNotImplementedError

    # A refusal is raised here, in the one frame the cell called, as
    # ipykernel raises it in Kernel.raw_input: its traceback shows one
    # frame of the kernel's, not the forwarder's inner workings.
    def input(self, prompt="") -> str:
        refusal = self.refusal("raw_input")
        if refusal:
            raise refusal
        return self.ask(str(prompt), False)

    def getpass(self, prompt="Password: ", stream=None, **_terminal_only) -> str:
        refusal = self.refusal("getpass")
        if refusal:
            raise refusal
        return self.ask(str(prompt), True)


def install_stdin(shell: AgentShell, channel: Channel) -> StdinForwarder:
    """builtins.input and getpass.getpass of the cells ask the host's frontend."""
    shell.stdin_forwarder = StdinForwarder(channel)
    builtins.input = shell.stdin_forwarder.input
    getpass.getpass = shell.stdin_forwarder.getpass
    return shell.stdin_forwarder


# ---------------------------------------------------------------------------
# Requests


class Agent(CommRequests, AgentCore):
    """The requests of an IPython shell's cells (the serve loop, command,
    update_environ and shutdown are the core's: agent_core.AgentCore; the
    frontend's comm messages agent_comm.CommRequests)."""

    def __init__(self, channel: Channel, shell: AgentShell, budget: OutputBudget,
                 streams: list, reaper: ChildReaper = None, comm_manager=None):
        super().__init__(channel, budget, streams, reaper or ChildReaper())
        self.shell = shell
        self.comm_manager = comm_manager

    def warm_up(self) -> None:
        """Run an empty cell if no request waits yet (a container started
        ahead, for the warm pool): a shell's first cell sets up and caches
        what every later one reuses, a few ms the user's first cell then does
        not wait for.  Silent and out of the history: the execution count
        stays where it was."""
        if self.no_request_waits():
            self.shell.run_cell("pass", store_history=False, silent=True)

    def finished(self, request: dict) -> bool:
        return super().finished(request) or self.shell.exit_now

    # -- execute ------------------------------------------------------------

    def do_execute(self, request: dict) -> dict:
        code = field(request, "code", str)
        silent = bool(request.get("silent", False))
        store_history = bool(request.get("store_history", not silent))
        expressions = request.get("user_expressions") or {}
        self.last_execute_id = request.get("id")
        if self.shell.kernel is not None:
            self.shell.kernel.follow(request)   # the Output widget captures for this parent
        self.begin_output()               # zombies made between cells (a thread of the user's) too
        self.shell.reset_error_state()
        count_from = request.get("count_from")
        if type(count_from) is int and count_from > self.shell.execution_count:
            self.shell.execution_count = count_from   # a fresh container goes on counting
        result, escaped, evaluated = None, None, {}
        stdin = self.shell.stdin_forwarder
        stdin.allowed = request.get("allow_stdin") is True
        try:
            with self.channel.gate.cell(request.get("pressure_words")):   # the host's MemoryError words
                result = self.shell.run_cell(code, store_history=store_history, silent=silent)
                if result.success and not self.shell.traceback_in_displayhook:
                    evaluated = self.shell.user_expressions(expressions)
        except KeyboardInterrupt as exc:
            # The interrupt came while IPython's own code ran (a post_execute
            # hook, say), outside the cell's try: show it like one in the cell.
            escaped = exc
            self.shell.showtraceback()
        finally:
            stdin.allowed = False
        self.end_output()
        return self._execute_reply(result, escaped, evaluated)

    def _execute_reply(self, result, escaped, evaluated) -> dict:
        shell = self.shell
        ok = escaped is None and result.success and not shell.traceback_in_displayhook
        content = {"status": "ok" if ok else "error", "execution_count": shell.execution_count - 1}
        if not ok:
            err = escaped or result.error_before_exec or result.error_in_exec
            if err is not None:
                ename, evalue, _ = bounded_error(type(err).__name__, str(err), [])
            else:                        # a traceback shown by IPython, not raised by the cell
                ename, evalue = shell.last_error or ("Error", "")
            content.update(ename=ename, evalue=evalue, traceback=shell._last_traceback or [])
        content["user_expressions"] = evaluated if ok else {}
        content["payload"] = shell.payload_manager.read_payload()
        shell.payload_manager.clear_payload()
        return content

    # -- the editor's requests ------------------------------------------------

    def do_complete(self, request: dict) -> dict:
        code = field(request, "code", str)
        cursor_pos = request.get("cursor_pos")
        if cursor_pos is None:
            cursor_pos = len(code)
        with provisionalcompleter():
            completions = list(rectify_completions(
                code, self.shell.Completer.completions(code, cursor_pos)))
        start, end = (completions[0].start, completions[0].end) if completions else (cursor_pos, cursor_pos)
        types = [{"start": c.start, "end": c.end, "text": c.text, "type": c.type,
                  "signature": c.signature} for c in completions]
        return {"status": "ok", "matches": [c.text for c in completions],
                "cursor_start": start, "cursor_end": end,
                "metadata": {COMPLETION_TYPES_KEY: types}}

    def do_inspect(self, request: dict) -> dict:
        code = field(request, "code", str)
        cursor_pos = request.get("cursor_pos")
        name = token_at_cursor(code, len(code) if cursor_pos is None else cursor_pos)
        content = {"status": "ok", "found": False, "data": {}, "metadata": {}}
        try:
            bundle = self.shell.object_inspect_mime(
                name, detail_level=int(request.get("detail_level", 0)))
        except KeyError:                 # IPython's way of saying "no such name"
            return content
        if not self.shell.enable_html_pager:
            bundle.pop("text/html", None)
        content.update(found=True, data=bundle)
        return content

    def do_is_complete(self, request: dict) -> dict:
        code = field(request, "code", str)
        status, indent = self.shell.input_transformer_manager.check_complete(code)
        content = {"status": status}
        if status == "incomplete":
            content["indent"] = " " * (indent or 0)
        return content

    def do_history(self, request: dict) -> dict:
        history = self.shell.history_manager
        kind = request.get("hist_access_type", "tail")
        raw, output = bool(request.get("raw", True)), bool(request.get("output", False))
        if kind == "tail":
            entries = history.get_tail(request.get("n") or 10, raw=raw, output=output,
                                       include_latest=True)
        elif kind == "range":
            entries = history.get_range(request.get("session", 0), request.get("start", 0),
                                        request.get("stop"), raw=raw, output=output)
        elif kind == "search":
            entries = history.search(request.get("pattern") or "*", raw=raw, output=output,
                                     n=request.get("n"), unique=bool(request.get("unique", False)))
        else:
            raise RequestError(f"history request: unknown hist_access_type {kind!r}")
        return {"status": "ok", "history": [list(entry) for entry in entries]}

    # -- variables ------------------------------------------------------------

    def do_push(self, request: dict) -> dict:
        text = field(request, "values", str)
        try:
            values = protocol.unpack_values(text)
        except Exception as exc:         # whatever the pickle's classes raise
            return error(type(exc).__name__, f"could not unpickle the pushed values: {exc}")
        for name in values:
            if not (isinstance(name, str) and name.isidentifier()):
                return error("NameError", f"cannot push {name!r}: not a variable name", name=name)
        self.shell.push(values, interactive=True)
        return {"status": "ok", "values": sorted(values)}

    def do_pull(self, request: dict) -> dict:
        names = field(request, "names", list)
        values = {}
        for name in names:
            if not isinstance(name, str) or name not in self.shell.user_ns:
                return error("NameError", f"name {name!r} is not defined", name=name)
            values[name] = self.shell.user_ns[name]
        try:
            text = protocol.pack_values(values)
        except Exception:                # find which variable, and say why
            return self._unpicklable(values)
        if len(text) + 1024 > self.channel.max_frame:
            return error("ProtocolError", f"the pulled values pickle to {len(text)} bytes of base64, "
                         f"over the {self.channel.max_frame}-byte frame limit")
        return {"status": "ok", "values": text}

    @staticmethod
    def _unpicklable(values: dict) -> dict:
        for name, value in values.items():
            try:
                pickle.dumps(value, protocol=pickle.DEFAULT_PROTOCOL)
            except Exception as exc:
                return error(type(exc).__name__, f"variable {name!r} cannot be pickled: {exc}",
                             name=name)
        return error("PicklingError", "the variables pickle one by one but not together")


# ---------------------------------------------------------------------------
# Start-up


def _arguments(argv):
    parser = argparse.ArgumentParser(
        prog="python -m sandbox_kernel.session.agent",
        description="Run notebook cells for the host on an inherited socket.")
    parser.add_argument("--fd", type=int, required=True, help="the inherited socket's descriptor")
    parser.add_argument("--max-frame", type=int, default=protocol.DEFAULT_MAX_FRAME,
                        help="largest frame read or sent, in bytes")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = _arguments(argv)
    try:
        channel, limit = open_channel(args.fd, args.max_frame)
    except StartError as exc:
        print(f"agent: {exc}", file=sys.stderr)
        return 2
    owner = os.getpid()
    private_dir = None if os.environ.get("IPYTHONDIR") else tempfile.mkdtemp(prefix="ipython-agent-")
    saved = sys.stdout, sys.stderr
    sys.path[:] = container_sys_path(sys.path, bool(sys.flags.safe_path))
    compress_owner_home(os.environ.pop(OWNER_HOME_ENV, ""))

    def build() -> Agent:
        shell = make_shell(channel, private_dir or os.environ["IPYTHONDIR"])
        install_stdin(shell, channel)
        budget = OutputBudget(limit)
        shell.attach(channel, RichOutputs(channel, budget))
        comm_manager = install_comms(shell, channel, budget)   # before any cell imports ipywidgets
        reaper = ChildReaper()
        reaper.install()                   # before any cell: every Popen is known (reaping.py)
        streams = make_streams(channel, budget)
        sys.stdout, sys.stderr = streams
        return Agent(channel, shell, budget, streams, reaper, comm_manager)
    try:
        return run_agent(build, "agent", stderr=saved[1])
    finally:
        sys.stdout, sys.stderr = saved
        if private_dir and os.getpid() == owner:   # not from a child the cell forked
            shutil.rmtree(private_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
