"""The agent's zombie reaper (session/reaping.py) asks the kernel first,
with one waitid(2) that reaps nothing, whether any child has exited: the
/proc scan behind it cost every cell ~0.1 ms twice (issue 22's round trip).
Real children of this process, each waited for before the test ends."""
import os
import subprocess
import sys
import threading
import time

import pytest

from sandbox_kernel.session.reaping import ChildReaper


def _exited_child() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:      # until it is a zombie (a state we can see)
        with open(f"/proc/{pid}/stat") as handle:
            if handle.read().rpartition(")")[2].split()[0] == "Z":
                return pid
        time.sleep(0.01)
    raise AssertionError(f"child {pid} did not exit")


@pytest.fixture
def reaper():
    found = ChildReaper()
    yield found
    for _ in range(100):        # nothing of a test left behind, even when it failed
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                break
        except ChildProcessError:
            break


def test_no_exited_child_is_answered_without_scanning_proc(reaper, monkeypatch):
    monkeypatch.setattr(reaper, "children", lambda: pytest.fail("scanned /proc"))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert reaper.any_child_exited() is False
        assert reaper.reap() == 0
    finally:
        sleeper.kill()
        sleeper.wait()


def test_an_exited_raw_fork_is_seen_left_waitable_then_reaped(reaper):
    pid = _exited_child()
    assert reaper.any_child_exited() is True
    assert reaper.any_child_exited() is True          # asking reaped nothing
    assert reaper.reap() == 1
    assert reaper.any_child_exited() is False
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_a_child_of_another_thread_is_seen_too(reaper):
    made = []
    thread = threading.Thread(target=lambda: made.append(_exited_child()))
    thread.start()
    thread.join(15)
    assert made, "the thread's child did not exit"
    assert reaper.any_child_exited() is True
    assert reaper.reap() == 1


def test_an_exited_popen_keeps_its_exit_code_for_its_wait(reaper, monkeypatch):
    monkeypatch.setattr(subprocess.Popen, "__init__", subprocess.Popen.__init__)   # undone after
    reaper.install()
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(5)"])
    deadline = time.monotonic() + 10
    while not reaper.any_child_exited() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reaper.any_child_exited() is True
    assert reaper.reap() == 0                         # a live Popen will wait for it
    assert child.wait(10) == 5
