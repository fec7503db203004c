"""The side panel's comm, kernel side (sandbox_kernel.panel), with fake comms
and sessions: what is sent when, the envelope, ticks only while a cell runs,
nothing built while nobody listens, history bounded, nulls kept null."""
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


class FakeSession:
    """Session.status() as client.py returns it; counters may be None."""

    def __init__(self, name="default", counters=None, trust_output=False):
        self.name = name
        self.trust_output = trust_output
        self.limits = Limits(memory=512 << 20, cpus=1.0, pids=64)
        self.counters = counters if counters is not None else {
            "memory_current": 100 << 20, "memory_peak": 120 << 20, "memory_limit": 512 << 20,
            "pids_current": 2, "pids_peak": 3, "pids_limit": 64, "cpu_user": 1.5, "cpu_system": 0.25,
            "io_read": None, "io_write": 0, "oom_kills": 0, "throttled_time": None,
            "net_rx": None, "net_tx": None}
        self.status_calls = 0

    def status(self):
        self.status_calls += 1
        return {"name": self.name, "image": "host", "network": "none",
                "limits": stats_contract.limits_dict(self.limits), "state": "running",
                "container": "sbk-x", "pid": 1, "uptime": 12.5, "cells": 0, "execution_count": 3,
                "stats": self.counters}


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
    session.counters["memory_peak"] = None
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
    assert session.status_calls == 0
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
    calls = session.status_calls
    time.sleep(0.3)
    assert session.status_calls == calls


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
