"""The agent core: what the IPython agent (agent.py) and the plain agent
(plain_agent.py) do the same way.

* the output limit of a cell (SANDBOX_KERNEL_OUTPUT_LIMIT), defined and
  parsed here once;
* the bounds of an error (its value, its traceback);
* the interrupt gate: SIGINT becomes KeyboardInterrupt only while a cell (or
  a command) runs, and never while a frame is half written;
* the channel: whole frames over the inherited socket, one sender at a
  time, output tagged with the request it belongs to;
* the serve loop (AgentCore): read a request, dispatch it to ``do_<type>``,
  reply, a failure being an error reply; and the requests both agents
  answer alike (command, update_environ, shutdown).

Its neighbours: agent_output.py (the output budget and the streams),
agent_stdin.py (input() and getpass() over the channel), agent_command.py
(the command runner).  Standard library only, Python 3.7 syntax: the plain
agent runs this on an image's own python3.  It imports protocol.py and
agent_command.py, nothing else of the project (never the host's side); the
host may import it (OUTPUT_LIMIT_ENV, DEFAULT_OUTPUT_LIMIT).
"""
from __future__ import annotations

import os
import select
import signal
import socket
import sys
import threading
import traceback
from contextlib import contextmanager

from . import protocol
from .agent_command import refused, request_argv, run_command
from .protocol import ConnectionClosed, ProtocolError

OUTPUT_LIMIT_ENV = "SANDBOX_KERNEL_OUTPUT_LIMIT"
DEFAULT_OUTPUT_LIMIT = 1 << 20
ERROR_TEXT = 64 << 10          # characters of an error's value, and of one traceback line
ERROR_TRACEBACK = 256 << 10    # characters of a traceback in all
ENAME_TEXT = 1000              # characters of an error's name


# ---------------------------------------------------------------------------
# The output limit


def parse_size(text: str) -> int:
    """ "1048576", "512K", "1M", "1G" (binary units) -> bytes; positive only."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip()
    scale = units.get(text[-1:].upper(), 1)
    number = text[:-1] if scale != 1 else text
    try:
        value = int(float(number) * scale)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"invalid size {text!r}: expected a positive number of bytes, "
                         f"optionally with K, M or G (e.g. 1048576, 512K, 1M)")
    return value


def format_size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def output_limit(environ=os.environ) -> int:
    """A cell's output limit in bytes, from OUTPUT_LIMIT_ENV (the host sets it);
    ValueError naming the variable when it is not a size."""
    try:
        return parse_size(environ.get(OUTPUT_LIMIT_ENV) or str(DEFAULT_OUTPUT_LIMIT))
    except ValueError as exc:
        raise ValueError(f"{OUTPUT_LIMIT_ENV}: {exc}") from None


# ---------------------------------------------------------------------------
# Errors: bounded, so that the error frame and the reply fit a cell's frame


def cut_text(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters and how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters cut]"


def bounded_traceback(lines: list) -> list:
    """At most ERROR_TRACEBACK characters, ERROR_TEXT a line."""
    kept, total = [], 0
    for index, line in enumerate(lines):
        line = cut_text(str(line), ERROR_TEXT)
        if total + len(line) > ERROR_TRACEBACK:
            kept.append(f"[traceback cut: {len(lines) - index} more lines]")
            break
        kept.append(line)
        total += len(line)
    return kept


def bounded_error(ename: str, evalue: str, lines: list) -> tuple:
    """(ename, evalue, traceback lines) cut to the error bounds."""
    return cut_text(ename, ENAME_TEXT), cut_text(evalue, ERROR_TEXT), bounded_traceback(lines)


def error(ename: str, evalue: str, **extra) -> dict:
    """The content of an error reply."""
    return {"status": "error", "ename": ename, "evalue": evalue, **extra}


class RequestError(Exception):
    """A request that lacks a field or has one of the wrong type."""


def field(request: dict, name: str, kind: type):
    if name not in request:
        raise RequestError(f"{request['type']} request lacks {name!r}")
    value = request[name]
    if not isinstance(value, kind):
        raise RequestError(f"{request['type']} request: {name!r} must be {kind.__name__}, "
                           f"got {type(value).__name__}")
    return value


# ---------------------------------------------------------------------------
# SIGINT, and memory pressure

PRESSURE_SIGNAL = signal.SIGUSR2
PRESSURE_WORDS = "stopped near the memory limit to keep your session"


class InterruptGate:
    """Turns SIGINT into KeyboardInterrupt only while a cell runs, and only
    between frames.

    Python runs signal handlers in the main thread between bytecodes, so a
    KeyboardInterrupt raised inside ``sock.sendall`` would leave half a frame
    on the wire and the host could never read another.  Code that writes a
    frame runs inside ``deferred()``; an interrupt that comes then is raised
    when the outermost deferred block ends.  Idle, SIGINT is ignored: a
    Python handler, not SIG_IGN, so that processes a cell starts get the
    default SIGINT.

    PRESSURE_SIGNAL (SIGUSR2, from the host when the container's memory
    crossed its threshold) is raised the same way, as MemoryError with the
    cell's ``pressure_words``: the cell stops before the OOM killer acts.
    """

    def __init__(self):
        self.armed = False
        self._depth = 0          # deferred blocks the main thread is inside
        self._pending = None     # the exception a deferred block raises at its end
        self._main = threading.main_thread().ident
        self.pressure_words = PRESSURE_WORDS

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._on_sigint)
        signal.signal(PRESSURE_SIGNAL, self._on_pressure)

    def in_main_thread(self) -> bool:
        return threading.get_ident() == self._main

    def _on_sigint(self, signum, frame) -> None:
        self._deliver(KeyboardInterrupt())

    def _on_pressure(self, signum, frame) -> None:
        self._deliver(MemoryError(self.pressure_words))

    def _deliver(self, exc: BaseException) -> None:
        if not self.armed:
            return
        if self._depth:
            self._pending = exc
            return
        raise exc

    @contextmanager
    def cell(self, pressure_words=None):
        """While the body runs, SIGINT interrupts it (and memory pressure,
        with ``pressure_words``: the host's, else PRESSURE_WORDS)."""
        self._pending = None
        self.pressure_words = pressure_words if isinstance(pressure_words, str) else PRESSURE_WORDS
        self.armed = True
        try:
            yield
        finally:
            self.armed = False
            self._pending = None

    def deferred(self) -> InterruptGate:
        """``with gate.deferred():`` a block in which SIGINT waits (main thread only;
        signals never run in other threads)."""
        return self

    # A method pair, not a generator: the counter must go up as the last step
    # of __enter__, so that a signal is either before it (raised, nothing
    # written yet) or after it (deferred).  Called for every write(), so cheap.
    def __enter__(self):
        if threading.get_ident() == self._main:
            self._depth += 1
        return self

    def __exit__(self, *exc):
        if threading.get_ident() != self._main:
            return False
        self._depth -= 1
        if self._depth == 0 and self._pending is not None and self.armed:
            exc, self._pending = self._pending, None
            raise exc
        return False


# ---------------------------------------------------------------------------
# The socket


class Channel:
    """The agent's end of the socket: whole frames, one sender at a time.

    ``request_id`` is the id that output is tagged with: the request being
    served, and between requests the last execute request (a thread of the
    user's may still print).
    """

    def __init__(self, sock: socket.socket, gate: InterruptGate,
                 max_frame: int = protocol.DEFAULT_MAX_FRAME,
                 cell_frame: int = protocol.cell_frame_limit(DEFAULT_OUTPUT_LIMIT)):
        self.sock = sock                        # None in a child the cell forked
        self.gate = gate
        self.max_frame = max_frame              # requests, and the replies to push and pull
        self.cell_frame = min(cell_frame, max_frame)   # outputs and execute replies (the host's bound)
        self.request_id = None
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._detach_in_child)

    @property
    def attached(self) -> bool:
        return self.sock is not None

    def recv(self) -> dict:
        if self.sock is None:
            raise ConnectionClosed("no channel in a forked child")
        return protocol.recv(self.sock, self.max_frame)

    def send(self, msg: dict, max_frame: int = None) -> None:
        self.send_frame(protocol.encode(msg, max_frame or self.max_frame))   # raises before writing

    def send_frame(self, frame: bytes) -> None:
        with self.gate.deferred(), self._lock:
            if self.sock is None:
                raise ConnectionClosed("no channel in a forked child")
            self.sock.sendall(frame)

    @property
    def tagged(self) -> bool:
        """Output now goes out as frames (else to fds 1 and 2)."""
        return self.sock is not None and self.request_id is not None

    def emit(self, msg_type: str, **content) -> None:
        """One output message for the current request."""
        if not self.tagged:
            write_to_fds(msg_type, content)
            return
        self.send({"type": msg_type, "id": self.request_id, **content}, self.cell_frame)

    def output_frame(self, msg_type: str, content: dict) -> bytes:
        """The frame of one output; ProtocolError when over the cell's frame limit."""
        return protocol.encode({"type": msg_type, "id": self.request_id, **content}, self.cell_frame)

    def _detach_in_child(self) -> None:
        # The child must not write frames (they would interleave with the
        # parent's) nor keep the socket open after the agent exits.
        self._lock = threading.Lock()
        if self.sock is not None:
            self.sock.close()
        self.sock = None


def write_to_fds(msg_type: str, content: dict) -> None:
    """Where output goes when there is no request to tag it with, or no channel."""
    if msg_type == "stream":
        fd, text = (2 if content["name"] == "stderr" else 1), content["text"]
    elif msg_type == "error":
        fd, text = 2, "\n".join(content["traceback"]) + "\n"
    elif "data" in content and "text/plain" in content["data"]:
        fd, text = 1, content["data"]["text/plain"] + "\n"
    else:
        return
    write_all(fd, text)


def write_all(fd: int, text: str) -> None:
    data = memoryview(text.encode("utf-8", "replace"))
    while data:
        data = data[os.write(fd, data):]


class StartError(Exception):
    """The agent cannot start: one line for its stderr, then exit 2."""


def open_channel(fd: int, max_frame: int = protocol.DEFAULT_MAX_FRAME) -> tuple:
    """(channel, output limit) on the inherited socket ``fd``, SIGINT gated."""
    try:
        limit = output_limit()
    except ValueError as exc:
        raise StartError(str(exc)) from None
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise StartError(f"--fd {fd} is not a usable socket: {exc}") from None
    sock.set_inheritable(False)            # not into the processes cells start
    gate = InterruptGate()
    gate.install()
    return Channel(sock, gate, max_frame, protocol.cell_frame_limit(limit)), limit


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
# Serving requests


class AgentCore:
    """Serves requests, one at a time, until shutdown or EOF.

    A subclass answers a request type T with ``do_T(request) -> content``;
    ``streams`` are its stdout and stderr (agent_output.OutputStream),
    ``budget`` the cell's output budget, ``reaper`` its ChildReaper."""

    def __init__(self, channel: Channel, budget, streams: list, reaper):
        self.channel = channel
        self.budget = budget
        self.streams = streams
        self.reaper = reaper
        self.last_execute_id = None

    def warm_up(self) -> None:
        """Before the first request (a subclass's choice)."""

    def finished(self, request: dict) -> bool:
        """Whether to exit after replying to ``request``."""
        return request["type"] == "shutdown"

    def serve(self) -> int:
        self.warm_up()
        while True:
            try:
                request = self.channel.recv()
            except ConnectionClosed:
                return 0
            if request["type"] == protocol.INPUT_REPLY:
                continue                  # the answer to an input() that was interrupted
            self._reply(request.get("id"), self.handle(request), request["type"])
            self.channel.request_id = self.last_execute_id
            if self.finished(request):
                return 0

    def handle(self, request: dict) -> dict:
        kind = request["type"]
        if kind not in protocol.REQUEST_TYPES:
            return error("ProtocolError", f"unknown request type {kind!r}")
        self.channel.request_id = request.get("id")
        try:
            return getattr(self, "do_" + kind)(request)
        except RequestError as exc:
            return error("ProtocolError", str(exc))
        except Exception as exc:       # reported in the reply; the agent keeps serving
            return error(type(exc).__name__, str(exc),
                         traceback=traceback.format_exception(type(exc), exc, exc.__traceback__))

    def _reply(self, request_id, content: dict, kind: str = None) -> None:
        # an execute or command reply is one of the cell's frames: the host
        # reads those with the smaller limit (protocol.cell_frame_limit)
        limit = self.channel.cell_frame if kind in protocol.CELL_REQUESTS else None
        try:
            self.channel.send({"type": protocol.REPLY, "id": request_id, "content": content}, limit)
        except (ProtocolError, TypeError, ValueError) as exc:
            # Too big or not JSON: encode() refused before writing, so the
            # stream is intact and an error reply can go instead.
            self.channel.send({"type": protocol.REPLY, "id": request_id, "content": error(
                type(exc).__name__, "reply not sent: " + cut_text(str(exc), ENAME_TEXT))})

    def begin_output(self) -> None:
        """Before a cell or a command: a full budget, the zombies reaped."""
        self.budget.reset()
        self.reaper.reap()

    def end_output(self) -> None:
        """After a cell or a command: what waits sent, the notice of what was
        cut, then the zombies reaped (before the reply: the next cell has its
        pids back)."""
        for stream in self.streams:
            stream.flush()
        notice = self.budget.notice()
        if notice:
            self.channel.emit("stream", name="stderr", text=notice)
        self.reaper.reap()

    def no_request_waits(self) -> bool:
        return not select.select([self.channel.sock], [], [], 0)[0]

    def do_command(self, request: dict) -> dict:
        """A program run in the container (agent_command.py); not a cell."""
        try:
            argv = request_argv(request)
        except ValueError as exc:
            return refused(exc)
        self.begin_output()
        try:
            code = run_command(argv, self.streams[0], self.streams[1], self.channel.gate.cell)
        finally:
            self.end_output()
        return {"status": "ok", "exit_code": code}

    def do_update_environ(self, request: dict) -> dict:
        try:
            return {"status": "ok", "values": protocol.update_environ(os.environ, request.get("changes"))}
        except ProtocolError as exc:
            raise RequestError(str(exc)) from None

    def do_shutdown(self, request: dict) -> dict:
        return {"status": "ok", "restart": bool(request.get("restart", False))}

    def do_comm_open(self, request: dict) -> dict:
        """An agent without a comm manager (the plain agent; agent_comm.py has
        the IPython agent's): every comm request is a CommError."""
        return error("CommError", "this agent has no comms (widgets need the IPython agent "
                                  "and the comm package in the image)")

    do_comm_msg = do_comm_close = do_comm_open


def run_agent(build, who: str, stderr=None) -> int:
    """``build()`` -> an AgentCore; serve until shutdown or EOF.  The exit
    code: 0 when the host closed or asked, 1 on a frame it could not read."""
    stderr = stderr or sys.stderr
    try:
        return build().serve()
    except ConnectionError:                # the host went away mid-reply
        return 0
    except ProtocolError as exc:           # the host sent a frame we cannot read
        print(f"{who}: {exc}", file=stderr)
        return 1
