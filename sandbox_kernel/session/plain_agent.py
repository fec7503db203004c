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

Commands arrive as the one-line execute request ``client.command_code``
makes, ``__import__('builtins').exec(SNIPPET, {"__name__": "__sbk_command__",
"ARGV": [...], "MIME": ...})``.  This agent recognizes that form and runs the
argv itself, with what the snippet does: stdout and stderr streamed, SIGINT
passed on, and the exit code in a display_data of MIME; so a command never
needs IPython, nor Python in the image.

Protocol, interrupts and bounds are those of protocol.py and agent.py: one
request at a time, SIGINT raises KeyboardInterrupt only inside a cell and
never while a frame is half written, and stream text beyond
SANDBOX_KERNEL_OUTPUT_LIMIT is dropped with one notice.  As in agent.py:
input() and getpass() are asked of the frontend (input_request, when the
execute request allows stdin), and sys.path is the container's
(container_sys_path, which agent.py uses too).
"""
from __future__ import annotations

import argparse
import ast
import builtins
import getpass
import importlib.util
import io
import linecache
import os
import select
import signal
import socket
import sys
import threading
import traceback

from . import protocol
from .agent_command import COMMAND, refused, request_argv, run_command
from .protocol import ConnectionClosed, ProtocolError
from .reaping import ChildReaper

OUTPUT_LIMIT_ENV = "SANDBOX_KERNEL_OUTPUT_LIMIT"
DEFAULT_OUTPUT_LIMIT = 1 << 20
STREAM_CHUNK = 64 << 10        # characters of stream text in one frame at most
CUT_HEAD = 16 << 10            # characters kept of a result that is cut
ERROR_TEXT = 64 << 10          # characters of an error's value, and of one traceback line
ERROR_TRACEBACK = 256 << 10    # characters of a traceback in all
COMMAND_NAME = "__sbk_command__"
NO_IPYTHON_NOTE = ("[sandbox-kernel] image {image!r} has python3 but no IPython: cells run in a "
                   "plain Python agent (stdout, stderr, errors and text results only); rich "
                   "output (display(), figures, HTML, %magics) needs IPython in the image, e.g. "
                   "sandbox-kernel images build NAME --from {image} --run 'pip install ipython'\n")
NO_PYTHON_ERROR = ("image {image!r} has no python3: Python cells cannot run on it; shell cells "
                   "do (%%container --shell, %container exec)")


# ---------------------------------------------------------------------------
# The socket, and SIGINT only inside a cell


class Channel:
    """Whole frames, one sender at a time; SIGINT waits while a frame is written."""

    def __init__(self, sock: socket.socket, cell_frame: int = protocol.DEFAULT_MAX_FRAME):
        self.sock = sock
        self.cell_frame = cell_frame    # outputs and execute replies: the host's bound for a cell
        self.request_id = None
        self.lock = threading.Lock()
        self.in_cell = False
        self.sending = False
        self.interrupted = False
        signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame) -> None:
        if not self.in_cell:
            return                      # idle: nothing to interrupt
        if self.sending:
            self.interrupted = True     # raised when the frame is out
            return
        raise KeyboardInterrupt

    def recv(self) -> dict:
        return protocol.recv(self.sock)

    def recv_in_cell(self) -> dict:
        """A frame read while a cell runs: SIGINT waits until it is whole."""
        self.sending = True
        try:
            msg = protocol.recv(self.sock)
        finally:
            self.sending = False
        if self.interrupted and self.in_cell:
            self.interrupted = False
            raise KeyboardInterrupt
        return msg

    def send(self, msg: dict, max_frame: int = protocol.DEFAULT_MAX_FRAME) -> None:
        frame = protocol.encode(msg, max_frame)
        with self.lock:
            self.sending = True
            try:
                self.sock.sendall(frame)
            finally:
                self.sending = False
        if self.interrupted and self.in_cell and threading.current_thread() is threading.main_thread():
            self.interrupted = False
            raise KeyboardInterrupt

    def emit(self, msg_type: str, **content) -> None:
        self.send({"type": msg_type, "id": self.request_id, **content}, self.cell_frame)


class Budget:
    """Output bytes a cell may still send (stream text, the result's text);
    the rest is counted and dropped."""

    def __init__(self, limit: int):
        self.limit, self.left, self.dropped, self.heads = limit, limit, 0, 0

    def reset(self) -> None:
        self.left, self.dropped, self.heads = self.limit, 0, 0

    def admit_result(self, text: str) -> str:
        """The result's text if it fits, else its head and a line saying so."""
        size = len(text.encode("utf-8", "replace"))
        if size <= self.left:
            self.left -= size
            return text
        self.heads += 1
        head = text[:min(CUT_HEAD, self.left)]
        self.left -= min(len(head.encode("utf-8", "replace")), self.left)
        return (f"{head}\n[output cut: this result is {size} bytes, more than what is left of "
                f"this cell's {self.limit}-byte output limit ({OUTPUT_LIMIT_ENV}); shown: the "
                f"first {len(head)} characters]")

    def admit(self, text: str) -> str:
        data = text.encode("utf-8", "replace")
        if len(data) <= self.left:
            self.left -= len(data)
            return text
        kept = data[:self.left].decode("utf-8", "ignore")
        self.dropped += len(data) - len(kept.encode())
        self.left = 0
        return kept

    def notice(self) -> str | None:
        if not (self.dropped or self.heads):
            return None
        if not self.heads:
            return (f"[output cut: the cell printed more than {self.limit} bytes; "
                    f"{self.dropped} bytes dropped]\n")
        dropped = f"{self.dropped} bytes of printed text dropped, " if self.dropped else ""
        return (f"[output cut: this cell's output went past the {self.limit}-byte limit "
                f"({OUTPUT_LIMIT_ENV}): {dropped}the result shown as the head of its text]\n")


class Stream(io.TextIOBase):
    """sys.stdout / sys.stderr: text becomes "stream" frames, a line at a time."""

    def __init__(self, name: str, channel: Channel, budget: Budget):
        self.name, self.channel, self.budget = name, channel, budget
        self.pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self.pending += text
        if "\n" in text or len(self.pending) > 8192:
            self.flush()
        return len(text)

    def flush(self) -> None:
        text, self.pending = self.pending, ""
        text = self.budget.admit(text) if text else ""
        for start in range(0, len(text), STREAM_CHUNK):   # each frame well within the cell's bound
            self.channel.emit("stream", name=self.name, text=text[start:start + STREAM_CHUNK])


# ---------------------------------------------------------------------------
# input() and getpass(), sys.path


class StdinNotImplementedError(NotImplementedError):
    """IPython's name for it, without IPython: the frontend has no stdin."""


class Stdin:
    """``builtins.input`` and ``getpass.getpass`` of the cells: an
    input_request frame, then the host's input_reply with the same ``n``
    (agent.py's StdinForwarder, without IPython).  SIGINT ends the wait."""

    REPLY_ERRORS = {"EOFError": EOFError, "KeyboardInterrupt": KeyboardInterrupt,
                    "StdinNotImplementedError": StdinNotImplementedError}

    def __init__(self, channel: Channel, streams: dict):
        self.channel, self.streams = channel, streams
        self.allowed = False          # this cell's execute request said allow_stdin
        self.asked = 0

    def input(self, prompt="") -> str:
        return self.ask(str(prompt), False, "raw_input")

    def getpass(self, prompt="Password: ", stream=None, **_terminal_only) -> str:
        return self.ask(str(prompt), True, "getpass")

    def ask(self, prompt: str, password: bool, what: str) -> str:
        if not (self.allowed and self.channel.in_cell):
            raise StdinNotImplementedError(
                f"{what} was called, but this frontend does not support input requests.")
        if threading.current_thread() is not threading.main_thread():
            raise StdinNotImplementedError(
                f"{what} was called from a thread of the cell's; only the cell's own "
                f"(main) thread can ask the frontend for input")
        for stream in self.streams.values():
            stream.flush()
        self.asked += 1
        self.channel.emit(protocol.INPUT_REQUEST, n=self.asked, password=password,
                          prompt=prompt[:protocol.INPUT_PROMPT_LIMIT])
        while True:
            select.select([self.channel.sock], [], [])   # SIGINT: KeyboardInterrupt here
            msg = self.channel.recv_in_cell()
            if msg["type"] != protocol.INPUT_REPLY:
                raise ProtocolError(f"the host sent a {msg['type']!r:.60} frame while the "
                                    f"cell waited for an input_reply")
            if msg.get("n") == self.asked:
                return self._answer(msg)

    def _answer(self, msg: dict) -> str:
        value = msg.get("value")
        if isinstance(value, str):
            return value
        name, message = str(msg.get("error", "")), _cut(str(msg.get("message", "")), 1000)
        if name in self.REPLY_ERRORS:
            raise self.REPLY_ERRORS[name](message) if message else self.REPLY_ERRORS[name]()
        raise RuntimeError(f"the host could not ask the frontend for input: {name}: {message}")


def container_sys_path(path: list[str], safe_path: bool) -> list[str]:
    """``sys.path`` for the cells, as ipykernel's: the entry ``python -m``
    put first (the directory the interpreter started in: for an agent
    forked from a zygote, a folder of the host) goes, entries that do not
    exist in this container go, and '' (the working directory at each
    import, so ``%%file mod.py`` then ``import mod`` works, also after %cd)
    is inserted before the first site-packages, as IPython's
    InteractiveShellApp.init_path does; not with PYTHONSAFEPATH."""
    entries = list(path[1:] if path and not safe_path else path)
    kept: list[str] = []
    for entry in entries:
        if entry and entry not in kept and os.path.exists(entry):
            kept.append(entry)
    if safe_path:
        return kept
    at = next((i for i, entry in enumerate(kept)
               if os.path.basename(entry) in ("site-packages", "dist-packages")), 0)
    return kept[:at] + [""] + kept[at:]


# ---------------------------------------------------------------------------
# Commands: what client.command_code asks for


def command_argv(code: str) -> tuple[list[str], str] | None:
    """(argv, mime) if ``code`` is a command request, else None."""
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError:
        return None
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and call.func.attr == "exec" and len(call.args) == 2 and not call.keywords):
        return None
    try:
        names = ast.literal_eval(call.args[1])
    except ValueError:
        return None
    if not isinstance(names, dict) or names.get("__name__") != COMMAND_NAME:
        return None
    argv, mime = names.get("ARGV"), names.get("MIME")
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)
            and isinstance(mime, str)):
        return None
    return argv, mime


# ---------------------------------------------------------------------------
# Cells


class PlainAgent:
    """Serves requests, one at a time, until shutdown or EOF."""

    def __init__(self, channel: Channel, budget: Budget, image: str, shell_only: bool):
        self.channel, self.budget = channel, budget
        self.image, self.shell_only = image, shell_only
        self.streams = {name: Stream(name, channel, budget) for name in ("stdout", "stderr")}
        self.namespace = {"__name__": "__main__", "__builtins__": __builtins__}
        self.stdin = Stdin(channel, self.streams)
        builtins.input, getpass.getpass = self.stdin.input, self.stdin.getpass
        self.execution_count = 1
        self.noted = False
        self.last_execute_id = None
        self.reaper = ChildReaper()       # zombies the cells leave (reaping.py)
        self.reaper.install()

    def serve(self) -> int:
        while True:
            try:
                request = self.channel.recv()
            except ConnectionClosed:
                return 0
            if request["type"] == protocol.INPUT_REPLY:
                continue                  # the answer to an input() that was interrupted
            content = self.handle(request)
            self._reply(request, content)
            self.channel.request_id = self.last_execute_id
            if request["type"] == "shutdown":
                return 0

    def _reply(self, request: dict, content: dict) -> None:
        # an execute reply is one of the cell's frames, read with the host's smaller bound
        limit = self.channel.cell_frame if request["type"] == "execute" else protocol.DEFAULT_MAX_FRAME
        reply = {"type": protocol.REPLY, "id": request.get("id"), "content": content}
        try:
            self.channel.send(reply, limit)
        except (ProtocolError, TypeError, ValueError) as exc:   # refused before anything was written
            reply["content"] = _error(type(exc).__name__, "reply not sent: " + _cut(str(exc), 1000))
            self.channel.send(reply)

    def handle(self, request: dict) -> dict:
        kind = request["type"]
        if kind not in protocol.REQUEST_TYPES and kind != COMMAND:
            return _error("ProtocolError", f"unknown request type {kind!r}")
        self.channel.request_id = request.get("id")
        try:
            return getattr(self, "do_" + kind)(request)
        except Exception as exc:         # reported in the reply; the agent keeps serving
            return _error(type(exc).__name__, str(exc),
                          traceback=traceback.format_exception(type(exc), exc, exc.__traceback__))

    def do_execute(self, request: dict) -> dict:
        code = request.get("code")
        if not isinstance(code, str):
            return _error("ProtocolError", "execute request: 'code' must be str")
        silent = bool(request.get("silent", False))
        self.last_execute_id = request.get("id")
        self.budget.reset()
        self.reaper.reap()
        self.stdin.allowed = request.get("allow_stdin") is True
        try:
            return self._execute(code, silent)
        finally:
            self.stdin.allowed = False
            self._end_of_cell()

    def _execute(self, code: str, silent: bool) -> dict:
        command = command_argv(code)
        if command is not None:
            return self._command(*command)
        if self.shell_only:
            return self._fail("NoPythonInImage", NO_PYTHON_ERROR.format(image=self.image), [])
        if not self.noted:
            self.noted = True
            self.streams["stderr"].write(NO_IPYTHON_NOTE.format(image=self.image))
            self.streams["stderr"].flush()
        count = self.execution_count
        if not silent:
            self.execution_count += 1
        return self._run_cell(code, count, silent)

    def do_command(self, request: dict) -> dict:
        """A program run in the container (agent_command.py); not a cell."""
        try:
            argv = request_argv(request)
        except ValueError as exc:
            return refused(exc)
        self.budget.reset()
        self.reaper.reap()
        try:
            code = self._run(argv)
        finally:
            self._end_of_cell()
        return {"status": "ok", "exit_code": code}

    def _run(self, argv: list) -> int:
        return run_command(argv, self.streams["stdout"], self.streams["stderr"], self._cell)

    def _command(self, argv: list[str], mime: str) -> dict:
        code = self._run(argv)
        self.channel.emit("display_data", data={mime: {"exit_code": code}}, metadata={},
                          transient={})
        return {"status": "ok", "execution_count": self.execution_count - 1,
                "user_expressions": {}, "payload": []}

    def _run_cell(self, code: str, count: int, silent: bool) -> dict:
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self.streams["stdout"], self.streams["stderr"]
        try:
            with self._cell():
                value = run_source(code, self.namespace, f"<cell {count}>")
        except BaseException as exc:     # the cell's error, KeyboardInterrupt and SystemExit too
            return self._raised(exc, count)
        finally:
            sys.stdout, sys.stderr = saved
        if value is not None and not silent:
            self.namespace["_"] = value
            text = self.budget.admit_result(_repr(value))
            try:
                self.channel.emit("execute_result", execution_count=count,
                                  data={"text/plain": text}, metadata={})
            except ProtocolError:        # JSON's escapes took it over the frame limit
                self.budget.heads += 1
                self.channel.emit("execute_result", execution_count=count,
                                  data={"text/plain": _cut(text, CUT_HEAD // 8)}, metadata={})
        return {"status": "ok", "execution_count": count, "user_expressions": {}, "payload": []}

    def _cell(self):
        agent = self

        class _InCell:
            def __enter__(self):
                agent.channel.in_cell = True

            def __exit__(self, *exc):
                agent.channel.in_cell = False
                for stream in agent.streams.values():
                    stream.flush()
        return _InCell()

    def _end_of_cell(self) -> None:
        """After the result: the notice of what was cut, then the zombies reaped."""
        notice = self.budget.notice()
        if notice:
            self.budget.reset()
            self.channel.emit("stream", name="stderr", text=notice)
        self.reaper.reap()                # before the reply: the next cell has its pids back

    def _raised(self, exc: BaseException, count: int) -> dict:
        frames = traceback.extract_tb(exc.__traceback__)
        # drop this agent's own frames: the user's start at the first "<cell N>"
        start = next((i for i, f in enumerate(frames) if f.filename.startswith("<cell")), len(frames))
        lines = ["Traceback (most recent call last):\n"] if start < len(frames) else []
        lines += traceback.format_list(frames[start:])
        lines += traceback.format_exception_only(type(exc), exc)
        return self._fail(type(exc).__name__, str(exc), [line.rstrip("\n") for line in lines], count)

    def _fail(self, ename: str, evalue: str, lines: list[str], count: int | None = None) -> dict:
        # bounded: the error frame and the reply must fit the cell's frame limit
        ename, evalue = _cut(ename, 1000), _cut(evalue, ERROR_TEXT)
        lines = _bounded_traceback(lines) or [f"{ename}: {evalue}"]
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
            n for n in {*self.namespace, *dir(__builtins__)} if n.startswith(prefix))
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
            return _error("NameError", f"cannot push {bad[0]!r}: not a variable name", name=bad[0])
        self.namespace.update(values)
        return {"status": "ok", "values": sorted(values)}

    def do_pull(self, request: dict) -> dict:
        names = request.get("names") or []
        missing = [n for n in names if not isinstance(n, str) or n not in self.namespace]
        if missing:
            return _error("NameError", f"name {missing[0]!r} is not defined", name=missing[0])
        return {"status": "ok", "values": protocol.pack_values({n: self.namespace[n] for n in names})}

    def do_update_environ(self, request: dict) -> dict:
        try:
            return {"status": "ok", "values": protocol.update_environ(os.environ, request.get("changes"))}
        except ProtocolError as exc:
            return _error("ProtocolError", str(exc))

    def do_shutdown(self, request: dict) -> dict:
        return {"status": "ok", "restart": bool(request.get("restart", False))}


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


def _cut(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters and how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters cut]"


def _bounded_traceback(lines: list) -> list:
    """At most ERROR_TRACEBACK characters, ERROR_TEXT a line."""
    kept, total = [], 0
    for index, line in enumerate(lines):
        line = _cut(str(line), ERROR_TEXT)
        if total + len(line) > ERROR_TRACEBACK:
            kept.append(f"[traceback cut: {len(lines) - index} more lines]")
            break
        kept.append(line)
        total += len(line)
    return kept


def _error(ename: str, evalue: str, **extra) -> dict:
    return {"status": "error", "ename": ename, "evalue": evalue, **extra}


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
        limit = int(os.environ.get(OUTPUT_LIMIT_ENV) or DEFAULT_OUTPUT_LIMIT)
    except ValueError:
        limit = DEFAULT_OUTPUT_LIMIT
    try:
        sock = socket.socket(fileno=args.fd)
    except OSError as exc:
        print(f"plain agent: --fd {args.fd} is not a usable socket: {exc}", file=sys.stderr)
        return 2
    sock.set_inheritable(False)          # not into the processes cells start
    if args.shell_only:                  # the borrowed interpreter's settings are not the image's
        for name in ("PYTHONHOME", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE"):
            os.environ.pop(name, None)
    if not args.shell_only:
        sys.path[:] = container_sys_path(sys.path, bool(sys.flags.safe_path))
    channel = Channel(sock, protocol.cell_frame_limit(limit))
    try:
        return PlainAgent(channel, Budget(limit), args.image, args.shell_only).serve()
    except ConnectionError:              # the host went away mid-reply
        return 0
    except ProtocolError as exc:
        print(f"plain agent: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
