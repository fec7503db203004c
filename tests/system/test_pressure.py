"""Pause and resume through the cgroup freezer (issue 23): a paused
session's processes get no CPU, it answers %container status, and the next
cell (or an idle timer's end) wakes or pauses it.  Runs on cgroup v1 here
and on v2 in the guest (run-in-v2)."""
from __future__ import annotations

import os
import threading
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


# ---------------------------------------------------------------------------
# memory pressure: interrupted before the OOM killer, or warned

GROW = ("chunks = []\n"
        "for _ in range(400):\n"
        "    chunks.append(bytearray(8 << 20))\n"        # 8 MiB a step, touched
        "    chunks[-1][::4096] = b'x' * len(chunks[-1][::4096])\n"
        "    time.sleep(0.02)\n")


def _grow(session: Session):
    seen = []
    result = session.execute("import time\n" + GROW, on_output=lambda kind, c: seen.append(c))
    return result, seen


@pytest.fixture(params=["a script (no thread)", "a kernel (threads)"])
def owner_kind(request):
    """The session's owner as a script, or with threads as a kernel has:
    then the pressure waiter lives across cells (session/pressure_watch.py),
    and a crossing right at a cell's start is seen at once."""
    if request.param.startswith("a script"):
        yield request.param
        return
    stop = threading.Event()
    extra = [threading.Thread(target=stop.wait, daemon=True) for _ in range(2)]
    for thread in extra:
        thread.start()
    try:
        yield request.param
    finally:
        stop.set()
        for thread in extra:
            thread.join(5)


def test_interrupt_stops_a_growing_cell_and_the_session_keeps_its_variables(needs_freezer, owner_kind):
    with Session("pressure", limits=Limits(memory=256 * MiB)) as session:
        session.set_on_pressure("interrupt")
        assert session.execute("kept = 41").status == "ok"
        pid = session.status()["pid"]
        result, _ = _grow(session)
        assert result.status == "error", result.message
        assert result.reply["ename"] == "MemoryError"
        assert result.reply["evalue"] == "stopped at 90% of the 256 MiB limit to keep your session"
        assert result.stats["cell"]["memory_pressure"] is True
        assert result.stats["cell"]["oom_kills"] in (0, None)
        # it starts with what the stopped cell kept (past the threshold), and
        # frees it: not flagged (in a kernel on v2 it was, and with "interrupt"
        # the cell that frees the memory could itself be stopped)
        after = session.execute("del chunks\nprint(kept + 1)", on_output=lambda k, c: None)
        assert after.status == "ok" and session.status()["pid"] == pid   # the same container
        assert after.stats["cell"]["memory_pressure"] is False
        again, _ = _grow(session)                  # armed again for the next cell
        assert again.status == "error" and again.stats["cell"]["memory_pressure"] is True, again.message


def test_warn_lets_the_cell_be_oom_killed_and_the_footer_warned_first(needs_freezer):
    with Session("warned", limits=Limits(memory=256 * MiB)) as session:
        session.set_on_pressure("warn")
        session.execute("kept = 41")
        result, _ = _grow(session)
        assert result.status == "oom", result.message
        assert "ran out of memory" in result.message
        assert result.stats["cell"]["memory_pressure"] is True
        assert any("crossed 90% of the 256 MiB limit" in w for w in result.stats["warnings"])


def test_one_allocation_past_the_limit_still_gets_todays_words(needs_freezer):
    with Session("at-once", limits=Limits(memory=256 * MiB)) as session:
        session.set_on_pressure("interrupt")
        pytest.importorskip("numpy")             # the container runs this venv's python (host image)
        result = session.execute("import numpy\nx = numpy.ones(600 << 20, dtype=numpy.uint8)")
        assert result.status == "oom", result.message
        assert "ran out of memory at the 256 MiB limit" in result.message


@pytest.fixture
def big_file(tmp_path):
    """A 320 MiB host directory file, not in the page cache: the cell's read fills it.
    Removed after the test: pytest keeps every tmp_path of a session, and in the
    v2 guest with the checkout under /tmp they live in a RAM-backed /run/tmp."""
    big = tmp_path / "big"
    try:
        with open(big, "wb") as out:
            for _ in range(320):
                out.write(b"y" * MiB)
            out.flush()
            os.fsync(out.fileno())
            os.posix_fadvise(out.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        big.chmod(0o644)
        tmp_path.chmod(0o755)               # the container's user reads it
        yield tmp_path
    finally:
        big.unlink(missing_ok=True)


READ = ("total = 0\n"
        "with open('/data/big', 'rb') as f:\n"
        "    while chunk := f.read(1 << 20):\n"
        "        total += len(chunk)\n")


def test_reading_a_big_host_file_is_no_pressure(needs_freezer, big_file):
    """The page cache fills the group up to its limit and the kernel drops
    it: only memory that stays counts (no MemoryError for a file read)."""
    with Session("cache", limits=Limits(memory=256 * MiB), mounts=[f"{big_file}:/data:ro"]) as session:
        session.set_on_pressure("interrupt")
        seen = []
        result = session.execute(READ + "print(total >> 20)\n",
                                 on_output=lambda kind, c: seen.append(c.get("text", "")))
        assert result.status == "ok", result.reply
        assert "".join(seen) == "320\n"


def test_growing_after_the_cache_filled_the_group_is_still_interrupted(needs_freezer, big_file):
    """Usage sits near the limit (cache) and no threshold is crossed again as
    the list grows: the reclaim the growth causes is what tells the host."""
    with Session("mixed", limits=Limits(memory=256 * MiB), mounts=[f"{big_file}:/data:ro"]) as session:
        session.set_on_pressure("interrupt")
        result = session.execute(READ + "import time\n" + GROW)
        assert result.reply.get("ename") == "MemoryError", (result.status, result.message)
