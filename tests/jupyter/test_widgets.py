"""Comms and widgets from inside the container, and counts across container
restarts, through jupyter_client as a frontend drives them: the sandbox
kernel, and %%container in an ordinary ipykernel.

Needs root (conftest.py skips the tier otherwise).  Every wait is bounded.
"""
from __future__ import annotations

import contextlib
import os
import queue
import time
import uuid

import pytest

from sandbox_kernel.kernel import install
import kernel_fixtures as kf  # tests/jupyter is on pytest's pythonpath (pyproject)

NAME = "sbk-test-widgets"
SMALL = "sbk-test-widgets-128m"
TRUSTED = "sbk-test-widgets-trusted"
ok = kf.ok


@pytest.fixture(scope="module", autouse=True)
def kernelspecs(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("jupyter-data"))
    kf.install_kernelspec(data, NAME, footer=False)
    kf.install_kernelspec(data, SMALL, {"memory": "128M"}, footer=False)
    with kf.jupyter_path(data):
        yield data


@pytest.fixture
def fresh(kernelspecs):
    with kf.kernels_of_one_test(NAME) as start:
        yield start


# ---------------------------------------------------------------------------
# counts


def test_the_count_goes_on_after_an_out_of_memory_death(fresh):
    k = fresh(SMALL)
    ok(k.run("kept = 1"))
    before = ok(k.run("kept")).reply["execution_count"]
    died = k.run("hog = bytearray(400 << 20)")
    assert died.reply["ename"] == "ContainerOutOfMemory"
    assert died.reply["execution_count"] == before + 1
    after = k.run("print('fresh')")
    assert after.stdout == "fresh\n"
    assert after.of("execute_input")[0]["execution_count"] == before + 2
    assert after.reply["execution_count"] == before + 2


# ---------------------------------------------------------------------------
# widgets: helpers


SLIDER = "import ipywidgets as w\nslider = w.IntSlider(value=3, description='n')\nslider"
OBSERVED = ("import ipywidgets as w\nslider = w.IntSlider(value=3)\n"
            "def moved(change):\n    print('moved to', change['new'])\n"
            "slider.observe(moved, 'value')\nslider")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def opened(ran, model_name: str) -> list[dict]:
    return [c for c in ran.of("comm_open")
            if c["data"].get("state", {}).get("_model_name") == model_name]


def send_comm(k, msg_type: str, content: dict, timeout: float = 60, metadata=None) -> kf.Ran:
    """A frontend's comm message (no reply comes); the iopub messages it
    caused, until the kernel is idle again."""
    msg = k.kc.session.msg(msg_type, content, metadata=metadata or {})
    k.kc.shell_channel.send(msg)
    msg_id = msg["header"]["msg_id"]
    deadline = time.monotonic() + timeout
    caused = []
    while not (caused and caused[-1]["msg_type"] == "status"
               and caused[-1]["content"]["execution_state"] == "idle"):
        assert time.monotonic() < deadline, f"no idle within {timeout} s; got {caused}"
        with contextlib.suppress(queue.Empty):
            got = k.kc.get_iopub_msg(timeout=1)
            if got["parent_header"].get("msg_id") == msg_id:
                caused.append(got)
    return kf.Ran(reply={"msg_id": msg_id}, messages=[
        (m["msg_type"], m["content"], m["header"]) for m in caused if m["msg_type"] != "status"])


def move(k, comm_id: str, value) -> kf.Ran:
    """What the frontend sends when a slider moves."""
    return send_comm(k, "comm_msg", {"comm_id": comm_id, "data": {
        "method": "update", "state": {"value": value}, "buffer_paths": []}})


@pytest.fixture(scope="module")
def kernel(kernelspecs):
    k = kf.SandboxKernel(NAME)
    yield k
    k.shutdown()


@pytest.fixture(scope="module")
def ipykernel_with_magics(kernelspecs):
    """An ordinary ipykernel with the magics loaded, and every cell in a container."""
    k = kf.SandboxKernel("python3")
    ok(k.run("%load_ext sandbox_kernel"))
    yield k
    k.shutdown()


def in_container(k, code: str) -> str:
    return code if k.km.kernel_name != "python3" else "%%container\n" + code


# ---------------------------------------------------------------------------
# widgets: both faces


@pytest.fixture(params=["sandbox", "magics"])
def face(request):
    return request.getfixturevalue("kernel" if request.param == "sandbox" else "ipykernel_with_magics")


def test_a_slider_reaches_the_frontend_with_its_state(face):
    ran = ok(face.run(in_container(face, SLIDER)))
    [slider] = opened(ran, "IntSliderModel")
    assert slider["target_name"] == "jupyter.widget"
    assert slider["data"]["state"]["value"] == 3 and slider["data"]["state"]["description"] == "n"
    views = [c["data"][WIDGET_VIEW] for c in ran.of("execute_result") + ran.of("display_data")
             if WIDGET_VIEW in c["data"]]
    assert views and views[0]["model_id"] == slider["comm_id"]


def test_a_moved_slider_reaches_the_widget_and_its_callback_prints_for_that_message(face):
    ran = ok(face.run(in_container(face, OBSERVED)))
    [slider] = opened(ran, "IntSliderModel")
    moved = move(face, slider["comm_id"], 9)
    assert moved.stdout == "moved to 9\n"             # published with the comm_msg as parent
    assert "9" in ok(face.run(in_container(face, "print(slider.value)"))).stdout


def test_an_output_widget_captures_a_callbacks_print_for_that_message(face):
    code = ("import ipywidgets as w\nslider = w.IntSlider()\nout = w.Output()\n"
            "def moved(change):\n    with out:\n        print('captured', change['new'])\n"
            "slider.observe(moved, 'value')")
    ran = ok(face.run(in_container(face, code)))
    [slider], [out] = opened(ran, "IntSliderModel"), opened(ran, "OutputModel")
    moved = move(face, slider["comm_id"], 4)
    msg_ids = [c["data"]["state"].get("msg_id") for c in moved.of("comm_msg")
               if c["comm_id"] == out["comm_id"]]
    assert moved.reply["msg_id"] in msg_ids and "captured 4" in moved.stdout


def test_an_html_widget_arrives_sanitised(face):
    code = ("import ipywidgets as w\nh = w.HTML('<b>bold</b><img src=x onerror=alert(1)>')\n"
            "c = w.Checkbox(description='<i>d</i><script>alert(2)</script>', description_allow_html=True)\n"
            "h.value = '<a href=\"javascript:alert(3)\">x</a><b>y</b>'")
    ran = ok(face.run(in_container(face, code)))
    [html] = opened(ran, "HTMLModel")
    assert "onerror" not in html["data"]["state"]["value"] and "<b>bold</b>" in html["data"]["state"]["value"]
    [box] = opened(ran, "CheckboxModel")
    assert "<script" not in box["data"]["state"]["description"]
    updates = [c["data"]["state"]["value"] for c in ran.of("comm_msg")
               if c["comm_id"] == html["comm_id"] and "value" in c["data"].get("state", {})]
    assert updates and "javascript:" not in updates[-1] and "<b>y</b>" in updates[-1]


def test_a_container_may_not_open_comms_to_other_targets_nor_take_the_kernels_ids(face):
    code = ("import comm\nc = comm.create_comm(target_name='sandbox_kernel.stats', data={'x': 1})\n"
            "d = comm.create_comm(target_name='jupyter.widget', data={'state': {"
            "'_model_module': 'evil-widgets', '_model_name': 'M', '_view_module': 'evil-widgets'}})")
    ran = ok(face.run(in_container(face, code)))
    assert ran.of("comm_open") == []
    assert "refused" in ran.stderr


def test_a_flood_of_widget_updates_is_cut_and_the_kernel_answers(face):
    code = ("import ipywidgets as w\nflood = w.IntText()\n"
            "for i in range(200000):\n    flood.value = i\nprint('done')")
    ran = ok(face.run(in_container(face, code), timeout=300))
    assert "done" in ran.stdout
    assert len(ran.of("comm_msg")) < 100000
    assert "dropped" in ran.stderr
    assert ok(face.run(in_container(face, "print('alive')"))).stdout.strip().endswith("alive")


def test_interrupting_a_cell_that_waits_on_a_widget_value(face):
    made = ok(face.run(in_container(face, "import ipywidgets as w, time\nwaited = w.IntSlider()")))
    assert opened(made, "IntSliderModel")                # a live widget, not a DummyComm
    msg_id = face.send(in_container(face, "while waited.value == 0:\n    time.sleep(0.05)"))
    time.sleep(3)
    face.km.interrupt_kernel()
    ran = face.collect(msg_id, timeout=60)
    assert ran.reply["status"] == "error" and "KeyboardInterrupt" in ran.error_text
    assert "alive" in ok(face.run(in_container(face, "print('alive')"))).stdout


# ---------------------------------------------------------------------------
# the sandbox kernel alone


def test_the_widget_states_come_back_on_a_page_reload(kernel):
    ran = ok(kernel.run("import ipywidgets as w\nkept = w.IntSlider(value=6)"))
    [slider] = opened(ran, "IntSliderModel")
    control = "ctl-" + uuid.uuid4().hex[:8]
    send_comm(kernel, "comm_open", {"comm_id": control, "target_name": "jupyter.widget.control",
                                    "data": {}}, metadata={"version": "1.0.0"})
    ran = send_comm(kernel, "comm_msg", {"comm_id": control, "data": {"method": "request_states"}})
    [states] = [c["data"] for c in ran.of("comm_msg") if c["comm_id"] == control]
    assert states["method"] == "update_states"
    assert states["states"][slider["comm_id"]]["state"]["value"] == 6


def test_trusted_output_shows_html_widgets_as_they_are(kernelspecs):
    spec = install.kernel_json(install.checked_settings({}), trust_output=True, footer=False)
    install.write_kernelspec(os.path.join(kernelspecs, "kernels", TRUSTED), spec)
    k = kf.SandboxKernel(TRUSTED)
    try:
        ran = ok(k.run("import ipywidgets as w\nh = w.HTML('<img src=x onerror=alert(1)>')"))
        assert opened(ran, "HTMLModel")[0]["data"]["state"]["value"] == "<img src=x onerror=alert(1)>"
    finally:
        k.shutdown()
