"""The host's end of one session's channel to its agent: the socket, the two
log pipes (the container's fds 1 and 2), the bounded frame reader, the
request ids (a request's own, the cells' still-recent ones, the stale ones
of requests given up on) and the budget of log output a request may pass on.

One Transport lives as long as its Session; ``attach`` gives it the channel
of each new container, ``close`` lets go of it (from any thread: a stop
while a request runs).  It never waits longer than it is told.  Imports
protocol only.
"""
from __future__ import annotations

import codecs
import collections
import fcntl
import os
import select
import socket
import time
from collections.abc import Callable

from . import protocol
from .protocol import ProtocolError

LOG_PIPE_SIZE = 1 << 20
INPUT_SEND_WAIT = 10.0        # seconds an agent may take to read an input_reply
RECV_SIZE = 1 << 20

OnOutput = Callable[[str, dict], None]


class LogBudget:
    """Characters of fd output (not through the agent) a request may still pass on."""

    def __init__(self, limit: int):
        self.limit, self.used, self.dropped = limit, 0, 0

    def admit(self, text: str) -> str:
        room = max(self.limit - self.used, 0)
        kept = text[:room]
        self.used += len(kept)
        self.dropped += len(text) - len(kept)
        return kept


class Transport:
    """The socket and log pipes of the running container, and the ids."""

    def __init__(self):
        self.sock: socket.socket | None = None
        self.logs: dict[int, tuple[str, codecs.IncrementalDecoder]] = {}
        self.log_tail: collections.deque[str] = collections.deque(maxlen=20)
        self.reader: protocol.FrameReader | None = None
        self.recent_cells: collections.deque[int] = collections.deque(maxlen=16)
        self.stale: set[int] = set()
        self.budget = LogBudget(0)
        self._next_id = 0

    def attach(self, sock: socket.socket, log_fds: dict[int, str]) -> None:
        """A new container's channel: our socket end and the read ends of its
        log pipes ({fd: "stdout" or "stderr"}); ours to close from now on."""
        sock.setblocking(False)
        self.sock = sock
        self.reader = protocol.FrameReader()
        self.logs = {}
        for fd, stream in log_fds.items():
            _prepare_log_pipe(fd)
            self.logs[fd] = (stream, codecs.getincrementaldecoder("utf-8")("replace"))

    def close(self) -> None:
        """Close our ends of the channel (idempotent)."""
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()
        # swap, then pop: a read_log at EOF in another thread pops the same
        # dict, so each fd is closed exactly once (a second close could hit a
        # number ZeroMQ was handed meanwhile)
        logs, self.logs = self.logs, {}
        while logs:
            try:
                fd, _ = logs.popitem()
            except KeyError:
                break
            os.close(fd)
        self.reader = None

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def begin(self, request: dict, output_limit: int, *, is_cell: bool) -> None:
        """Ready for one request: its frame limit, a fresh log budget, the
        log tail cleared; a cell's id is kept (its late output is the user's).

        A cell's (or a command's) frames are small (protocol.cell_frame_limit: the agent cuts
        its outputs to fit), so reading one never costs the host more than a
        few MB; push and pull replies, and a late reply of a request given
        up on, may be larger."""
        small = request["type"] in protocol.CELL_REQUESTS and not self.stale
        if self.reader is not None:
            self.reader.max_frame = protocol.cell_frame_limit(output_limit) if small \
                else protocol.DEFAULT_MAX_FRAME
        if is_cell:
            self.recent_cells.append(request["id"])
        self.budget = LogBudget(output_limit)
        self.log_tail.clear()

    # -- moving bytes ------------------------------------------------------------

    def wait(self, sending: bool, timeout: float) -> tuple[bool, bool, list[int]] | None:
        """select() for at most ``timeout``: (socket readable, socket
        writable, readable log fds); None when the channel is closed."""
        sock = self.sock
        if sock is None:
            return None
        try:
            readable, writable, _ = select.select([sock, *self.logs], [sock] if sending else [],
                                                  [], timeout)
        except InterruptedError:
            return False, False, []
        return sock in readable, bool(writable), [fd for fd in readable if fd is not sock]

    def send_some(self, outbox: memoryview) -> memoryview:
        """What is left of ``outbox`` after one non-blocking send; OSError
        (EPIPE, ECONNRESET) when the agent is gone."""
        if self.sock is None:
            raise ConnectionError("the session's channel is closed")
        try:
            return outbox[self.sock.send(outbox[:RECV_SIZE]):]
        except BlockingIOError:
            return outbox

    def receive(self) -> list[dict] | None:
        """The frames of one recv (perhaps none); None at EOF: the agent is
        gone.  ProtocolError for a frame that breaks the protocol."""
        sock, reader = self.sock, self.reader
        if sock is None or reader is None:
            return None
        try:
            data = sock.recv(RECV_SIZE)
        except BlockingIOError:
            return []
        except OSError:
            data = b""
        if not data:
            return None
        return reader.feed(data)

    def send_now(self, msg: dict, wait: float = INPUT_SEND_WAIT) -> None:
        """One small frame, written whole before anything else is read (the
        socket is non-blocking); an agent that takes none of it within
        ``wait`` is stuck, and its stream lost: ProtocolError."""
        frame = memoryview(protocol.encode(msg))
        give_up = time.monotonic() + wait
        sock = self.sock
        while frame and sock is not None:
            remaining = give_up - time.monotonic()
            try:
                if remaining <= 0 or not select.select([], [sock], [], remaining)[1]:
                    break
                frame = frame[sock.send(frame):]
            except BlockingIOError:
                continue
            except OSError:
                break
        if frame:
            raise ProtocolError(f"the agent did not take the input_reply within {wait} s")

    # -- the log pipes -----------------------------------------------------------

    def drain_logs(self, on_output: OnOutput | None) -> None:
        """Whatever the container wrote to its fds 1 and 2 (not through the
        agent), as stream output within the budget; read until the pipes are
        empty.  on_output None: only kept for last_words."""
        for fd in list(self.logs):
            while self.read_log(fd, on_output):
                pass

    def read_log(self, fd: int, on_output: OnOutput | None) -> bool:
        """One read of a log pipe; False when it is empty or closed."""
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, OSError):
            return False
        if not data:                      # every writer is gone: the container ended
            if self.logs.pop(fd, None) is not None:   # else close() closes it
                os.close(fd)
            return False
        entry = self.logs.get(fd)
        if entry is None:                 # closed meanwhile
            return False
        stream, decoder = entry
        text = decoder.decode(data)
        if stream == "stderr":
            self.log_tail.append(text[-500:])
        if on_output is not None and text:
            text = self.budget.admit(text)
            if text:
                on_output("stream", {"name": stream, "text": text})
        return True

    def last_words(self) -> str:
        """The end of what the container last wrote to its stderr."""
        return "".join(self.log_tail).strip()[-500:]


def _prepare_log_pipe(fd: int) -> None:
    os.set_blocking(fd, False)
    try:
        fcntl.fcntl(fd, 1031, LOG_PIPE_SIZE)   # F_SETPIPE_SZ: room between cells
    except OSError:
        pass
