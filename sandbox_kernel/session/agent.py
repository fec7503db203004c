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
* History lives in memory (the container is thrown away with the session),
  and IPython's profile directory is a private temporary one unless
  IPYTHONDIR is set: the container's HOME may not exist or be writable.

This module must stay light: it imports nothing from sandbox_kernel.runtime.
"""
from __future__ import annotations

import argparse
import builtins
import getpass
import importlib.util
import io
import os
import pickle
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from contextlib import contextmanager

from IPython.core import page
from IPython.utils import openpy
from IPython.core.autocall import ZMQExitAutocall
from IPython.core.compilerop import CachingCompiler
from IPython.core.completer import provisionalcompleter, rectify_completions
from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.display import Javascript, display
from IPython.utils.tokenutil import token_at_cursor
from traitlets import CBool, Instance, Type, default
from traitlets.config import Config

from . import protocol
from .protocol import ConnectionClosed, ProtocolError
# the plain agent is stdlib-only and runs on images' own pythons; what both
# agents do the same way is written once, there
from .plain_agent import ERROR_TEXT, ERROR_TRACEBACK, container_sys_path
from .plain_agent import _bounded_traceback as bounded_traceback, _cut as cut_text
from .agent_command import COMMAND, refused, request_argv, run_command
from .reaping import ChildReaper

DEFAULT_OUTPUT_LIMIT = 1 << 20
OUTPUT_LIMIT_ENV = "SANDBOX_KERNEL_OUTPUT_LIMIT"
OWNER_HOME_ENV = "SANDBOX_KERNEL_OWNER_HOME"   # the kernel owner's HOME (client.py); not a cell's
FLUSH_INTERVAL = 0.05          # seconds a partial line may wait before it is sent
STREAM_CHUNK = 64 << 10        # characters: send at this size, and never more in one frame
CUT_HEAD = 16 << 10            # characters of text/plain kept of a display or result that is cut
CUT_MIN_ROOM = 1 << 10         # bytes of budget below which a display that does not fit is dropped
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
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
)


# ---------------------------------------------------------------------------
# SIGINT


class InterruptGate:
    """Turns SIGINT into KeyboardInterrupt only while a cell runs, and only
    between frames.

    Python runs signal handlers in the main thread between bytecodes, so a
    KeyboardInterrupt raised inside ``sock.sendall`` would leave half a frame
    on the wire and the host could never read another.  Code that writes a
    frame runs inside ``deferred()``; an interrupt that comes then is raised
    when the outermost deferred block ends.
    """

    def __init__(self):
        self.armed = False
        self._depth = 0          # deferred blocks the main thread is inside
        self._pending = False
        self._main = threading.main_thread().ident

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame) -> None:
        if not self.armed:
            return
        if self._depth:
            self._pending = True
            return
        raise KeyboardInterrupt

    @contextmanager
    def cell(self):
        """While the body runs, SIGINT interrupts it."""
        self._pending = False
        self.armed = True
        try:
            yield
        finally:
            self.armed = False
            self._pending = False

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
        if self._depth == 0 and self._pending and self.armed:
            self._pending = False
            raise KeyboardInterrupt
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
        self.sock: socket.socket | None = sock
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

    def send(self, msg: dict, max_frame: int | None = None) -> None:
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
            _write_to_fds(msg_type, content)
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


def _write_to_fds(msg_type: str, content: dict) -> None:
    """Where output goes when there is no request to tag it with, or no channel."""
    if msg_type == "stream":
        fd, text = (2 if content["name"] == "stderr" else 1), content["text"]
    elif msg_type == "error":
        fd, text = 2, "\n".join(content["traceback"]) + "\n"
    elif "data" in content and "text/plain" in content["data"]:
        fd, text = 1, content["data"]["text/plain"] + "\n"
    else:
        return
    _write_all(fd, text)


def _write_all(fd: int, text: str) -> None:
    data = memoryview(text.encode("utf-8", "replace"))
    while data:
        data = data[os.write(fd, data):]


# ---------------------------------------------------------------------------
# stdout and stderr


class OutputBudget:
    """Bytes of output a cell may still send: stream text (UTF-8) and the
    frames of its displays and result; counts what it drops or cuts."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self.dropped = 0         # bytes of stream text
        self.heads = 0           # displays and results sent as the head of their text
        self.displays_dropped = 0
        self.full = False        # read without the lock, on every write()
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.used = self.dropped = self.heads = self.displays_dropped = 0
            self.full = False

    @property
    def room(self) -> int:
        return max(self.limit - self.used, 0)

    def take(self, size: int) -> bool:
        """Room for one display or result whose frame is ``size`` bytes: taken, or False."""
        with self._lock:
            if size > self.limit - self.used:
                return False
            self.used += size
            return True

    def count_cut(self, dropped: bool) -> None:
        with self._lock:
            if dropped:
                self.displays_dropped += 1
            else:
                self.heads += 1

    def admit(self, text: str) -> str:
        """The part of ``text`` that fits (all of it, a head of it, or "")."""
        size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
        with self._lock:
            room = self.limit - self.used
            if size <= room:
                self.used += size
                return text
            self.used = self.limit
            self.full = True
            if room <= 0:
                self.dropped += size
                return ""
            if text.isascii():
                head = text[:room]
            else:
                head = text.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")
            self.dropped += size - len(head.encode("utf-8", "surrogatepass"))
            return head

    def drop(self, text: str) -> None:
        """Count text that is not sent (the budget is spent).  Without the lock:
        this is the flood's path, and a lock triples its cost; two threads
        flooding at once may lose a few counts."""
        self.dropped += len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))

    def notice(self) -> str | None:
        """The line that ends a cell whose output was cut, else None."""
        if not (self.heads or self.displays_dropped):
            if not self.dropped:
                return None
            return (f"[output cut: the cell printed more than {format_size(self.limit)}; "
                    f"{self.dropped} bytes dropped]\n")
        what = [f"{self.dropped} bytes of printed text dropped"] if self.dropped else []
        if self.heads:
            what.append(f"{self.heads} display(s) or result(s) shown as the head of their text")
        if self.displays_dropped:
            what.append(f"{self.displays_dropped} display(s) or result(s) dropped")
        return (f"[output cut: this cell's output went past the {format_size(self.limit)} limit "
                f"({OUTPUT_LIMIT_ENV}): {'; '.join(what)}]\n")


class RichOutputs:
    """display_data, update_display_data and execute_result, within the
    cell's output budget and frame limit.

    One that fits is sent as it is, and its frame's bytes are counted.  One
    that does not is sent as the head of its text/plain and a line saying
    so (at most CUT_HEAD characters), or dropped when less than CUT_MIN_ROOM
    bytes are left; either way the cell's last notice counts it.  So the host
    never gets a frame over ``channel.cell_frame`` (it would refuse it as a
    protocol error) and a 50 MB repr costs the host nothing.
    """

    def __init__(self, channel: Channel, budget: OutputBudget):
        self.channel = channel
        self.budget = budget

    def emit(self, msg_type: str, **content) -> None:
        channel = self.channel
        if not channel.tagged:                     # between cells, or in a forked child
            channel.emit(msg_type, **content)
            return
        size = _size_at_least(content)
        if size <= self.budget.room:               # else not worth encoding
            try:
                frame = channel.output_frame(msg_type, content)
            except ProtocolError:                  # over the cell's frame limit
                frame = None
            if frame is not None and self.budget.take(len(frame)):
                channel.send_frame(frame)
                return
            size = len(frame) if frame is not None else max(size, channel.cell_frame)
        self._send_head(msg_type, content, size)

    def _send_head(self, msg_type: str, content: dict, size: int) -> None:
        room = self.budget.room
        text = content.get("data", {}).get("text/plain")
        head = text[:CUT_HEAD] if isinstance(text, str) else ""
        noun = "result" if msg_type == "execute_result" else "display"
        while room >= CUT_MIN_ROOM:
            shown = f"the first {len(head)} characters of its text" if head else "nothing"
            line = (f"[output cut: this {noun} is {format_size(size)}, more than the "
                    f"{format_size(room)} left of this cell's {format_size(self.budget.limit)} "
                    f"output limit ({OUTPUT_LIMIT_ENV}); shown: {shown}]")
            cut = {**content, "data": {"text/plain": f"{head}\n{line}" if head else line},
                   "metadata": {}}
            frame = self.channel.output_frame(msg_type, cut)
            if self.budget.take(len(frame)):
                self.budget.count_cut(dropped=False)
                self.channel.send_frame(frame)
                return
            if not head:
                break
            head = head[:len(head) // 2]           # JSON escapes made it too big: halve it
            room = self.budget.room
        self.budget.count_cut(dropped=True)


def _size_at_least(content: dict) -> int:
    """A lower bound of an output's frame size, without encoding it."""
    data = content.get("data")
    if not isinstance(data, dict):
        return 0
    return sum(len(value) for value in data.values() if isinstance(value, (str, bytes)))


class OutputStream(io.TextIOBase):
    """sys.stdout or sys.stderr: text becomes "stream" frames as it is written.

    A frame goes out on flush(), at a newline (at most one per FLUSH_INTERVAL:
    a flood of short lines is batched), when STREAM_CHUNK characters are
    waiting, and otherwise within FLUSH_INTERVAL via the flusher thread, so a
    progress bar without newlines still shows.
    """

    encoding = "utf-8"
    errors = "strict"

    def __init__(self, name: str, channel: Channel, budget: OutputBudget, fd: int):
        super().__init__()
        self.name = f"<{name}>"
        self.stream_name = name
        self.sibling: OutputStream | None = None   # the other one, flushed first to keep order
        self.flusher: StreamFlusher | None = None
        self._channel = channel
        self._gate = channel.gate
        self._budget = budget
        self._fd = fd
        self._pending: list[str] = []
        self._pending_size = 0
        self._last_sent = 0.0
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._reset_in_child)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        """The agent's own descriptor: what is written there is not captured."""
        return self._fd

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if self._channel.sock is None:        # in a child the cell forked
            _write_all(self._fd, text)
            return len(text)
        if self._budget.full:                 # a flood: count it and return at once
            self._budget.drop(text)
            return len(text)
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        with self._gate.deferred():           # no KeyboardInterrupt mid-frame
            sibling = self.sibling
            if sibling is not None and sibling._pending:
                sibling.flush()
            kept = self._budget.admit(text)
            if kept:
                self._add(kept)
        return len(text)

    def _add(self, text: str) -> None:
        with self._lock:
            self._pending.append(text)
            self._pending_size += len(text)
            due = self._pending_size >= STREAM_CHUNK or (
                "\n" in text and time.monotonic() - self._last_sent >= FLUSH_INTERVAL)
            if due:
                self._send_pending()
        if not due and self.flusher is not None:
            self.flusher.wake()

    def flush(self) -> None:
        with self._channel.gate.deferred(), self._lock:
            self._send_pending()

    def _send_pending(self) -> None:
        # Called with self._lock held: the flusher thread and the main thread
        # must not both send, or a chunk could land after the cell's reply.
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        for start in range(0, len(text), STREAM_CHUNK):
            self._channel.emit("stream", name=self.stream_name, text=text[start:start + STREAM_CHUNK])
        self._last_sent = time.monotonic()

    def _reset_in_child(self) -> None:
        self._lock = threading.Lock()
        self._pending.clear()
        self._pending_size = 0


class StreamFlusher(threading.Thread):
    """Sends text that has waited FLUSH_INTERVAL without a newline."""

    def __init__(self, streams: list[OutputStream], interval: float = FLUSH_INTERVAL):
        super().__init__(name="agent-stream-flusher", daemon=True)
        self.streams = streams
        self.interval = interval
        self._wake = threading.Event()

    def wake(self) -> None:
        if not self._wake.is_set():           # is_set() is cheap, set() is not
            self._wake.set()

    def run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self.interval)
            self._wake.clear()
            try:
                for stream in self.streams:
                    stream.flush()
            except OSError:
                return          # the host is gone; the main thread sees it too


def flush_std_streams() -> None:
    """Before a display or a traceback, so that output keeps its order."""
    sys.stdout.flush()
    sys.stderr.flush()


# ---------------------------------------------------------------------------
# IPython's output hooks


class AgentDisplayPublisher(DisplayPublisher):
    """display() and clear_output() as frames.  ``channel`` and ``outputs``
    (the budget's gate; the channel itself until the agent sets it) are set
    by the agent."""

    channel: Channel | None = None
    outputs: RichOutputs | Channel | None = None

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
        self._validate_data(data, metadata)
        flush_std_streams()
        self.outputs.emit(
            "update_display_data" if update else "display_data",
            data=data, metadata=metadata or {}, transient=transient or {},
        )

    def clear_output(self, wait=False):
        flush_std_streams()
        self.channel.emit("clear_output", wait=bool(wait))


class AgentDisplayHook(DisplayHook):
    """The cell's last value as an execute_result with every format IPython computes."""

    channel: Channel | None = None
    outputs: RichOutputs | Channel | None = None
    _bundle: dict | None = None

    def start_displayhook(self):
        super().start_displayhook()
        self._bundle = {"data": {}, "metadata": {}}

    def write_output_prompt(self):
        """No "Out[n]:" text: the count travels in the message."""

    def write_format_data(self, format_dict, md_dict=None):
        self._bundle = {"data": format_dict, "metadata": md_dict or {}}

    def finish_displayhook(self):
        flush_std_streams()
        bundle, self._bundle = self._bundle, None
        self._is_active = False
        if bundle and bundle["data"]:
            self.outputs.emit("execute_result", execution_count=self.prompt_count, **bundle)


class AgentShell(InteractiveShell):
    """An InteractiveShell whose output leaves as frames (cf. ipykernel's ZMQInteractiveShell)."""

    displayhook_class = Type(AgentDisplayHook)
    display_pub_class = Type(AgentDisplayPublisher)
    readline_use = CBool(False)
    autoindent = CBool(False)       # meaningless without a terminal
    exiter = Instance(ZMQExitAutocall)
    keepkernel_on_exit = None
    channel: Channel | None = None
    stdin_forwarder: StdinForwarder | None = None    # builtins.input and getpass (make_shell)

    @default("exiter")
    def _default_exiter(self):
        return ZMQExitAutocall(self)

    def attach(self, channel: Channel, outputs: RichOutputs | None = None) -> None:
        """Output goes to ``channel``; displays and results through ``outputs``
        (the cell's budget) when given."""
        self.channel = channel
        self.display_pub.channel = self.displayhook.channel = channel
        self.display_pub.outputs = self.displayhook.outputs = outputs or channel
        self.reset_error_state()

    def reset_error_state(self) -> None:
        self._last_traceback = None
        self.last_error = None                 # (ename, evalue) as last shown
        self.traceback_in_displayhook = False

    def init_environment(self):
        # As ipykernel: colours that Jupyter renders, and no pager to wait on.
        os.environ.update(TERM="xterm-color", CLICOLOR="1", FORCE_COLOR="1",
                          CLICOLOR_FORCE="1", PAGER="cat", GIT_PAGER="cat")

    def init_magics(self):
        super().init_magics()
        self.register_magics(KernelMagics)

    def init_hooks(self):
        super().init_hooks()
        self.set_hook("show_in_pager", page.as_hook(self._page_as_payload), 99)

    def _page_as_payload(self, strg, start=0, screen_lines=0, pager_cmd=None):
        """`obj?` and %magic? text goes back in the execute_reply payload, as in Jupyter."""
        data = strg if isinstance(strg, dict) else {"text/plain": strg}
        self.payload_manager.write_payload({"source": "page", "data": data, "start": max(0, start)})

    def ask_exit(self):
        """`exit` in a cell: the agent exits after the reply, as ipykernel does."""
        self.exit_now = not self.keepkernel_on_exit
        self.payload_manager.write_payload({"source": "ask_exit", "keepkernel": self.keepkernel_on_exit})

    def enable_gui(self, gui=None):
        """%matplotlib inline calls this with None; a container has no display
        for a GUI event loop."""
        if gui not in (None, "inline"):
            raise UsageError(f"no {gui!r} event loop in the container: "
                             f"figures show with %matplotlib inline (the default)")
        self.active_eventloop = gui

    def _showtraceback(self, etype, evalue, stb):
        flush_std_streams()
        if self.displayhook.is_active:
            self.traceback_in_displayhook = True   # a repr that raised fails the cell
        # bounded: the error frame and the reply must fit the cell's frame limit
        ename, evalue = cut_text(etype.__name__, 1000), cut_text(str(evalue), ERROR_TEXT)
        stb = bounded_traceback(list(stb))
        self.channel.emit("error", ename=ename, evalue=evalue, traceback=stb)
        self._last_traceback = stb
        self.last_error = (ename, evalue)

    @contextmanager
    def _tee(self, channel):
        # IPython 9 copies every string written to stdout/stderr into
        # history_manager.outputs, before our budget sees it, for the life of
        # the session: a cell printing 100 MB would keep 100 MB in the
        # container's memory.  Stream output is not kept in history here.
        yield


@magics_class
class KernelMagics(Magics):
    """ipykernel's own magics (its zmqshell.KernelMagics), so that %lsmagic and
    the notebooks that use them read the same; the pager is the payload's."""

    @line_magic
    def clear(self, arg_s):
        """Clear the terminal."""
        self.shell.system("clear")

    @line_magic
    def less(self, arg_s):
        """Show a file through the pager.  Files ending in .py are syntax-highlighted."""
        if not arg_s:
            raise UsageError("Missing filename.")
        if arg_s.endswith(".py"):
            text = self.shell.pycolorize(openpy.read_py_file(arg_s, skip_encoding_cookie=False))
        else:
            with open(arg_s) as handle:
                text = handle.read()
        page.page(text)

    more = line_magic("more")(less)

    @line_magic
    def man(self, arg_s):
        """Find the man page for the given command and display in pager."""
        page.page(self.shell.getoutput(f"man {arg_s} | col -b", split=False))

    @line_magic
    def autosave(self, arg_s):
        """Set the autosave interval in the notebook (in seconds); 0 disables it.
        As ipykernel: a Javascript display, which reaches the frontend only
        when the kernelspec says --trust-output (else it is dropped, with a note)."""
        try:
            interval = int(arg_s)
        except ValueError as exc:
            raise UsageError(f"%autosave requires an integer, got {arg_s!r}") from exc
        display(Javascript(f"IPython.notebook.set_autosave_interval({1000 * interval})"),
                include=["application/javascript"])
        print(f"Autosaving every {interval} seconds" if interval else "Autosave disabled")

    @line_magic
    def connect_info(self, arg_s):
        """Information for connecting other clients to this kernel: none here."""
        print(NO_CONNECTION_FILE, file=sys.stderr)

    @line_magic
    def qtconsole(self, arg_s):
        """Open a qtconsole connected to this kernel: not from a container."""
        print(NO_CONNECTION_FILE, file=sys.stderr)

    @line_magic
    def subshell(self, arg_s):
        """List all current subshells."""
        print("Kernel does not support subshells")   # ipykernel's words for such a kernel


NO_CONNECTION_FILE = ("the cells run in a container, which never sees the kernel's connection "
                      "file (its key would let cell code drive the kernel): connect to the "
                      "kernel from the host")


def compress_owner_home(owner_home: str) -> None:
    """File names in tracebacks and ``obj?`` abbreviate the kernel owner's home
    to ~, as ipykernel running as that user does (IPython's compress_user
    uses HOME, which inside is the container's).  The host's interpreter and
    the notebook's directory are seen inside at their host paths, so their
    frames read as on ipykernel; ~ means the owner's home, as there."""
    if not os.path.isabs(owner_home) or os.path.normpath(owner_home) == "/":
        return
    from IPython.core import oinspect
    from IPython.utils import path as ipython_path
    home = os.path.normpath(owner_home)
    prefix = os.path.join(home, "")

    def compress_user(path: str) -> str:
        if path == home:
            return "~"
        return "~" + os.sep + path[len(prefix):] if path.startswith(prefix) else path

    ipython_path.compress_user = compress_user   # tbtools looks it up at each call
    oinspect.compress_user = compress_user       # imported by name


# ---------------------------------------------------------------------------
# input() and getpass(): asked of the host's frontend


class StdinForwarder:
    """``builtins.input`` and ``getpass.getpass`` of the cells, as ipykernel's
    raw_input and getpass: an ``input_request`` frame, then the cell waits
    for the host's ``input_reply``.

    The wait is a select() on the socket while the cell's interrupt gate is
    armed, so SIGINT ends it with KeyboardInterrupt; the frame itself is read
    inside ``gate.deferred()``, so never half.  Each request has a number
    (``n``): a reply that comes after its input() was interrupted does not
    answer the next one, and one that comes after the cell ended is dropped
    by Agent.serve.
    """

    REPLY_ERRORS = {"EOFError": EOFError, "KeyboardInterrupt": KeyboardInterrupt,
                    "StdinNotImplementedError": StdinNotImplementedError}

    def __init__(self, channel: Channel):
        self.channel = channel
        self.allowed = False          # this cell's execute request said allow_stdin
        self.asked = 0

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

    def refusal(self, what: str) -> StdinNotImplementedError | None:
        """Why this call cannot ask the frontend (None: it can)."""
        channel = self.channel
        if not (self.allowed and channel.tagged and channel.gate.armed):
            return StdinNotImplementedError(
                f"{what} was called, but this frontend does not support input requests.")
        if threading.get_ident() != channel.gate._main:
            return StdinNotImplementedError(
                f"{what} was called from a thread of the cell's; only the cell's own "
                f"(main) thread can ask the frontend for input")
        return None

    def ask(self, prompt: str, password: bool) -> str:
        channel = self.channel
        flush_std_streams()             # what the cell printed comes before the prompt
        self.asked += 1
        channel.emit(protocol.INPUT_REQUEST, n=self.asked, password=password,
                     prompt=prompt[:protocol.INPUT_PROMPT_LIMIT])
        return self._answer(self._wait(self.asked))

    def _wait(self, number: int) -> dict:
        channel = self.channel
        while True:
            select.select([channel.sock], [], [])   # SIGINT: KeyboardInterrupt here
            with channel.gate.deferred():
                msg = channel.recv()
            if msg["type"] != protocol.INPUT_REPLY:
                raise ProtocolError(f"the host sent a {msg['type']!r:.60} frame while the cell "
                                    f"waited for an input_reply")
            if msg.get("n") == number:
                return msg                 # else the answer to an input() interrupted before

    def _answer(self, msg: dict) -> str:
        value = msg.get("value")
        if isinstance(value, str):
            return value
        name, message = str(msg.get("error", "")), cut_text(str(msg.get("message", "")), 1000)
        if name in self.REPLY_ERRORS:
            raise self.REPLY_ERRORS[name](message) if message else self.REPLY_ERRORS[name]()
        raise RuntimeError(f"the host could not ask the frontend for input: {name}: {message}")


# ---------------------------------------------------------------------------
# Requests


class RequestError(Exception):
    """A request that lacks a field or has one of the wrong type."""


def _field(request: dict, name: str, kind: type):
    if name not in request:
        raise RequestError(f"{request['type']} request lacks {name!r}")
    value = request[name]
    if not isinstance(value, kind):
        raise RequestError(f"{request['type']} request: {name!r} must be {kind.__name__}, "
                           f"got {type(value).__name__}")
    return value


def _error(ename: str, evalue: str, **extra) -> dict:
    return {"status": "error", "ename": ename, "evalue": evalue, **extra}


class Agent:
    """Serves requests, one at a time, until shutdown or EOF."""

    def __init__(self, channel: Channel, shell: AgentShell, budget: OutputBudget,
                 streams: list[OutputStream], reaper: ChildReaper | None = None):
        self.channel = channel
        self.shell = shell
        self.budget = budget
        self.streams = streams
        self.reaper = reaper or ChildReaper()
        self.last_execute_id = None

    def warm_up(self) -> None:
        """Run an empty cell if no request waits yet (a container started
        ahead, for the warm pool): a shell's first cell sets up and caches
        what every later one reuses, a few ms the user's first cell then does
        not wait for.  Silent and out of the history: the execution count
        stays where it was."""
        if not select.select([self.channel.sock], [], [], 0)[0]:
            self.shell.run_cell("pass", store_history=False, silent=True)

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
            if request["type"] == "shutdown" or self.shell.exit_now:
                return 0

    def handle(self, request: dict) -> dict:
        kind = request["type"]
        if kind not in protocol.REQUEST_TYPES and kind != COMMAND:
            return _error("ProtocolError", f"unknown request type {kind!r}")
        self.channel.request_id = request.get("id")
        try:
            return getattr(self, "do_" + kind)(request)
        except RequestError as exc:
            return _error("ProtocolError", str(exc))
        except Exception as exc:       # reported in the reply; the agent keeps serving
            return _error(type(exc).__name__, str(exc),
                          traceback=traceback.format_exception(exc))

    def _reply(self, request_id, content: dict, kind: str | None = None) -> None:
        # an execute reply is one of the cell's frames: the host reads those
        # with the smaller limit (protocol.cell_frame_limit)
        limit = self.channel.cell_frame if kind == "execute" else None
        try:
            self.channel.send({"type": protocol.REPLY, "id": request_id, "content": content}, limit)
        except (ProtocolError, TypeError, ValueError) as exc:
            # Too big or not JSON: encode() refused before writing, so the
            # stream is intact and an error reply can go instead.
            self.channel.send({"type": protocol.REPLY, "id": request_id,
                               "content": _error(type(exc).__name__, f"reply not sent: {exc}")})

    # -- execute ------------------------------------------------------------

    def do_execute(self, request: dict) -> dict:
        code = _field(request, "code", str)
        silent = bool(request.get("silent", False))
        store_history = bool(request.get("store_history", not silent))
        expressions = request.get("user_expressions") or {}
        self.last_execute_id = request.get("id")
        self.budget.reset()
        self.shell.reset_error_state()
        self.reaper.reap()                # zombies made between cells (a thread of the user's)
        result, escaped, evaluated = None, None, {}
        stdin = self.shell.stdin_forwarder
        stdin.allowed = request.get("allow_stdin") is True
        try:
            with self.channel.gate.cell():
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
        self.reaper.reap()                # before the reply: the next cell has its pids back
        self._end_of_cell_output()
        return self._execute_reply(result, escaped, evaluated)

    def do_command(self, request: dict) -> dict:
        """A program run in the container (agent_command.py); not a cell."""
        try:
            argv = request_argv(request)
        except ValueError as exc:
            return refused(exc)
        self.budget.reset()
        self.reaper.reap()
        code = run_command(argv, self.streams[0], self.streams[1], self.channel.gate.cell)
        self.reaper.reap()
        self._end_of_cell_output()
        return {"status": "ok", "exit_code": code}

    def _end_of_cell_output(self) -> None:
        for stream in self.streams:
            stream.flush()
        notice = self.budget.notice()
        if notice:
            self.channel.emit("stream", name="stderr", text=notice)

    def _execute_reply(self, result, escaped, evaluated) -> dict:
        shell = self.shell
        ok = escaped is None and result.success and not shell.traceback_in_displayhook
        content = {"status": "ok" if ok else "error", "execution_count": shell.execution_count - 1}
        if not ok:
            err = escaped or result.error_before_exec or result.error_in_exec
            if err is not None:
                ename, evalue = cut_text(type(err).__name__, 1000), cut_text(str(err), ERROR_TEXT)
            else:                        # a traceback shown by IPython, not raised by the cell
                ename, evalue = shell.last_error or ("Error", "")
            content.update(ename=ename, evalue=evalue, traceback=shell._last_traceback or [])
        content["user_expressions"] = evaluated if ok else {}
        content["payload"] = shell.payload_manager.read_payload()
        shell.payload_manager.clear_payload()
        return content

    # -- the editor's requests ------------------------------------------------

    def do_complete(self, request: dict) -> dict:
        code = _field(request, "code", str)
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
        code = _field(request, "code", str)
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
        code = _field(request, "code", str)
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
        text = _field(request, "values", str)
        try:
            values = protocol.unpack_values(text)
        except Exception as exc:         # whatever the pickle's classes raise
            return _error(type(exc).__name__, f"could not unpickle the pushed values: {exc}")
        for name in values:
            if not (isinstance(name, str) and name.isidentifier()):
                return _error("NameError", f"cannot push {name!r}: not a variable name", name=name)
        self.shell.push(values, interactive=True)
        return {"status": "ok", "values": sorted(values)}

    def do_pull(self, request: dict) -> dict:
        names = _field(request, "names", list)
        values = {}
        for name in names:
            if not isinstance(name, str) or name not in self.shell.user_ns:
                return _error("NameError", f"name {name!r} is not defined", name=name)
            values[name] = self.shell.user_ns[name]
        try:
            text = protocol.pack_values(values)
        except Exception:                # find which variable, and say why
            return self._unpicklable(values)
        if len(text) + 1024 > self.channel.max_frame:
            return _error("ProtocolError", f"the pulled values pickle to {len(text)} bytes of base64, "
                          f"over the {self.channel.max_frame}-byte frame limit")
        return {"status": "ok", "values": text}

    @staticmethod
    def _unpicklable(values: dict) -> dict:
        for name, value in values.items():
            try:
                pickle.dumps(value, protocol=pickle.DEFAULT_PROTOCOL)
            except Exception as exc:
                return _error(type(exc).__name__, f"variable {name!r} cannot be pickled: {exc}",
                              name=name)
        return _error("PicklingError", "the variables pickle one by one but not together")

    def do_update_environ(self, request: dict) -> dict:
        try:
            return {"status": "ok", "values": protocol.update_environ(os.environ, request.get("changes"))}
        except ProtocolError as exc:
            raise RequestError(str(exc)) from None

    def do_shutdown(self, request: dict) -> dict:
        return {"status": "ok", "restart": bool(request.get("restart", False))}


# ---------------------------------------------------------------------------
# Start-up


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


class CellCompiler(CachingCompiler):
    """Cells named as ipykernel 6+ names them (ipykernel/compiler.py,
    XCachingCompiler): ``/tmp/ipykernel_PID/HASH.py``, HASH the murmur2 of
    the cell's code, or IPYKERNEL_CELL_NAME.  IPython's own name,
    ``<ipython-input-N-hash>``, shows in SyntaxErrors, warnings and pdb, and
    stack_data formats a traceback of such a name differently (other
    context lines, other highlighting).  A copy, not an import: importing
    ipykernel would bring ZeroMQ and jupyter_client into every container."""

    def get_code_name(self, raw_code, code, number):
        return ipykernel_cell_name(raw_code)


def ipykernel_cell_name(code: str) -> str:
    name = os.environ.get("IPYKERNEL_CELL_NAME")
    if name is None:
        folder = os.path.join(tempfile.gettempdir(), f"ipykernel_{os.getpid()}")
        name = os.path.join(folder, f"{murmur2_x86(code, 0xC70F6907)}.py")
    return name


def murmur2_x86(text: str, seed: int) -> int:
    """ipykernel's compiler.murmur2_x86, over the UTF-8 bytes of ``text``."""
    m, data = 0x5BD1E995, text.encode("utf-8")
    length = len(data)
    h = seed ^ length
    rounded_end = length & 0xFFFFFFFC
    for i in range(0, rounded_end, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = data[rounded_end:]
    if tail:
        h ^= int.from_bytes(tail, "little")
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def make_shell(channel: Channel, ipython_dir: str) -> AgentShell:
    if not os.environ.get("MPLBACKEND") and importlib.util.find_spec("matplotlib_inline"):
        # Like ipykernel: figures go through display() and are flushed by
        # matplotlib_inline's post_execute hook, which registers itself when
        # the backend is first loaded.  A backend the user chose wins.
        os.environ["MPLBACKEND"] = INLINE_BACKEND
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = AgentShell.instance(config=config, ipython_dir=ipython_dir,
                                compiler_class=CellCompiler)
    shell.attach(channel)
    shell.extension_manager.load_extension("storemagic")   # %store, as ipykernel's default
    shell.stdin_forwarder = StdinForwarder(channel)
    builtins.input = shell.stdin_forwarder.input
    getpass.getpass = shell.stdin_forwarder.getpass
    return shell


def install_streams(channel: Channel, budget: OutputBudget) -> list[OutputStream]:
    out = OutputStream("stdout", channel, budget, fd=1)
    err = OutputStream("stderr", channel, budget, fd=2)
    out.sibling, err.sibling = err, out
    flusher = StreamFlusher([out, err])
    out.flusher = err.flusher = flusher
    flusher.start()
    sys.stdout, sys.stderr = out, err
    return [out, err]


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
        limit = parse_size(os.environ.get(OUTPUT_LIMIT_ENV) or str(DEFAULT_OUTPUT_LIMIT))
    except ValueError as exc:
        print(f"agent: {OUTPUT_LIMIT_ENV}: {exc}", file=sys.stderr)
        return 2
    try:
        sock = socket.socket(fileno=args.fd)
    except OSError as exc:
        print(f"agent: --fd {args.fd} is not a usable socket: {exc}", file=sys.stderr)
        return 2
    sock.set_inheritable(False)            # not into the processes cells start
    owner = os.getpid()
    private_dir = None if os.environ.get("IPYTHONDIR") else tempfile.mkdtemp(prefix="ipython-agent-")
    gate = InterruptGate()
    gate.install()
    channel = Channel(sock, gate, args.max_frame, protocol.cell_frame_limit(limit))
    saved = sys.stdout, sys.stderr
    sys.path[:] = container_sys_path(sys.path, bool(sys.flags.safe_path))
    compress_owner_home(os.environ.pop(OWNER_HOME_ENV, ""))
    try:
        shell = make_shell(channel, private_dir or os.environ["IPYTHONDIR"])
        budget = OutputBudget(limit)
        shell.attach(channel, RichOutputs(channel, budget))
        reaper = ChildReaper()
        reaper.install()                   # before any cell: every Popen is known (reaping.py)
        agent = Agent(channel, shell, budget, install_streams(channel, budget), reaper)
        return agent.serve()
    except ConnectionError:                # the host went away mid-reply
        return 0
    except ProtocolError as exc:           # the host sent a frame we cannot read
        print(f"agent: {exc}", file=saved[1])
        return 1
    finally:
        sys.stdout, sys.stderr = saved
        if private_dir and os.getpid() == owner:   # not from a child the cell forked
            shutil.rmtree(private_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
