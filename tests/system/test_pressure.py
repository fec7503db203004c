"""Pause and resume through the cgroup freezer (issue 23): a paused
session's processes get no CPU, it answers %container status, and the next
cell (or an idle timer's end) wakes or pauses it.  Runs on cgroup v1 here
and on v2 in the guest (run-in-v2)."""
from __future__ import annotations

import time

import pytest

from sandbox_kernel.runtime.spec import Limits
from sandbox_kernel.session import commands
from sandbox_kernel.session.client import Session

pytestmark = pytest.mark.usefixtures("no_leftovers")
MiB = 1 << 20
SPIN = ("import threading\n"
        "def spin():\n"
        "    while True:\n"
        "        pass\n"
        "threading.Thread(target=spin, daemon=True).start()\n")


@pytest.fixture
def needs_freezer(cgroup_driver, needs_cgroup):
    needs_cgroup("memory")
    if cgroup_driver.version == "v1":
        needs_cgroup("freezer")


def _cpu(session: Session) -> float:
    figures = session.status()["stats"] or {}
    return (figures.get("cpu_user") or 0.0) + (figures.get("cpu_system") or 0.0)


def _wait_for(predicate, seconds: float = 20.0) -> bool:
    """Bounded: True as soon as predicate() holds, False after ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _cpu_moves(session: Session, seconds: float = 20.0) -> bool:
    start = _cpu(session)
    return _wait_for(lambda: _cpu(session) > start + 0.05, seconds)


def test_pause_stops_a_spinning_thread_and_resume_lets_it_run(needs_freezer):
    sessions = commands.Sessions()
    try:
        session, _ = sessions.open("spin", memory="256M")
        assert session.execute(SPIN + "kept = 41").status == "ok"
        assert _cpu_moves(session)
        assert "paused" in commands.run("pause --name spin", sessions).text
        assert "paused" in commands.run("status --name spin", sessions).text
        assert session.status()["state"] == "paused"
        frozen = _cpu(session)
        time.sleep(0.5)
        assert _cpu(session) == pytest.approx(frozen, abs=0.01)   # no CPU while frozen
        assert "resumed" in commands.run("resume --name spin", sessions).text
        assert session.status()["state"] == "running"
        assert _cpu_moves(session)
    finally:
        sessions.close_all()


def test_a_paused_session_resumes_by_itself_on_the_next_cell(needs_freezer):
    with Session("wake", limits=Limits(memory=256 * MiB)) as session:
        session.execute("kept = 41")
        pid = session.status()["pid"]
        session.pause()
        seen = []
        result = session.execute("print(kept + 1)", on_output=lambda kind, c: seen.append(c))
        assert result.status == "ok"
        texts = [c.get("text", "") for c in seen]
        assert "42\n" in texts
        assert any("resumed in" in t for t in texts), texts
        assert session.status()["pid"] == pid and session.status()["state"] == "running"


def test_idle_pause_pauses_and_the_next_cell_resumes(needs_freezer):
    with Session("idle", limits=Limits(memory=256 * MiB)) as session:
        session.set_idle_pause("2s")
        session.execute("kept = 41")
        assert _wait_for(lambda: session.status()["state"] == "paused")
        seen = []
        result = session.execute("print(kept + 1)", on_output=lambda kind, c: seen.append(c))
        assert result.status == "ok"
        assert any("resumed in" in c.get("text", "") for c in seen)
        assert session.status()["state"] == "running"
        assert _wait_for(lambda: session.status()["state"] == "paused")   # idle again


def test_a_paused_session_can_be_stopped(needs_freezer):
    session = Session("stopped", limits=Limits(memory=256 * MiB))
    try:
        session.execute(SPIN)
        session.pause()
    finally:
        session.stop()
    assert session.status()["state"] == "stopped"
