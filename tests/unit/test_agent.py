"""The agent as a real subprocess on a socketpair, without a container.

Every wait is bounded: a request that gets no reply within its deadline fails
the test (and the agent is killed at teardown), it never hangs the suite.
"""
from __future__ import annotations

import base64
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sandbox_kernel.session import agent as agent_module
from sandbox_kernel.session import protocol

REPO = Path(__file__).resolve().parents[2]
REQUEST_TIMEOUT = 60.0      # generous: the first matplotlib import builds a font cache


class AgentProcess:
    """The host side, as small as a test needs: requests in, (outputs, reply) out."""

    def __init__(self, extra_env=None, args=()):
        self.sock, theirs = socket.socketpair()
        env = {k: v for k, v in os.environ.items()
               if k not in ("MPLBACKEND", agent_module.OUTPUT_LIMIT_ENV, "IPYTHONDIR")}
        env.update(extra_env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox_kernel.session.agent", "--fd", str(theirs.fileno()), *args],
            pass_fds=[theirs.fileno()], env=env, cwd=REPO,
        )
        theirs.close()
        self.reader = protocol.FrameReader()
        self.inbox: list[tuple[float, dict]] = []
        self.last_id = 0

    def send(self, msg_type: str, **fields) -> int:
        self.last_id += 1
        protocol.send(self.sock, {"type": msg_type, "id": self.last_id, **fields})
        return self.last_id

    def next_message(self, deadline: float) -> tuple[float, dict]:
        """The next message with the time it arrived; None at EOF."""
        while not self.inbox:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no message from the agent in time")
            readable, _, _ = select.select([self.sock], [], [], remaining)
            if readable:
                data = self.sock.recv(1 << 20)
                if not data:
                    return time.monotonic(), None
                now = time.monotonic()
                self.inbox += [(now, m) for m in self.reader.feed(data)]
        return self.inbox.pop(0)

    def until_reply(self, request_id: int, timeout: float = REQUEST_TIMEOUT):
        """Outputs (with arrival times) for request_id, then its reply."""
        deadline = time.monotonic() + timeout
        outputs = []
        while True:
            when, msg = self.next_message(deadline)
            assert msg is not None, "the agent closed the connection"
            if msg["type"] == "reply":
                assert msg["id"] == request_id
                return outputs, msg["content"], when
            assert msg["id"] == request_id, msg
            outputs.append((when, msg))

    def request(self, msg_type: str, timeout: float = REQUEST_TIMEOUT, **fields):
        outputs, content, _ = self.until_reply(self.send(msg_type, **fields), timeout)
        return [m for _, m in outputs], content

    def execute(self, code: str, timeout: float = REQUEST_TIMEOUT, **fields):
        fields = {"silent": False, "store_history": True, "user_expressions": {},
                  "allow_stdin": False, **fields}
        return self.request("execute", timeout=timeout, code=code, **fields)

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        self.sock.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def agent():
    """One agent shared by the tests that leave it serving."""
    process = AgentProcess()
    yield process
    process.close()


@pytest.fixture
def fresh_agent():
    started = []

    def start(**kwargs):
        process = AgentProcess(**kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def of_type(outputs, msg_type):
    return [m for m in outputs if m["type"] == msg_type]


def stdout_text(outputs):
    return "".join(m["text"] for m in of_type(outputs, "stream") if m["name"] == "stdout")


# -- execute ----------------------------------------------------------------


def test_variables_live_on_between_cells(agent):
    outputs, reply = agent.execute("kept = 41")
    assert reply["status"] == "ok" and outputs == []
    outputs, reply = agent.execute("print(kept + 1)")
    assert reply["status"] == "ok"
    assert stdout_text(outputs) == "42\n"


def test_expression_value_is_an_execute_result_with_the_execution_count(agent):
    outputs, reply = agent.execute("1+1")
    [result] = of_type(outputs, "execute_result")
    assert result["data"]["text/plain"] == "2"
    assert result["execution_count"] == reply["execution_count"]
    _, next_reply = agent.execute("x_count = 0")
    assert next_reply["execution_count"] == reply["execution_count"] + 1


def test_silent_cells_do_not_count_or_show_results(agent):
    _, before = agent.execute("pass")
    outputs, reply = agent.execute("2 + 2", silent=True, store_history=False)
    assert reply["status"] == "ok"
    assert of_type(outputs, "execute_result") == []
    assert reply["execution_count"] == before["execution_count"]


def test_lines_printed_in_a_loop_arrive_one_by_one_while_the_cell_runs(agent):
    code = "import time\nfor i in range(3):\n    print(f'line {i}')\n    time.sleep(0.4)\n"
    outputs, reply, replied_at = agent.until_reply(agent.send(
        "execute", code=code, silent=False, store_history=True, user_expressions={}, allow_stdin=False))
    assert reply["status"] == "ok"
    streams = [(when, m) for when, m in outputs if m["type"] == "stream"]
    assert [m["text"] for _, m in streams] == ["line 0\n", "line 1\n", "line 2\n"]
    times = [when for when, _ in streams] + [replied_at]
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    assert all(gap > 0.25 for gap in gaps), gaps      # each came as it was printed


def test_a_partial_line_is_sent_after_a_short_wait(agent):
    code = "import time\nprint('waiting...', end='')\ntime.sleep(0.6)\nprint(' done')"
    request_id = agent.send("execute", code=code)
    deadline = time.monotonic() + REQUEST_TIMEOUT
    sent_at = time.monotonic()
    when, first = agent.next_message(deadline)
    assert first["type"] == "stream" and first["text"] == "waiting..."
    assert when - sent_at < 0.5          # before the cell's sleep ends
    outputs, reply, _ = agent.until_reply(request_id)
    assert reply["status"] == "ok"
    assert stdout_text(m for _, m in outputs) == " done\n"


def test_stdout_and_stderr_keep_their_order(agent):
    outputs, _ = agent.execute("import sys\nprint('o1')\nprint('e1', file=sys.stderr)\nprint('o2')")
    assert [(m["name"], m["text"]) for m in of_type(outputs, "stream")] == [
        ("stdout", "o1\n"), ("stderr", "e1\n"), ("stdout", "o2\n")]


def test_an_exception_is_an_error_message_and_an_error_reply(agent):
    outputs, reply = agent.execute("print('before')\ndef f():\n    raise ValueError('bad value')\nf()")
    [error] = of_type(outputs, "error")
    assert error["ename"] == "ValueError" and error["evalue"] == "bad value"
    assert any("bad value" in line for line in error["traceback"])
    assert outputs.index(error) > outputs.index(of_type(outputs, "stream")[0])
    assert reply["status"] == "error"
    assert (reply["ename"], reply["evalue"]) == ("ValueError", "bad value")
    assert reply["traceback"] == error["traceback"]
    assert reply["user_expressions"] == {} and reply["payload"] == []


def test_a_syntax_error_is_an_error_reply(agent):
    outputs, reply = agent.execute("def (:")
    assert reply["status"] == "error" and reply["ename"] == "SyntaxError"
    assert of_type(outputs, "error")[0]["ename"] == "SyntaxError"


def test_a_failing_repr_fails_the_cell(agent):
    code = "class Bad:\n    def __repr__(self):\n        raise RuntimeError('no repr')\nBad()"
    outputs, reply = agent.execute(code)
    assert reply["status"] == "error"
    assert of_type(outputs, "error")[0]["evalue"] == "no repr"


def test_user_expressions(agent):
    _, reply = agent.execute("ue = 20", user_expressions={"twice": "ue * 2", "bad": "1/0"})
    assert reply["user_expressions"]["twice"]["data"]["text/plain"] == "40"
    assert reply["user_expressions"]["bad"]["status"] == "error"


def test_input_is_refused(agent):
    _, reply = agent.execute("input('name? ')")
    assert reply["status"] == "error" and reply["ename"] == "StdinNotImplementedError"


def test_help_goes_to_the_payload(agent):
    _, reply = agent.execute("len?")
    [page] = reply["payload"]
    assert page["source"] == "page" and "Return the number of items" in page["data"]["text/plain"]


# -- display ----------------------------------------------------------------


def test_display_sends_every_mime_type(agent):
    code = ("from IPython.display import display, HTML\n"
            "h = display(HTML('<b>x</b>'), display_id=True)\n"
            "h.update(HTML('<i>y</i>'))")
    outputs, reply = agent.execute(code)
    assert reply["status"] == "ok"
    [shown] = of_type(outputs, "display_data")
    [updated] = of_type(outputs, "update_display_data")
    assert shown["data"]["text/html"] == "<b>x</b>" and "text/plain" in shown["data"]
    assert updated["data"]["text/html"] == "<i>y</i>"
    assert shown["transient"]["display_id"] == updated["transient"]["display_id"]


def test_clear_output_arrives(agent):
    outputs, _ = agent.execute(
        "from IPython.display import clear_output\nprint('a')\nclear_output(wait=True)\nprint('b')")
    assert [(m["type"], m.get("text"), m.get("wait")) for m in outputs] == [
        ("stream", "a\n", None), ("clear_output", None, True), ("stream", "b\n", None)]


def test_a_matplotlib_figure_arrives_as_png(agent):
    pytest.importorskip("matplotlib")
    outputs, reply = agent.execute("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2]);")
    assert reply["status"] == "ok", reply
    [figure] = of_type(outputs, "display_data")
    png = base64.b64decode(figure["data"]["image/png"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert of_type(outputs, "execute_result") == []     # the ';' hides the Line2D list
    outputs, _ = agent.execute("print('no figure left over')")
    assert of_type(outputs, "display_data") == []
    outputs, reply = agent.execute("%matplotlib inline\nplt.plot([1]); plt.show()\nprint('shown')")
    assert reply["status"] == "ok", reply
    assert [m["type"] for m in outputs] == ["display_data", "stream"]


# -- the editor's requests --------------------------------------------------------


def test_complete_a_user_variable(agent):
    agent.execute("my_unusual_variable = 3")
    _, reply = agent.request("complete", code="x = my_unus", cursor_pos=11)
    assert reply["status"] == "ok"
    assert "my_unusual_variable" in reply["matches"]
    assert (reply["cursor_start"], reply["cursor_end"]) == (4, 11)
    assert "_jupyter_types_experimental" in reply["metadata"]


def test_inspect(agent):
    agent.execute("def documented(a, b):\n    'Adds a and b.'\n    return a + b")
    _, reply = agent.request("inspect", code="documented(", cursor_pos=5, detail_level=0)
    assert reply["status"] == "ok" and reply["found"] is True
    assert "Adds a and b." in reply["data"]["text/plain"]
    _, reply = agent.request("inspect", code="no_such_name", cursor_pos=3, detail_level=0)
    assert reply == {"status": "ok", "found": False, "data": {}, "metadata": {}}


def test_is_complete(agent):
    _, reply = agent.request("is_complete", code="for i in range(3):")
    assert reply == {"status": "incomplete", "indent": "    "}
    _, reply = agent.request("is_complete", code="x = 1")
    assert reply == {"status": "complete"}
    _, reply = agent.request("is_complete", code="x = )")
    assert reply["status"] == "invalid"


def test_history(agent):
    agent.execute("history_marker = 'hm'")
    _, reply = agent.request("history", hist_access_type="tail", n=1, output=False, raw=True)
    assert reply["status"] == "ok"
    [[session, line, source]] = reply["history"]
    assert source == "history_marker = 'hm'"
    _, reply = agent.request("history", hist_access_type="search", pattern="history_marker*",
                             output=False, raw=True, n=None, unique=False)
    assert [entry[2] for entry in reply["history"]] == ["history_marker = 'hm'"]


# -- push and pull ----------------------------------------------------------


def test_push_and_pull_round_trip(agent):
    values = {"pushed_dict": {"a": [1, 2, 3], "b": ("x", 2.5)}, "pushed_n": 7}
    _, reply = agent.request("push", values=protocol.pack_values(values))
    assert reply == {"status": "ok", "values": ["pushed_dict", "pushed_n"]}
    outputs, _ = agent.execute("pushed_dict['a'].append(pushed_n); print(pushed_dict['a'])")
    assert stdout_text(outputs) == "[1, 2, 3, 7]\n"
    _, reply = agent.request("pull", names=["pushed_dict", "pushed_n"])
    assert reply["status"] == "ok"
    assert protocol.unpack_values(reply["values"]) == {
        "pushed_dict": {"a": [1, 2, 3, 7], "b": ("x", 2.5)}, "pushed_n": 7}


def test_pull_of_an_unpicklable_value_names_it(agent):
    agent.execute("import threading\nfine = 1\nlocked = threading.Lock()")
    _, reply = agent.request("pull", names=["fine", "locked"])
    assert reply["status"] == "error"
    assert reply["name"] == "locked" and reply["ename"] == "TypeError"
    assert "'locked'" in reply["evalue"] and "pickle" in reply["evalue"]


def test_pull_of_an_unknown_name_names_it(agent):
    _, reply = agent.request("pull", names=["never_defined"])
    assert reply == {"status": "error", "ename": "NameError",
                     "evalue": "name 'never_defined' is not defined", "name": "never_defined"}


def test_push_of_a_bad_pickle_is_an_error(agent):
    _, reply = agent.request("push", values=base64.b64encode(b"not a pickle").decode())
    assert reply["status"] == "error" and "could not unpickle" in reply["evalue"]


# -- bad requests -------------------------------------------------------------


def test_bad_requests_get_error_replies_and_the_agent_goes_on(agent):
    _, reply = agent.request("no_such_request")
    assert reply["status"] == "error" and "unknown request type" in reply["evalue"]
    _, reply = agent.request("execute")          # no code
    assert reply["status"] == "error" and "lacks 'code'" in reply["evalue"]
    outputs, reply = agent.execute("print('still here')")
    assert stdout_text(outputs) == "still here\n"


# -- interrupt --------------------------------------------------------------------


def test_sigint_interrupts_a_sleeping_cell_and_the_agent_goes_on(agent):
    agent.proc.send_signal(signal.SIGINT)            # idle: ignored
    request_id = agent.send(
        "execute", code="import time\nprint('sleeping', flush=True)\ntime.sleep(30)\nprint('woke')")
    deadline = time.monotonic() + REQUEST_TIMEOUT
    _, first = agent.next_message(deadline)
    assert first["type"] == "stream" and first["text"] == "sleeping\n"
    interrupted_at = time.monotonic()
    agent.proc.send_signal(signal.SIGINT)
    outputs, reply, replied_at = agent.until_reply(request_id, timeout=10)
    assert replied_at - interrupted_at < 5
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    assert [m["ename"] for _, m in outputs if m["type"] == "error"] == ["KeyboardInterrupt"]
    assert "woke" not in stdout_text(m for _, m in outputs)
    outputs, reply = agent.execute("print('next cell')")
    assert reply["status"] == "ok" and stdout_text(outputs) == "next cell\n"


def test_sigint_while_printing_fast_never_cuts_a_frame(agent):
    request_id = agent.send("execute", code="import sys\nprint('go', flush=True)\nwhile True:\n    print('y' * 200)")
    deadline = time.monotonic() + REQUEST_TIMEOUT
    _, first = agent.next_message(deadline)
    assert first["text"].startswith("go")
    time.sleep(0.3)
    agent.proc.send_signal(signal.SIGINT)
    _, reply, _ = agent.until_reply(request_id, timeout=20)   # FrameReader raises on a cut frame
    assert reply["ename"] == "KeyboardInterrupt"
    _, reply = agent.execute("pass")
    assert reply["status"] == "ok"


# -- output limit ---------------------------------------------------------------


def test_a_100_mb_print_is_cut_inside_the_agent(agent):
    outputs, reply = agent.execute("print('x' * 100_000_000)\nprint('after')", timeout=60)
    assert reply["status"] == "ok"
    streams = of_type(outputs, "stream")
    received = sum(len(m["text"]) for m in streams)
    assert received < 2 * agent_module.DEFAULT_OUTPUT_LIMIT
    notice = streams[-1]
    assert notice["name"] == "stderr"
    dropped = 100_000_001 + len("after\n") - agent_module.DEFAULT_OUTPUT_LIMIT
    assert notice["text"] == (
        f"[output cut: the cell printed more than 1.0 MiB; {dropped} bytes dropped]\n")
    outputs, _ = agent.execute("print('the next cell has its own budget')")
    assert stdout_text(outputs) == "the next cell has its own budget\n"


def test_a_flood_of_lines_is_cut_and_the_cell_runs_to_its_end(fresh_agent):
    agent = fresh_agent(extra_env={agent_module.OUTPUT_LIMIT_ENV: "10K"})
    outputs, reply = agent.execute("for i in range(200_000):\n    print(i)\nfinished = True")
    assert reply["status"] == "ok"
    text = stdout_text(outputs)
    assert text.startswith("0\n1\n2\n") and len(text) == 10 * 1024
    assert "more than 10.0 KiB" in of_type(outputs, "stream")[-1]["text"]
    outputs, _ = agent.execute("print(finished, i)")
    assert stdout_text(outputs) == "True 199999\n"


def test_a_bad_output_limit_stops_the_agent_with_a_message(fresh_agent):
    agent = fresh_agent(extra_env={agent_module.OUTPUT_LIMIT_ENV: "lots"})
    assert agent.wait() == 2


# -- processes ----------------------------------------------------------------------


def test_a_forked_child_does_not_write_frames(agent):
    code = ("import os\npid = os.fork()\n"
            "if pid == 0:\n    print('from the child')\n    os._exit(0)\n"
            "os.waitpid(pid, 0)\nprint('from the parent')")
    outputs, reply = agent.execute(code)
    assert reply["status"] == "ok"
    assert stdout_text(outputs) == "from the parent\n"


def test_exit_in_a_cell_replies_then_exits(fresh_agent):
    agent = fresh_agent()
    _, reply = agent.execute("exit")
    assert reply["payload"] == [{"source": "ask_exit", "keepkernel": False}]
    assert agent.wait() == 0


def test_shutdown_replies_and_exits_cleanly(fresh_agent):
    before = set(Path(tempfile.gettempdir()).glob("ipython-agent-*"))
    agent = fresh_agent()
    agent.execute("x = 1")
    _, reply = agent.request("shutdown")
    assert reply == {"status": "ok", "restart": False}
    assert agent.wait() == 0
    _, eof = agent.next_message(time.monotonic() + 10)
    assert eof is None
    assert set(Path(tempfile.gettempdir()).glob("ipython-agent-*")) == before


def test_eof_on_the_socket_ends_the_agent(fresh_agent):
    agent = fresh_agent()
    agent.execute("x = 1")
    agent.sock.shutdown(socket.SHUT_WR)
    assert agent.wait() == 0


def test_pull_over_the_frame_limit_is_an_error(fresh_agent):
    agent = fresh_agent(args=("--max-frame", "4096"))
    agent.execute("big = 'z' * 10_000")
    _, reply = agent.request("pull", names=["big"])
    assert reply["status"] == "error" and "frame limit" in reply["evalue"]


def test_the_agent_imports_nothing_from_the_runtime():
    code = ("import sys, sandbox_kernel.session.agent\n"
            "print(sorted(m for m in sys.modules if m.startswith(('sandbox_kernel.runtime', 'pyroute2'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=60, check=True).stdout
    assert out.strip() == "[]"


# -- pieces, in process -----------------------------------------------------------------


def test_output_budget_cuts_on_a_character_boundary():
    budget = agent_module.OutputBudget(10)
    assert budget.admit("12345") == "12345"
    assert budget.admit("ééééé") == "éé"          # 4 of the 5 bytes left; é is 2 bytes
    assert budget.full
    budget.drop("abc")
    assert budget.dropped == 6 + 3
    assert budget.notice() == "[output cut: the cell printed more than 10 bytes; 9 bytes dropped]\n"
    budget.reset()
    assert budget.notice() is None and budget.admit("x" * 10) == "x" * 10


@pytest.mark.parametrize("text, size", [("1048576", 1 << 20), ("512K", 512 << 10),
                                        ("1M", 1 << 20), ("1.5m", 3 << 19), ("2G", 2 << 30)])
def test_parse_size(text, size):
    assert agent_module.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-1", "lots", "1T"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError, match="invalid size"):
        agent_module.parse_size(text)


# -- zombies (issue 15) ------------------------------------------------------------

# Children forked by a cell: 20 raw forks never waited for, a Popen and a
# multiprocessing Process the user holds.  All have exited when the cell ends.
LEAVE_ZOMBIES = """\
import multiprocessing, os, subprocess, time
for _ in range(20):
    if os.fork() == 0:
        os._exit(0)
held = subprocess.Popen(['sh', '-c', 'exit 3'])
worker = multiprocessing.get_context('fork').Process(target=os._exit, args=(5,))
worker.start()
time.sleep(0.5)
"""
ZOMBIES_LEFT = """\
import os
def _zombies():
    kids = set()
    for task in os.listdir('/proc/self/task'):
        kids.update(open(f'/proc/self/task/{task}/children').read().split())
    return sorted(int(p) for p in kids
                  if open(f'/proc/{p}/stat').read().rpartition(')')[2].split()[0] == 'Z')
print(_zombies() == sorted([held.pid, worker.pid]))
"""


class PlainAgentProcess(AgentProcess):
    """The stdlib-only agent: IPython made unimportable, so it does not hand over."""

    def __init__(self, extra_env=None):
        self.sock, theirs = socket.socketpair()
        launch = ("import sys; sys.modules['IPython'] = None\n"
                  "from sandbox_kernel.session import plain_agent\n"
                  "sys.exit(plain_agent.main(sys.argv[1:]))")
        env = {k: v for k, v in os.environ.items() if k != agent_module.OUTPUT_LIMIT_ENV}
        env.update(extra_env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-c", launch, "--fd", str(theirs.fileno()), "--image", "test"],
            pass_fds=[theirs.fileno()], cwd=REPO, env=env)
        theirs.close()
        self.reader = protocol.FrameReader()
        self.inbox, self.last_id = [], 0


@pytest.mark.parametrize("which", ["agent", "plain agent"])
def test_zombies_a_cell_leaves_are_reaped_and_held_children_keep_their_exit_codes(
        fresh_agent, which):
    agent = fresh_agent() if which == "agent" else PlainAgentProcess()
    try:
        _, reply = agent.execute(LEAVE_ZOMBIES)
        assert reply["status"] == "ok", reply
        outputs, reply = agent.execute(ZOMBIES_LEFT)
        assert reply["status"] == "ok", reply
        assert stdout_text(outputs) == "True\n"    # only the two a live object will wait for
        outputs, _ = agent.execute("worker.join(10)\nprint(held.wait(10), worker.exitcode)")
        assert stdout_text(outputs) == "3 5\n"
    finally:
        agent.close()


def test_a_popen_being_started_in_another_thread_stops_the_reaping():
    # Between its fork and its pid being set, a Popen's child is a pid no
    # object holds yet: reaping then could steal its exit code.
    from sandbox_kernel.session.reaping import ChildReaper
    reaper = ChildReaper()
    reaper.starting = 1
    assert reaper.owned_pids() is None
    reaper.starting = 0
    assert reaper.owned_pids() == set()


# -- the output budget covers displays, results and errors (issue 15) ----------------

CELL_FRAME = protocol.cell_frame_limit(agent_module.DEFAULT_OUTPUT_LIMIT)


def _either_agent(fresh_agent, which):
    agent = fresh_agent() if which == "agent" else PlainAgentProcess()
    agent.reader = protocol.FrameReader(CELL_FRAME)   # as the host reads a cell's frames
    return agent


@pytest.mark.parametrize("which", ["agent", "plain agent"])
def test_a_50_mb_result_is_sent_as_its_head_with_a_notice(fresh_agent, which):
    agent = _either_agent(fresh_agent, which)
    try:
        outputs, reply = agent.execute("'x' * 50_000_000", timeout=120)
        assert reply["status"] == "ok"
        (result,) = of_type(outputs, "execute_result")
        text = result["data"]["text/plain"]
        assert text.startswith("'" + "x" * 1000) and len(text) < 20_000
        assert "[output cut: this result is" in text
        assert "SANDBOX_KERNEL_OUTPUT_LIMIT" in of_type(outputs, "stream")[-1]["text"]
        outputs, _ = agent.execute("print('next')")
        assert stdout_text(outputs) == "next\n"
    finally:
        agent.close()


@pytest.mark.parametrize("which", ["agent", "plain agent"])
def test_an_error_of_50_mb_is_cut_to_fit_the_cell_frame(fresh_agent, which):
    agent = _either_agent(fresh_agent, which)
    try:
        outputs, reply = agent.execute("raise ValueError('v' * 50_000_000)", timeout=120)
        assert reply["status"] == "error" and reply["ename"] == "ValueError"
        assert reply["evalue"].endswith("more characters cut]") and len(reply["evalue"]) < 70_000
        (error,) = of_type(outputs, "error")
        assert sum(map(len, error["traceback"])) < 300_000
    finally:
        agent.close()


def test_a_flood_of_displays_is_cut_and_counted_in_the_notice(fresh_agent):
    agent = _either_agent(fresh_agent, "agent")
    try:
        outputs, reply = agent.execute(
            "from IPython.display import display, HTML\n"
            "for i in range(5000):\n    display(HTML(str(i) + 'y' * 1000))\nprint('end')")
        assert reply["status"] == "ok"
        shown = of_type(outputs, "display_data")
        assert 500 < len(shown) < 1000
        assert sum(len(str(m)) for m in outputs) < 2 * agent_module.DEFAULT_OUTPUT_LIMIT
        notice = of_type(outputs, "stream")[-1]["text"]
        assert f"{5000 - len(shown)} display(s) or result(s) dropped" in notice
    finally:
        agent.close()


def test_a_display_too_big_for_what_is_left_shows_its_text_head(fresh_agent):
    agent = _either_agent(fresh_agent, "agent")
    try:
        outputs, _ = agent.execute(
            "from IPython.display import display, HTML\n"
            "class Big:\n"
            "    def _repr_html_(self): return '<p>' * 2_000_000\n"
            "    def __repr__(self): return 'Big object'\n"
            "display(Big())\nprint('after')")
        (shown,) = of_type(outputs, "display_data")
        assert list(shown["data"]) == ["text/plain"]
        assert shown["data"]["text/plain"].startswith("Big object\n[output cut: this display is")
        assert stdout_text(outputs) == "after\n"
    finally:
        agent.close()


# -- issue 25: input() and getpass(), cell names as ipykernel's, sys.path ----------------

BOTH_AGENTS = pytest.mark.parametrize("which", ["agent", "plain agent"])


def _started(fresh_agent, which):
    return fresh_agent() if which == "agent" else PlainAgentProcess()


def _until_input_request(agent, request_id):
    """(the outputs before it, the input_request) of request_id."""
    deadline = time.monotonic() + REQUEST_TIMEOUT
    before = []
    while True:
        _, msg = agent.next_message(deadline)
        assert msg is not None and msg["type"] != "reply", f"no input_request: {msg}"
        if msg["type"] == protocol.INPUT_REQUEST:
            assert msg["id"] == request_id
            return before, msg
        before.append(msg)


def _answer(agent, request_id, number, **fields):
    protocol.send(agent.sock, {"type": protocol.INPUT_REPLY, "id": request_id, "n": number, **fields})


def _send_cell(agent, code, allow_stdin=True):
    return agent.send("execute", code=code, silent=False, store_history=True,
                      user_expressions={}, allow_stdin=allow_stdin)


@BOTH_AGENTS
def test_input_is_asked_of_the_host_and_its_answer_returned(fresh_agent, which):
    agent = _started(fresh_agent, which)
    try:
        request_id = _send_cell(agent, "print('before')\nname = input('name? ')\nprint('hi', name)")
        before, asked = _until_input_request(agent, request_id)
        assert stdout_text(before) == "before\n"          # printed before the prompt shows
        assert (asked["prompt"], asked["password"]) == ("name? ", False)
        _answer(agent, request_id, asked["n"], value="ada")
        outputs, reply, _ = agent.until_reply(request_id)
        assert reply["status"] == "ok", reply
        assert stdout_text(m for _, m in outputs) == "hi ada\n"
    finally:
        agent.close()


@BOTH_AGENTS
def test_getpass_asks_for_a_password(fresh_agent, which):
    agent = _started(fresh_agent, which)
    try:
        request_id = _send_cell(agent, "import getpass\nprint(len(getpass.getpass()))")
        _, asked = _until_input_request(agent, request_id)
        assert (asked["prompt"], asked["password"]) == ("Password: ", True)
        _answer(agent, request_id, asked["n"], value="s3cret")
        outputs, reply, _ = agent.until_reply(request_id)
        assert reply["status"] == "ok" and stdout_text(m for _, m in outputs) == "6\n"
    finally:
        agent.close()


@BOTH_AGENTS
def test_without_allow_stdin_input_raises_as_in_ipykernel(fresh_agent, which):
    agent = _started(fresh_agent, which)
    try:
        for code in ("input('name? ')", "import getpass; getpass.getpass()"):
            _, reply = agent.execute(code)
            assert reply["ename"] == "StdinNotImplementedError"
            assert reply["evalue"].endswith(
                "was called, but this frontend does not support input requests.")
    finally:
        agent.close()


@BOTH_AGENTS
@pytest.mark.parametrize("error, raised", [("EOFError", "EOFError"),
                                           ("KeyboardInterrupt", "KeyboardInterrupt"),
                                           ("StdinNotImplementedError", "StdinNotImplementedError"),
                                           ("SomethingElse", "RuntimeError")])
def test_an_answer_that_is_an_error_is_raised_in_the_cell(fresh_agent, which, error, raised):
    agent = _started(fresh_agent, which)
    try:
        request_id = _send_cell(agent, "input()")
        _, asked = _until_input_request(agent, request_id)
        _answer(agent, request_id, asked["n"], error=error, message="why")
        _, reply, _ = agent.until_reply(request_id)
        assert reply["ename"] == raised
        _, reply = agent.execute("print('still serving')")
        assert reply["status"] == "ok"
    finally:
        agent.close()


@BOTH_AGENTS
def test_stale_input_replies_are_dropped(fresh_agent, which):
    """A reply that comes after its input() was interrupted answers nothing:
    neither between requests nor the cell's next input()."""
    agent = _started(fresh_agent, which)
    try:
        _answer(agent, 99, 1, value="between requests")
        _, reply = agent.execute("print('served')")
        assert reply["status"] == "ok"
        request_id = _send_cell(agent, "print(input('a? '))")
        _, asked = _until_input_request(agent, request_id)
        _answer(agent, request_id, asked["n"] - 1, value="stale")
        _answer(agent, request_id, asked["n"], value="fresh")
        outputs, reply, _ = agent.until_reply(request_id)
        assert stdout_text(m for _, m in outputs) == "fresh\n"
    finally:
        agent.close()


@BOTH_AGENTS
def test_sigint_ends_the_wait_for_input_and_the_agent_goes_on(fresh_agent, which):
    agent = _started(fresh_agent, which)
    try:
        request_id = _send_cell(agent, "input('never answered: ')")
        _, asked = _until_input_request(agent, request_id)
        agent.proc.send_signal(signal.SIGINT)
        _, reply, _ = agent.until_reply(request_id, timeout=10)
        assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
        _answer(agent, request_id, asked["n"], value="too late")    # dropped
        outputs, reply = agent.execute("print('next cell')")
        assert reply["status"] == "ok" and stdout_text(outputs) == "next cell\n"
    finally:
        agent.close()


@BOTH_AGENTS
def test_a_long_prompt_is_cut(fresh_agent, which):
    agent = _started(fresh_agent, which)
    try:
        request_id = _send_cell(agent, "input('x' * 100_000)")
        _, asked = _until_input_request(agent, request_id)
        assert asked["prompt"] == "x" * protocol.INPUT_PROMPT_LIMIT
        _answer(agent, request_id, asked["n"], value="")
        assert agent.until_reply(request_id)[1]["status"] == "ok"
    finally:
        agent.close()


def test_cells_are_named_as_ipykernel_names_them(fresh_agent):
    """/tmp/ipykernel_PID/HASH.py (ipykernel.compiler), in warnings and SyntaxErrors."""
    from ipykernel.compiler import murmur2_x86
    agent = fresh_agent()
    try:
        outputs, _ = agent.execute("import os, tempfile\nprint(tempfile.gettempdir(), os.getpid())")
        folder, pid = stdout_text(outputs).split()
        code = "import warnings\nwarnings.warn('careful')"
        outputs, _ = agent.execute(code)
        name = f"{folder}/ipykernel_{pid}/{murmur2_x86(code, 0xC70F6907)}.py"
        assert of_type(outputs, "stream")[0]["text"].startswith(f"{name}:2: UserWarning: careful")
        _, reply = agent.execute("x = (1,")
        assert reply["ename"] == "SyntaxError"
        assert f"({murmur2_x86('x = (1,', 0xC70F6907)}.py, line 1)" in reply["evalue"]
    finally:
        agent.close()


def test_murmur2_is_ipykernels():
    from ipykernel.compiler import murmur2_x86
    for text in ("", "a", "ab", "abc", "abcd", "print('é')", "x = 1\n" * 37, "\U0001f600" * 5):
        assert agent_module.murmur2_x86(text, 0xC70F6907) == murmur2_x86(text, 0xC70F6907)


def test_container_sys_path_is_built_for_the_container(tmp_path):
    from sandbox_kernel.session.plain_agent import container_sys_path
    stdlib, packages = tmp_path / "lib", tmp_path / "site-packages"
    stdlib.mkdir()
    packages.mkdir()
    host_only = str(tmp_path / "not-inside")
    start = [str(tmp_path), str(stdlib), host_only, str(packages), str(stdlib)]
    assert container_sys_path(start, safe_path=False) == [str(stdlib), "", str(packages)]
    assert container_sys_path(start[1:], safe_path=True) == [str(stdlib), str(packages)]
    assert container_sys_path([str(tmp_path), str(stdlib)], safe_path=False) == ["", str(stdlib)]


@BOTH_AGENTS
def test_a_module_written_in_the_working_directory_imports(fresh_agent, which):
    """'' on sys.path follows the working directory; no entry is missing."""
    agent = _started(fresh_agent, which)
    try:
        code = ("import os, sys, tempfile\n"
                "os.chdir(tempfile.mkdtemp())\n"
                "open('issue25_mod.py', 'w').write('VALUE = 7\\n')\n"
                "import issue25_mod\n"
                "print(issue25_mod.VALUE, '' in sys.path, "
                "[p for p in sys.path if p and not os.path.exists(p)])")
        outputs, reply = agent.execute(code)
        assert reply["status"] == "ok", reply
        assert stdout_text(outputs).endswith("7 True []\n")
    finally:
        agent.close()


@BOTH_AGENTS
def test_update_environ_changes_only_what_still_holds_the_expected_value(fresh_agent, which):
    """After a live cpus change the host rewrites the automatic thread
    variables; one the user set in a cell stays."""
    agent = _started(fresh_agent, which)
    try:
        agent.execute("import os\nos.environ['OMP_NUM_THREADS'] = '1'\n"
                      "os.environ['MKL_NUM_THREADS'] = '5'\nos.environ.pop('BLIS_NUM_THREADS', None)")
        _, reply = agent.request("update_environ", changes={
            "OMP_NUM_THREADS": ["1", "2"], "MKL_NUM_THREADS": ["1", "2"],
            "BLIS_NUM_THREADS": [None, "2"]})
        assert reply == {"status": "ok", "values": ["OMP_NUM_THREADS", "BLIS_NUM_THREADS"]}
        outputs, _ = agent.execute("import os\nprint([os.environ.get(n) for n in "
                                   "('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'BLIS_NUM_THREADS')])")
        assert stdout_text(outputs) == "['2', '5', '2']\n"
        _, reply = agent.request("update_environ", changes={"A": "not a pair"})
        assert reply["status"] == "error" and reply["ename"] == "ProtocolError"
    finally:
        agent.close()


# -- as ipykernel: its magics, ~ for the owner's home, input()'s one frame (issue 25) ----


def test_lsmagic_lists_ipykernels_magics_and_store(agent):
    outputs, reply = agent.execute("%lsmagic")
    assert reply["status"] == "ok"
    [result] = of_type(outputs, "execute_result")
    listed = result["data"]["text/plain"]
    for name in ("%autosave", "%clear", "%less", "%more", "%man", "%store", "%subshell",
                 "%connect_info", "%qtconsole"):
        assert name + " " in listed or listed.rstrip().endswith(name), name


def test_store_magic_keeps_a_value(agent):
    outputs, reply = agent.execute("issue25_kept = 41\n%store issue25_kept")
    assert reply["status"] == "ok", reply
    assert "Stored 'issue25_kept' (int)" in stdout_text(outputs)


def test_less_shows_a_file_in_the_pager_payload(agent, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("a note for the pager\n")
    _, reply = agent.execute(f"%less {path}")
    [page] = reply["payload"]
    assert page["source"] == "page" and "a note for the pager" in page["data"]["text/plain"]


def test_connect_info_says_why_there_is_none(agent):
    outputs, reply = agent.execute("%connect_info")
    assert reply["status"] == "ok"
    errors = "".join(m["text"] for m in of_type(outputs, "stream") if m["name"] == "stderr")
    assert "connection file" in errors


def test_the_input_refusal_shows_one_frame_of_the_agent(agent):
    outputs, reply = agent.execute("input('name? ')")
    [error] = of_type(outputs, "error")
    frames = [line for line in error["traceback"] if "agent.py" in line]
    assert len(frames) == 1 and "StdinForwarder.input" in frames[0], error["traceback"]


def test_tracebacks_write_the_owners_home_as_tilde(fresh_agent, tmp_path):
    home = tmp_path / "owner"
    (home / "lib").mkdir(parents=True)
    (home / "lib" / "issue25_fails.py").write_text("def fail():\n    raise ValueError('x')\n")
    agent = fresh_agent(extra_env={agent_module.OWNER_HOME_ENV: str(home),
                                   "HOME": str(tmp_path / "inside")})
    code = (f"import sys, os\nsys.path.insert(0, {str(home / 'lib')!r})\n"
            f"print(os.environ.get({agent_module.OWNER_HOME_ENV!r}))\n"
            "import issue25_fails\nissue25_fails.fail()")
    outputs, reply = agent.execute(code)
    assert reply["status"] == "error"
    assert stdout_text(outputs) == "None\n"           # the setting is the agent's, not the cells'
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(of_type(outputs, "error")[0]["traceback"]))
    assert "File ~/lib/issue25_fails.py:2" in text and f"File {home}" not in text, text


# -- the command request (issue 16, HOUSE.md contract 1) ---------------------------------


def _alive(pid: int) -> bool:
    """Running, not a zombie (a reparented one waits for its new parent's reaping)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _gone_within(pids, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@BOTH_AGENTS
def test_a_command_streams_its_output_with_the_id_and_replies_its_exit_code(fresh_agent, which):
    agent = _started(fresh_agent, which)
    try:
        _, before = agent.execute("pass")
        outputs, reply = agent.request("command", argv=["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert reply == {"status": "ok", "exit_code": 3}
        streams = {m["name"]: m["text"] for m in of_type(outputs, "stream")}
        assert streams == {"stdout": "out\n", "stderr": "err\n"}
        assert [m["type"] for m in outputs] == ["stream", "stream"]   # no display, no result
        _, after = agent.execute("pass")                 # not a cell: the count goes on
        assert after["execution_count"] == before["execution_count"] + 1
    finally:
        agent.close()


@BOTH_AGENTS
def test_a_missing_program_is_127_with_a_line_on_stderr(fresh_agent, which):
    agent = _started(fresh_agent, which)
    try:
        outputs, reply = agent.request("command", argv=["/no/such/program", "x"])
        assert reply == {"status": "ok", "exit_code": 127}
        assert of_type(outputs, "stream") == [{"type": "stream", "id": agent.last_id, "name": "stderr",
                                               "text": "/no/such/program: No such file or directory\n"}]
        _, reply = agent.request("command", argv=["/"])          # a directory: cannot start
        assert reply == {"status": "ok", "exit_code": 126}
    finally:
        agent.close()


@BOTH_AGENTS
@pytest.mark.parametrize("argv", [None, [], "ls", ["ls", 3], ["l\0s"]])
def test_a_bad_argv_is_a_value_error_and_the_agent_goes_on(fresh_agent, which, argv):
    agent = _started(fresh_agent, which)
    try:
        _, reply = agent.request("command", argv=argv)
        assert reply["status"] == "error" and reply["ename"] == "ValueError", reply
        assert "non-empty list of str" in reply["evalue"] and reply["traceback"] == []
        _, reply = agent.request("command", argv=["true"])
        assert reply == {"status": "ok", "exit_code": 0}
    finally:
        agent.close()


@BOTH_AGENTS
def test_sigint_stops_the_commands_whole_process_group(fresh_agent, which):
    """sh's background sleep ignores SIGINT (a non-interactive shell's `&`):
    it stops by the group's SIGKILL, after the grace."""
    agent = _started(fresh_agent, which)
    try:
        request_id = agent.send("command", argv=["sh", "-c", "sleep 30 & echo $$ $!; wait"])
        _, first = agent.next_message(time.monotonic() + REQUEST_TIMEOUT)
        assert first["type"] == "stream" and first["id"] == request_id, first
        pids = [int(pid) for pid in first["text"].split()]
        assert all(_alive(pid) for pid in pids)
        agent.proc.send_signal(signal.SIGINT)
        _, reply, _ = agent.until_reply(request_id, timeout=20)
        assert reply == {"status": "ok", "exit_code": 128 + signal.SIGINT}
        assert _gone_within(pids, 10), [pid for pid in pids if _alive(pid)]
        outputs, reply = agent.execute("print('next cell')")
        assert reply["status"] == "ok" and stdout_text(outputs) == "next cell\n"
    finally:
        agent.close()


@BOTH_AGENTS
def test_a_commands_output_is_within_the_cells_budget(fresh_agent, which):
    agent = _started(fresh_agent, which)
    try:
        outputs, reply = agent.request("command", argv=["head", "-c", "3000000", "/dev/zero"])
        assert reply == {"status": "ok", "exit_code": 0}
        streams = of_type(outputs, "stream")
        assert sum(len(m["text"]) for m in streams) < 2 * agent_module.DEFAULT_OUTPUT_LIMIT
        assert streams[-1]["text"].startswith("[output cut: the cell printed more than")
    finally:
        agent.close()


# -- one output limit, parsed once (agent_core.output_limit) -----------------------------


@BOTH_AGENTS
def test_both_agents_read_the_output_limit_alike(fresh_agent, which):
    env = {agent_module.OUTPUT_LIMIT_ENV: "64K"}
    agent = fresh_agent(extra_env=env) if which == "agent" else PlainAgentProcess(extra_env=env)
    try:
        outputs, reply = agent.execute("print('x' * 100_000)")
        assert reply["status"] == "ok"
        assert 60_000 < len(stdout_text(outputs)) <= 64 << 10      # the plain agent's note counts too
        assert of_type(outputs, "stream")[-1]["text"].startswith("[output cut: the cell printed "
                                                                 "more than 64.0 KiB")
    finally:
        agent.close()


@BOTH_AGENTS
def test_a_bad_output_limit_stops_either_agent(fresh_agent, which):
    env = {agent_module.OUTPUT_LIMIT_ENV: "lots"}
    agent = fresh_agent(extra_env=env) if which == "agent" else PlainAgentProcess(extra_env=env)
    try:
        assert agent.wait() == 2
    finally:
        agent.close()


# -- a fresh container's agent: counts on, and stops at the host's memory words ----------


@BOTH_AGENTS
def test_a_fresh_agent_counts_on_from_the_hosts_count(fresh_agent, which):
    agent = _started(fresh_agent, which)
    try:
        _, reply = agent.execute("1", count_from=7)
        assert reply["execution_count"] == 7
        _, reply = agent.execute("2", count_from=3)       # never backwards
        assert reply["execution_count"] == 8
    finally:
        agent.close()


@BOTH_AGENTS
def test_memory_pressure_stops_the_cell_with_the_hosts_words(fresh_agent, which):
    agent = _started(fresh_agent, which)
    words = "stopped at 90% of the 256 MiB limit to keep your session"
    try:
        _, reply = agent.execute("kept = 1")
        assert reply["status"] == "ok"
        _, reply = agent.execute("import os, signal, time\nos.kill(os.getpid(), signal.SIGUSR2)\n"
                                 "time.sleep(30)", pressure_words=words)
        assert (reply["status"], reply["ename"], reply["evalue"]) == ("error", "MemoryError", words)
        outputs, reply = agent.execute("print(kept)")
        assert reply["status"] == "ok" and stdout_text(outputs) == "1\n"
    finally:
        agent.close()
