"""The agent's comm manager (agent_comm.py) as a real agent subprocess on a
socketpair: widgets open comms whose messages leave as frames, the host's
comm requests reach them and run like a cell, the output budget holds, and
an Output widget captures for the parent the host named.

Every wait is bounded (test_agent.AgentProcess)."""
from __future__ import annotations

import base64
import os
import signal
import threading
import time

import pytest

from sandbox_kernel.session import protocol
from unit.test_agent import AgentProcess, of_type, stdout_text

pytest.importorskip("ipywidgets")


@pytest.fixture
def agent():
    process = AgentProcess()
    yield process
    process.close()


def opened(outputs):
    return {m["comm_id"]: m for m in of_type(outputs, "comm_open")}


def comm_of(outputs, model_name: str) -> str:
    """The comm_id of the widget of that model the outputs opened."""
    [comm_id] = [i for i, m in opened(outputs).items() if m["data"]["state"]["_model_name"] == model_name]
    return comm_id


def observed_slider(agent, callback: str) -> tuple[str, list]:
    """A slider whose value changes call ``callback`` (the code of a
    function ``moved(change)``); its comm_id and the cell's outputs."""
    outputs, reply = agent.execute(f"import ipywidgets as w, time\ns = w.IntSlider()\n"
                                   f"out = w.Output()\n{callback}\ns.observe(moved, 'value')")
    assert reply["status"] == "ok", outputs
    return comm_of(outputs, "IntSliderModel"), outputs


def test_a_slider_opens_a_comm_with_its_state(agent):
    outputs, reply = agent.execute("import ipywidgets as w\ns = w.IntSlider(value=3)\ns")
    assert reply["status"] == "ok"
    slider = [m for m in of_type(outputs, "comm_open") if m["data"]["state"]["_model_name"] == "IntSliderModel"]
    assert slider and slider[0]["target_name"] == "jupyter.widget"
    assert slider[0]["data"]["state"]["value"] == 3 and slider[0]["id"] == agent.last_id
    view = of_type(outputs, "execute_result")[0]["data"]["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == slider[0]["comm_id"]
    outputs, _ = agent.execute("s.value = 5")
    assert of_type(outputs, "comm_msg")[0]["data"] == {"method": "echo_update", "state": {"value": 5}, "buffer_paths": []} \
        or of_type(outputs, "comm_msg")[-1]["data"]["state"] == {"value": 5}


def test_a_frontend_update_reaches_the_widget_and_its_callback_prints_for_that_parent(agent):
    comm_id, outputs = observed_slider(
        agent, "def moved(change):\n    with out:\n        print('moved to', change['new'])")
    out_id = comm_of(outputs, "OutputModel")
    outputs, reply = agent.request(
        "comm_msg", comm_id=comm_id, data={"method": "update", "state": {"value": 7}, "buffer_paths": []},
        metadata={}, buffers=[], parent={"msg_id": "frontend-msg-1", "msg_type": "comm_msg"})
    assert reply == {"status": "ok"}
    assert "moved to 7" in stdout_text(outputs)
    captures = [m["data"]["state"].get("msg_id") for m in of_type(outputs, "comm_msg") if m["comm_id"] == out_id]
    assert "frontend-msg-1" in captures          # the Output widget captured for that parent
    _, reply = agent.execute("print(s.value)")
    assert reply["status"] == "ok"


def test_a_comm_request_for_no_such_comm_or_target_is_a_comm_error(agent):
    _, reply = agent.request("comm_msg", comm_id="nope", data={}, metadata={}, buffers=[])
    assert reply["status"] == "error" and reply["ename"] == "CommError"
    _, reply = agent.request("comm_open", comm_id="x", target_name="nobody", data={}, metadata={},
                             buffers=[])
    assert reply["ename"] == "CommError"
    _, reply = agent.request("comm_msg", comm_id="nope", data={}, metadata={}, buffers=["!!"])
    assert reply["status"] == "error"


def test_the_control_comm_a_frontend_opens_gets_the_widget_states(agent):
    agent.execute("import ipywidgets as w\ns = w.IntSlider(value=4)")
    outputs, reply = agent.request("comm_open", comm_id="ctl", target_name="jupyter.widget.control",
                                   data={}, metadata={"version": "1.0.0"}, buffers=[])
    assert reply == {"status": "ok"}, reply
    outputs, reply = agent.request("comm_msg", comm_id="ctl", data={"method": "request_states"},
                                   metadata={}, buffers=[])
    states = [m["data"] for m in of_type(outputs, "comm_msg") if m["comm_id"] == "ctl"]
    assert states and states[0]["method"] == "update_states"
    assert any(s["state"].get("value") == 4 for s in states[0]["states"].values())


def test_buffers_travel_as_base64_both_ways(agent):
    agent.execute("import comm\ngot = []\nmanager = comm.get_comm_manager()\n"
                  "def opened(c, msg):\n    c.on_msg(lambda m: (got.append(m['buffers'][0]), c.send({'n': len(got)}, buffers=[b'back'])))\n"
                  "manager.register_target('t', opened)")
    _, reply = agent.request("comm_open", comm_id="b", target_name="t", data={}, metadata={}, buffers=[])
    assert reply == {"status": "ok"}
    outputs, reply = agent.request("comm_msg", comm_id="b", data={}, metadata={},
                                   buffers=[base64.b64encode(b"\x00\xffbin").decode()])
    sent = of_type(outputs, "comm_msg")[0]
    assert base64.b64decode(sent["buffers"][0]) == b"back"
    outputs, _ = agent.execute("print(bytes(got[0]))")
    assert stdout_text(outputs) == "b'\\x00\\xffbin'\n"


def test_a_flood_of_comm_messages_is_cut_by_the_output_budget():
    agent = AgentProcess(extra_env={"SANDBOX_KERNEL_OUTPUT_LIMIT": "64K"})
    try:
        outputs, reply = agent.execute("import comm\nc = comm.create_comm(target_name='jupyter.widget')\n"
                                       "for i in range(20000):\n    c.send({'i': i, 'pad': 'x' * 100})")
        assert reply["status"] == "ok"
        sizes = sum(len(protocol.encode(m)) for m in outputs)
        assert sizes < 2 * (64 << 10)
        assert "widget or comm message(s) dropped" in "".join(m["text"] for m in of_type(outputs, "stream"))
        outputs, reply = agent.execute("print('still here')")
        assert stdout_text(outputs) == "still here\n"
    finally:
        agent.close()


def test_an_interrupt_stops_a_widget_callback_and_the_agent_serves_on(agent):
    comm_id, _ = observed_slider(agent, "def moved(change):\n    while True:\n        time.sleep(0.05)")
    request_id = agent.send("comm_msg", comm_id=comm_id, metadata={}, buffers=[],
                            data={"method": "update", "state": {"value": 1}, "buffer_paths": []})
    timer = threading.Timer(1.0, os.kill, (agent.proc.pid, signal.SIGINT))
    timer.start()
    try:
        outputs, reply, _ = agent.until_reply(request_id, timeout=30)
    finally:
        timer.cancel()
    errors = [m for _, m in outputs if m["type"] == "error"]
    assert errors and errors[0]["ename"] == "KeyboardInterrupt", (outputs, reply)
    _, reply = agent.execute("print('after')")
    assert reply["status"] == "ok"


def test_execute_counts_from_what_the_host_says(agent):
    _, reply = agent.execute("1", count_from=41)
    assert reply["execution_count"] == 41
    _, reply = agent.execute("1", count_from=3)        # never back
    assert reply["execution_count"] == 42
