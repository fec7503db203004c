"""Cards: every running container says what it is, for top and the stats endpoint,
and a card someone else wrote is not believed."""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

from sandbox_kernel.runtime import cards
from sandbox_kernel.runtime.container import Container
from sandbox_kernel.runtime.spec import ContainerSpec, Limits

pytestmark = pytest.mark.usefixtures("no_leftovers")

LABELS = (("kind", "kernel"), ("session", "default"), ("kernel_id", "0f1e2d3c"))


@pytest.fixture
def running():
    spec = ContainerSpec(command=("/bin/sleep", "60"), limits=Limits(memory=96 << 20, pids=32),
                         labels=LABELS)
    with Container(spec) as box:
        box.start()
        yield box


def test_a_running_container_has_a_card_that_scan_finds(running):
    found = [card for card in cards.scan() if card.name == running.name]
    assert len(found) == 1, [c.name for c in cards.scan()]
    card = found[0]
    assert card.owner_pid == os.getpid() and card.uid == os.getuid()
    assert card.labels == dict(LABELS)
    assert card.limits["memory"] == 96 << 20 and card.image == "host"
    assert cards.labelled("kernel_id", "0f1e2d3c") == [card]
    assert card in cards.of_owner(os.getpid())
    figures = card.stats()
    if card.cgroup["driver"] == "null":   # rootless without a delegated cgroup: no group to read
        assert figures is None
        return
    assert figures is not None and figures.memory_limit == 96 << 20
    assert figures.pids_current is not None and figures.pids_current >= 1


def test_a_live_limit_change_is_on_the_card(running):
    running.update_limits(Limits(memory=128 << 20, pids=32))
    (card,) = [c for c in cards.scan() if c.name == running.name]
    assert card.limits["memory"] == 128 << 20


def test_the_card_goes_with_the_container():
    box = Container(ContainerSpec(command=("/bin/sleep", "60"))).start()
    state_dir = box.state_dir
    assert cards.read(state_dir) is not None
    box.destroy()
    assert not os.path.exists(state_dir)
    assert box.name not in {card.name for card in cards.scan()}


@pytest.fixture
def parent():
    path = tempfile.mkdtemp(prefix="cards-test-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _forge(parent: str, owner_pid: int, uid: int, claims_uid: int | None = None, **changes) -> str:
    """A card as someone would write it by hand in a world-writable directory."""
    name = f"sbk-{owner_pid}-abcd1234"
    state_dir = os.path.join(parent, f"{name}-x1y2z3")
    os.mkdir(state_dir)
    data = {"version": 1, "name": name, "owner_pid": owner_pid, "uid": uid if claims_uid is None else claims_uid, "user": "someone",
            "image": "host", "started": 0.0, "limits": {}, "labels": {"kind": "kernel"},
            "cgroup": {"driver": "v2", "path": "/sys/fs/cgroup/sbk-forged"}, **changes}
    with open(os.path.join(state_dir, cards.CARD_FILE), "w") as handle:
        json.dump(data, handle)
    if uid != os.getuid():
        os.chown(state_dir, uid, uid)
        os.chown(os.path.join(state_dir, cards.CARD_FILE), uid, uid)
    return state_dir


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: writes a file as another user")
def test_a_card_claiming_another_users_container_is_not_believed(parent):
    # uid 65534 writes a card that says root owns it, naming a live root process (us)
    _forge(parent, os.getpid(), 65534, claims_uid=0)
    assert cards.scan([parent]) == []


def test_a_card_of_a_dead_owner_is_not_shown(parent):
    _forge(parent, 2 ** 22 + 12345, os.getuid())   # no such pid (beyond pid_max's default)
    assert cards.scan([parent]) == []


@pytest.mark.parametrize("cgroup", [{"driver": "v1", "paths": {"memory": "/etc"}},
                                    {"driver": "v2", "path": "/sys/fs/cgroup/../../etc"},
                                    {"driver": "v2", "path": 7}])
def test_a_card_with_cgroup_paths_outside_sys_fs_cgroup_is_not_believed(parent, cgroup):
    _forge(parent, os.getpid(), os.getuid(), cgroup=cgroup)
    assert cards.scan([parent]) == []


def test_a_symlinked_card_is_not_followed(parent):
    state_dir = _forge(parent, os.getpid(), os.getuid())
    real = os.path.join(state_dir, cards.CARD_FILE)
    os.rename(real, real + ".real")
    os.symlink(real + ".real", real)
    assert cards.scan([parent]) == []


def test_a_believable_card_in_a_parent_is_read(parent):
    # the same card, honest: our uid, our pid, a path under /sys/fs/cgroup
    _forge(parent, os.getpid(), os.getuid())
    (card,) = cards.scan([parent])
    assert card.labels == {"kind": "kernel"} and card.stats() is None   # no such group: no figures
