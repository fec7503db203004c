"""Session's own logic without a container: the snapshot under its state
lock (contract 3), CellResult.restarted (contract 4), the net/dev parser.
Every wait is bounded (join timeouts)."""
import threading

import pytest

from sandbox_kernel.runtime.spec import Limits
from sandbox_kernel.session import client, stats
from sandbox_kernel.session.exchange import Ending, Outcome
from sandbox_kernel.session.figures import NetDev, parse_net_dev

BLOCKED = 0.2       # how long a reader is given to get past a lock it must wait for


@pytest.fixture
def session():
    made = client.Session("t", limits=Limits(memory=1 << 30))
    yield made
    made.stop()


def test_a_snapshot_of_a_session_not_started(session):
    snap = session.snapshot()
    assert isinstance(snap, stats.SessionSnapshot)
    assert (snap.name, snap.image, snap.network, snap.state) == ("t", "host", "none", "not started")
    assert snap.limits == session.limits and snap.execution_count == 0
    assert snap.uptime is None and snap.counters is None and snap.warnings == ()
    assert snap.trust_output is False
    session.stop()
    assert session.snapshot().state == "stopped"


@pytest.mark.parametrize("read", [lambda s: s.snapshot(), lambda s: s._counters(),
                                  lambda s: s._discard()],
                         ids=["snapshot", "counters", "discard"])
def test_the_state_lock_is_taken_by_every_reader_of_the_container(session, read):
    """One lock guards the container reference and the net/dev fd: while it
    is held, neither a snapshot, a read of the counters nor a discard gets by."""
    done = threading.Event()
    thread = threading.Thread(target=lambda: (read(session), done.set()), daemon=True)
    with session._state:
        thread.start()
        assert not done.wait(BLOCKED)
    thread.join(10)
    assert done.is_set()


def test_restarted_when_the_container_died_and_a_fresh_one_started(session, monkeypatch):
    starts = []
    monkeypatch.setattr(session, "start", lambda: starts.append(1))
    result = session._conclude(Outcome(Ending.DIED), None, False, 1.0, None)
    assert result.restarted is True and starts == [1]
    assert result.status == "killed" and "restarted" in result.message


def test_not_restarted_after_a_reply_a_stop_or_a_failed_start(session, monkeypatch):
    reply = Outcome(Ending.REPLY, reply={"status": "ok", "execution_count": 1})
    assert session._conclude(reply, None, False, 1.0, None).restarted is False

    def fails():
        raise OSError("no room")
    monkeypatch.setattr(session, "start", fails)
    failed = session._conclude(Outcome(Ending.DIED), None, False, 1.0, None)
    assert failed.restarted is False and "could not be restarted" in failed.message
    session._closed = True
    stopped = session._conclude(Outcome(Ending.DIED), None, False, 1.0, None)
    assert stopped.restarted is False and "the session was stopped" in stopped.message


def test_an_abandoned_session_starts_no_fresh_container_after_a_death(session, monkeypatch):
    """A kernel shutting down abandons its sessions: the cell it kills must
    not cost a container start that the shutdown would destroy at once
    (jupyter_client SIGTERMs a kernel that takes 2.5 s)."""
    starts = []
    monkeypatch.setattr(session, "start", lambda: starts.append(1))
    session.abandon()
    result = session._conclude(Outcome(Ending.INTERRUPT_KILLED), None, False, 1.0, None)
    assert starts == [] and result.restarted is False
    assert "the session was stopped" in result.message


def test_a_command_result_takes_its_exit_code_from_the_reply(session):
    reply = Outcome(Ending.REPLY, reply={"status": "ok", "exit_code": 3})
    result = session._conclude(reply, None, False, 1.0, None, command=True)
    assert result.exit_code == 3 and result.stats["cell"]["execution_count"] is None


def test_net_dev_leaves_out_loopback_and_says_nothing_on_the_hosts_network():
    text = ("Inter-|   Receive |  Transmit\n face |bytes packets|bytes\n"
            "    lo: 999 1 0 0 0 0 0 0 999 1 0 0 0 0 0 0\n"
            "  eth0: 100 1 0 0 0 0 0 0 200 1 0 0 0 0 0 0\n")
    assert parse_net_dev(text) == {"net_rx": 100, "net_tx": 200}
    assert NetDev().counters(None, "host") == {"net_rx": None, "net_tx": None}


def test_a_fresh_container_counts_on_from_the_last_cell(session, monkeypatch):
    """Contract 3: after a death the next execute asks the new agent to count
    from one more than the dead container's last cell."""
    monkeypatch.setattr(session, "start", lambda: None)
    died = session._conclude(Outcome(Ending.DIED), None, False, 1.0, None)
    assert died.reply["execution_count"] == 1
    session._conclude(Outcome(Ending.REPLY, reply={"status": "ok", "execution_count": 7}),
                      None, False, 1.0, None)
    sent = []
    monkeypatch.setattr(session, "_run_cell", lambda request, *a, **k: sent.append(request))
    session.execute("x")
    assert sent[0]["count_from"] == 8


def test_a_comm_request_never_starts_a_container_and_names_the_frontends_message(session, monkeypatch):
    monkeypatch.setattr(session, "start", lambda: pytest.fail("a comm request started a container"))
    reply = session.comm_request("comm_msg", {"comm_id": "c", "data": {}})
    assert reply["status"] == "error" and reply["ename"] == "CommError"
    session.comm_handler = type("Handler", (), {"parent": lambda self: {"msg_id": "m", "msg_type": "comm_msg"}})()
    assert session._with_parent({"type": "execute"})["parent"] == {"msg_id": "m", "msg_type": "comm_msg"}
