"""The sandbox kernel pauses and resumes its session (issue 23): %container
pause freezes it, %container status answers "paused", the next cell resumes
it by itself and says how long that took; %container limits --idle-pause
pauses it after that long without a cell.  Every wait is bounded."""
from __future__ import annotations

import time

import pytest

import kernel_fixtures as kf  # tests/jupyter is on pytest's pythonpath (pyproject)

NAME = "sbk-test-kernel-pause"
ok = kf.ok


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("jupyter-data"))
    kf.install_kernelspec(data, NAME)
    with kf.jupyter_path(data), kf.kernels_of_one_test(NAME) as start:
        yield start()                       # shut down when the module ends


def _host_text(ran) -> str:
    return "".join(c["data"].get("text/plain", "") for c in ran.of("display_data")
                   if kf.STATS_MIME not in c["data"])


def _paused_soon(kernel) -> bool:
    """Whether %container status says paused within ~20 s (at most 40 asks)."""
    for _ in range(40):
        if "paused" in _host_text(ok(kernel.run("%container status"))):
            return True
        time.sleep(0.5)
    return False


def test_pause_status_and_the_next_cell_resumes(kernel):
    ok(kernel.run("kept = 41"))
    assert "paused" in _host_text(ok(kernel.run("%container pause")))
    assert "paused" in _host_text(ok(kernel.run("%container status")))
    ran = ok(kernel.run("print(kept + 1)"))
    assert ran.stdout == "42\n"
    assert "resumed in" in ran.stderr and ran.stderr.count("\n") == 1
    assert "running" in _host_text(ok(kernel.run("%container status")))


def test_idle_pause_pauses_and_the_next_cell_resumes(kernel):
    ok(kernel.run("%container limits --idle-pause 2s"))
    ok(kernel.run("kept = 41"))
    paused = _paused_soon(kernel)
    ok(kernel.run("%container limits --idle-pause none"))   # a host line: it stays paused
    assert paused
    ran = ok(kernel.run("print(kept + 1)"))
    assert ran.stdout == "42\n" and "resumed in" in ran.stderr


def test_the_sandbox_kernel_interrupts_a_cell_at_memory_pressure(kernel):
    ok(kernel.run("%container limits --memory 256M"))
    ok(kernel.run("kept = 41"))
    ran = kernel.run("import time\nchunks = []\nfor _ in range(400):\n"
                     "    chunks.append(bytearray(8 << 20)); chunks[-1][::4096] = b'x' * 2048\n"
                     "    time.sleep(0.02)\n")
    assert "stopped at 90% of the 256 MiB limit to keep your session" in ran.error_text
    ran = ok(kernel.run("del chunks\nprint(kept + 1)"))
    assert ran.stdout == "42\n"


def test_an_idle_pause_installed_with_the_kernelspec_pauses_its_sessions(tmp_path):
    """sandbox-kernel install --idle-pause (a kernel setting of the option schema):
    the session pauses after that long without a cell, and the next one resumes it."""
    name = "sbk-test-kernel-idle"
    kf.install_kernelspec(str(tmp_path), name, {"idle_pause": "2s"})
    with kf.jupyter_path(str(tmp_path)), kf.kernels_of_one_test(name) as start:
        kernel = start()
        ok(kernel.run("kept = 41"))
        assert _paused_soon(kernel)
        ran = ok(kernel.run("print(kept + 1)"))
        assert ran.stdout == "42\n" and "resumed in" in ran.stderr
