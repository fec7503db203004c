"""The side panel's comm, kernel side (sandbox_kernel.panel), with fake comms
and sessions: what is sent when, the envelope, ticks only while a cell runs,
nothing built while nobody listens, history bounded, nulls kept null.  The
fake sessions answer snapshot() and raise on every other attribute: the panel
reads a session through Session.snapshot() and nothing else."""
from __future__ import annotations

import json
import threading
import time

import pytest

from sandbox_kernel.panel import NullStatsChannel, StatsChannel, TARGET
from sandbox_kernel.panel import channel as channel_module
from sandbox_kernel.panel import messages
from sandbox_kernel.runtime.spec import Limits
from sandbox_kernel.session import stats as stats_contract


class FakeComm:
    def __init__(self, comm_id="c1"):
        self.comm_id = comm_id
        self.sent: list[tuple[dict, dict]] = []
        self.closed = False
        self._on_msg = self._on_close = None
        self.lock = threading.Lock()

    def on_msg(self, callback):
        self._on_msg = callback

    def on_close(self, callback):
        self._on_close = callback

    def send(self, data=None, metadata=None):
        json.dumps(data, allow_nan=False)          # what goes on the wire is JSON
        with self.lock:
            self.sent.append((data, metadata))

    def close(self):
        self.closed = True

    # the frontend's side
    def frontend_sends(self, data):
        self._on_msg({"content": {"comm_id": self.comm_id, "data": data}})

    def frontend_closes(self):
        self._on_close({"content": {"comm_id": self.comm_id}})

    def events(self):
        with self.lock:
            return [data["event"] for data, _ in self.sent]


class FakeCommManager:
    def __init__(self):
        self.targets = {}
        self.comms = {}

    def unregister_comm(self, comm):
        return self.comms.pop(comm.comm_id)

    def register_target(self, name, callback):
        self.targets[name] = callback

    def unregister_target(self, name, callback):
        return self.targets.pop(name)


class FakeKernel:
    def __init__(self):
        self.comm_manager = FakeCommManager()
        self.parent = {"metadata": {"cellId": "cell-7"}}

    def get_parent(self):
        return self.parent


class SessionState:
    """What a fake session's snapshot() shows; the tests change it here."""

    def __init__(self, name="default", counters=None, trust_output=False):
        self.name = name
        self.trust_output = trust_output
        self.limits = Limits(memory=512 << 20, cpus=1.0, pids=64)
        self.counters = counters if counters is not None else {
            "memory_current": 100 << 20, "memory_peak": 120 << 20, "memory_limit": 512 << 20,
            "pids_current": 2, "pids_peak": 3, "pids_limit": 64, "cpu_user": 1.5, "cpu_system": 0.25,
            "io_read": None, "io_write": 0, "oom_kills": 0, "throttled_time": None,
            "net_rx": None, "net_tx": None}
        self.snapshot_calls = 0

    def snapshot(self) -> stats_contract.SessionSnapshot:
        self.snapshot_calls += 1
        return stats_contract.SessionSnapshot(
            name=self.name, image="host", network="none", limits=self.limits, state="running",
            uptime=12.5, execution_count=3, counters=self.counters,
            trust_output=self.trust_output, warnings=())


class FakeSession:
    """A session the panel may only call snapshot() of: any other attribute
    (name, limits, status(), trust_output, its lock, ...) fails the test."""

    def __init__(self, name="default", counters=None, trust_output=False):
        object.__setattr__(self, "_state", SessionState(name, counters, trust_output))

    def __getattribute__(self, attribute):
        if attribute == "snapshot":
            return object.__getattribute__(self, "_state").snapshot
        if attribute.startswith("__") and attribute.endswith("__"):
            return object.__getattribute__(self, attribute)
        raise AssertionError(f"the panel read session.{attribute}: it may only call snapshot()")

    def __setattr__(self, attribute, value):
        raise AssertionError(f"the panel set session.{attribute}")


def state(session: FakeSession) -> SessionState:
    """The test's handle on a fake session's figures (the panel has none)."""
    return object.__getattribute__(session, "_state")


def cell_stats(session="default", status="ok", **cell):
    figures = {"memory_peak": 130 << 20, "memory_limit": 512 << 20, "io_read": None}
    figures.update(cell)
    return stats_contract.build_stats(session=session, image="host", limits=Limits(memory=512 << 20),
                                      execution_count=3, wall=0.5, figures=figures, status=status)


@pytest.fixture
def setup():
    kernel = FakeKernel()
    session = FakeSession()
    channel = StatsChannel(kernel, lambda: [session], kind="sandbox", interval=0.05)
    channel.register()
    yield kernel, session, channel
    channel.close()


def open_comm(kernel, comm_id="c1") -> FakeComm:
    comm = FakeComm(comm_id)
    kernel.comm_manager.targets[TARGET](comm, {"content": {"data": {"request": "stats"}}})
    return comm


def test_open_sends_a_snapshot_with_sessions_and_history(setup):
    kernel, session, channel = setup
    channel.cell_started(session)
    channel.cell_finished(session, cell_stats())
    comm = open_comm(kernel)
    data, metadata = comm.sent[0]
    assert metadata == {"event": "snapshot"}
    assert data["protocol"] == 1 and data["event"] == "snapshot" and data["reason"] == "open"
    assert data["kernel"] == "sandbox"
    [entry] = data["sessions"]
    assert entry["state"] == "running" and entry["uptime"] == 12.5
    assert entry["stats"]["session"] == "default"
    assert entry["stats"]["limits"]["memory"] == 512 << 20
    assert entry["stats"]["cell"]["memory_peak"] == 120 << 20
    assert entry["stats"]["cell"]["wall"] == 12.5            # the session's uptime
    [row] = data["history"]
    assert row["cell_id"] == "cell-7" and row["execution_count"] == 3
    assert row["stats"]["cell"]["status"] == "ok"


def test_nulls_stay_null_never_0(setup):
    kernel, session, channel = setup
    state(session).counters["memory_peak"] = None
    comm = open_comm(kernel)
    channel.cell_started(session)
    channel.cell_finished(session, cell_stats(memory_peak=None))
    snapshot, end = comm.sent[0][0], comm.sent[-1][0]
    cell = snapshot["sessions"][0]["stats"]["cell"]
    assert cell["memory_peak"] is None and cell["io_read"] is None and cell["net_rx"] is None
    assert end["cell"]["stats"]["cell"]["memory_peak"] is None
    assert end["cell"]["stats"]["cell"]["io_read"] is None


def test_nan_becomes_null(setup):
    kernel, session, channel = setup
    comm = open_comm(kernel)
    channel.cell_started(session)
    channel.cell_finished(session, cell_stats(throttled_time=float("nan")))
    assert comm.sent[-1][0]["cell"]["stats"]["cell"]["throttled_time"] is None


def test_request_answers_with_a_snapshot(setup):
    kernel, session, channel = setup
    comm = open_comm(kernel)
    comm.frontend_sends({"request": "stats"})
    assert comm.events() == ["snapshot", "snapshot"]
    assert comm.sent[1][0]["reason"] == "request"


def test_cell_start_ticks_and_cell_end(setup):
    kernel, session, channel = setup
    comm = open_comm(kernel)
    channel.cell_started(session, execution_count=9)
    time.sleep(0.3)
    ticks_while_running = comm.events().count("tick")
    channel.cell_finished(session, cell_stats(status="oom"))
    time.sleep(0.2)
    events = comm.events()
    assert events[:2] == ["snapshot", "cell_start"]
    assert ticks_while_running >= 3
    assert events[-1] == "cell_end"
    assert events.count("tick") <= ticks_while_running + 1     # stopped with the cell
    start = comm.sent[1][0]
    assert start["running"]["cell_id"] == "cell-7" and start["running"]["execution_count"] == 9
    end = comm.sent[-1][0]
    assert end["running"] is None
    assert end["cell"]["execution_count"] == 9              # the notebook's count wins
    assert end["cell"]["stats"]["cell"]["status"] == "oom"


def test_nothing_is_built_while_nobody_listens(setup):
    kernel, session, channel = setup
    channel.cell_started(session)
    time.sleep(0.2)
    channel.cell_finished(session, cell_stats())
    assert state(session).snapshot_calls == 0
    assert len(channel.history) == 1


def test_a_closed_comm_is_forgotten(setup):
    kernel, session, channel = setup
    comm = open_comm(kernel)
    comm.frontend_closes()
    assert not channel.listening
    channel.cell_started(session)
    channel.cell_finished(session, cell_stats())
    assert comm.events() == ["snapshot"]


def test_history_is_bounded(setup):
    kernel, session, channel = setup
    for _ in range(channel_module.HISTORY_SIZE + 25):
        channel.cell_started(session)
        channel.cell_finished(session, cell_stats())
    assert len(channel.history) == channel_module.HISTORY_SIZE
    comm = open_comm(kernel)
    assert len(comm.sent[0][0]["history"]) == channel_module.HISTORY_SIZE


def test_a_cell_without_result_ends_without_a_row(setup):
    kernel, session, channel = setup
    comm = open_comm(kernel)
    channel.cell_started(session)
    channel.cell_finished(session, None)
    assert comm.events()[-1] == "cell_end"
    assert comm.sent[-1][0]["cell"] is None and len(channel.history) == 0


def test_close_stops_the_ticker_and_closes_the_comms(setup):
    kernel, session, channel = setup
    comm = open_comm(kernel)
    channel.cell_started(session)
    ticker = channel._ticker
    channel.close()
    ticker.join(2)
    assert not ticker.is_alive()
    assert comm.closed
    assert TARGET not in kernel.comm_manager.targets


def test_close_survives_a_comm_the_global_manager_never_knew(setup):
    """ipykernel's Comm.close() unregisters from comm.get_comm_manager(); the
    sandbox kernel's comms are in its own manager: KeyError there."""
    kernel, session, channel = setup
    comm = open_comm(kernel)
    kernel.comm_manager.comms[comm.comm_id] = comm

    def close_like_ipykernel():
        comm.closed = True
        raise KeyError(comm.comm_id)
    comm.close = close_like_ipykernel
    channel.close()
    assert comm.closed and comm.comm_id not in kernel.comm_manager.comms


def test_an_idle_ticker_does_not_wake(setup):
    kernel, session, channel = setup
    open_comm(kernel)
    channel.cell_started(session)
    channel.cell_finished(session, cell_stats())
    calls = state(session).snapshot_calls
    time.sleep(0.3)
    assert state(session).snapshot_calls == calls


def test_several_sessions_each_have_an_entry():
    kernel = FakeKernel()
    sessions = [FakeSession("default"), FakeSession("grader", counters={})]
    channel = StatsChannel(kernel, lambda: sessions, kind="magics")
    channel.register()
    comm = open_comm(kernel)
    entries = comm.sent[0][0]["sessions"]
    assert [e["stats"]["session"] for e in entries] == ["default", "grader"]
    assert entries[1]["stats"]["cell"]["memory_current"] is None
    channel.close()


def test_a_session_whose_output_is_trusted_says_so_in_the_panel():
    kernel = FakeKernel()
    sessions = [FakeSession("default"), FakeSession("mine", trust_output=True)]
    channel = StatsChannel(kernel, lambda: sessions, kind="magics")
    channel.register()
    entries = open_comm(kernel).sent[0][0]["sessions"]
    assert [e["stats"].get("trusted_output", False) for e in entries] == [False, True]
    channel.close()


def test_message_refuses_unknown_events():
    with pytest.raises(ValueError):
        messages.message("explode", kind="sandbox", sessions=[])


def test_null_channel_takes_the_same_calls():
    channel = NullStatsChannel()
    channel.register()
    channel.announce()
    channel.cell_started(FakeSession(), execution_count=1)
    channel.cell_finished(FakeSession(), None)
    channel.close()
    assert not channel.listening


# -- the panel reads a session through snapshot() only ----------------------------

def test_the_channel_reads_a_session_only_through_its_snapshot(setup):
    """Every call the faces make, with a comm open and ticks while the cell
    runs: the fake session raises on anything but snapshot()."""
    kernel, session, channel = setup
    comm = open_comm(kernel)
    channel.cell_started(session, execution_count=4)
    time.sleep(0.2)
    comm.frontend_sends({"request": "stats"})
    channel.cell_finished(session, cell_stats())
    channel.cell_started(session)
    channel.cell_finished(session, None)
    events = comm.events()
    assert events[0] == "snapshot" and "tick" in events and events[-1] == "cell_end"
    assert comm.sent[1][0]["running"]["session"] == "default"      # from the snapshot
    assert channel.history[-1]["session"] == "default"             # from the cell's contract
    assert state(session).snapshot_calls >= 3


def test_the_running_cells_session_is_named_from_its_snapshot_when_no_longer_listed():
    """A session the provider no longer lists (closed while its cell ran)
    is still named in ``running``: from a snapshot of it."""
    kernel, session = FakeKernel(), FakeSession("gone")
    listed: list = [session]
    channel = StatsChannel(kernel, lambda: listed, kind="magics")
    channel.register()
    comm = open_comm(kernel)
    channel.cell_started(session)
    listed.clear()
    comm.frontend_sends({"request": "stats"})
    assert comm.sent[-1][0]["sessions"] == []
    assert comm.sent[-1][0]["running"]["session"] == "gone"
    channel.close()


def test_a_session_entry_is_built_from_a_snapshot_alone():
    snapshot = stats_contract.SessionSnapshot(
        name="grader", image="python:3.12", network="none",
        limits=Limits(memory=256 << 20, cpus=0.5, pids=32, timeout=10.0), state="running",
        uptime=3.5, execution_count=7, counters={"memory_current": 10 << 20, "cpu_user": 0.5},
        trust_output=True, warnings=("pids not enforced",))
    entry = messages.session_entry(snapshot)
    assert (entry["state"], entry["uptime"], entry["network"]) == ("running", 3.5, "none")
    expected = stats_contract.build_stats(
        session="grader", image="python:3.12", limits=snapshot.limits, execution_count=7,
        wall=3.5, figures=stats_contract.cell_figures(None, snapshot.counters, peaks_reset=True),
        status=None, trusted_output=True)
    assert entry["stats"] == expected
    assert entry["stats"]["limits"] == {"memory": 256 << 20, "cpus": 0.5, "pids": 32,
                                        "timeout": 10.0}
    assert entry["stats"]["cell"]["memory_current"] == 10 << 20
    assert entry["stats"]["cell"]["net_rx"] is None and entry["stats"]["cell"]["status"] is None


def test_a_session_not_started_has_a_null_figured_entry():
    snapshot = stats_contract.SessionSnapshot(
        name="default", image="host", network="none", limits=Limits(), state="not started",
        uptime=None, execution_count=0, counters=None, trust_output=False, warnings=())
    data = messages.message("tick", kind="sandbox", sessions=[snapshot])
    [entry] = data["sessions"]
    assert entry["state"] == "not started" and entry["uptime"] is None
    assert entry["stats"]["cell"]["wall"] is None
    assert all(entry["stats"]["cell"][key] is None for key in stats_contract.CUMULATIVE)
    assert "trusted_output" not in entry["stats"]


def test_a_real_session_not_started_is_shown_from_its_snapshot():
    """Session.snapshot() (session/client.py) is what the panel reads: a
    session whose container has not started, no root needed."""
    from sandbox_kernel.session.client import Session
    session = Session("fresh", limits=Limits(memory=256 << 20, pids=32), trust_output=True)
    kernel = FakeKernel()
    channel = StatsChannel(kernel, lambda: [session], kind="magics")
    channel.register()
    try:
        [entry] = open_comm(kernel).sent[0][0]["sessions"]
    finally:
        channel.close()
        session.close()
    assert (entry["state"], entry["uptime"], entry["network"]) == ("not started", None, "none")
    assert entry["stats"]["session"] == "fresh" and entry["stats"]["image"] == "host"
    assert entry["stats"]["limits"]["memory"] == 256 << 20 and entry["stats"]["limits"]["pids"] == 32
    assert entry["stats"]["trusted_output"] is True
    assert entry["stats"]["cell"]["memory_current"] is None and entry["stats"]["cell"]["status"] is None
