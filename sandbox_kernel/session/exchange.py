"""One request to the agent and everything it sends until its reply: the
deadline, interrupt and kill state machine, returning a typed ``Outcome``.

    Exchange(transport, request, timeout=..., cell=True, control=..., ...).run()

Bounded: select() waits at most POLL_INTERVAL; a cell past its time limit
gets a SIGINT (``control.interrupts``), and ``timeout_grace`` later a kill
(``control.kill``); a user's interrupt the cell does not honour within
``interrupt_grace`` is a kill too; a request that is not a cell gives up at
its timeout (its late reply is recognised by the transport's stale ids and
dropped).  EOF on the socket is the container's death; a frame that breaks
the protocol ends it as BROKEN.

The exchange knows nothing of a Session: it gets the transport, the
session's display settings and a Control (signals, kill, graces), which
tests fake (tests/unit/test_exchange.py).  Imports protocol, transport,
outputs, errors and stats (format_bytes).
"""
from __future__ import annotations

import enum
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import comm_state, protocol
from .errors import SessionError
from .outputs import DISPLAY_KINDS, Display, OnOutput, clean_output, content_size, host_output_cap
from .protocol import ProtocolError
from .stats import format_bytes
from .transport import Transport

POLL_INTERVAL = 0.2           # longest select(); a signal handler's flag is seen this fast
TIMEOUT_GRACE = 2.0           # after a cell's time limit: SIGINT, then this long to stop
INTERRUPT_GRACE = 5.0         # after a user's interrupt: this long to stop, then SIGKILL
GROUP_SIGNAL_DELAY = 0.5      # see Exchange._forward_host_sigint

# on_input(prompt, password) -> the frontend's answer: input() and getpass() in a cell
OnInput = Callable[[str, bool], str]
# on_comm(kind, content): a comm frame of the agent's, fields checked (the session's comm handler)
OnComm = Callable[[str, dict], None]
_COMM_FIELDS = {"comm_id": str, "data": dict, "metadata": dict, "buffers": list}


class Ending(enum.Enum):
    REPLY = "reply"                        # the agent replied
    DIED = "died"                          # EOF on the socket: the container ended
    TIMEOUT_KILLED = "timeout_killed"      # past the time limit and the grace: killed
    INTERRUPT_KILLED = "interrupt_killed"  # interrupted, not stopped within the grace: killed
    BROKEN = "broken"                      # a frame broke the protocol
    GAVE_UP = "gave_up"                    # not a cell, no reply within its timeout


@dataclass
class Outcome:
    ending: Ending
    reply: dict | None = None
    timed_out: bool = False
    error: str | None = None

    def __post_init__(self):
        self.ending = Ending(self.ending)  # the words ("died") name the same endings


class Interrupts:
    """SIGINTs to the agent, shared by the session (a user's interrupt, from
    any thread) and its exchanges (a time limit, a SIGINT to this process).
    ``last``: when the last one went; an exchange clears it as it begins.
    ``send`` signals the agent and says whether there was one to signal."""

    def __init__(self, send: Callable[[], bool], clock: Callable[[], float] = time.monotonic):
        self.send, self.clock = send, clock
        self.last: float | None = None

    def interrupt(self) -> None:
        at = self.clock()
        if self.send():
            self.last = at


@dataclass
class Control:
    """What an exchange may do to the container besides talking to it.  The
    graces are read when they are needed: a change while a cell runs holds."""
    interrupts: Interrupts
    kill: Callable[[], None]                 # SIGKILL to every process of the container
    launcher_in_our_group: Callable[[], bool] = lambda: False
    timeout_grace: float = TIMEOUT_GRACE
    interrupt_grace: float = INTERRUPT_GRACE


@dataclass
class Exchange:
    """One request and everything the agent sends until its reply."""
    transport: Transport
    request: dict
    control: Control
    timeout: float | None
    cell: bool
    output_limit: int
    display: Display = field(default_factory=Display)
    on_output: OnOutput | None = None
    on_input: OnInput | None = None
    on_comm: OnComm | None = None
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self):
        self.id = self.transport.new_id()
        self.request = {**self.request, "id": self.id}
        self.outcome: Outcome | None = None
        self.timed_out = False
        self.deadline: float | None = None
        self.kill_at: float | None = None
        self.sigint_at: float | None = None
        self.forwarded = False
        self.passed_bytes = 0
        self.dropped_frames = 0
        self.output_cap = host_output_cap(self.output_limit)

    def run(self) -> Outcome:
        try:
            outbox = memoryview(protocol.encode(self.request))
        except (ProtocolError, TypeError, ValueError) as exc:
            raise SessionError(f"cannot send the {self.request['type']} request: {exc}") from None
        is_cell = self.cell and self.request["type"] == "execute"
        self.transport.begin(self.request, self.output_limit, is_cell=is_cell)
        self.control.interrupts.last = None
        self.deadline = self.clock() + self.timeout if self.timeout else None
        with _SigintToFlag(self):
            while self.outcome is None:
                try:
                    self._check_clock(self.clock())
                    if self.outcome is not None:
                        break
                    outbox = self._wait_and_move(outbox)
                except KeyboardInterrupt:   # not in the main thread: no handler of ours
                    self.sigint_at = self.sigint_at or self.clock()
        self._finish_notices()
        self.outcome.timed_out = self.timed_out
        return self.outcome

    def _wait_and_move(self, outbox: memoryview) -> memoryview:
        ready = self.transport.wait(bool(outbox), self._wait())
        if ready is None:                 # stopped from another thread
            self.outcome = Outcome(Ending.DIED)
            return outbox
        readable, writable, logs = ready
        if writable:
            try:
                outbox = self.transport.send_some(outbox)
            except OSError:               # EPIPE, ECONNRESET: the agent is gone
                self.outcome = Outcome(Ending.DIED)
                return outbox
        if readable:
            self._read_socket()
        for fd in logs:
            if self.outcome is None:
                self.transport.read_log(fd, self.on_output)
        return outbox

    def _wait(self) -> float:
        now, wait = self.clock(), POLL_INTERVAL
        for moment in (self.deadline, self.kill_at):
            if moment is not None:
                wait = min(wait, max(moment - now, 0.0))
        return wait

    # -- time ------------------------------------------------------------------

    def _check_clock(self, now: float) -> None:
        control = self.control
        if self.kill_at is not None and now >= self.kill_at:
            control.kill()
            self.outcome = Outcome(Ending.TIMEOUT_KILLED if self.timed_out else Ending.INTERRUPT_KILLED)
            return
        if self.deadline is not None and now >= self.deadline and not self.timed_out:
            if not self.cell:
                self.transport.stale.add(self.id)
                self.outcome = Outcome(Ending.GAVE_UP)
                return
            self.timed_out = True
            self.kill_at = now + control.timeout_grace
            control.interrupts.interrupt()
            return
        self._forward_host_sigint(now)
        interrupted = control.interrupts.last
        if self.cell and interrupted is not None and self.kill_at is None:
            self.kill_at = interrupted + control.interrupt_grace

    def _forward_host_sigint(self, now: float) -> None:
        """A SIGINT to this process (the kernel's interrupt) goes on to the agent.

        jupyter_client interrupts a kernel with killpg: every process of the
        kernel's group gets it, and the container's launcher is one of them
        (it forwards to init, which forwards to the agent).  Then the agent
        is interrupted already, and one more SIGINT would interrupt its
        traceback too.  So when the launcher shares our group, we wait
        GROUP_SIGNAL_DELAY for the cell to stop before sending our own.
        """
        if self.sigint_at is None or self.forwarded:
            return
        delay = GROUP_SIGNAL_DELAY if self.control.launcher_in_our_group() else 0.0
        if now >= self.sigint_at + delay:
            self.forwarded = True
            self.control.interrupts.interrupt()
            self.control.interrupts.last = self.sigint_at

    # -- frames ----------------------------------------------------------------

    def _read_socket(self) -> None:
        try:
            frames = self.transport.receive()
            if frames is None:
                self.outcome = Outcome(Ending.DIED)
                return
            for msg in frames:
                self._dispatch(msg)
                if self.outcome is not None:
                    return
        except ProtocolError as exc:
            self.outcome = Outcome(Ending.BROKEN, error=str(exc))

    def _dispatch(self, msg: dict) -> None:
        kind, msg_id = msg["type"], msg.get("id")
        if msg_id is not None and type(msg_id) is not int:    # a list would not hash below
            raise ProtocolError(f"a {kind:.60} frame whose id is a {type(msg_id).__name__}, not an int")
        transport = self.transport
        if kind == protocol.REPLY:
            if msg_id in transport.stale and msg_id != self.id:
                transport.stale.discard(msg_id)
                return
            if msg_id != self.id:
                raise ProtocolError(f"a reply for request {msg_id!r} while request {self.id} was waiting")
            if not isinstance(msg.get("content"), dict):
                raise ProtocolError("a reply without a content object")
            self.outcome = Outcome(Ending.REPLY, reply=msg["content"])
            return
        if kind == protocol.INPUT_REQUEST:
            self._answer_input(msg)
            return
        if kind in protocol.COMM_TYPES:
            content = clean_comm(msg)
            if msg_id == self.id or msg_id in transport.recent_cells:
                self._pass_comm(kind, content)
            return
        if kind not in protocol.OUTPUT_TYPES:
            raise ProtocolError(f"unknown message type {kind!r:.60}")
        content = clean_output(msg)
        if msg_id != self.id and msg_id not in transport.recent_cells:
            return                 # output of a request we gave up on
        self._pass_on(kind, content)

    # -- input() in the cell ------------------------------------------------------

    def _answer_input(self, msg: dict) -> None:
        """The frontend's answer to the cell's input() or getpass(), sent back
        at once: the agent waits for nothing else.  The prompt is the
        agent's (untrusted): plain text, cut to INPUT_PROMPT_LIMIT."""
        prompt, password, number = msg.get("prompt"), msg.get("password"), msg.get("n")
        if msg.get("id") != self.id or not self.cell:
            raise ProtocolError(f"an input_request for request {msg.get('id')!r} while request "
                                f"{self.id} ({self.request['type']}) was waiting")
        if not (isinstance(prompt, str) and type(password) is bool and type(number) is int):
            raise ProtocolError("an input_request needs a str prompt, a bool password and an int n")
        answer = self._ask_frontend(prompt[:protocol.INPUT_PROMPT_LIMIT], password)
        self.transport.send_now({"type": protocol.INPUT_REPLY, "id": self.id, "n": number, **answer})

    def _ask_frontend(self, prompt: str, password: bool) -> dict:
        if self.on_input is None:
            return {"error": "StdinNotImplementedError", "message": protocol.NO_STDIN}
        started = self.clock()
        try:
            with _SigintRaises():
                value = self.on_input(prompt, password)
        except KeyboardInterrupt:       # the user interrupted the wait: so is the cell
            return {"error": "KeyboardInterrupt", "message": "Interrupted by user"}
        except Exception as exc:        # EOFError, StdinNotImplementedError...: the cell's to see
            return {"error": type(exc).__name__, "message": str(exc)[:1000]}
        finally:
            if self.deadline is not None:   # a person typing is not the cell running
                self.deadline += self.clock() - started
        if not isinstance(value, str):
            return {"error": "TypeError", "message": f"the answer is a {type(value).__name__}, not str"}
        if len(value) > protocol.INPUT_VALUE_LIMIT:
            return {"error": "ValueError", "message": (
                f"the answer is {len(value)} characters, more than input() takes "
                f"({protocol.INPUT_VALUE_LIMIT})")}
        return {"value": value}

    # -- outputs -----------------------------------------------------------------

    def _pass_on(self, kind: str, content: dict) -> None:
        if self.on_output is None:
            return
        size = content_size(content)
        if self.passed_bytes + size > self.output_cap and kind != "error":
            self.dropped_frames += 1
            return
        self.passed_bytes += size
        if kind in DISPLAY_KINDS:
            content = self._shown(content)
        self.on_output(kind, content)

    def _shown(self, content: dict) -> dict:
        """A display as the browser may get it; a widget's view (which model
        to show, checked) is kept: its model came through the comm relay."""
        data, view = comm_state.split_widget_view(content["data"])
        shown = self.display.shown({**content, "data": data}, self.on_output) \
            if data or view is None else content
        if view is None:
            return shown
        data = dict(shown["data"]) if data else {}
        data[comm_state.WIDGET_VIEW] = view
        return {**shown, "data": data}

    def _pass_comm(self, kind: str, content: dict) -> None:
        """A comm frame to the session's comm handler, within the same cap
        per request as the outputs (a flood of widget updates is cut)."""
        size = len(content["comm_id"]) + content_size({"data": content["data"],
                                                       "metadata": content["metadata"]}) \
            + sum(len(b) for b in content["buffers"])
        if self.passed_bytes + size > self.output_cap:
            self.dropped_frames += 1
            return
        self.passed_bytes += size
        if self.on_comm is not None:
            self.on_comm(kind, content)

    def _finish_notices(self) -> None:
        if self.on_output is None:
            return
        self.transport.drain_logs(self.on_output)
        dropped = self.transport.budget.dropped
        if dropped:
            self.on_output("stream", {"name": "stderr", "text": (
                f"[output cut: the container's processes wrote more than "
                f"{format_bytes(self.output_limit)} to their stdout/stderr; "
                f"{dropped} characters dropped]\n")})
        if self.dropped_frames:
            self.on_output("stream", {"name": "stderr", "text": (
                f"[output cut: the cell sent more than {format_bytes(self.output_cap)}"
                f" of output; {self.dropped_frames} messages dropped]\n")})


def clean_comm(msg: dict) -> dict:
    """A comm frame's fields (protocol.py), checked: ProtocolError else."""
    kind = msg["type"]
    content = {"metadata": {}, "buffers": []}
    for name, kind_of in _COMM_FIELDS.items():
        if name not in msg and name in content:
            continue
        if not isinstance(msg.get(name), kind_of):
            raise ProtocolError(f"{kind} frame: {name!r} must be {kind_of.__name__}")
        content[name] = msg[name]
    if not 0 < len(content["comm_id"]) <= protocol.COMM_ID_LIMIT:
        raise ProtocolError(f"{kind} frame: a comm_id of {len(content['comm_id'])} characters")
    if kind == "comm_open":
        target, module = msg.get("target_name"), msg.get("target_module")
        if not (isinstance(target, str) and 0 < len(target) <= protocol.COMM_ID_LIMIT):
            raise ProtocolError("comm_open frame: 'target_name' must be a str of at most "
                                f"{protocol.COMM_ID_LIMIT} characters")
        content.update(target_name=target,
                       target_module=module if isinstance(module, str) else None)
    protocol.decode_buffers(content["buffers"])       # base64 within the bound, or ProtocolError
    return content


class _SigintRaises:
    """While the frontend is asked for input (main thread only), SIGINT raises
    KeyboardInterrupt, as it does in a kernel waiting in ipykernel's
    _input_request: the wait must end on an interrupt, and _SigintToFlag's
    flag would leave it waiting."""

    def __init__(self):
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


class _SigintToFlag:
    """While a request runs in the main thread, SIGINT (the kernel's
    interrupt) only sets a flag: a KeyboardInterrupt in the middle of the
    exchange would lose frames.  The exchange forwards it to the agent."""

    def __init__(self, exchange: Exchange):
        self.exchange = exchange
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                self.previous = signal.signal(signal.SIGINT, self._on_sigint)
            except ValueError:
                self.previous = None
        return self

    def _on_sigint(self, signum, frame) -> None:
        if self.exchange.sigint_at is None:
            self.exchange.sigint_at = self.exchange.clock()

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False
