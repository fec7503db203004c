"""The host's exchange (session/exchange.py) against a fake agent on a
socketpair: no root, no container.  The fake agent is a thread holding the
other end of the socket; the container's signals are fakes that record
which was sent, in order, and when by a fake clock that moves STEP at every
reading (so the times are the exchange's decisions, not the machine's
speed).  Every wait in here is bounded (socket timeouts, join timeouts)."""
import os
import signal
import socket
import threading
import time
import types

import pytest

from sandbox_kernel.session import protocol, verdicts
from sandbox_kernel.session.exchange import Control, Ending, Exchange, Interrupts
from sandbox_kernel.session.outputs import Display
from sandbox_kernel.session.protocol import ProtocolError
from sandbox_kernel.session.transport import Transport

WAIT = 10.0             # the longest any step of a test may take before it counts as hung
pytestmark = pytest.mark.timeout(60)   # a hung exchange fails its test
GRACE = 0.05            # the fakes' timeout and interrupt grace, in the fake clock's seconds
STEP = 0.005            # the fake clock moves this much at every reading
CELL = {"type": "execute", "code": "x", "silent": False, "store_history": True,
        "user_expressions": {}, "allow_stdin": False}


class FakeClock:
    """Seconds that move STEP at every reading, from any thread."""

    def __init__(self):
        self.now = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            self.now += STEP
            return self.now


class FakeContainer:
    """The transport's channel, a fake agent thread on its other end, and
    the signals an exchange sends, recorded as (name, monotonic time)."""

    def __init__(self, output_limit: int = 1 << 20):
        self.host, self.agent = socket.socketpair()
        self.agent.settimeout(WAIT)
        self.pipes = [os.pipe(), os.pipe()]
        self.transport = Transport()
        self.transport.attach(self.host, {self.pipes[0][0]: "stdout", self.pipes[1][0]: "stderr"})
        self.signals: list[tuple[str, float]] = []
        self.on_sigint = lambda: None       # what the agent does when interrupted
        self.clock = FakeClock()
        self.interrupts = Interrupts(self._sigint, self.clock)
        self.output_limit = output_limit
        self.outputs: list[tuple[str, dict]] = []
        self.thread: threading.Thread | None = None
        self.failure: BaseException | None = None

    def _sigint(self) -> bool:
        self.signals.append(("sigint", self.clock.now))
        self.on_sigint()
        return True

    def _kill(self) -> None:
        self.signals.append(("kill", self.clock.now))

    def names(self) -> list[str]:
        return [name for name, _ in self.signals]

    def exchange(self, request=CELL, *, timeout=None, cell=True, **kwargs) -> Exchange:
        control = Control(self.interrupts, self._kill, timeout_grace=GRACE, interrupt_grace=GRACE)
        return Exchange(self.transport, request, control, timeout, cell, self.output_limit,
                        kwargs.pop("display", Display()),
                        on_output=lambda kind, content: self.outputs.append((kind, content)),
                        clock=self.clock, **kwargs)

    def agent_does(self, script) -> None:
        """Run ``script(agent)`` in the fake agent's thread."""
        def run():
            try:
                script(self)
            except BaseException as exc:    # noqa: BLE001 -- reported by finish()
                self.failure = exc
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def request(self) -> dict:
        return protocol.recv(self.agent)

    def send(self, **msg) -> None:
        protocol.send(self.agent, msg)

    def finish(self) -> None:
        if self.thread is not None:
            self.thread.join(WAIT)
            assert not self.thread.is_alive(), "the fake agent hung"
        if self.failure is not None:
            raise self.failure

    def close(self) -> None:
        self.transport.close()
        self.agent.close()
        for _, w in self.pipes:
            os.close(w)


@pytest.fixture
def box():
    fake = FakeContainer()
    yield fake
    fake.close()


def _reply(box, request, **content):
    box.send(type="reply", id=request["id"], content={"status": "ok", **content})


def test_a_reply_ends_it(box):
    box.agent_does(lambda b: _reply(b, b.request(), execution_count=3))
    outcome = box.exchange().run()
    box.finish()
    assert outcome.ending is Ending.REPLY
    assert outcome.reply == {"status": "ok", "execution_count": 3}
    assert not outcome.timed_out and box.signals == []


def test_output_frames_are_passed_on_in_order_and_display_data_made_inert(box):
    def agent(b):
        request = b.request()
        b.send(type="stream", id=request["id"], name="stdout", text="hello\n")
        b.send(type="display_data", id=request["id"], data={"text/plain": "x",
               "application/javascript": "alert(1)"}, metadata={})
        b.send(type="stream", id=999, name="stdout", text="not this request's\n")
        _reply(b, request)
    box.agent_does(agent)
    outcome = box.exchange().run()
    box.finish()
    assert outcome.ending is Ending.REPLY
    kinds = [(kind, content.get("text", content.get("data"))) for kind, content in box.outputs]
    assert kinds[0] == ("stream", "hello\n")
    assert ("display_data", {"text/plain": "x"}) in kinds          # the script is dropped
    assert not any("not this request's" in str(c) for _, c in kinds)


def test_what_the_container_writes_to_its_fds_is_output_within_the_budget():
    box = FakeContainer(output_limit=10)
    try:
        def agent(b):
            request = b.request()
            os.write(b.pipes[1][1], b"0123456789abcdef")
            time.sleep(0.05)           # not a timing assert: the pipe is drained at the end anyway
            _reply(b, request)
        box.agent_does(agent)
        box.exchange().run()
        box.finish()
        text = "".join(c["text"] for k, c in box.outputs if k == "stream")
        assert text.startswith("0123456789") and "abcdef" not in text
        assert "6 characters dropped" in text
    finally:
        box.close()


def test_a_time_limit_sends_sigint_then_kills_after_the_grace(box):
    box.agent_does(lambda b: b.request())           # reads the request, never replies
    exchange = box.exchange(timeout=GRACE)
    outcome = exchange.run()
    box.finish()
    assert outcome.ending is Ending.TIMEOUT_KILLED and outcome.timed_out
    assert box.names() == ["sigint", "kill"]
    (_, sigint_at), (_, kill_at) = box.signals
    assert sigint_at >= exchange.deadline and kill_at >= sigint_at + GRACE - 2 * STEP


def test_a_cell_that_stops_at_the_sigint_is_not_killed(box):
    waiting = {}
    box.on_sigint = lambda: box.send(type="reply", id=waiting["id"], content={
        "status": "error", "ename": "KeyboardInterrupt", "evalue": "", "traceback": []})
    box.agent_does(lambda b: waiting.update(b.request()))
    outcome = box.exchange(timeout=GRACE).run()
    box.finish()
    assert outcome.ending is Ending.REPLY and outcome.timed_out
    assert outcome.reply["ename"] == "KeyboardInterrupt"
    assert box.names() == ["sigint"]


def test_a_user_interrupt_the_cell_ignores_ends_in_a_kill(box):
    def agent(b):
        b.request()
        b.interrupts.interrupt()                     # Session.interrupt from another thread
    box.agent_does(agent)
    outcome = box.exchange().run()
    box.finish()
    assert outcome.ending is Ending.INTERRUPT_KILLED and not outcome.timed_out
    assert box.names() == ["sigint", "kill"]
    assert box.signals[1][1] >= box.signals[0][1] + GRACE - 2 * STEP


def test_a_grace_shortened_while_the_cell_runs_holds_at_once(box):
    """The kernel's shutdown shortens interrupt_grace of a running cell: the
    kill must come after the new grace, long before the old one or the
    cell's time limit."""
    control = {}

    def agent(b):
        b.request()
        control["it"].interrupt_grace = GRACE
        b.interrupts.interrupt()
    box.agent_does(agent)
    exchange = box.exchange(timeout=100 * GRACE)
    exchange.control.interrupt_grace = 1000.0
    control["it"] = exchange.control
    outcome = exchange.run()
    box.finish()
    assert outcome.ending is Ending.INTERRUPT_KILLED and not outcome.timed_out
    assert box.names() == ["sigint", "kill"]


def test_a_sigint_to_this_process_is_forwarded_not_raised(box):
    waiting = {}
    box.on_sigint = lambda: _reply(box, waiting)

    def agent(b):
        waiting.update(b.request())
        os.kill(os.getpid(), signal.SIGINT)          # the kernel's interrupt
    box.agent_does(agent)
    outcome = box.exchange().run()
    box.finish()
    assert outcome.ending is Ending.REPLY and box.names() == ["sigint"]


def test_eof_is_the_containers_death(box):
    def agent(b):
        b.request()
        b.agent.shutdown(socket.SHUT_RDWR)
    box.agent_does(agent)
    outcome = box.exchange().run()
    box.finish()
    assert outcome.ending is Ending.DIED and box.signals == []


@pytest.mark.parametrize("frame, words", [
    (b"\x00\x00\x00\x05notjs", "JSON"),
    (protocol.encode({"type": "reply", "id": 99, "content": {}}), "a reply for request 99"),
    (protocol.encode({"type": "stream", "id": 1, "name": "stdin", "text": ""}), "stdout or stderr"),
    (protocol.encode({"type": "launch", "id": 1}), "unknown message type"),
])
def test_a_malformed_frame_breaks_it_with_a_message(box, frame, words):
    def agent(b):
        b.request()
        b.agent.sendall(frame)
    box.agent_does(agent)
    outcome = box.exchange().run()
    box.finish()
    assert outcome.ending is Ending.BROKEN
    assert words.lower() in outcome.error.lower()


def test_a_request_given_up_on_has_its_late_reply_dropped(box):
    late = {}
    box.agent_does(lambda b: late.update(b.request()))
    first = box.exchange({"type": "complete", "code": "x", "cursor_pos": 1}, timeout=GRACE,
                         cell=False).run()
    box.finish()
    assert first.ending is Ending.GAVE_UP and box.transport.stale == {late["id"]}

    def agent(b):
        request = b.request()
        _reply(b, late, matches=["stale"])              # the first request's, late
        _reply(b, request, matches=["fresh"])
    box.agent_does(agent)
    second = box.exchange({"type": "complete", "code": "y", "cursor_pos": 1},
                          timeout=WAIT, cell=False).run()
    box.finish()
    assert second.ending is Ending.REPLY and second.reply["matches"] == ["fresh"]
    assert box.transport.stale == set()


def test_an_input_request_is_answered_and_the_wait_does_not_count(box):
    asked = []

    def agent(b):
        request = b.request()
        b.send(type="input_request", id=request["id"], n=1, prompt="name? ", password=False)
        answer = b.request()
        _reply(b, request, answer=answer)
    box.agent_does(agent)
    outcome = box.exchange(on_input=lambda prompt, password: asked.append(prompt) or "Ada").run()
    box.finish()
    assert asked == ["name? "]
    assert outcome.reply["answer"] == {"type": protocol.INPUT_REPLY, "id": 1,
                                       "n": 1, "value": "Ada"}


def test_a_command_request_streams_and_its_reply_carries_the_exit_code(box):
    def agent(b):
        request = b.request()
        assert request["type"] == "command" and request["argv"] == ["ls", "-l"]
        b.send(type="stream", id=request["id"], name="stderr", text="ls: nothing\n")
        _reply(b, request, exit_code=2)
    box.agent_does(agent)
    outcome = box.exchange({"type": "command", "argv": ["ls", "-l"]}).run()
    box.finish()
    assert outcome.ending is Ending.REPLY and verdicts.exit_code(outcome.reply) == 2
    assert box.outputs == [("stream", {"name": "stderr", "text": "ls: nothing\n"})]
    # a command's output is cut as a cell's: its frames are held to a cell's limit
    assert box.transport.reader.max_frame == protocol.cell_frame_limit(box.output_limit)


@pytest.mark.parametrize("reply, code", [({"status": "ok", "exit_code": 0}, 0),
                                         ({"status": "ok", "exit_code": True}, None),
                                         ({"status": "error", "ename": "ValueError"}, None)])
def test_the_exit_code_of_a_command_reply(reply, code):
    assert verdicts.exit_code(reply) == code


# -- input_request frames one at a time (moved from test_protocol.py) -----------


class _HostSide:
    """An exchange for one cell on a socketpair: what it does with an agent's
    input_request, which the agent's user code can forge (it can write to
    the socket)."""

    def __init__(self, on_input):
        self.box = FakeContainer()
        self.exchange = self.box.exchange(on_input=on_input)
        assert self.exchange.id == 1
        self.exchange.deadline = 1000.0

    def ask(self, **fields) -> dict:
        self.exchange._dispatch({"type": protocol.INPUT_REQUEST, "id": 1, "n": 3, **fields})
        return protocol.recv(self.box.agent)

    def close(self):
        self.box.close()


def test_the_host_answers_an_input_request_with_a_bounded_prompt():
    asked = []
    host = _HostSide(lambda prompt, password: asked.append((prompt, password)) or "answer")
    try:
        reply = host.ask(prompt="p" * 100_000, password=True)
        assert asked == [("p" * protocol.INPUT_PROMPT_LIMIT, True)]
        assert reply == {"type": protocol.INPUT_REPLY, "id": 1, "n": 3, "value": "answer"}
        assert host.exchange.deadline >= 1000.0     # the wait does not count against the cell
    finally:
        host.close()


@pytest.mark.parametrize("on_input, error", [
    (None, "StdinNotImplementedError"),
    (lambda prompt, password: "x" * (protocol.INPUT_VALUE_LIMIT + 1), "ValueError"),
    (lambda prompt, password: 42, "TypeError"),
    (lambda prompt, password: (_ for _ in ()).throw(EOFError()), "EOFError"),
    (lambda prompt, password: (_ for _ in ()).throw(KeyboardInterrupt()), "KeyboardInterrupt"),
])
def test_the_host_answers_with_an_error_the_cell_raises(on_input, error):
    host = _HostSide(on_input)
    try:
        reply = host.ask(prompt="", password=False)
        assert reply["error"] == error and "value" not in reply
    finally:
        host.close()


@pytest.mark.parametrize("fields", [
    {"prompt": ["not", "text"], "password": False},
    {"prompt": "", "password": "yes"},
    {"prompt": "", "password": False, "id": 8},         # not the request that is waiting
    {"prompt": "", "password": False, "n": "3"},
])
def test_a_forged_input_request_is_a_protocol_error(fields):
    host = _HostSide(lambda prompt, password: "never asked")
    try:
        with pytest.raises(ProtocolError):
            host.ask(**fields)
    finally:
        host.close()


def test_a_session_gives_its_exchanges_one_control_whose_graces_it_sets(monkeypatch):
    """Session.interrupt_grace set while a cell runs (the kernel's shutdown
    does) reaches the running exchange: no copy is taken at its start."""
    from sandbox_kernel.session import client
    controls = []

    def fake_exchange(transport, request, control, *args, **kwargs):
        controls.append(control)
        return types.SimpleNamespace(run=lambda: None)
    monkeypatch.setattr(client, "Exchange", fake_exchange)
    session = client.Session("t", interrupt_grace=5.0, timeout_grace=2.0)
    session._exchange({"type": "complete", "code": "", "cursor_pos": 0}, 1.0, cell=False)
    session.interrupt_grace, session.timeout_grace = 0.25, 0.5
    assert (controls[0].interrupt_grace, controls[0].timeout_grace) == (0.25, 0.5)
    assert (session.interrupt_grace, session.timeout_grace) == (0.25, 0.5)
