"""What a warm cell costs the sandbox kernel on the host, without a container:
the memory-pressure watch's thread lives with the container in a kernel (a
thread started and joined per cell cost 0.2-0.4 ms of every round trip),
and a crossing still reaches the cell that runs, and only it."""
from __future__ import annotations

import array
import fcntl
import os
import select
import termios
import threading
import time
from types import SimpleNamespace

import pytest

from sandbox_kernel.runtime.container import State
from sandbox_kernel.runtime.spec import Limits
from sandbox_kernel.session import client, pressure_watch


def crossing_watch() -> SimpleNamespace:
    """A watch whose descriptor is a pipe: a byte written is a crossing,
    read by ``crossed`` as a real watch clears its readiness."""
    r, w = os.pipe()
    calls = []

    def close():
        calls.append("close")
        os.close(r)
        os.close(w)
    return SimpleNamespace(events=select.POLLIN, r=r, w=w, calls=calls, fileno=lambda: r,
                           begin=lambda: calls.append("begin"), end=lambda: calls.append("end"),
                           crossed=lambda: bool(os.read(r, 1)), close=close)


@pytest.fixture
def session(monkeypatch):
    made = []
    monkeypatch.setattr(pressure_watch, "memory_watch",
                        lambda cgroup, threshold: made.append(crossing_watch()) or made[-1])
    signals = []
    made_session = client.Session("watched", limits=Limits(memory=512 << 20))
    made_session.on_pressure = "interrupt"
    made_session._container = SimpleNamespace(cgroup=object(), state=State.RUNNING,
                                              destroy=lambda: None, signal=signals.append)
    made_session.made, made_session.signals = made, signals
    yield made_session
    made_session._discard()


def wait_for(condition, timeout=10.0):
    give_up = time.monotonic() + timeout
    while not condition() and time.monotonic() < give_up:
        time.sleep(0.001)
    return condition()


def test_a_kernels_pressure_thread_lives_across_its_cells(session, monkeypatch):
    monkeypatch.setattr(pressure_watch, "kept_between_cells", lambda watch: True)   # a kernel
    threads = []
    for _ in range(3):
        session._pressure_begin()
        threads.append(session._cell_watch.thread)
        session._pressure_end()
        assert threads[-1].is_alive()         # waiting for the next cell
    assert threads[0] is threads[1] is threads[2]
    assert len(session.made) == 1 and session.made[0].calls == ["begin", "end"] * 3
    session._discard()                        # the container goes: its thread, then its watch
    assert not threads[0].is_alive() and session.made[0].calls[-1] == "close"


def test_a_single_threaded_process_keeps_no_thread_between_cells(session, monkeypatch):
    """A script or the CLI forks its launchers only without threads (runtime/spawn.py)."""
    monkeypatch.setattr(pressure_watch, "kept_between_cells", lambda watch: False)
    session._pressure_begin()
    thread = session._cell_watch.thread
    session._pressure_end()
    assert not thread.is_alive()
    assert not [t for t in threading.enumerate() if t.name == "sbk-pressure"]


def test_a_crossing_reaches_the_cell_that_runs_and_only_it(session, monkeypatch):
    monkeypatch.setattr(pressure_watch, "kept_between_cells", lambda watch: True)
    session._pressure_begin()
    watch = session.made[0]
    os.write(watch.w, b"x")                   # crosses while the cell runs
    assert wait_for(lambda: session.pressure_now)
    assert session.signals == [pressure_watch.PRESSURE_SIGNAL]
    session._pressure_end()
    assert session._pressure_seen is True
    os.write(watch.w, b"x")                   # between cells: read, not acted on
    assert wait_for(lambda: not _pending(watch.r))
    session._pressure_begin()                 # the next cell starts clean
    assert session.pressure_now is False
    session._pressure_end()
    assert session._pressure_seen is False and session.signals == [pressure_watch.PRESSURE_SIGNAL]


def test_only_a_process_with_threads_keeps_a_waiter_between_cells(monkeypatch):
    monkeypatch.setattr(pressure_watch, "keeps_threads", lambda: True)    # a kernel
    assert pressure_watch.kept_between_cells(object())
    monkeypatch.setattr(pressure_watch, "keeps_threads", lambda: False)   # a script: it forks
    assert not pressure_watch.kept_between_cells(object())


def _pending(fd: int) -> int:
    """Bytes waiting in a pipe."""
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return count[0]


def test_the_kernel_does_not_sleep_after_each_cell():
    """ipykernel sleeps 0.5 ms after every cell before its reply (hoping the
    outputs reach the client first): the sandbox kernel's outputs have gone
    through the IOPub thread by then (execute_request flushes stdout, which
    waits for that thread), and frontends read outputs until idle."""
    from ipykernel.kernelbase import Kernel
    from sandbox_kernel.kernel.kernel import SandboxKernel
    assert Kernel.class_traits()["_execute_sleep"].default_value > 0       # ipykernel's
    assert SandboxKernel.class_traits()["_execute_sleep"].default_value == 0


def test_the_cells_counters_are_the_stats_fields_uncopied():
    from sandbox_kernel.runtime.stats import CgroupStats
    from sandbox_kernel.session.figures import shallow_dict
    stats = CgroupStats(memory_current=1 << 20, cpu_user=0.25, io_read=None, oom_kills=0)
    assert shallow_dict(stats) == stats.as_dict()
    assert list(shallow_dict(stats)) == list(stats.as_dict())
