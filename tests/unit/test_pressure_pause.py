"""Pause and resume without a container (session/pausing.py): the state
word, the resume note, the idle timer that never pauses a session a request
holds, and one line for a cgroup that cannot freeze.  Bounded waits only."""
from __future__ import annotations

import threading
import time

import pytest

from sandbox_kernel.runtime.cgroups import CgroupError
from sandbox_kernel.runtime.container import State
from sandbox_kernel.runtime.spec import Limits
from sandbox_kernel.session import client, commands
from sandbox_kernel.session.errors import SessionError


class FakeCgroup:
    def __init__(self, can_freeze: bool = True):
        self.frozen, self.can_freeze, self.calls = False, can_freeze, []

    def freeze(self):
        if not self.can_freeze:
            raise CgroupError(95, "freezing needs the freezer controller (cgroup v1) or cgroup v2")
        self.frozen = True
        self.calls.append("freeze")

    def thaw(self):
        self.frozen = False
        self.calls.append("thaw")


class FakeContainer:
    def __init__(self, cgroup):
        self.cgroup, self.state, self.name, self.pid, self.warnings = cgroup, State.RUNNING, "c", 1, []

    def destroy(self):
        self.state = State.DESTROYED

    def stats(self):
        raise OSError(2, "no cgroup files here")   # figures.py: the counters are then None


@pytest.fixture
def session():
    made = client.Session("t", limits=Limits(memory=1 << 30))
    made._container = FakeContainer(FakeCgroup())
    yield made
    made._cancel_idle()
    made._container = None


def _wait_for(predicate, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end and not predicate():
        time.sleep(0.02)
    return predicate()


def test_pause_freezes_status_says_paused_and_resume_thaws(session):
    assert "paused" in session.pause()
    assert session._container.cgroup.frozen and session.status()["state"] == "paused"
    assert session.snapshot().state == "paused"
    assert "already paused" in session.pause()
    assert "resumed in" in session.resume()
    assert not session._container.cgroup.frozen and session.status()["state"] == "running"
    assert "not paused" in session.resume()


def test_a_request_wakes_a_paused_session_and_the_cell_is_told_once(session):
    session.pause()
    with session._busy():
        assert not session._container.cgroup.frozen
    said = []
    session._tell_resumed(lambda kind, content: said.append((kind, content)))
    session._tell_resumed(lambda kind, content: said.append((kind, content)))
    assert len(said) == 1 and said[0][0] == "stream" and said[0][1]["name"] == "stderr"
    assert "resumed in" in said[0][1]["text"] and said[0][1]["text"].endswith("\n")


def test_the_idle_timer_pauses_and_a_request_cancels_it(session):
    session.idle_pause = 0.05
    with session._busy():
        pass
    assert _wait_for(lambda: session.paused)
    session.idle_pause = 30.0
    with session._busy():                 # wakes it, arms a long timer
        assert not session.paused
    assert session._idle_timer is not None
    with session._busy():                 # the next request cancels it before it fires
        assert session._idle_timer is None


def test_the_idle_timer_never_pauses_a_session_a_request_holds(session):
    with session._busy():
        session._pause_when_idle()        # the timer's thread, firing mid-request
        assert not session.paused and session._container.cgroup.calls == []


def test_a_request_that_begins_during_an_idle_pause_thaws_after_it(session):
    entered, release = threading.Event(), threading.Event()
    cgroup = session._container.cgroup
    freeze = cgroup.freeze

    def slow_freeze():
        entered.set()
        release.wait(10)
        freeze()
    cgroup.freeze = slow_freeze
    timer = threading.Thread(target=session._pause_when_idle, daemon=True)
    timer.start()
    assert entered.wait(10)
    done = threading.Event()

    def request():
        with session._busy():
            done.set()
    thread = threading.Thread(target=request, daemon=True)
    thread.start()
    assert not done.wait(0.2)             # waits for the freeze under way
    release.set()
    thread.join(10)
    timer.join(10)
    assert done.is_set() and cgroup.calls == ["freeze", "thaw"] and not cgroup.frozen


def test_a_cgroup_that_cannot_freeze_is_one_clear_line(session):
    session._container.cgroup.can_freeze = False
    with pytest.raises(SessionError, match="cannot pause: .*freezer controller"):
        session.pause()
    assert session.status()["state"] == "running"


def test_nothing_to_pause_without_a_container():
    made = client.Session("idle-none")
    with pytest.raises(SessionError, match="no container runs"):
        made.pause()


@pytest.mark.parametrize("line, words", [
    ("limits --idle-pause 2s", "pauses after 2 s without a cell"),
    ("limits --idle-pause none", "pauses never"),
])
def test_limits_idle_pause_sets_the_timer(session, line, words):
    sessions = commands.Sessions()
    sessions.sessions["default"] = session
    assert words in commands.run(line, sessions).text


def test_a_bad_idle_pause_is_one_line(session):
    sessions = commands.Sessions()
    sessions.sessions["default"] = session
    with pytest.raises(commands.UsageError) as raised:
        commands.run("limits --idle-pause soon", sessions)
    assert "idle pause" in str(raised.value) and "\n" not in str(raised.value)


def test_pause_and_resume_are_subcommands(session):
    sessions = commands.Sessions()
    sessions.sessions["default"] = session
    assert "paused" in commands.run("pause", sessions).text
    assert "paused" in commands.run("status", sessions).text
    assert "resumed" in commands.run("resume", sessions).text
    assert "pause" in commands.run("-h", sessions).text
