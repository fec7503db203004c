"""The host side of comms: the exchange routes the agent's comm frames to
the session's comm handler (never to the outputs) within the request's cap,
and the relay (comm_relay.py, comm_state.py) makes them the kernel's own
comms, sanitised, and forwards the frontend's messages to the session.

The exchange runs against test_exchange's fake agent on a socketpair; the
relay against a fake kernel (what ipykernel's Kernel has) and a fake
session.  No root, no container."""
from __future__ import annotations

import base64
import types

import pytest
from comm.base_comm import CommManager

from sandbox_kernel.session import comm_state
from sandbox_kernel.session.comm_relay import CommRelay, HostComm, SessionComms
from sandbox_kernel.session.exchange import Ending
from sandbox_kernel.session.outputs import Display
from unit.test_exchange import FakeContainer, _reply

pytestmark = pytest.mark.timeout(60)
VIEW = comm_state.WIDGET_VIEW


@pytest.fixture
def box():
    fake = FakeContainer(output_limit=4096)
    yield fake
    fake.close()


def _open(b, request_id, comm_id="w1", **state):
    b.send(type="comm_open", id=request_id, comm_id=comm_id, target_name="jupyter.widget",
           data={"state": {"_model_name": "IntSliderModel", **state}, "buffer_paths": []},
           metadata={"version": "2.1.0"}, buffers=[])


# ---------------------------------------------------------------------------
# the exchange


def test_comm_frames_go_to_the_comm_handler_not_to_the_outputs(box):
    comms = []

    def agent(b):
        request = b.request()
        _open(b, request["id"], value=3)
        b.send(type="comm_msg", id=request["id"], comm_id="w1", data={"method": "update"},
               metadata={}, buffers=[base64.b64encode(b"bin").decode()])
        b.send(type="display_data", id=request["id"], metadata={}, data={
            "text/plain": "IntSlider()", VIEW: {"model_id": "w1", "version_major": 2,
                                                "version_minor": 0, "extra": "<script>"}})
        _reply(b, request)
    box.agent_does(agent)
    outcome = box.exchange(on_comm=lambda kind, content: comms.append((kind, content))).run()
    box.finish()
    assert outcome.ending is Ending.REPLY
    assert [kind for kind, _ in comms] == ["comm_open", "comm_msg"]
    assert comms[0][1]["target_name"] == "jupyter.widget" and comms[1][1]["buffers"]
    assert [kind for kind, _ in box.outputs] == ["display_data"]     # the view kept, checked
    assert box.outputs[0][1]["data"][VIEW] == {"model_id": "w1", "version_major": 2, "version_minor": 0}


def test_a_flood_of_comm_frames_is_cut_at_the_requests_cap(box):
    comms = []

    def agent(b):
        request = b.request()
        for i in range(3000):             # 3 MB: past the cap (2 x 4 KiB + 1 MiB of slack)
            b.send(type="comm_msg", id=request["id"], comm_id="w1",
                   data={"method": "update", "state": {"value": "x" * 1000}}, metadata={}, buffers=[])
        _reply(b, request)
    box.agent_does(agent)
    box.exchange(on_comm=lambda kind, content: comms.append(kind)).run()
    box.finish()
    assert 0 < len(comms) < 3000
    assert "messages dropped" in box.outputs[-1][1]["text"]


@pytest.mark.parametrize("frame", [
    {"comm_id": 5, "data": {}, "metadata": {}},
    {"comm_id": "", "data": {}, "metadata": {}},
    {"comm_id": "c", "data": [], "metadata": {}},
    {"comm_id": "c", "data": {}, "metadata": {}, "buffers": ["not base64!"]},
    {"comm_id": "c", "data": {}, "metadata": {}, "buffers": [1]},
    {"comm_id": "c" * 1000, "data": {}, "metadata": {}},
])
def test_a_bad_comm_frame_breaks_the_protocol(box, frame):
    def agent(b):
        request = b.request()
        b.send(type="comm_msg", id=request["id"], **frame)
    box.agent_does(agent)
    outcome = box.exchange(on_comm=lambda *a: None).run()
    box.finish()
    assert outcome.ending is Ending.BROKEN


# ---------------------------------------------------------------------------
# the relay


class FakeKernel:
    def __init__(self):
        self.comm_manager = CommManager()
        self.iopub_socket = object()
        self.sent = []
        self.parent = {"header": {"msg_id": "frontend-1", "msg_type": "execute_request"}}

    def get_parent(self, channel=None):
        return self.parent

    def send_response(self, stream, msg_type, content, ident=None, buffers=None, metadata=None):
        self.sent.append((msg_type, content, buffers, metadata))

    def of(self, msg_type):
        return [content for kind, content, _, _ in self.sent if kind == msg_type]


class FakeSession:
    def __init__(self, trust_output=False):
        self.trust_output = trust_output
        self.running = True
        self.requests = []
        self.comm_handler = None
        self.answer = {"status": "ok"}

    def comm_request(self, kind, fields, *, on_output=None):
        self.requests.append((kind, fields))
        on_output("stream", {"name": "stdout", "text": "callback\n"})
        return self.answer


@pytest.fixture
def relay():
    kernel = FakeKernel()
    relay = CommRelay(kernel)
    relay.register_targets()
    session = FakeSession()
    relay.attach(session)
    return types.SimpleNamespace(kernel=kernel, relay=relay, session=session,
                                 comms=session.comm_handler)


def agent_open(comms, comm_id="w1", target="jupyter.widget", **state):
    comms.from_agent("comm_open", {"comm_id": comm_id, "target_name": target, "target_module": None,
                                   "data": {"state": state, "buffer_paths": []}, "metadata": {},
                                   "buffers": []})


def agent_update(comms, comm_id="w1", buffers=(), paths=(), **state):
    comms.from_agent("comm_msg", {"comm_id": comm_id, "metadata": {},
                                  "buffers": [base64.b64encode(b).decode() for b in buffers],
                                  "data": {"method": "update", "state": state,
                                           "buffer_paths": list(paths)}})


def test_a_container_comm_becomes_the_kernels_own_with_the_same_id_and_target(relay):
    agent_open(relay.comms, _model_name="IntSliderModel", value=3)
    comm = relay.kernel.comm_manager.comms["w1"]
    assert isinstance(comm, HostComm) and comm.target_name == "jupyter.widget"
    [opened] = relay.kernel.of("comm_open")
    assert opened["comm_id"] == "w1" and opened["data"]["state"]["value"] == 3
    assert relay.comms.parent() == {"msg_id": "frontend-1", "msg_type": "execute_request"}


def test_the_frontends_messages_go_to_the_session_and_their_outputs_to_iopub(relay):
    agent_open(relay.comms, _model_name="IntSliderModel")
    relay.kernel.comm_manager.comm_msg(None, None, {"content": {"comm_id": "w1", "data": {
        "method": "update", "state": {"value": 7}}}, "metadata": {}, "buffers": [b"\x00"]})
    [(kind, fields)] = relay.session.requests
    assert kind == "comm_msg" and fields["data"]["state"] == {"value": 7}
    assert base64.b64decode(fields["buffers"][0]) == b"\x00"
    assert relay.kernel.of("stream") == [{"name": "stdout", "text": "callback\n"}]
    relay.kernel.comm_manager.comm_close(None, None, {"content": {"comm_id": "w1", "data": {}}})
    assert relay.session.requests[-1][0] == "comm_close"
    assert "w1" not in relay.kernel.comm_manager.comms


def test_html_values_are_sanitised_unless_the_session_trusts_its_output(relay):
    agent_open(relay.comms, "h", _model_name="HTMLModel", value="<b>b</b><img src=x onerror=alert(1)>")
    agent_update(relay.comms, "h", value="<a href='javascript:alert(2)'>x</a>")
    agent_open(relay.comms, "m", _model_name="HTMLMathModel", value="$\\href{javascript:alert(3)}{x}$")
    opened, updated = relay.kernel.of("comm_open"), relay.kernel.of("comm_msg")
    assert "onerror" not in opened[0]["data"]["state"]["value"] and "<b>b</b>" in opened[0]["data"]["state"]["value"]
    assert "javascript:" not in updated[0]["data"]["state"]["value"]
    assert "href{javascript:" not in opened[1]["data"]["state"]["value"]
    relay.session.trust_output = True
    agent_update(relay.comms, "h", value="<img src=x onerror=alert(1)>")
    assert relay.kernel.of("comm_msg")[-1]["data"]["state"]["value"] == "<img src=x onerror=alert(1)>"


def test_a_description_is_sanitised_as_html_once_the_widget_renders_it_so(relay):
    agent_open(relay.comms, "c", _model_name="CheckboxModel", description="<img src=x onerror=alert(1)>a<b")
    assert relay.kernel.of("comm_open")[0]["data"]["state"]["description"] == "<img src=x onerror=alert(1)>a<b"
    agent_update(relay.comms, "c", description_allow_html=True)      # the text sent before becomes HTML
    assert "onerror" not in relay.kernel.of("comm_msg")[-1]["data"]["state"]["description"]
    agent_update(relay.comms, "c", description="<script>alert(1)</script>ok")
    assert relay.kernel.of("comm_msg")[-1]["data"]["state"]["description"] == "ok"


def test_output_widget_outputs_styles_and_media_are_made_inert(relay):
    agent_open(relay.comms, "o", _model_name="OutputModel", outputs=[
        {"output_type": "display_data", "metadata": {},
         "data": {"text/html": "<img src=x onerror=alert(1)>", "application/javascript": "alert(1)"}},
        {"output_type": "stream", "name": "stdout", "text": "t"}, {"output_type": "weird"}])
    agent_open(relay.comms, "s", _model_name="HTMLStyleModel", background="url(https://evil/x)",
               font_size="12px")
    agent_open(relay.comms, "i", _model_name="ImageModel", format="url")
    outputs = relay.kernel.of("comm_open")[0]["data"]["state"]["outputs"]
    assert "onerror" not in str(outputs) and "application/javascript" not in str(outputs)
    assert [o["output_type"] for o in outputs] == ["display_data", "stream"]
    style = relay.kernel.of("comm_open")[1]["data"]["state"]
    assert "background" not in style and style["font_size"] == "12px"
    assert relay.kernel.of("comm_open")[2]["data"]["state"]["format"] == "png"


def test_a_buffer_cannot_put_back_a_sanitised_value(relay):
    agent_open(relay.comms, "h", _model_name="HTMLModel", value="")
    agent_update(relay.comms, "h", buffers=[b"<img onerror=x>", b"ok"], paths=[["value"], ["other"]])
    update = [(c, b) for kind, c, b, _ in relay.kernel.sent if kind == "comm_msg"][-1]
    assert update[0]["data"]["buffer_paths"] == [["other"]] and update[1] == [b"ok"]


def test_refused_targets_modules_taken_ids_and_view_changes(relay):
    agent_open(relay.comms, "p", target="sandbox_kernel.stats")
    agent_open(relay.comms, "q", target="other.target")
    agent_open(relay.comms, "r", _model_name="M", _model_module="evil-widgets")
    relay.kernel.comm_manager.comms["taken"] = object()
    agent_open(relay.comms, "taken", _model_name="IntSliderModel")
    assert relay.kernel.of("comm_open") == []
    assert "refused" in relay.kernel.of("stream")[0]["text"]
    agent_open(relay.comms, "w", _model_name="IntSliderModel")
    agent_update(relay.comms, "w", _view_module="evil-widgets", _view_name="V", value=1)
    assert relay.kernel.of("comm_msg")[-1]["data"]["state"] == {"value": 1}
    relay.session.trust_output = True
    agent_open(relay.comms, "p2", target="sandbox_kernel.stats")
    assert [c["comm_id"] for c in relay.kernel.of("comm_open")] == ["w"]


def test_messages_for_comms_of_another_session_or_none_are_dropped(relay):
    other = FakeSession()
    relay.relay.attach(other)
    agent_open(relay.comms, "mine", _model_name="IntSliderModel")
    agent_update(other.comm_handler, "mine", value=666)
    relay.kernel.comm_manager.comms["panel"] = object()
    agent_update(relay.comms, "panel", value=1)
    assert relay.kernel.of("comm_msg") == []


def test_the_frontends_control_comm_is_forwarded_and_the_states_filtered(relay):
    agent_open(relay.comms, "w", _model_name="HTMLModel", value="")
    relay.kernel.comm_manager.comm_open(None, None, {"content": {
        "comm_id": "ctl", "target_name": "jupyter.widget.control", "data": {}},
        "metadata": {"version": "1.0.0"}})
    assert relay.session.requests[-1][0] == "comm_open"
    assert relay.session.requests[-1][1]["target_name"] == "jupyter.widget.control"
    relay.comms.from_agent("comm_msg", {"comm_id": "ctl", "metadata": {}, "buffers": [], "data": {
        "method": "update_states", "buffer_paths": [],
        "states": {"w": {"model_name": "HTMLModel", "model_module": "@jupyter-widgets/controls",
                         "state": {"value": "<img src=x onerror=alert(1)>"}},
                   "panel": {"model_name": "X", "model_module": "@jupyter-widgets/controls",
                             "state": {}}}}})
    states = relay.kernel.of("comm_msg")[-1]["data"]["states"]
    assert list(states) == ["w"] and "onerror" not in states["w"]["state"]["value"]


def test_a_comm_no_container_answers_is_closed_in_the_frontend(relay):
    def frontend_opens(comm_id):
        relay.kernel.comm_manager.comm_open(None, None, {"content": {
            "comm_id": comm_id, "target_name": "jupyter.widget.control", "data": {}}, "metadata": {}})
    frontend_opens("before")                      # no container opened a widget yet
    agent_open(relay.comms, "w", _model_name="IntSliderModel")
    relay.session.answer = {"status": "error", "ename": "CommError", "evalue": "no such"}
    frontend_opens("ctl")
    assert [c["comm_id"] for c in relay.kernel.of("comm_close")] == ["before", "ctl"]
    assert set(relay.kernel.comm_manager.comms) == {"w"}


def test_when_the_container_ends_its_comms_close_in_the_frontend(relay):
    agent_open(relay.comms, "a", _model_name="IntSliderModel")
    agent_open(relay.comms, "b", _model_name="IntSliderModel")
    relay.comms.container_gone()
    assert sorted(c["comm_id"] for c in relay.kernel.of("comm_close")) == ["a", "b"]
    assert not relay.kernel.comm_manager.comms


def test_a_display_keeps_only_a_well_formed_widget_view():
    for bad in ("x", {"model_id": 5, "version_major": 2, "version_minor": 0},
                {"model_id": "m", "version_major": "2", "version_minor": 0}):
        assert comm_state.widget_view(bad) is None
    data, metadata = comm_state.clean_bundle(
        {VIEW: {"model_id": "m", "version_major": 2, "version_minor": 0}, "text/html": "<script>x</script>"}, {})
    assert data[VIEW]["model_id"] == "m" and "<script" not in data.get("text/html", "")
