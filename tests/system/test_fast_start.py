"""Fast starts without a shortcut through isolation: the agent a zygote
forks holds no file of its owner or of the zygote; a container started
ahead (``Session.start_soon``, the warm pool of ``Sessions.warm_up``) is the
session's own container, gets the limits given before the first cell, is
replaced when the image or network changes before it was used, and leaves
nothing behind."""
from __future__ import annotations

import json
import os
import sys
import threading
import time

import pytest

from sandbox_kernel.runtime import zygote
from sandbox_kernel.session.client import Session, prewarm
from sandbox_kernel.session.commands import MAX_POOL, Sessions

from open_files import LIST_FDS, open_files  # tests/ is on pytest's pythonpath

pytestmark = pytest.mark.usefixtures("no_leftovers")


@pytest.fixture
def threaded():
    """A second thread, as a kernel has: containers then come from the zygote."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    prewarm()
    yield
    stop.set()
    thread.join()


def run(session: Session, code: str) -> str:
    out = []
    result = session.execute(code, on_output=lambda kind, c: out.append(c.get("text", "")))
    assert result.status == "ok", (result.reply, out)
    return "".join(out)


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])


def test_a_forked_agent_holds_no_file_of_its_owner_or_of_the_zygote(threaded, tmp_path):
    secret = os.open(tmp_path / "owner-only", os.O_RDWR | os.O_CREAT)
    os.set_inheritable(secret, True)          # even an inheritable fd must not reach it
    try:
        with Session("fds") as session:
            inside = {int(fd): target for fd, target in json.loads(run(session, LIST_FDS)).items()}
            launcher = session._container.pid
            assert parent_of(launcher) == zygote.shared().process.pid, "not forked by the zygote"
            owner = open_files(os.getpid())
            of_zygote = open_files(zygote.shared().process.pid)
            log_pipes = {owner[fd] for fd in session._transport.logs}
    finally:
        os.close(secret)
    assert inside[0] == "/dev/null"
    assert {inside[1], inside[2]} == log_pipes        # the session's own log pipes, nothing else
    channel = [fd for fd in inside if fd > 2]
    assert len(channel) == 1 and inside[channel[0]].startswith("socket:"), inside
    # the agent's end of its channel: a socket neither the owner nor the zygote holds
    # (/dev/null is a path both may open, not a shared file)
    shared = set(inside.values()) - {"/dev/null"}
    assert not shared & set(of_zygote.values()), (inside, of_zygote)
    assert shared & set(owner.values()) == log_pipes, (inside, owner)
    assert str(tmp_path / "owner-only") not in inside.values()


def test_the_first_request_waits_for_the_start_begun_ahead_and_uses_it(threaded):
    with Session("ahead") as session:
        session.start_soon()
        assert session.status()["state"] in ("starting", "running")
        session._await_warm()
        started = session.status()["pid"]
        assert started is not None and not session.used
        assert run(session, "print(6 * 7)") == "42\n"
        assert session.status()["pid"] == started and session.used


def test_an_unused_container_is_replaced_when_the_network_changes(threaded):
    with Session("replace") as session:
        session.start_soon()
        session._await_warm()
        first = session.status()["pid"]
        changes = session.set_limits(net="host")
        assert changes == {"changed": ["net"], "restart_needed": []}
        host_net = os.readlink("/proc/self/ns/net")
        assert run(session, "import os; print(os.readlink('/proc/self/ns/net'))") == host_net + "\n"
        assert session.status()["pid"] != first
        # used now: a change of placement waits for a restart, the variables stay
        run(session, "kept = 1")
        changes = session.set_limits(net="none")
        assert changes == {"changed": [], "restart_needed": ["net"]}
        assert run(session, "print(kept)") == "1\n"


def test_stopping_while_the_container_starts_leaves_nothing(threaded):
    session = Session("stop-early")
    session.start_soon()
    session.stop()
    assert not session.running


def test_the_pool_gives_the_first_session_its_container_with_the_limits_asked(threaded, cgroup_driver):
    if "memory" not in getattr(cgroup_driver, "controllers", ()):
        pytest.skip(f"no memory controller here ({cgroup_driver.version})")
    registry = Sessions()
    try:
        assert registry.warm_up() == 1 and registry.warm_up() == 0
        warm = registry.pool[0]
        warm._await_warm()
        launcher = warm.status()["pid"]
        session, notes = registry.open("first", memory="128M")
        assert session is warm and notes == [] and registry.pool == []
        assert session.status()["pid"] == launcher and session.name == "first"
        result = session.execute("b = bytearray(300 << 20)\nb[::4096] = b'x' * len(b[::4096])",
                                 on_output=lambda kind, content: None)
        assert result.status == "oom", result.message
        assert result.stats["cell"]["memory_limit"] == 128 << 20
    finally:
        registry.close_all()


def test_a_session_of_another_network_drops_the_pool(threaded):
    registry = Sessions()
    try:
        registry.warm_up()
        warm = registry.pool[0]
        session, _ = registry.open("hostnet", net="host")
        assert session is not warm and registry.pool == []
        assert not warm.running
    finally:
        registry.close_all()


def test_the_pool_is_bounded_and_closed_with_the_sessions(threaded):
    registry = Sessions()
    started = registry.warm_up(MAX_POOL + 3)
    try:
        assert started == MAX_POOL == len(registry.pool)
    finally:
        registry.close_all()
    deadline = time.monotonic() + 10
    while any(s.running for s in registry.pool) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert registry.pool == []



def test_a_forked_agent_is_named_as_exec_would_name_it_not_after_init(threaded):
    """ps inside shows one sbk-init (PID 1) and the agent under its
    interpreter's name, as if it had been exec'ed."""
    with Session("named") as session:
        agent, init = run(session, "print(open('/proc/self/comm').read().strip(), "
                                   "open('/proc/1/comm').read().strip())").split()
    assert (agent, init) == (os.path.basename(sys.executable)[:15], "sbk-init")
