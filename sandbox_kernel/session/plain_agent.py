"""The agent of a foreign image: the standard library only.

Started for every stored image (image_agent.py says how)::

    python3 -m sandbox_kernel.session.plain_agent --fd 3 --image NAME [--shell-only]

* The image's python3 has IPython: hand over to the full agent (agent.py),
  so output is as rich as on the host.
* It has python3 but no IPython: serve the cells here.  stdout and stderr
  stream as the cell prints, an exception gives an ``error`` with its
  traceback, the last expression an ``execute_result`` in text/plain, and
  the first cell says once (on stderr) that rich output needs IPython in
  the image.  No magics, no display(), no completion beyond names.
* The image has no python3 at all (``--shell-only``): this agent runs on the
  host's interpreter (bound read-only into the container, never on the
  image's PATH) and only runs commands: ``%%container --shell`` cells and
  ``%container exec``.  A Python cell gets one clear error.

Commands are ``command`` requests (agent_command.py, answered by the
core), so a command never needs IPython, nor Python in the image.

What both agents do alike is the agent core's (agent_core.py and its
agent_* neighbours): the channel and the interrupt gate, the serve loop, the
output budget and streams (SANDBOX_KERNEL_OUTPUT_LIMIT), input() and
getpass() asked of the frontend, the command runner, and sys.path built for
the container.  This module has what is its own: running a cell's source
without IPython, and the start-up that hands over to the full agent.

Standard library only, Python 3.7 syntax: it runs on an image's own python3.
"""
from __future__ import annotations

import argparse
import ast
import builtins
import getpass
import importlib.util
import linecache
import os
import sys
import traceback
from contextlib import contextmanager

from . import protocol
from .agent_core import (AgentCore, Channel, StartError, bounded_error, container_sys_path,
                         error, field, open_channel, run_agent)
from .agent_output import OutputBudget, RichOutputs, make_streams
from .agent_stdin import StdinForwarder
from .reaping import ChildReaper
from .agent_output import OutputBudget as Budget  # noqa: F401 -- moved; tests/unit/test_images_plain_agent.py imports it here

NO_IPYTHON_NOTE = ("[sandbox-kernel] image {image!r} has python3 but no IPython: cells run in a "
                   "plain Python agent (stdout, stderr, errors and text results only); rich "
                   "output (display(), figures, HTML, %magics) needs IPython in the image, e.g. "
                   "sandbox-kernel images build NAME --from {image} --run 'pip install ipython'\n")
NO_PYTHON_ERROR = ("image {image!r} has no python3: Python cells cannot run on it; shell cells "
                   "do (%%container --shell, %container exec)")


# ---------------------------------------------------------------------------
# Cells


class PlainAgent(AgentCore):
    """The requests of cells run without IPython (the serve loop, command,
    update_environ and shutdown are the core's: agent_core.AgentCore)."""

    def __init__(self, channel: Channel, budget: OutputBudget, streams: list, image: str,
                 shell_only: bool):
        super().__init__(channel, budget, streams, ChildReaper())   # zombies the cells leave
        self.image, self.shell_only = image, shell_only
        self.outputs = RichOutputs(channel, budget)
        self.namespace = {"__name__": "__main__", "__builtins__": __builtins__}
        self.stdin = StdinForwarder(channel)
        builtins.input, getpass.getpass = self.stdin.input, self.stdin.getpass
        self.execution_count = 1
        self.pressure_words = None
        self.noted = False
        self.reaper.install()

    def do_execute(self, request: dict) -> dict:
        code = field(request, "code", str)
        silent = bool(request.get("silent", False))
        self.last_execute_id = request.get("id")
        self.begin_output()
        count_from = request.get("count_from")
        if type(count_from) is int and count_from > self.execution_count:
            self.execution_count = count_from        # a fresh container goes on counting
        self.pressure_words = request.get("pressure_words")   # the host's MemoryError words
        self.stdin.allowed = request.get("allow_stdin") is True
        try:
            return self._execute(code, silent)
        finally:
            self.stdin.allowed = False
            self.end_output()

    def _execute(self, code: str, silent: bool) -> dict:
        if self.shell_only:
            return self._fail("NoPythonInImage", NO_PYTHON_ERROR.format(image=self.image), [])
        if not self.noted:
            self.noted = True
            self.streams[1].write(NO_IPYTHON_NOTE.format(image=self.image))
            self.streams[1].flush()
        count = self.execution_count
        if not silent:
            self.execution_count += 1
        return self._run_cell(code, count, silent)

    def _run_cell(self, code: str, count: int, silent: bool) -> dict:
        try:
            with self._cell():
                value = run_source(code, self.namespace, f"<cell {count}>")
        except BaseException as exc:     # the cell's error, KeyboardInterrupt and SystemExit too
            return self._raised(exc, count)
        if value is not None and not silent:
            self.namespace["_"] = value
            self.outputs.emit("execute_result", execution_count=count,
                              data={"text/plain": _repr(value)}, metadata={})
        return {"status": "ok", "execution_count": count, "user_expressions": {}, "payload": []}

    @contextmanager
    def _cell(self):
        """sys.stdout and sys.stderr are the cell's streams, SIGINT interrupts;
        what the cell printed is sent before its result or its error."""
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self.streams
        try:
            with self.channel.gate.cell(self.pressure_words):
                yield
        finally:
            for stream in self.streams:
                stream.flush()
            sys.stdout, sys.stderr = saved

    def _raised(self, exc: BaseException, count: int) -> dict:
        frames = traceback.extract_tb(exc.__traceback__)
        # drop this agent's own frames: the user's start at the first "<cell N>"
        start = next((i for i, f in enumerate(frames) if f.filename.startswith("<cell")), len(frames))
        lines = ["Traceback (most recent call last):\n"] if start < len(frames) else []
        lines += traceback.format_list(frames[start:])
        lines += traceback.format_exception_only(type(exc), exc)
        return self._fail(type(exc).__name__, str(exc), [line.rstrip("\n") for line in lines], count)

    def _fail(self, ename: str, evalue: str, lines: list, count: int = None) -> dict:
        # bounded: the error frame and the reply must fit the cell's frame limit
        ename, evalue, lines = bounded_error(ename, evalue, lines)
        lines = lines or [f"{ename}: {evalue}"]
        self.channel.emit("error", ename=ename, evalue=evalue, traceback=lines)
        return {"status": "error", "execution_count": count or self.execution_count - 1,
                "ename": ename, "evalue": evalue, "traceback": lines,
                "user_expressions": {}, "payload": []}

    def do_complete(self, request: dict) -> dict:
        code, cursor = str(request.get("code", "")), request.get("cursor_pos")
        cursor = len(code) if cursor is None else int(cursor)
        start = cursor
        while start > 0 and (code[start - 1].isalnum() or code[start - 1] == "_"):
            start -= 1
        prefix = code[start:cursor]
        names = [] if self.shell_only else sorted(
            n for n in {*self.namespace, *dir(builtins)} if n.startswith(prefix))
        return {"status": "ok", "matches": names, "cursor_start": start, "cursor_end": cursor,
                "metadata": {}}

    def do_inspect(self, request: dict) -> dict:
        return {"status": "ok", "found": False, "data": {}, "metadata": {}}

    def do_is_complete(self, request: dict) -> dict:
        import codeop
        try:
            compiled = codeop.compile_command(str(request.get("code", "")), "<cell>", "exec")
        except (SyntaxError, ValueError, OverflowError):
            return {"status": "invalid"}
        return {"status": "complete"} if compiled is not None else {"status": "incomplete", "indent": ""}

    def do_history(self, request: dict) -> dict:
        return {"status": "ok", "history": []}

    def do_push(self, request: dict) -> dict:
        values = protocol.unpack_values(str(request.get("values", "")))
        bad = [n for n in values if not (isinstance(n, str) and n.isidentifier())]
        if bad:
            return error("NameError", f"cannot push {bad[0]!r}: not a variable name", name=bad[0])
        self.namespace.update(values)
        return {"status": "ok", "values": sorted(values)}

    def do_pull(self, request: dict) -> dict:
        names = request.get("names") or []
        missing = [n for n in names if not isinstance(n, str) or n not in self.namespace]
        if missing:
            return error("NameError", f"name {missing[0]!r} is not defined", name=missing[0])
        return {"status": "ok", "values": protocol.pack_values({n: self.namespace[n] for n in names})}


def run_source(code: str, namespace: dict, filename: str = "<cell>"):
    """Run a cell as IPython would: every statement, and the value of the
    last one if it is an expression (None otherwise).  The source goes into
    linecache under ``filename``, so that tracebacks show the cell's lines."""
    linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
    tree = ast.parse(code, filename, "exec")
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, filename, "exec"), namespace)
    if last is None:
        return None
    return eval(compile(ast.Expression(last.value), filename, "eval"), namespace)


def _repr(value) -> str:
    try:
        return repr(value)
    except Exception as exc:             # a broken __repr__ must not break the agent
        return f"<{type(value).__name__} object: repr failed: {exc}>"


# ---------------------------------------------------------------------------
# Start-up


def _arguments(argv):
    parser = argparse.ArgumentParser(prog="python3 -m sandbox_kernel.session.plain_agent",
                                     description="Serve cells on an inherited socket, stdlib only.")
    parser.add_argument("--fd", type=int, required=True, help="the inherited socket's descriptor")
    parser.add_argument("--image", default="?", help="the image's name, for messages")
    parser.add_argument("--shell-only", action="store_true",
                        help="the image has no python3: run commands only")
    parser.add_argument("--agent", default="sandbox_kernel.session.agent",
                        help="the full agent's module, used when IPython is importable")
    return parser.parse_known_args(argv)[0]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _arguments(argv)
    if not args.shell_only and importlib.util.find_spec("IPython") is not None:
        full = importlib.import_module(args.agent)
        return full.main(["--fd", str(args.fd)])
    try:
        channel, limit = open_channel(args.fd)
    except StartError as exc:
        print(f"plain agent: {exc}", file=sys.stderr)
        return 2
    if args.shell_only:                  # the borrowed interpreter's settings are not the image's
        for name in ("PYTHONHOME", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE"):
            os.environ.pop(name, None)
    else:                                # sys.flags.safe_path: Python 3.11 and later
        sys.path[:] = container_sys_path(sys.path, bool(getattr(sys.flags, "safe_path", False)))

    def build() -> PlainAgent:
        budget = OutputBudget(limit)
        return PlainAgent(channel, budget, make_streams(channel, budget), args.image, args.shell_only)
    return run_agent(build, "plain agent")


if __name__ == "__main__":
    sys.exit(main())
