"""The output of a cell in both agents: its budget, its stdout and stderr.

* OutputBudget: the bytes of output a cell may still send (stream text and
  the frames of its displays and result), and the notice of what was cut;
* RichOutputs: display_data, update_display_data and execute_result within
  that budget and the cell's frame limit (else the head of their text);
* OutputStream: sys.stdout / sys.stderr as "stream" frames, a line at a
  time, with StreamFlusher sending what waits without a newline.

Standard library only, Python 3.7 syntax (the plain agent runs this on an
image's own python3).  Imports agent_core.py and protocol.py.
"""
from __future__ import annotations

import io
import os
import sys
import threading
import time

from .agent_core import OUTPUT_LIMIT_ENV, Channel, format_size, write_all
from .protocol import ProtocolError

FLUSH_INTERVAL = 0.05          # seconds a partial line may wait before it is sent
STREAM_CHUNK = 64 << 10        # characters: send at this size, and never more in one frame
CUT_HEAD = 16 << 10            # characters of text/plain kept of a display or result that is cut
CUT_MIN_ROOM = 1 << 10         # bytes of budget below which a display that does not fit is dropped


class OutputBudget:
    """Bytes of output a cell may still send: stream text (UTF-8) and the
    frames of its displays and result; counts what it drops or cuts."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self.dropped = 0         # bytes of stream text
        self.heads = 0           # displays and results sent as the head of their text
        self.displays_dropped = 0
        self.comms_dropped = 0   # comm messages (widget updates) that did not fit
        self.full = False        # read without the lock, on every write()
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.used = self.dropped = self.heads = self.displays_dropped = self.comms_dropped = 0
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

    def count_comm_dropped(self) -> None:
        with self._lock:
            self.comms_dropped += 1

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
        if not (self.heads or self.displays_dropped or self.comms_dropped):
            if not self.dropped:
                return None
            return (f"[output cut: the cell printed more than {format_size(self.limit)}; "
                    f"{self.dropped} bytes dropped]\n")
        what = [f"{self.dropped} bytes of printed text dropped"] if self.dropped else []
        if self.heads:
            what.append(f"{self.heads} display(s) or result(s) shown as the head of their text")
        if self.displays_dropped:
            what.append(f"{self.displays_dropped} display(s) or result(s) dropped")
        if self.comms_dropped:
            what.append(f"{self.comms_dropped} widget or comm message(s) dropped")
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
            write_all(self._fd, text)
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


def make_streams(channel: Channel, budget: OutputBudget) -> list:
    """[stdout, stderr] of the cells, each flushing the other first, with
    their flusher thread started."""
    out = OutputStream("stdout", channel, budget, fd=1)
    err = OutputStream("stderr", channel, budget, fd=2)
    out.sibling, err.sibling = err, out
    flusher = StreamFlusher([out, err])
    out.flusher = err.flusher = flusher
    flusher.start()
    return [out, err]
