"""Rootless containers, as a user who is not root (scripts/test rootless and
rootless-v2 run the system tier as the user sbk-rootless that they make).

What a user would check: who the workload is inside and on the host; that
it keeps no capability, has no_new_privs and the seccomp filter, exactly as
for root; that it cannot write anything the user could not, and that its
root inside cannot touch a file of the host's root; limits, through a
delegated cgroup v2 subtree where there is one, else through the null
driver's rlimits with its warning.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sandbox_kernel.runtime import userns
from sandbox_kernel.runtime.container import Container
from sandbox_kernel.runtime.spec import ContainerSpec, Limits, Mount

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() == 0, reason="runs as a user who is not root: "
                                                 "scripts/test rootless (or rootless-v2)"),
    pytest.mark.usefixtures("no_leftovers"),
]
MiB = 1 << 20

# both id maps where the host has newuidmap and subordinate ids, else the single one
MAPS = ["single"] + (["range"] if userns.plan((65532, 65532)).by_tool else [])


@pytest.fixture(params=MAPS)
def idmap(request, monkeypatch):
    """Each test once per id map this host can give."""
    monkeypatch.setenv(userns.MAP_ENV, "single" if request.param == "single" else "auto")
    return request.param


PROBE = r"""
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
def refused(result):
    return ctypes.get_errno() if result == -1 else 0
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
    "uid_map": open("/proc/self/uid_map").read().split(),
    "caps": {k: status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")},
    "no_new_privs": status["NoNewPrivs"].strip(), "seccomp": status["Seccomp"].strip(),
    "unshare_user": refused(libc.unshare(0x10000000)),
    "mount": refused(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
    "setuid_0": refused(libc.setuid(0)) if os.getuid() != 0 else "is root",
}))
"""


def _codes(ran) -> list[str]:
    """The "echo rc=$?" lines of a run: ok or failed (sh says 1 or 2)."""
    return ["ok" if line == "rc=0" else "failed"
            for line in ran.stdout.split() if line.startswith("rc=")]


def test_the_workload_is_the_sandbox_uid_with_a_range_or_root_inside_with_one_id(pyrun, idmap):
    ran = pyrun(PROBE)
    report = json.loads(ran.stdout)
    me = str(os.geteuid())
    if idmap == "range":
        assert report["uid"] == report["gid"] == 65532
        assert report["uid_map"][:3] == ["0", me, "1"] and report["uid_map"][3] == "1"
        assert report["setuid_0"] == 1   # EPERM: the workload cannot become root inside
    else:
        assert report["uid"] == report["gid"] == 0
        assert report["uid_map"] == ["0", me, "1"]


def test_capabilities_no_new_privs_and_seccomp_exactly_as_for_root(pyrun, idmap):
    report = json.loads(pyrun(PROBE).stdout)
    assert report["caps"] == dict.fromkeys(report["caps"], "0000000000000000")
    assert report["no_new_privs"] == "1"
    assert report["seccomp"] == "2"
    assert report["unshare_user"] == report["mount"] == 1   # EPERM, from the filter


def test_userns_self_runs_the_workload_as_the_user(pyrun, monkeypatch):
    monkeypatch.setenv(userns.MODE_ENV, "self")
    report = json.loads(pyrun(PROBE).stdout)
    assert report["uid"] == os.geteuid()
    assert report["uid_map"] == [str(os.geteuid())] * 2 + ["1"]


def test_a_bound_root_owned_file_stays_unwritable_even_to_root_inside(run, idmap):
    """/etc/hostname is root's, mode 0644: bound in read-write, its root
    inside (uid 0 with one id mapped) may still not write, chmod or chown it."""
    host_file = "/etc/hostname"
    stat = os.stat(host_file)
    assert stat.st_uid == 0 and stat.st_mode & 0o002 == 0
    before = open(host_file).read()
    ran = run("echo evil > /data/hostname; echo rc=$?; chmod 666 /data/hostname; echo rc=$?; "
              "chown 0 /data/hostname; echo rc=$?; ls -ln /data/hostname",
              mounts=(Mount(host_file, "/data/hostname"),), user=(0, 0))
    assert _codes(ran) == ["failed"] * 3, ran.stdout + ran.stderr
    assert "Permission denied" in ran.stderr and "Operation not permitted" in ran.stderr
    assert " 65534 65534 " in ran.stdout   # the host's root is unmapped: nobody
    assert open(host_file).read() == before


def test_root_inside_cannot_read_what_only_the_hosts_root_may(run, idmap):
    assert not os.access("/etc/shadow", os.R_OK)
    ran = run("cat /etc/shadow; echo rc=$?", user=(0, 0))
    assert _codes(ran) == ["failed"]
    assert "Permission denied" in ran.stderr


def test_root_inside_writes_only_what_the_user_could(run, idmap, tmp_path):
    """A directory of the host's root (the repository) and a file the user
    owns: root inside is the user on the host (both maps send 0 to the user),
    so it writes the user's file and not root's directory."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    (mine / "notes.txt").write_text("mine\n")
    ran = run("touch /repo/sbk-evil; echo rc=$?; echo x >> /mine/notes.txt; echo rc=$?",
              mounts=(Mount(repo, "/repo"), Mount(str(mine), "/mine")), user=(0, 0))
    assert not os.path.exists(os.path.join(repo, "sbk-evil"))
    assert _codes(ran) == ["failed", "ok"], ran.stderr
    assert (mine / "notes.txt").read_text() == "mine\nx\n"


def test_a_subordinate_uid_cannot_write_the_users_files(run, tmp_path):
    if "range" not in MAPS:
        pytest.skip("no newuidmap or no subordinate ids for this user: only the single map")
    (tmp_path / "notes.txt").write_text("mine\n")
    os.chmod(tmp_path, 0o755)
    ran = run("echo x >> /mine/notes.txt; echo rc=$?", mounts=(Mount(str(tmp_path), "/mine"),))
    assert _codes(ran) == ["failed"]   # the sandbox uid is a subordinate id, not the user
    assert (tmp_path / "notes.txt").read_text() == "mine\n"


def test_network_none_and_host_work_rootless(run):
    none = run("ls /sys/class/net")
    assert none.stdout.split() == ["lo"], none.stderr
    host = run("ls /sys/class/net; ls /sys/fs/cgroup | wc -l", network="host")
    *links, cgroup_entries = host.stdout.split()
    assert sorted(links) == sorted(os.listdir("/sys/class/net")), host.stderr
    assert cgroup_entries == "0"   # the host's cgroups (maybe the user's own) are masked


def test_hostname_ipc_pid_and_mount_namespaces_are_the_containers(run):
    ran = run("hostname; echo $$; readlink /proc/self/ns/ipc /proc/self/ns/mnt")
    name, pid, ipc, mnt = ran.stdout.split()
    assert (name, pid) == ("sandbox", "2")   # init is 1
    assert ipc != os.readlink("/proc/self/ns/ipc") and mnt != os.readlink("/proc/self/ns/mnt")


# -- the null driver: no delegated cgroup ---------------------------------------

@pytest.fixture
def null_driver(cgroup_driver):
    if cgroup_driver.version != "null":
        pytest.skip(f"this user has a delegated cgroup ({cgroup_driver.reason}): "
                    "limits are the cgroup's, tested in test_limits.py")
    return cgroup_driver


def test_null_driver_memory_is_an_address_space_rlimit(pyrun, null_driver):
    ran = pyrun("try:\n    x = bytearray(200 << 20)\n    print('allocated')\n"
                "except MemoryError:\n    print('refused')", limits=Limits(memory=128 * MiB))
    assert ran.stdout.strip() == "refused"
    assert ran.result.stats.memory_limit == 128 * MiB


def test_null_driver_pids_count_only_this_containers_processes(pyrun, null_driver):
    """RLIMIT_NPROC counts per uid of the container's own user namespace: the
    user's 40 other processes on the host do not eat into the limit."""
    others = [subprocess.Popen(["sleep", "60"]) for _ in range(40)]
    try:
        ran = pyrun("import os, time\nn = 0\nfor _ in range(100):\n"
                    "    try:\n        pid = os.fork()\n    except BlockingIOError:\n        break\n"
                    "    if pid == 0:\n        time.sleep(5); os._exit(0)\n    n += 1\nprint(n)",
                    limits=Limits(pids=32, timeout=30))
    finally:
        for other in others:
            other.kill()
            other.wait()
    assert 20 <= int(ran.stdout) < 32, ran.stderr


def test_null_driver_figures_come_from_proc_and_it_warns(null_driver):
    spec = ContainerSpec(command=(sys.executable, "-c",
                                  "import time\nx = bytearray(64 << 20)\nx[::4096] = b'x' * len(x[::4096])\n"
                                  "end = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
                                  "time.sleep(30)"),
                         limits=Limits(memory=512 * MiB, pids=64))
    with Container(spec, stdin=subprocess.DEVNULL) as box:
        box.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stats = box.stats()
            if stats.memory_current and stats.memory_current >= 64 * MiB and stats.cpu_usage >= 0.3:
                break
            time.sleep(0.1)
        assert stats.memory_current >= 64 * MiB
        assert stats.cpu_usage >= 0.3
        assert stats.pids_current >= 2   # init and python
        assert stats.memory_peak is None and stats.oom_kills is None   # /proc cannot tell
        assert len(box.warnings) == 1 and "not enforced by cgroups" in box.warnings[0]
        box.signal(signal.SIGKILL)
        after = box.wait(timeout=30).stats
    assert after.cpu_usage >= 0.3   # the launcher reaped init: its time is still counted


# -- a delegated cgroup v2 subtree ----------------------------------------------

def test_a_delegated_v2_subtree_is_used_under_the_processs_own_cgroup(cgroup_driver):
    if cgroup_driver.version != "v2":
        pytest.skip(f"no delegated cgroup v2 subtree for this user ({cgroup_driver.reason})")
    spec = ContainerSpec(command=("/bin/sleep", "30"), limits=Limits(memory=128 * MiB, pids=16))
    with Container(spec, stdin=subprocess.DEVNULL) as box:
        box.start()
        group = os.path.dirname(box.cgroup.join_files()[0])
        stat = os.stat(group)
        assert os.path.dirname(group) == cgroup_driver.parent.path
        assert (stat.st_uid, open(os.path.join(group, "memory.max")).read()) == \
            (os.geteuid(), f"{128 * MiB}\n")
        assert box.stats().pids_current == 2   # init and sleep, counted by the cgroup
    assert not os.path.exists(group)


def test_doctor_as_this_user_tells_what_rootless_has(cgroup_driver):
    done = subprocess.run([sys.executable, "-m", "sandbox_kernel.runtime.doctor", "--json"],
                          capture_output=True, text=True, timeout=60)
    checks = {c["name"]: c for c in json.loads(done.stdout)}
    assert done.returncode == 0   # containers can run as this user
    assert checks["user namespaces"]["ok"] and "rootless" in checks["root"]["detail"]
    assert checks["subordinate ids"]["ok"] == ("range" in MAPS)
    assert "a bridge needs root" in checks["rootless network"]["detail"]
    if cgroup_driver.version == "null":
        assert not checks["cgroup writable"]["ok"] and "rlimits" in checks["cgroup writable"]["fix"]
    else:
        assert checks["cgroup writable"]["ok"]


# -- init out of the workload's reach -------------------------------------------

REACH_INIT = r"""
import errno, json, os
def refusal(path, value):
    try:
        with open(path, "w") as handle:
            handle.write(value)
        return "written"
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error.errno))
before = open("/proc/1/oom_score_adj").read().strip()
writes = {name: refusal("/proc/1/" + name, value) for name, value in
          (("oom_score_adj", "1000"), ("oom_adj", "15"), ("coredump_filter", "0"))}
opened = []   # every file of init's that is writable by its owner only
for name in sorted(os.listdir("/proc/1")):
    path = "/proc/1/" + name
    try:
        mode = os.stat(path).st_mode
        if not os.path.isfile(path) or mode & 0o002 or not mode & 0o200:
            continue
        os.close(os.open(path, os.O_WRONLY))
        opened.append(name)
    except OSError:
        pass
print(json.dumps({"writes": writes, "opened": opened, "before": before,
                  "after": open("/proc/1/oom_score_adj").read().strip()}))
"""


def test_the_workload_cannot_raise_inits_oom_score_or_write_its_proc_files(pyrun, idmap):
    """With one id mapped the workload has init's uid: before, it could raise
    /proc/1/oom_score_adj to 1000, so the OOM killer picked init and the
    container ended without a word.  Init is non-dumpable: its /proc files
    belong to the host's root, which no id inside maps to."""
    ran = pyrun(REACH_INIT)
    report = json.loads(ran.stdout)
    assert "written" not in report["writes"].values(), report
    assert report["opened"] == [], report
    assert report["after"] == report["before"] != "1000"
