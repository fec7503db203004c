"""The fork server (runtime/forkserver.py): one warm zygote source per user
that outlives its owners, shared only by owners of the same uid, and
holding nothing of one owner's session that the next could see.

Each owner is a fresh interpreter (as a kernel is), started in the test's
own temporary directory: the working directory is part of the daemon's
key, so each test has daemons of its own, never another run's.  Every
daemon a test made is killed after it, also on failure.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time

import pytest
import system_users  # tests/ is on pytest's pythonpath

from sandbox_kernel.runtime import forkserver

pytestmark = [pytest.mark.usefixtures("no_leftovers"),
              pytest.mark.skipif(os.geteuid() != 0, reason="reads other processes' memory: root")]

# An owner: its zygote (from the daemon when it can), then one container
# from that zygote (a second thread makes the zygote the start path, as in
# a kernel), with SECRET in the container's env.  Prints what it saw.
OWNER = r'''
import json, os, subprocess, sys, tempfile, threading
from sandbox_kernel.runtime import zygote
from sandbox_kernel.runtime.container import Container
from sandbox_kernel.runtime.spec import ContainerSpec
threading.Thread(target=threading.Event().wait, daemon=True).start()
z = zygote.shared(preload=("json",))
def parent_of(pid):
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])
spec = ContainerSpec(command=("/bin/sh", "-c", "echo ran:${#SECRET}"),
                     env=(("SECRET", os.environ.get("CONTAINER_SECRET", "")),))
with tempfile.TemporaryFile("w+") as out:
    with Container(spec, stdout=out, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                   spawn="zygote") as box:
        box.start()
        launcher_parent = parent_of(box.pid)
        box.wait()
    out.seek(0)
    printed = out.read().strip()
print(json.dumps({"kind": type(z).__name__, "zygote": z.process.pid,
                  "daemon": parent_of(z.process.pid), "launcher_parent": launcher_parent,
                  "printed": printed}), flush=True)
if os.environ.get("HOLD"):
    sys.stdin.readline()      # keep the zygote until the test says
'''


def owner_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_KERNEL_FORKSERVER")}
    env["SANDBOX_KERNEL_FORKSERVER_IDLE"] = "600"    # on: it is off by default
    env.update(extra)
    return env


def run_owner(cwd, **extra) -> dict:
    done = subprocess.run([sys.executable, "-c", OWNER], cwd=cwd, env=owner_env(**extra),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def start_owner(cwd, **extra) -> tuple[subprocess.Popen, dict]:
    """An owner that stays (with its zygote) until its stdin closes."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER], cwd=cwd, text=True,
                             env=owner_env(HOLD="1", **extra), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = owner.stdout.readline()
    assert line, owner.stderr.read()
    return owner, json.loads(line)


def daemons_in(cwd) -> list[int]:
    """Live sbk-forkserver processes started in ``cwd``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as handle:
                comm = handle.read().strip()
            here = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if comm == "sbk-forkserver" and here == str(cwd):
            found.append(int(pid))
    return found


@pytest.fixture
def place(tmp_path):
    """The test's working directory for its owners; its daemons die after."""
    yield tmp_path
    for pid in daemons_in(tmp_path):
        try:
            name = _socket_name_of(pid)
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, FileNotFoundError):
            continue
        for leftover in (name, name + ".lock"):     # what a killed daemon leaves
            try:
                os.unlink(os.path.join(forkserver.ROOT_DIR, leftover))
            except FileNotFoundError:
                pass


def wait_until(condition, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def memory_holds(pid: int, needles: list[bytes]) -> list[bytes]:
    """Which needles are anywhere in pid's readable memory (root reads it)."""
    found = set()
    with open(f"/proc/{pid}/maps") as maps:
        regions = [line.split()[0] for line in maps if line.split()[1].startswith("r")]
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for region in regions:
            start, end = (int(x, 16) for x in region.split("-"))
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except (OSError, OverflowError, ValueError):
                continue      # [vvar] and the like
            found.update(n for n in needles if n in data)
    return sorted(found)


def test_a_second_owner_gets_a_zygote_of_the_first_owners_daemon(place):
    first = run_owner(place)
    second = run_owner(place)
    assert first["kind"] == second["kind"] == "SharedZygote"
    assert first["daemon"] == second["daemon"] and first["zygote"] != second["zygote"]
    assert daemons_in(place) == [first["daemon"]]
    for ran in (first, second):     # each container from that owner's own zygote
        assert ran["launcher_parent"] == ran["zygote"] and ran["printed"] == "ran:0"


def test_the_daemon_holds_nothing_of_a_session_and_the_next_owner_nothing_of_it(place):
    in_env, in_container = (f"canary-{secrets.token_hex(16)}" for _ in range(2))
    owner, first = start_owner(place, OWNER_SECRET=in_env, CONTAINER_SECRET=in_container)
    try:
        assert first["printed"] == f"ran:{len(in_container)}"
        needles = [in_env.encode(), in_container.encode()]
        assert memory_holds(owner.pid, needles[:1]) == needles[:1]   # the scan finds it
        assert memory_holds(first["daemon"], needles) == []
        second = run_owner(place)
        assert second["daemon"] == first["daemon"]
        assert memory_holds(first["daemon"], needles) == []
    finally:
        owner.communicate("", timeout=60)
    _, later = start_owner(place)   # a zygote of the daemon, after the first session ended
    try:
        assert memory_holds(later["zygote"], needles) == []
    finally:
        os.kill(later["zygote"], signal.SIGKILL)


def test_owners_keep_working_when_the_daemon_is_killed_and_a_new_one_replaces_it(place):
    owner, first = start_owner(place)
    try:
        name = _socket_name_of(first["daemon"])
        os.kill(first["daemon"], signal.SIGKILL)
        assert wait_until(lambda: not daemons_in(place))
        assert os.path.exists(os.path.join(forkserver.ROOT_DIR, name))     # stale now
        assert os.path.exists(f"/proc/{first['zygote']}"), "the owner's zygote died with it"
        second = run_owner(place)             # over the dead daemon's stale socket
        assert second["kind"] == "SharedZygote" and second["daemon"] != first["daemon"]
        assert second["launcher_parent"] == second["zygote"]
    finally:
        owner.communicate("", timeout=60)
    assert owner.returncode == 0


def test_the_daemon_leaves_after_its_idle_time_and_takes_its_socket(place):
    first = run_owner(place, SANDBOX_KERNEL_FORKSERVER_IDLE="1")
    assert first["kind"] == "SharedZygote"
    name = _socket_name_of(first["daemon"])
    assert os.path.exists(os.path.join(forkserver.ROOT_DIR, name))
    assert wait_until(lambda: not daemons_in(place)), "the daemon did not leave when idle"
    assert not os.path.exists(os.path.join(forkserver.ROOT_DIR, name))
    assert not os.path.exists(os.path.join(forkserver.ROOT_DIR, name + ".lock"))


def test_idle_zero_turns_the_daemon_off_and_each_owner_has_its_own_zygote(place):
    ran = run_owner(place, SANDBOX_KERNEL_FORKSERVER_IDLE="0")
    assert ran["kind"] == "Zygote" and ran["launcher_parent"] == ran["zygote"]
    assert daemons_in(place) == []


def test_another_users_daemon_directory_is_never_used(place):
    """A daemon's directory is this uid's and 0700: owners of other uids
    cannot connect (nobody), and a client of another uid that does reach
    a socket is refused by the daemon (SO_PEERCRED)."""
    first = run_owner(place)
    name = _socket_name_of(first["daemon"])
    probe = ("import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_SEQPACKET)\n"
             "try:\n s.connect(sys.argv[1]); print('connected', s.recv(64))\n"
             "except OSError as e: print(type(e).__name__)\n")
    done = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                           sys.executable, "-c", probe, os.path.join(forkserver.ROOT_DIR, name)],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "PermissionError", (done.stdout, done.stderr)


def _socket_name_of(daemon: int) -> str:
    with open(f"/proc/{daemon}/cmdline", "rb") as handle:
        argv = handle.read().split(b"\0")
    name = argv[argv.index(b"--forkserver") + 4].decode()
    assert re.fullmatch(r"[0-9a-f]{40}", name)
    return name


# As a real second user (tests/system_users.py): its own daemon, in its own
# directory; a directory planted for it by another uid is never used.
AS_USER = r'''
import json, os, stat
from sandbox_kernel.runtime import forkserver, zygote
z = zygote.shared(preload=("json",))
where = forkserver.socket_dir()
info = os.lstat(where) if os.path.lexists(where) else None
print(json.dumps({"kind": type(z).__name__, "alive": z.alive(), "zygote": z.process.pid,
                  "dir": where, "dir_uid": info and info.st_uid,
                  "dir_mode": info and stat.S_IMODE(info.st_mode), "uid": os.geteuid()}))
'''


def user_settings(tmpdir: str) -> dict:
    """run_as passes on this process's SANDBOX_KERNEL_*: the daemon on, whatever they say."""
    return {"TMPDIR": tmpdir, "SANDBOX_KERNEL_FORKSERVER_IDLE": "60"}


@pytest.fixture
def sticky_tmp():
    """A world-writable sticky temp dir (as /tmp is), removed after."""
    import shutil
    import tempfile
    path = tempfile.mkdtemp(prefix="forkserver-test-")
    os.chmod(path, 0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@system_users.NEEDS_ROOT
def test_a_second_user_gets_a_daemon_of_its_own_in_a_directory_of_its_own(sticky_tmp):
    with system_users.system_user() as user:
        done = system_users.run_as(user, [sys.executable, "-c", AS_USER],
                                   env=user_settings(sticky_tmp), timeout=120)
        assert done.returncode == 0, done.stderr
        ran = json.loads(done.stdout.splitlines()[-1])
        assert ran["kind"] == "SharedZygote" and ran["alive"] and ran["uid"] != 0
        assert ran["dir"] == os.path.join(sticky_tmp, f"sandbox-kernel-forkserver-{ran['uid']}")
        assert ran["dir_uid"] == ran["uid"] and ran["dir_mode"] == 0o700
        assert _uid_of(ran["zygote"]) in (ran["uid"], None)   # None: already gone with its owner


@system_users.NEEDS_ROOT
@pytest.mark.parametrize("planted_mode", [0o700, 0o777])
def test_a_directory_another_uid_planted_for_a_user_is_never_used(sticky_tmp, planted_mode):
    with system_users.system_user() as user:
        uid = system_users.pwd.getpwnam(user).pw_uid
        planted = os.path.join(sticky_tmp, f"sandbox-kernel-forkserver-{uid}")
        os.mkdir(planted)
        os.chmod(planted, planted_mode)          # root's: the user may not trust it
        done = system_users.run_as(user, [sys.executable, "-c", AS_USER],
                                   env=user_settings(sticky_tmp), timeout=120)
        assert done.returncode == 0, done.stderr
        ran = json.loads(done.stdout.splitlines()[-1])
        assert ran["kind"] == "Zygote" and ran["alive"], ran      # a private one: the start works
        assert os.listdir(planted) == []


def _uid_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
