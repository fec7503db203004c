"""Memory pressure without a container (issue 23): the agent's gate turns
the host's SIGUSR2 into MemoryError with the cell's words (deferred while a
frame is written, ignored between cells), the words, the option, and the
null driver that says it has no watch."""
from __future__ import annotations

import os
import signal

import pytest

from sandbox_kernel.runtime.cgroups.pressure import memory_watch, why_not
from sandbox_kernel.runtime.spec import Limits
from sandbox_kernel.session import agent_core, client, commands, stats
from sandbox_kernel.session.pressure_watch import pressure_words

WORDS = "stopped at 90% of the 512 MiB limit to keep your session"


@pytest.fixture
def gate():
    before = signal.getsignal(agent_core.PRESSURE_SIGNAL), signal.getsignal(signal.SIGINT)
    made = agent_core.InterruptGate()
    made.install()
    yield made
    signal.signal(agent_core.PRESSURE_SIGNAL, before[0])
    signal.signal(signal.SIGINT, before[1])


def test_the_words_of_the_memory_error():
    assert pressure_words(512 << 20) == WORDS
    assert pressure_words(None) is None


def test_pressure_raises_memory_error_with_the_cells_words(gate):
    with pytest.raises(MemoryError, match=WORDS):
        with gate.cell(WORDS):
            os.kill(os.getpid(), agent_core.PRESSURE_SIGNAL)
            for _ in range(1000):         # the handler runs between bytecodes
                pass


def test_pressure_waits_for_a_frame_being_written(gate):
    written = []
    with pytest.raises(MemoryError):
        with gate.cell(WORDS):
            with gate.deferred():
                os.kill(os.getpid(), agent_core.PRESSURE_SIGNAL)
                for _ in range(1000):
                    pass
                written.append("whole frame")
    assert written == ["whole frame"]


def test_pressure_between_cells_is_ignored_and_sigint_still_interrupts(gate):
    os.kill(os.getpid(), agent_core.PRESSURE_SIGNAL)   # no cell: nothing happens
    with pytest.raises(KeyboardInterrupt):
        with gate.cell(WORDS):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass


def test_the_null_driver_has_no_watch():
    from sandbox_kernel.runtime.cgroups.null import NullCgroup
    group = NullCgroup.__new__(NullCgroup)
    assert "null driver" in why_not(group)
    assert memory_watch(group, 1 << 20) is None


def test_on_pressure_is_an_option_of_limits_and_a_bad_one_is_one_line():
    session = client.Session("p", limits=Limits(memory=512 << 20))
    sessions = commands.Sessions()
    sessions.sessions["default"] = session
    assert "interrupt the cell" in commands.run("limits --on-pressure interrupt", sessions).text
    assert session.on_pressure == "interrupt"
    with pytest.raises(commands.UsageError) as raised:
        commands.run("limits --on-pressure explode", sessions)
    assert "warn or interrupt" in str(raised.value) and "\n" not in str(raised.value)


def test_the_kernels_sessions_interrupt_and_the_magics_warn():
    assert commands.Sessions(defaults={"memory": "1G"}).on_pressure == "interrupt"
    assert commands.Sessions().on_pressure == "warn"


def test_the_contract_has_memory_pressure_null_when_unknown():
    built = stats.build_stats(session="s", image="host", limits=Limits(), execution_count=1,
                              wall=1.0, figures={}, status="ok")
    assert built["cell"]["memory_pressure"] is None
    warned = stats.build_stats(session="s", image="host", limits=Limits(), execution_count=1,
                               wall=1.0, figures={"memory_pressure": True}, status="oom",
                               warnings=["memory crossed 90% of the 256 MiB limit"])
    assert "memory crossed 90%" in stats.footer_text(warned)


def test_a_request_carries_the_words_only_for_a_cell():
    session = client.Session("w", limits=Limits(memory=512 << 20))
    assert session._pressure_request({"type": "execute"})["pressure_words"] == WORDS
    assert "pressure_words" not in session._pressure_request({"type": "command"})
    assert "pressure_words" not in client.Session("n")._pressure_request({"type": "execute"})


def test_the_panel_sees_the_crossing_while_the_cell_runs():
    from types import SimpleNamespace
    session = client.Session("live", limits=Limits(memory=512 << 20))
    assert session.pressure_now is None                      # nothing watched
    session._cell_watch = SimpleNamespace(crossed_at=None)
    assert session.pressure_now is False
    session._cell_watch.crossed_at = 12.5
    assert session.pressure_now is True
    session._cell_watch = None


@pytest.mark.parametrize("stat, kept", [
    ("total_cache 200\ntotal_shmem 50\ntotal_rss 30\n", 1000 - 150),   # v1: shmem stays
    ("anon 30\nfile 200\nshmem 50\n", 1000 - 150),                       # v2
    ("anon 900\n", 1000),
])
def test_the_cache_the_kernel_may_drop_is_no_pressure(stat, kept):
    from sandbox_kernel.runtime.cgroups.pressure import kept_memory
    assert kept_memory(1000, stat) == kept


class FakeWatch:
    events = 1                                # POLLIN

    def __init__(self):
        self.r, self.w = os.pipe()
        self.calls = []

    def fileno(self):
        return self.r

    def begin(self):
        self.calls.append("begin")

    def end(self):
        self.calls.append("end")

    def crossed(self):
        return False

    def close(self):
        self.calls.append("close")
        os.close(self.r)
        os.close(self.w)


def test_one_watch_per_container_not_per_cell(monkeypatch):
    """Registering a v1 threshold costs the kernel a synchronize_rcu() (tens
    of ms): a container's watch is made on its first cell and kept."""
    from types import SimpleNamespace
    from sandbox_kernel.runtime.container import State
    from sandbox_kernel.session import pressure_watch
    made = []
    monkeypatch.setattr(pressure_watch, "memory_watch",
                        lambda cgroup, threshold: made.append(FakeWatch()) or made[-1])
    session = client.Session("once", limits=Limits(memory=512 << 20))
    session._container = SimpleNamespace(cgroup=object(), state=State.RUNNING,
                                         destroy=lambda: None)
    for _ in range(3):
        session._pressure_begin()
        session._pressure_end()
    assert len(made) == 1 and made[0].calls == ["begin", "end"] * 3
    session._discard()                        # the container goes: so does its watch
    assert made[0].calls[-1] == "close"
