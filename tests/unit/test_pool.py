"""The warm pool's bookkeeping (commands.Sessions): which new session takes
a container started ahead, when the pool is dropped, and its size setting.
Real containers: tests/system/test_fast_start.py and tests/jupyter/test_pool.py."""
from __future__ import annotations

import dataclasses

import pytest

from sandbox_kernel.runtime.spec import SpecError, parse_network
from sandbox_kernel.session import commands
from sandbox_kernel.session.commands import MAX_POOL, Sessions, UsageError, pool_size
from sandbox_kernel.session.spare import BACKGROUND_DELAY


class FakeSession:
    """What Sessions asks of a session, recorded."""

    refuse_limits = False

    def __init__(self, name, image="host", limits=None, network="none"):
        self.name, self.image, self.limits = name, image, limits
        self.network = parse_network(network)
        self.calls = []

    def start_soon(self, delay=0.0):
        self.calls.append("start_soon" if not delay else ("start_soon", delay))

    def label_container(self):       # as Session: its card says the session's name
        pass

    def set_limits(self, **strings):
        if self.refuse_limits:
            raise OSError(16, "Device or resource busy")
        self.calls.append(("set_limits", strings))
        self.limits = dataclasses.replace(self.limits, **commands.parse_limits(strings).__dict__)
        return {"changed": sorted(strings), "restart_needed": []}

    def stop(self):
        self.calls.append("stop")


@pytest.fixture
def registry():
    return Sessions(factory=FakeSession)


def test_warm_up_starts_one_ahead_in_the_background_and_only_once(registry):
    assert registry.warm_up() == 1
    assert registry.pool[0].calls == ["start_soon"]
    assert registry.warm_up() == 0 and len(registry.pool) == 1


def test_the_first_session_takes_the_warm_one_with_its_limits(registry):
    registry.warm_up()
    warm = registry.pool[0]
    session, notes = registry.open("grader", memory="256M", timeout="30s")
    assert session is warm and registry.pool == [] and notes == []
    assert session.name == "grader" and registry.sessions == {"grader": warm}
    assert ("set_limits", {"memory": "256M", "timeout": "30s"}) in warm.calls
    assert session.limits.memory == 256 << 20 and session.limits.timeout == 30
    assert registry.open("second")[0] is not warm          # not refilled: the next one is cold


def test_another_image_or_network_drops_the_pool(registry):
    registry.warm_up()
    warm = registry.pool[0]
    session, _ = registry.open("default", net="host")
    assert session is not warm and "stop" in warm.calls and registry.pool == []
    assert session.network == "host"


def test_a_bad_limit_raises_and_keeps_the_pool(registry):
    registry.warm_up()
    with pytest.raises(SpecError, match="memory"):
        registry.open("default", memory="lots")
    assert len(registry.pool) == 1 and registry.sessions == {}


def test_a_warm_container_whose_limits_cannot_be_set_is_replaced_by_a_cold_one(registry, monkeypatch):
    monkeypatch.setattr(FakeSession, "refuse_limits", True)
    registry.warm_up()
    warm = registry.pool[0]
    session, _ = registry.open("default", memory="8M")
    assert session is not warm and "stop" in warm.calls and session.limits.memory == 8 << 20


def test_no_warm_up_once_a_session_exists_and_the_pool_is_bounded(registry):
    registry.open("default")
    assert registry.warm_up() == 0
    fresh = Sessions(factory=FakeSession)
    assert fresh.warm_up(MAX_POOL + 5) == MAX_POOL


def test_close_all_stops_the_pool_too(registry):
    registry.warm_up(2)
    pool = list(registry.pool)
    registry.close_all()
    assert registry.pool == [] and all("stop" in s.calls for s in pool)


@pytest.mark.parametrize("value, size", [(None, 1), ("", 1), ("0", 0), ("2", 2), (" 4 ", 4)])
def test_pool_size_from_the_environment(value, size):
    assert pool_size({} if value is None else {"SANDBOX_KERNEL_POOL": value}) == size


@pytest.mark.parametrize("value", ["lots", "-1", "5", "1.5"])
def test_a_bad_pool_size_says_what_is_accepted(value):
    with pytest.raises(UsageError, match=r"SANDBOX_KERNEL_POOL=.*accepted: 0 .* to 4"):
        pool_size({"SANDBOX_KERNEL_POOL": value})


def test_a_taken_container_is_replaced_once_its_session_has_answered(registry):
    registry.warm_up()
    first = registry.pool[0]
    session, _ = registry.open("a")
    assert session is first and registry.pool == []           # nothing competes with its first cell
    first.after_answer()                                       # the session's first answer went out
    assert len(registry.pool) == 1 and registry.pool[0] is not first
    refilled = registry.pool[0]
    assert refilled.calls == [("start_soon", BACKGROUND_DELAY)]
    assert registry.open("b")[0] is refilled                  # the next new session takes it


def test_a_dropped_pool_is_not_refilled(registry):
    registry.warm_up()
    first = registry.pool[0]
    registry.open("a")
    registry.drop_pool()
    first.after_answer()
    assert registry.pool == []


def test_sessions_keep_a_spare_for_their_restarts_only_while_the_pool_is_on(monkeypatch):
    assert Sessions(factory=FakeSession).spares
    monkeypatch.setenv("SANDBOX_KERNEL_POOL", "0")
    off = Sessions(factory=FakeSession)
    assert not off.spares and not off.open("a")[0].keep_spare
    on = Sessions(factory=FakeSession)
    on.spares = True
    made = [on.open(f"s{index}")[0] for index in range(MAX_POOL + 2)]
    assert [s.keep_spare for s in made] == [True] * MAX_POOL + [False, False]


def test_a_refill_that_cannot_be_made_drops_the_pool_and_never_fails_the_answer(registry, monkeypatch):
    registry.warm_up()
    first = registry.pool[0]
    registry.open("a")
    monkeypatch.setenv("SANDBOX_KERNEL_NOTEBOOK_DIR", "sideways")   # changed meanwhile (%env)
    first.after_answer()                                            # raises nothing
    assert registry.pool == [] and registry.pool_target == 0
