"""What a process inside the container can see and do: nothing of the host
beyond the image and the declared mounts, and no way to widen that."""
from __future__ import annotations

import os
import socket
import threading
import uuid

import pytest

from sandbox_kernel.runtime.spec import Mount

pytestmark = pytest.mark.usefixtures("no_leftovers")

ROOT_NO_CAPS = (0, 0)  # uid 0 without any capability: proves the mounts, not just file modes


@pytest.mark.parametrize("spawn", ["fork", "exec", "zygote"])
def test_pid_1_is_the_containers_init_and_no_host_process_is_visible(run, spawn):
    if spawn == "fork" and len(os.listdir("/proc/self/task")) > 1:
        pytest.skip("this pytest process has threads (numpy's?): the fork path would refuse")
    ran = run("ps -eo pid=,comm=", spawn=spawn)
    assert ran.result.status == "ok", ran.stderr
    processes = dict(line.split(None, 1) for line in ran.stdout.strip().splitlines())
    assert processes["1"] == "sbk-init"
    assert set(processes.values()) <= {"sbk-init", "sh", "ps"}, processes
    assert len(processes) <= 3


@pytest.mark.parametrize("spawn", ["fork", "exec", "zygote"])
def test_the_command_inherits_only_its_stdio(run, spawn):
    if spawn == "fork" and len(os.listdir("/proc/self/task")) > 1:
        pytest.skip("this pytest process has threads: the fork path would refuse")
    extra = os.open("/dev/null", os.O_RDONLY)  # an fd of the owner, not for the container
    os.set_inheritable(extra, True)
    try:
        ran = run("ls /proc/self/fd", spawn=spawn)
    finally:
        os.close(extra)
    # ls itself holds one more: the directory it lists
    assert len(ran.stdout.split()) == 4 and set(ran.stdout.split()) >= {"0", "1", "2"}, ran.stdout


def test_hostname_is_sandbox_not_the_hosts(run):
    ran = run("hostname")
    assert ran.stdout.strip() == "sandbox" != socket.gethostname()


def test_network_none_has_only_loopback_and_cannot_reach_the_hosts_loopback(run):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted = []
    server.settimeout(5)
    thread = threading.Thread(target=lambda: _accept_once(server, accepted), daemon=True)
    thread.start()
    code = (f"import socket, os\n"
            f"print(sorted(os.listdir('/sys/class/net')))\n"
            f"s = socket.socket(); s.settimeout(2)\n"
            f"print(s.connect_ex(('127.0.0.1', {port})))\n")
    ran = run(("python3", "-c", code))
    server.close()
    links, connect_errno = ran.stdout.split("\n")[:2]
    assert links == "['lo']"
    assert int(connect_errno) != 0, "the container reached a server on the host's 127.0.0.1"
    assert accepted == []


def _accept_once(server, accepted):
    try:
        accepted.append(server.accept())
    except OSError:
        pass


def test_loopback_inside_works(run):
    code = ("import socket\n"
            "srv = socket.create_server(('127.0.0.1', 0)); port = srv.getsockname()[1]\n"
            "c = socket.create_connection(('127.0.0.1', port), timeout=2); print('connected')\n")
    assert run(("python3", "-c", code)).stdout.strip() == "connected"


def _filesystem_of(path: str) -> str:
    """The type of the mount path is on (the longest mount point above it)."""
    best, kind = "", ""
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            point, fstype = fields[4], fields[fields.index("-") + 1]
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                best, kind = point, fstype
    return kind


@pytest.mark.parametrize("directory", ["home", "/tmp"])
def test_a_file_put_in_the_hosts_directory_is_invisible(run, directory):
    if directory == "home":   # root's, or (rootless) the user's own home
        directory = "/root" if os.geteuid() == 0 else os.path.expanduser("~")
    marker = os.path.join(directory, f"sbk-test-marker-{uuid.uuid4().hex}")
    if os.geteuid() != 0 and _filesystem_of(directory) == "hostfs":
        # the v2 guest's view of the host (repository under /tmp): a user's file
        # there is made but cannot be removed again
        pytest.skip(f"{directory} is the host's over UML hostfs: a user cannot remove its files")
    with open(marker, "w") as handle:
        handle.write("host secret")
    try:
        ran = run(f"ls -a {directory}; cat {marker}", user=ROOT_NO_CAPS)
    finally:
        os.unlink(marker)
    assert os.path.basename(marker) not in ran.stdout
    assert "host secret" not in ran.stdout
    assert "No such file" in ran.stderr


def test_writes_to_usr_land_in_the_writable_layer(run):
    name = f"sbk-test-{uuid.uuid4().hex}"
    ran = run(f"echo inside > /usr/{name} && cat /usr/{name}", user=ROOT_NO_CAPS)
    assert ran.stdout.strip() == "inside", ran.stderr
    assert not os.path.exists(f"/usr/{name}")


def test_the_unprivileged_user_cannot_write_to_usr(run):
    ran = run("id -u; touch /usr/sbk-nope")
    assert ran.stdout.strip() == "65532"
    assert "Permission denied" in ran.stderr
    assert not os.path.exists("/usr/sbk-nope")


def test_capabilities_no_new_privs_and_seccomp(run):
    ran = run("grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status",
              user=ROOT_NO_CAPS)
    fields = dict(line.split(":\t") for line in ran.stdout.strip().splitlines())
    assert int(fields["CapEff"], 16) == 0
    assert int(fields["CapPrm"], 16) == 0
    assert int(fields["CapBnd"], 16) == 0
    assert fields["NoNewPrivs"] == "1"
    assert fields["Seccomp"] == "2"


ESCAPES = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def attempt(name, call):
    ctypes.set_errno(0)
    result = call()
    print(name, "ok" if result != -1 else os.strerror(ctypes.get_errno()))
attempt("mount", lambda: libc.mount(b"none", b"/mnt", b"tmpfs", 0, None))
attempt("unshare", lambda: libc.unshare(0x10000000))   # CLONE_NEWUSER
attempt("unshare-mnt", lambda: libc.unshare(0x00020000))
attempt("ptrace", lambda: libc.ptrace(0, 0, 0, 0))       # PTRACE_TRACEME
attempt("keyctl", lambda: libc.syscall(250, 0, 0, 0, 0))  # keyctl(GET_KEYRING_ID)
attempt("setns", lambda: libc.setns(os.open("/proc/1/ns/mnt", os.O_RDONLY) if os.access("/proc/1/ns/mnt", os.R_OK) else 0, 0))
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers in the probe are x86_64's")
@pytest.mark.parametrize("user", [None, ROOT_NO_CAPS], ids=["sandbox-user", "uid0-no-caps"])
def test_mount_unshare_ptrace_keyctl_fail_with_eperm(run, user):
    fields = {} if user is None else {"user": user}
    ran = run(("python3", "-c", ESCAPES), **fields)
    outcomes = dict(line.split(" ", 1) for line in ran.stdout.strip().splitlines())
    for name in ("mount", "unshare", "unshare-mnt", "ptrace", "keyctl"):
        assert outcomes[name] == os.strerror(1), (name, outcomes, ran.stderr)
    assert outcomes["setns"] != "ok"


def test_proc_sys_is_read_only_even_for_uid_0(run):
    ran = run("echo evil > /proc/sys/kernel/hostname", user=ROOT_NO_CAPS)
    assert ran.result.status != "ok"
    assert "Read-only file system" in ran.stderr


def test_proc_masks_kernel_internals(run):
    ran = run("wc -c < /proc/keys; wc -c < /proc/timer_list", user=ROOT_NO_CAPS)
    assert ran.stdout.split() == ["0", "0"]


def test_dev_holds_only_the_design_list(run):
    ran = run("ls -A /dev")
    assert set(ran.stdout.split()) == {
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx",
        "fd", "stdin", "stdout", "stderr"}


def test_sys_is_read_only(run):
    ran = run("touch /sys/kernel/sbk 2>&1; grep ' /sys ' /proc/mounts", user=ROOT_NO_CAPS)
    assert " ro," in ran.stdout.splitlines()[-1]


def test_declared_mounts_are_visible_and_read_only_when_asked(run, tmp_path):
    (tmp_path / "data.txt").write_text("shared")
    os.chmod(tmp_path, 0o755)
    mounts = (Mount(str(tmp_path), "/data", read_only=True),)
    ran = run("cat /data/data.txt; touch /data/new", mounts=mounts, user=ROOT_NO_CAPS)
    assert ran.stdout.strip() == "shared"
    assert "Read-only file system" in ran.stderr
    assert not (tmp_path / "new").exists()


def test_workspace_is_writable_and_is_the_working_directory(run, tmp_path):
    if os.geteuid() == 0:
        os.chown(tmp_path, 65532, 65532)
    else:   # rootless: uid 65532 inside is one of the user's subordinate ids
        os.chmod(tmp_path, 0o777)
    ran = run("pwd; echo result > out.txt", workspace=str(tmp_path))
    assert ran.stdout.strip() == "/workspace"
    assert (tmp_path / "out.txt").read_text() == "result\n"


def test_the_host_interpreter_and_this_package_work_inside(pyrun):
    ran = pyrun("import sys, sandbox_kernel.runtime.spec as s; print(sys.prefix, s.__name__)")
    assert ran.stdout.split() == [os.path.realpath(__import__("sys").prefix)
                                  if False else __import__("sys").prefix,
                                  "sandbox_kernel.runtime.spec"], ran.stderr
