"""The runtime's fast start keeps every property of a slow one.

On v2 the launcher moves init into the container's cgroup while init makes
its mounts (launcher._join_cgroup: a cgroup migration waits for an RCU grace
period, which init's setup overlaps); on v1 init joins by itself, first
thing, through each hierarchy's ``tasks`` (launcher._join_itself: no global
lock, no grace period).  What must hold however the join is done: the
workload never runs outside the group, the cgroup namespace's root is the
container's own group, a join that fails stops the start with its step
named, and nothing is left behind."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

from sandbox_kernel.runtime import spawn
from sandbox_kernel.runtime.container import Container, ContainerStartError
from sandbox_kernel.runtime.spec import ContainerSpec, Limits

pytestmark = pytest.mark.usefixtures("no_leftovers")

MODES = ("fork", "zygote")


@pytest.fixture(params=MODES)
def mode(request, cgroup_driver):
    if cgroup_driver.version == "null":
        pytest.skip("no cgroup to join here (the null driver)")
    return request.param


def test_the_cgroup_namespace_root_is_the_containers_own_group(mode, run):
    ran = run("cat /proc/self/cgroup", spawn=mode)
    assert ran.result.status == "ok", ran.stderr
    paths = [line.split(":", 2)[2] for line in ran.stdout.splitlines() if line]
    assert paths and all(path == "/" for path in paths), ran.stdout


def test_init_and_the_workload_are_in_every_group_and_the_launcher_in_none(mode):
    spec = ContainerSpec(command=("/bin/sleep", "30"), limits=Limits(memory=256 << 20, pids=64))
    with Container(spec, stdin=subprocess.DEVNULL, spawn=mode) as box:
        box.start()
        launcher = box.pid
        for procs in box.cgroup.join_files():
            with open(procs) as handle:
                members = {int(pid) for pid in handle.read().split()}
            assert len(members) == 2, (procs, members)   # init and sleep, nothing else
            assert launcher not in members, procs
            for pid in members:
                assert spawn.child_of(pid) in (None, *members), "a member's child outside the group"


def test_v1_init_joins_by_itself_and_v2_init_is_moved_by_the_launcher(mode, cgroup_driver, monkeypatch):
    configs = []
    real = Container._launch_config
    monkeypatch.setattr(Container, "_launch_config", lambda self: configs.append(real(self)) or configs[-1])
    with Container(ContainerSpec(command=("/bin/true",)), stdin=subprocess.DEVNULL, spawn=mode) as box:
        box.start()
        assert box.wait(timeout=30).status == "ok"
    (config,) = configs
    files = {os.path.basename(path) for path in config.join_files}
    if cgroup_driver.version == "v1":
        assert config.join_self and files == {"tasks"}
        assert len(config.join_files) == len(box.cgroup.join_files())   # every hierarchy
    else:
        assert not config.join_self and files == {"cgroup.procs"}


def test_a_join_that_fails_stops_the_start_with_its_step_named(mode, monkeypatch):
    """One hierarchy's group removed between its creation and the start: the
    launcher cannot move init there; the workload never runs."""
    with tempfile.TemporaryDirectory() as scratch:
        marker = os.path.join(scratch, "ran")
        spec = ContainerSpec(command=("/bin/sh", "-c", "echo > /workspace/ran"), workspace=scratch)
        box = Container(spec, stdin=subprocess.DEVNULL, spawn=mode)
        real = Container._launch_config

        def remove_a_group(self):
            config = real(self)
            os.rmdir(os.path.dirname(self.cgroup.join_files()[-1]))
            return config

        monkeypatch.setattr(Container, "_launch_config", remove_a_group)
        try:
            with pytest.raises(ContainerStartError) as raised:
                box.start()
        finally:
            box.destroy()
        assert raised.value.step == "join cgroup", raised.value
        assert not os.path.exists(marker), "the workload ran without its cgroup"


def test_an_ended_containers_group_goes_without_a_freeze_a_running_ones_is_killed(
        cgroup_driver, monkeypatch):
    """v1 destroy freezes, kills and thaws only where a process is left."""
    if cgroup_driver.version != "v1":
        pytest.skip(f"v1 only (here: {cgroup_driver.version})")
    from sandbox_kernel.runtime.cgroups import v1
    kills = []
    real_kill = v1.V1Cgroup.kill
    monkeypatch.setattr(v1.V1Cgroup, "kill", lambda self: (kills.append(self.name), real_kill(self)))
    ended = ContainerSpec(command=("/bin/true",))
    with Container(ended, stdin=subprocess.DEVNULL) as box:
        box.start()
        assert box.wait(timeout=30).status == "ok"
    assert kills == []
    running = ContainerSpec(command=("/bin/sleep", "30"))
    with Container(running, stdin=subprocess.DEVNULL) as box:
        box.start()
        groups = [os.path.dirname(procs) for procs in box.cgroup.join_files()]
    assert kills and kills[0] == box.name
    assert not [group for group in groups if os.path.exists(group)]


def test_destroy_reaps_the_launcher_of_an_ended_and_of_a_running_container(mode):
    """An ended container's launcher is reaped last, a running one's first:
    either way no process of it is left once destroy returns."""
    for command in (("/bin/true",), ("/bin/sleep", "30")):
        with Container(ContainerSpec(command=command), stdin=subprocess.DEVNULL, spawn=mode) as box:
            box.start()
            if command == ("/bin/true",):
                assert box.wait(timeout=30).status == "ok"
            handle = box._process
        assert handle.reaped
        assert _exited_or_not_ours(handle.pid), command


def _exited_or_not_ours(pid: int) -> bool:
    """Gone, a zombie (a zygote's launcher: the zygote reaps its children
    when it gets to it), or a pid reused meanwhile by another process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            name, rest = handle.read().rsplit(")", 1)
    except OSError:
        return True
    return rest.split()[0] == "Z" or not name.endswith("(sbk-launcher")


def test_a_start_right_after_a_joined_thread_still_forks():
    """A thread joined a moment ago (as net_bridge's namespace threads are)
    may still be leaving: the fork path waits for it instead of refusing.
    In a fresh interpreter: this one may hold earlier tests' threads."""
    script = textwrap.dedent("""
        import subprocess, threading
        from sandbox_kernel.runtime.container import Container
        from sandbox_kernel.runtime.spec import ContainerSpec
        spec = ContainerSpec(command=("/bin/true",))
        for _ in range(30):
            thread = threading.Thread(target=lambda: None)
            thread.start()
            thread.join()
            with Container(spec, stdin=subprocess.DEVNULL, spawn="fork") as box:
                box.start()
                assert box.wait(timeout=30).status == "ok"
    """)
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
