"""The output budget covers every output (issue 15): printed text, display
data and the cell's last value.  Through both faces, driven by
jupyter_client: the sandbox kernel, and ``%%container`` in a plain ipykernel.

A 50 MB result is cut inside the container, with a notice, so the kernel
process never holds it: its peak RSS stays within 20 MB of its idle size.
A flood of displays and a flood of prints are cut with a notice too, and the
next cell works.  Needs root (conftest.py skips the tier otherwise).
"""
from __future__ import annotations

import re
import time

import pytest

import kernel_fixtures as kf  # tests/jupyter is on pytest's pythonpath (pyproject)

NAME = "sbk-test-output-budget"
BIG_RESULT = "'x' * 50_000_000"
DISPLAY_FLOOD = ("from IPython.display import display, HTML\n"
                 "for i in range(20_000):\n"
                 "    display(HTML(f'<b>{i}</b>' + 'y' * 1000))\n"
                 "flood_done = True")
PRINT_FLOOD = "for i in range(200_000):\n    print('z' * 100)\nprint_done = True"
CUT = "[output cut:"
RSS_SLACK_KIB = 20 << 10


def _kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(field + r":\s+(\d+)", status.read())[1])


def _reset_peak(pid: int) -> int:
    """Reset the kernel process's VmHWM; its RSS now, in KiB."""
    with open(f"/proc/{pid}/clear_refs", "w") as refs:
        refs.write("5")
    return _kib(pid, "VmRSS")


def _shown(ran) -> str:
    """Everything the cell showed as text: streams, results and displays."""
    texts = [ran.stdout, ran.stderr]
    for kind in ("execute_result", "display_data"):
        texts += [c["data"].get("text/plain", "") for c in ran.of(kind)]
    return "\n".join(texts)


def _shown_bytes(ran) -> int:
    return sum(len(str(content)) for _, content, *_ in ran.messages)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("jupyter-data"))
    kf.install_kernelspec(data, NAME, footer=False)
    with kf.jupyter_path(data):
        kernel = kf.SandboxKernel(NAME)
        try:
            yield kernel
        finally:
            kernel.shutdown()


class _Face:
    """One way of running a cell in the container: ``prefix`` goes before it."""

    def __init__(self, kernel, prefix: str):
        self.kernel, self.prefix = kernel, prefix

    def run(self, code: str):
        ran = self.kernel.run(self.prefix + code, timeout=180)
        assert ran.reply["status"] == "ok", ran.error_text + ran.stderr
        return ran


@pytest.fixture(params=["sandbox kernel", "%%container"])
def face(request, sandbox):
    if request.param == "sandbox kernel":
        return _Face(sandbox, "")
    return _Face(request.getfixturevalue("kernel"), "%%container --name budget\n")


def test_a_50_mb_result_is_cut_with_a_notice_and_the_kernel_stays_small(face):
    face.run("warm = 1\nwarm")                       # the container runs; one result shown
    time.sleep(0.5)
    idle = _reset_peak(face.kernel.pid)
    ran = face.run(BIG_RESULT)
    grew = _kib(face.kernel.pid, "VmHWM") - idle
    shown = _shown(ran)
    assert CUT in shown and "SANDBOX_KERNEL_OUTPUT_LIMIT" in shown, shown[-500:]
    assert "x" * 1000 in shown                       # the head of the value is there
    assert _shown_bytes(ran) < 1 << 20
    assert grew < RSS_SLACK_KIB, f"the kernel's peak RSS grew by {grew} KiB"
    assert face.run("print('the next cell')").stdout.startswith("the next cell\n")


def test_a_flood_of_displays_is_cut_with_a_notice(face):
    ran = face.run(DISPLAY_FLOOD)
    assert CUT in ran.stderr and "dropped" in ran.stderr, ran.stderr[-500:]
    assert 0 < len(ran.of("display_data")) < 20_000
    assert _shown_bytes(ran) < 3 << 20
    assert face.run("print(flood_done)").stdout == "True\n"


def test_a_flood_of_prints_is_cut_with_a_notice(face):
    ran = face.run(PRINT_FLOOD)
    assert CUT in ran.stderr, ran.stderr[-500:]
    assert 0 < len(ran.stdout) <= 1 << 20
    assert face.run("print(print_done)").stdout == "True\n"


# A cell that writes to the agent's socket itself: the header of a 50 MB frame.
HUGE_FRAME = '''
import os, stat, struct
def is_socket(fd):
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False
sock_fd = min(fd for fd in map(int, os.listdir("/proc/self/fd")) if fd > 2 and is_socket(fd))
body = b'{"type": "stream", "id": 1, "name": "stdout", "text": "' + b"x" * 50_000_000 + b'"}'
frame = memoryview(struct.pack(">I", len(body)) + body)
try:
    while frame:
        frame = frame[os.write(sock_fd, frame):]
except OSError:
    pass
'''


def test_a_frame_over_the_cells_bound_is_refused_before_the_host_reads_it(sandbox):
    kf.ok(sandbox.run("warm = 1"))
    idle = _reset_peak(sandbox.pid)
    ran = sandbox.run(HUGE_FRAME, timeout=180)
    grew = _kib(sandbox.pid, "VmHWM") - idle
    assert ran.reply["status"] == "error"
    assert "broke the session protocol" in ran.error_text + ran.stderr
    assert "over the 3145728-byte limit" in ran.error_text + ran.stderr
    assert grew < RSS_SLACK_KIB, f"the kernel's peak RSS grew by {grew} KiB"
    assert kf.ok(sandbox.run("print('fresh')")).stdout == "fresh\n"
