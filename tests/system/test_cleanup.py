"""Nothing is left behind: after hundreds of containers, and after the
owner is SIGKILLed."""
from __future__ import annotations

import os
import pathlib
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


# --- hostile leftovers: deep trees, other users' names, symlinks (issue 14, items 3 and 4)

DEPTH = 3000        # shutil.rmtree recursed, and raised RecursionError, past ~1000 levels

NEXT_START = """
from sandbox_kernel.runtime.container import Container
from sandbox_kernel.runtime.spec import ContainerSpec
with Container(ContainerSpec(command=("/bin/true",))) as box:   # a new process: reap_stale runs
    box.start()
    print(box.wait(timeout=60).status)
"""


def assert_next_container_starts() -> None:
    ran = subprocess.run([sys.executable, "-c", NEXT_START], capture_output=True, text=True, timeout=180)
    assert ran.returncode == 0 and ran.stdout.strip() == "ok", ran.stderr[-3000:]


def dead_pid() -> int:
    """A pid no process has (99999 is above the default pid_max)."""
    from sandbox_kernel.runtime.cleanup import owner_alive
    return next(pid for pid in range(99999, 10 ** 7) if not owner_alive(pid))


def make_deep(top: str, depth: int) -> None:
    """depth nested directories under top, built with dirfds (no long paths)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def force_remove(path: str) -> None:
    """The fixtures' fallback, whatever the code under test left."""
    subprocess.run(["rm", "-rf", "--one-file-system", path], check=False)


MAKE_DEEP_IN_CONTAINER = f"""
import os, time
for top in ("/workspace", "/tmp"):
    os.chdir(top)
    for _ in range({DEPTH}):
        os.mkdir("d")
        os.chdir("d")
print("made", flush=True)
time.sleep(60)
"""


def test_a_deep_tree_in_the_state_dir_does_not_stop_destroy_nor_the_next_container():
    """The container nests 3000 directories wherever it can write; the test
    nests 3000 more in the state dir itself (as a writable layer kept on the
    host would): destroy removes it all, without RecursionError."""
    read_end, write_end = os.pipe()
    box = Container(ContainerSpec(command=("python3", "-c", MAKE_DEEP_IN_CONTAINER)),
                    stdout=write_end, stdin=subprocess.DEVNULL)
    state_dir = None
    try:
        box.start()
        os.close(write_end)
        with os.fdopen(read_end) as output:
            assert output.readline().strip() == "made"
        state_dir = box._state_dir
        os.mkdir(os.path.join(state_dir, "upper"))
        make_deep(os.path.join(state_dir, "upper"), DEPTH)
        os.symlink("/etc", os.path.join(state_dir, "upper", "etc"))
        box.destroy()
        assert not os.path.lexists(state_dir)
        assert os.path.isdir("/etc") and os.path.exists("/etc/passwd")
    finally:
        try:
            box.destroy()
        finally:
            if state_dir:
                force_remove(state_dir)
    assert_next_container_starts()


RELEASING_OWNER = """
import os, sys, time
from sandbox_kernel.runtime.container import Container
from sandbox_kernel.runtime.spec import ContainerSpec
box = Container(ContainerSpec(command=("/bin/sh", "-c", "sleep 1000")), spawn="exec")
box.start()
print(box._state_dir, flush=True)
sys.stdin.readline()
os.close(box._lifeline_w)   # what the launcher sees when its owner dies, but the owner lives on:
time.sleep(1000)            # no other process's reap_stale may take the state dir meanwhile
"""


def test_the_launcher_removes_a_deep_state_dir_when_its_owner_lets_go():
    """The launcher's own clean-up (what runs when an owner dies) removes a
    deep state dir: shutil.rmtree raised RecursionError in the launcher."""
    owner = subprocess.Popen([sys.executable, "-c", RELEASING_OWNER], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    state_dir = None
    try:
        state_dir = owner.stdout.readline().strip()
        assert state_dir.startswith("/") and os.path.isdir(state_dir)
        make_deep(state_dir, DEPTH)
        owner.stdin.write("go\n")
        owner.stdin.flush()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and os.path.lexists(state_dir):
            time.sleep(0.1)
        assert not os.path.lexists(state_dir), "the launcher did not remove the deep state dir"
    finally:
        owner.kill()
        owner.wait(10)
        if state_dir:
            force_remove(state_dir)


def test_a_deep_leftover_of_a_dead_owner_is_reaped_and_the_next_container_starts():
    from sandbox_kernel.runtime.cgroups import detect_driver
    from sandbox_kernel.runtime.cleanup import reap_stale
    from sandbox_kernel.runtime.container import _state_parent
    left = os.path.join(_state_parent(), f"sbk-{dead_pid()}-deadbeef")   # /run, or a user's TMPDIR
    try:
        plant_deep_leftover(left)
        removed = reap_stale(detect_driver())
        # another process starting a container on this machine may have reaped it first
        assert left in removed or not os.path.lexists(left)
        assert not os.path.lexists(left)
        plant_deep_leftover(left)
        assert_next_container_starts()
        assert not os.path.lexists(left)
    finally:
        force_remove(left)


def plant_deep_leftover(path: str) -> None:
    """A deep state dir, with a 0000 directory, under a dead owner's name: made
    under a name of ours (alive: no one reaps it meanwhile), then renamed."""
    building = os.path.join(os.path.dirname(path), f"sbk-{os.getpid()}-{os.path.basename(path)[4:]}")
    os.mkdir(building, 0o711)
    try:
        make_deep(building, DEPTH)
        os.mkdir(os.path.join(building, "locked"), 0)
        os.rename(building, path)
    finally:
        force_remove(building)


CANNOT_WRITE_THERE = 77


def as_nobody_make(top: str, link: str, victim: str, depth: int) -> None:
    """In a forked child that is uid/gid 65534 (nobody): a deep tree at top,
    and a symlink at link to victim."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            try:
                os.mkdir(top, 0o755)
                make_deep(top, depth)
                os.symlink(victim, link)
            except PermissionError:
                status = CANNOT_WRITE_THERE
                raise
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == CANNOT_WRITE_THERE:
        # the v2 guest's /tmp is the host's through UML hostfs when the checkout is under
        # /tmp: ownership does not hold there (nobody's new directory is not nobody's);
        # the caller's finally removes what was made
        pytest.skip(f"nobody cannot make its own tree in {os.path.dirname(top)} here")
    assert os.waitstatus_to_exitcode(status) == 0, "nobody could not make its tree"


def snapshot_tree(top: str) -> list:
    """Every directory and file under top, with inode, owner, mode and mtime."""
    from sandbox_kernel.runtime import safe_fs
    seen = []
    for rel, fd, names in safe_fs.walk(top):
        info = os.fstat(fd)
        seen.append((rel, info.st_ino, info.st_uid, info.st_mode, info.st_mtime_ns, tuple(names)))
    return seen


@pytest.mark.skipif(os.geteuid() != 0, reason="making another user's directory needs root")
def test_another_users_sbk_names_in_tmp_do_not_steer_roots_cleanup(tmp_path):
    """Any user can make /tmp/sbk-<dead pid>-<hex>, 1100 levels deep, and a
    symlink /tmp/sbk-<dead pid>-<hex> to a directory of root's: root's next
    container starts, and neither is touched, nor what the link points to."""
    from sandbox_kernel.runtime import safe_fs
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "passwd").write_text("victim\n")
    tmp_path.chmod(0o755)
    pid = dead_pid()
    theirs, link = f"/tmp/sbk-{pid}-0ddba11", f"/tmp/sbk-{pid}-0ddba12"   # names of a dead owner
    try:
        as_nobody_make(theirs, link, str(victim), 1100)
        before, victim_before = snapshot_tree(theirs), snapshot_tree(str(victim))
        assert os.lstat(theirs).st_uid == 65534 and len(before) == 1101
        assert_next_container_starts()
        from sandbox_kernel.runtime.cgroups import detect_driver
        from sandbox_kernel.runtime.cleanup import reap_stale
        assert reap_stale(detect_driver(), state_parents=["/tmp"]) == []
        assert snapshot_tree(theirs) == before
        assert os.readlink(link) == str(victim)
        assert snapshot_tree(str(victim)) == victim_before
        assert (victim / "passwd").read_text() == "victim\n"
    finally:
        for path in (theirs, link):
            if safe_fs.remove_tree(path):
                force_remove(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="a bind mount needs root")
def test_a_bind_mount_left_in_a_dead_state_dir_is_not_entered(tmp_path):
    """reap_stale removes around a mount point in a leftover state dir and
    leaves what the mount shows (a host directory) as it was."""
    from sandbox_kernel.runtime import syscalls
    from sandbox_kernel.runtime.cgroups import detect_driver
    from sandbox_kernel.runtime.cleanup import reap_stale
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "passwd").write_text("victim\n")
    before = snapshot_tree(str(victim))
    left = f"/run/sbk-{dead_pid()}-b1d"
    point = os.path.join(left, "root", "workspace")
    try:
        os.makedirs(point)
        (pathlib.Path(left) / "root" / "other").write_text("x")
        syscalls.mount(str(victim), point, None, syscalls.MS_BIND)
        reap_stale(detect_driver())
        assert snapshot_tree(str(victim)) == before
        assert os.listdir(os.path.join(left, "root")) == ["workspace"]
    finally:
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        force_remove(left)


def test_reap_stale_skips_a_parent_others_can_write_unless_it_is_sticky(tmp_path):
    """In a parent anyone may write without the sticky bit, another user could
    swap a checked entry for a symlink before it is removed: not scanned."""
    from sandbox_kernel.runtime.cgroups import detect_driver
    from sandbox_kernel.runtime.cleanup import reap_stale
    parent = tmp_path / "shared"
    left = parent / f"sbk-{dead_pid()}-5afe"
    (left / "sub").mkdir(parents=True)
    parent.chmod(0o777)
    assert reap_stale(detect_driver(), state_parents=[str(parent)]) == []
    assert left.is_dir()
    parent.chmod(0o1777)
    assert reap_stale(detect_driver(), state_parents=[str(parent)]) == [str(left)]
    assert not left.exists()
