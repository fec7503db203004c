"""Nothing is left behind: after hundreds of containers, and after the
owner is SIGKILLed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from sandbox_kernel.runtime.container import Container, LifecycleError, State
from sandbox_kernel.runtime.spec import ContainerSpec, Limits

pytestmark = pytest.mark.usefixtures("no_leftovers")


def test_200_cycles_leave_nothing_behind():
    spec = ContainerSpec(command=("/bin/true",), limits=Limits(memory=64 << 20, pids=16))
    for _ in range(200):
        with Container(spec) as box:
            box.start()
            assert box.wait(timeout=30).status == "ok"


def test_destroy_while_running_kills_everything():
    spec = ContainerSpec(command=("/bin/sh", "-c", "sleep 100 & sleep 100"))
    box = Container(spec).start()
    box.destroy()
    box.destroy()  # idempotent
    assert box.state is State.DESTROYED


def test_invalid_moves_raise():
    box = Container(ContainerSpec(command=("/bin/true",)))
    with pytest.raises(LifecycleError, match="created"):
        box.wait()
    box.start()
    with pytest.raises(LifecycleError, match="running"):
        box.start()
    box.wait()
    box.destroy()
    with pytest.raises(LifecycleError, match="destroyed"):
        box.start()


OWNER = """
import sys, time
from sandbox_kernel.runtime.container import Container
from sandbox_kernel.runtime.spec import ContainerSpec
box = Container(ContainerSpec(command=("/bin/sh", "-c", "sleep 1000 & sleep 1000")),
                spawn=sys.argv[1])
box.start()
# the cgroup.procs file, or (null driver: no cgroup) the state directory
print((box.cgroup.join_files() or [box._state_dir])[0], flush=True)
time.sleep(1000)
"""


@pytest.mark.parametrize("spawn", ["fork", "exec", "zygote"])
def test_sigkill_of_the_owner_leaves_nothing_running(spawn, count_leftovers):
    owner = subprocess.Popen([sys.executable, "-c", OWNER, spawn], stdout=subprocess.PIPE, text=True)
    procs_file = owner.stdout.readline().strip()
    assert os.path.exists(procs_file)
    assert _sleepers(procs_file), "the container did not start"
    owner.send_signal(signal.SIGKILL)
    owner.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(procs_file):
        time.sleep(0.05)
    assert not os.path.exists(procs_file), "the container's cgroup outlived its owner"
    while time.monotonic() < deadline and count_leftovers()["processes"]:
        time.sleep(0.05)  # the launcher exits right after removing the cgroup
    assert count_leftovers()["processes"] == []


def _sleepers(procs_file: str) -> list[int]:
    if not procs_file.endswith("cgroup.procs"):   # null driver: the state dir's owner
        owner = int(os.path.basename(procs_file).split("-")[1])
        return [int(p) for p in filter(str.isdigit, os.listdir("/proc"))
                if _comm(p) in ("sh", "sleep") and _ancestor(int(p), owner)]
    with open(procs_file) as handle:
        return [int(pid) for pid in handle.read().split()]


def _ancestor(pid: int, ancestor: int) -> bool:
    for _ in range(16):
        try:
            pid = _parent(pid)
        except OSError:
            return False
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
    return False


def test_a_missing_command_is_a_clear_start_error():
    from sandbox_kernel.runtime.container import ContainerStartError
    box = Container(ContainerSpec(command=("no-such-program-sbk",)))
    with pytest.raises(ContainerStartError, match="no-such-program-sbk") as caught:
        box.start()
    assert caught.value.errno == 2
    assert box.state is State.DESTROYED


def test_killing_the_owners_process_group_still_cleans_up(count_leftovers):
    """jupyter_client kills a kernel's whole process group: the launcher lives
    in a session of its own, so it survives to clean up."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER, "exec"], stdout=subprocess.PIPE,
                             text=True, start_new_session=True)
    procs_file = owner.stdout.readline().strip()
    os.killpg(owner.pid, signal.SIGKILL)
    owner.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(procs_file):
        time.sleep(0.05)
    assert not os.path.exists(procs_file)


def test_leftovers_of_a_dead_owner_and_launcher_are_reaped(count_leftovers):
    from sandbox_kernel.runtime.cgroups import detect_driver
    from sandbox_kernel.runtime.cleanup import reap_stale
    owner = subprocess.Popen([sys.executable, "-c", OWNER, "exec"], stdout=subprocess.PIPE, text=True)
    procs_file = owner.stdout.readline().strip()
    launcher = [int(pid) for pid in filter(str.isdigit, os.listdir("/proc"))
                if _comm(pid) == "sbk-launcher" and _parent(int(pid)) == owner.pid]
    assert launcher
    for pid in launcher + [owner.pid]:  # both at once: nobody is left to clean up
        os.kill(pid, signal.SIGKILL)
    owner.wait(10)
    time.sleep(0.5)
    left = os.path.dirname(procs_file) if procs_file.endswith("cgroup.procs") else procs_file
    assert os.path.exists(left)
    removed = reap_stale(detect_driver())
    assert left in removed
    assert not os.path.exists(procs_file)
    assert not [d for d in count_leftovers()["state_dirs"] if d.startswith(f"sbk-{owner.pid}-")]


def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])


FORGETFUL_OWNER = """
import os, sys
from sandbox_kernel.runtime.container import Container
from sandbox_kernel.runtime.spec import ContainerSpec
box = Container(ContainerSpec(command=("/bin/true",)), spawn=sys.argv[1]).start()
assert box.wait().status == "ok"
print((box.cgroup.join_files() or [box._state_dir])[0], flush=True)
os._exit(0)  # no destroy, no atexit
"""


@pytest.mark.parametrize("spawn", ["fork", "exec", "zygote"])
def test_an_owner_that_exits_without_destroy_leaves_nothing(spawn):
    done = subprocess.run([sys.executable, "-c", FORGETFUL_OWNER, spawn],
                          capture_output=True, text=True, timeout=60)
    procs_file = done.stdout.strip()
    assert procs_file.endswith("cgroup.procs") or "/sbk-" in procs_file, done.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(procs_file):
        time.sleep(0.05)
    assert not os.path.exists(procs_file), "the finished container's cgroup outlived its owner"
