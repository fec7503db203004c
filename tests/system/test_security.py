"""security.harden() for real: a forked child hardens itself and reports what it
can and cannot do.  Needs root (to switch uid and drop capabilities).

Each check runs in a child of pytest (pytest is single-threaded, so fork is safe);
the child writes a JSON report to a pipe and always leaves with os._exit, so it
never returns into pytest.  Calls the filter refuses are chosen where possible
so that they would *succeed* without it (PTRACE_TRACEME, keyctl, io_uring_setup,
unshare(CLONE_NEWUSER) as nobody; mount of a missing path as root gives ENOENT),
so EPERM shows the filter at work, not a missing capability.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import shutil
import subprocess
import threading
import traceback

import pytest

from sandbox_kernel.runtime import security, syscalls

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: switches uid, drops capabilities"),
]

NOBODY = 65534
MISSING = "/nonexistent-sbk-security-test"
ARCH = os.uname().machine
NR = security.SYSCALL_NUMBERS.get(ARCH, {})
PTRACE_TRACEME = 0
KEYCTL_GET_KEYRING_ID = 0
KEY_SPEC_SESSION_KEYRING = -3
SIGCHLD = 17

PYTHON_PROBE = r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
failed = libc.unshare(0x10000000) == -1
print(json.dumps({"uid": os.getuid(), "seccomp": status["Seccomp"].strip(),
                  "no_new_privs": status["NoNewPrivs"].strip(),
                  "unshare": ctypes.get_errno() if failed else 0}))
"""

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def run_in_child(body) -> dict:
    """Run body() in a forked child; return the dict it returns."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_fd)
            try:
                report = body()
            except BaseException:
                report = {"error": traceback.format_exc()}
            with os.fdopen(write_fd, "w") as out:
                json.dump(report, out)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as inp:
        raw = inp.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"child status {status:#x}"
    report = json.loads(raw)
    assert "error" not in report, report["error"]
    return report


def errno_of(call) -> int:
    """0 if call() succeeds, else the errno of the OSError it raises."""
    try:
        call()
    except OSError as error:
        return error.errno
    return 0


def raw_syscall(name: str, *args: int) -> int:
    result = _libc.syscall(ctypes.c_long(NR[name]), *(ctypes.c_long(a) for a in args))
    if result == -1:
        error = ctypes.get_errno()
        raise OSError(error, f"{name} failed: {os.strerror(error)}")
    return result


def status_fields() -> dict[str, str]:
    with open("/proc/self/status") as file:
        pairs = (line.split(":", 1) for line in file if ":" in line)
        return {key: value.strip() for key, value in pairs}


def clone_newuser() -> int:
    """A raw clone(CLONE_NEWUSER|SIGCHLD), which must never create a child."""
    result = _libc.syscall(ctypes.c_long(NR["clone"]),
                           ctypes.c_long(syscalls.CLONE_NEWUSER | SIGCHLD), *[ctypes.c_long(0)] * 4)
    if result == 0:
        os._exit(0)   # the filter failed and we are the new child: leave at once
    if result > 0:
        os.waitpid(result, 0)
        return 0
    return ctypes.get_errno()


def fork_works() -> bool:
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 7


def thread_works() -> bool:
    seen = []
    worker = threading.Thread(target=lambda: seen.append(threading.get_native_id()))
    worker.start()
    worker.join()
    return seen != [] and seen[0] != threading.get_native_id()


def python_probe() -> dict:
    # The venv's python may live under a directory nobody cannot enter (/root):
    # take the first python3 this uid can actually run.
    for path in (shutil.which("python3"), "/usr/bin/python3", "/usr/local/bin/python3"):
        if path and os.access(path, os.X_OK):
            done = subprocess.run([path, "-c", PYTHON_PROBE], capture_output=True,
                                  text=True, timeout=120, cwd="/")
            return {"returncode": done.returncode, "stderr": done.stderr,
                    "report": json.loads(done.stdout) if done.returncode == 0 else None}
    return {"skipped": "no python3 that uid 65534 may run"}


def hardened_report() -> dict:
    security.harden(NOBODY, NOBODY, [(resource.RLIMIT_NOFILE, 256)])
    io_uring_params = ctypes.create_string_buffer(120)   # struct io_uring_params
    # Dicts keep order: what must work comes first, and the namespace calls come
    # last, since a successful unshare(CLONE_NEWUSER) (a broken filter) would leave
    # us unmapped in a new user namespace and change the errno of later checks.
    report = {
        "status": status_fields(),
        "ids": [os.getresuid(), os.getresgid(), os.getgroups()],
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        "python": python_probe(),
        "true": subprocess.run(["/bin/true"], cwd="/").returncode,
        "fork": fork_works(),
        "thread": thread_works(),
        "setuid0": errno_of(lambda: os.setuid(0)),
        "mount": errno_of(lambda: syscalls.mount("none", MISSING, "tmpfs")),
        "keyctl": errno_of(lambda: raw_syscall(
            "keyctl", KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)),
        "io_uring_setup": errno_of(lambda: raw_syscall(
            "io_uring_setup", 1, ctypes.addressof(io_uring_params))),
        "x32_getpid": errno_of(_libc_x32_getpid) if ARCH == "x86_64" else None,
        "clone_newuser": clone_newuser(),
        "unshare_user": errno_of(lambda: syscalls.unshare(syscalls.CLONE_NEWUSER)),
        # each would succeed on ourselves without the filter
        "process_vm_readv": errno_of(_read_own_memory),
        "kcmp": errno_of(lambda: raw_syscall("kcmp", os.getpid(), os.getpid(), KCMP_FILE, 0, 0)),
        "pidfd_getfd": errno_of(_own_fd_through_pidfd),
    }
    # Last: if the filter let it through, pytest would become our tracer.
    report["ptrace_traceme"] = errno_of(lambda: raw_syscall("ptrace", PTRACE_TRACEME, 0, 0, 0))
    return report


KCMP_FILE = 0


def _read_own_memory() -> None:
    """process_vm_readv of 8 bytes of our own memory into another buffer."""
    source, target = ctypes.create_string_buffer(b"sandbox!"), ctypes.create_string_buffer(8)

    class IOVec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    local, remote = IOVec(ctypes.addressof(target), 8), IOVec(ctypes.addressof(source), 8)
    raw_syscall("process_vm_readv", os.getpid(), ctypes.addressof(local), 1,
                ctypes.addressof(remote), 1, 0)


def _own_fd_through_pidfd() -> None:
    pidfd = os.pidfd_open(os.getpid())
    try:
        os.close(raw_syscall("pidfd_getfd", pidfd, 0, 0))
    finally:
        os.close(pidfd)


def _libc_x32_getpid() -> int:
    result = _libc.syscall(ctypes.c_long(security.X32_SYSCALL_BIT | 39))
    if result == -1:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return result


@pytest.fixture(scope="module")
def hardened() -> dict:
    if ARCH not in security.SYSCALL_NUMBERS:
        pytest.skip(f"no seccomp table for {ARCH}")
    if "Seccomp" not in status_fields():
        pytest.skip("kernel built without CONFIG_SECCOMP")
    return run_in_child(hardened_report)


def test_no_capabilities_left(hardened):
    status = hardened["status"]
    for field in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"):
        assert int(status[field], 16) == 0, f"{field} = {status[field]}"


def test_unprivileged_ids_and_rlimits(hardened):
    assert hardened["ids"] == [[NOBODY] * 3, [NOBODY] * 3, [NOBODY]]
    assert hardened["nofile"] == [256, 256]


def test_no_new_privs_and_seccomp_filter_set(hardened):
    assert hardened["status"]["NoNewPrivs"] == "1"
    assert hardened["status"]["Seccomp"] == "2"


@pytest.mark.parametrize("call", ["mount", "unshare_user", "clone_newuser", "keyctl",
                                  "io_uring_setup", "ptrace_traceme", "setuid0",
                                  "process_vm_readv", "kcmp", "pidfd_getfd"])
def test_refused_with_eperm(hardened, call):
    assert hardened[call] == errno.EPERM, f"{call}: {errno.errorcode.get(hardened[call])}"


def test_x32_abi_refused(hardened):
    if ARCH != "x86_64":
        pytest.skip("x32 exists only on x86_64")
    assert hardened["x32_getpid"] == errno.EPERM


def test_fork_threads_and_exec_still_work(hardened):
    assert hardened["fork"], "os.fork() failed under the filter"
    assert hardened["thread"], "threading failed under the filter"
    assert hardened["true"] == 0, "/bin/true failed under the filter"


def test_a_real_program_runs_under_the_filter(hardened):
    probe = hardened["python"]
    if "skipped" in probe:
        pytest.skip(probe["skipped"])
    assert probe["returncode"] == 0, probe["stderr"]
    assert probe["report"] == {"uid": NOBODY, "seccomp": "2", "no_new_privs": "1",
                               "unshare": errno.EPERM}


def filter_only_report() -> dict:
    # Still root with every capability: whatever is refused now is the filter's doing.
    syscalls.set_no_new_privs()
    security.install_seccomp()
    with open("/proc/self/ns/uts") as own_uts:
        setns = errno_of(lambda: syscalls.setns(own_uts.fileno(), syscalls.CLONE_NEWUTS))
    return {
        "cap_eff": syscalls.capget_effective(),
        "mount": errno_of(lambda: syscalls.mount("none", MISSING, "tmpfs")),
        "umount2": errno_of(lambda: syscalls.umount2(MISSING)),
        "pivot_root": errno_of(lambda: syscalls.pivot_root(MISSING, MISSING)),
        "unshare": errno_of(lambda: syscalls.unshare(syscalls.CLONE_NEWNS)),
        "setns": setns,
        "open_tree": errno_of(lambda: raw_syscall("open_tree", -100, 0, 0)),
        "fsopen": errno_of(lambda: raw_syscall("fsopen", 0, 0)),
    }


def test_filter_refuses_even_root():
    if ARCH not in security.SYSCALL_NUMBERS:
        pytest.skip(f"no seccomp table for {ARCH}")
    report = run_in_child(filter_only_report)
    assert report.pop("cap_eff") != 0, "the child should still hold its capabilities"
    assert report == dict.fromkeys(report, errno.EPERM)


def test_install_seccomp_requires_no_new_privs():
    def body():
        try:
            security.install_seccomp()
        except OSError as error:
            return {"refused": str(error), "seccomp": status_fields()["Seccomp"]}
        return {"refused": None}
    report = run_in_child(body)
    assert "no_new_privs" in report["refused"]
    assert report["seccomp"] == "0"


def test_refuses_a_process_with_threads():
    def body():
        release = threading.Event()
        worker = threading.Thread(target=release.wait)
        worker.start()
        try:
            security.drop_privileges(NOBODY, NOBODY)
        except OSError as error:
            return {"refused": str(error), "uid": os.getuid()}
        finally:
            release.set()
            worker.join()
        return {"refused": None}
    report = run_in_child(body)
    assert "threads" in report["refused"] and report["uid"] == 0


def test_rlimit_error_names_the_limit():
    def body():
        security.drop_privileges(NOBODY, NOBODY)   # no CAP_SYS_RESOURCE from here on
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        assert hard != resource.RLIM_INFINITY
        try:
            security.apply_rlimits([(resource.RLIMIT_NOFILE, hard + 1)])
        except ValueError as error:
            return {"message": str(error)}
        return {"message": None}
    assert "setrlimit(RLIMIT_NOFILE" in run_in_child(body)["message"]


# --- socket families (security.ALLOWED_SOCKET_FAMILIES)

AF_VSOCK = getattr(__import__("socket"), "AF_VSOCK", 40)
NETLINK_KOBJECT_UEVENT = 15

SOCKET_PROBE = r"""
import errno, json, socket, threading, urllib.request, http.server

def errno_of(call):
    try:
        call()
    except OSError as error:
        return error.errno
    return 0

def opened(*args):
    socket.socket(*args).close()

def http_on(family, host):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    class Server(http.server.HTTPServer):
        address_family = family
    server = Server((host, 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = "http://" + (f"[{host}]" if ":" in host else host) + f":{server.server_port}/"
    try:
        return urllib.request.urlopen(url, timeout=30).status
    finally:
        server.shutdown()

def unix_pair():
    left, right = socket.socketpair()
    left.sendall(b"ping")
    assert right.recv(4) == b"ping"
    left.close(); right.close()

report = {
    "vsock": errno_of(lambda: opened(VSOCK, socket.SOCK_STREAM)),
    "vsock_dgram": errno_of(lambda: opened(VSOCK, socket.SOCK_DGRAM)),
    "vsock_pair": errno_of(lambda: socket.socketpair(VSOCK, socket.SOCK_STREAM)),
    "packet": errno_of(lambda: opened(17, socket.SOCK_RAW)),
    "alg": errno_of(lambda: opened(38, socket.SOCK_SEQPACKET)),
    "uevent": errno_of(lambda: opened(socket.AF_NETLINK, socket.SOCK_RAW, 15)),
    "unix_pair": errno_of(unix_pair),
    "netlink_route": errno_of(lambda: opened(socket.AF_NETLINK, socket.SOCK_RAW, 0)),
    "interfaces": [name for _, name in socket.if_nameindex()],
    "http_inet": http_on(socket.AF_INET, "127.0.0.1"),
}
try:
    has_ipv6 = socket.has_ipv6 and open("/proc/sys/net/ipv6/conf/lo/disable_ipv6").read().strip() == "0"
except OSError:
    has_ipv6 = False
report["http_inet6"] = http_on(socket.AF_INET6, "::1") if has_ipv6 else None
print(json.dumps(report))
""".replace("VSOCK", str(AF_VSOCK))

REFUSED_FAMILIES = {"vsock": errno.EAFNOSUPPORT, "vsock_dgram": errno.EAFNOSUPPORT,
                    "vsock_pair": errno.EAFNOSUPPORT, "packet": errno.EAFNOSUPPORT,
                    "alg": errno.EAFNOSUPPORT, "uevent": errno.EPROTONOSUPPORT}


def _host_opens(family: int, kind: int, protocol: int = 0) -> bool:
    import socket
    try:
        socket.socket(family, kind, protocol).close()
    except OSError:
        return False
    return True


def test_filter_refuses_socket_families_a_notebook_does_not_need_even_to_root():
    # Still root with CAP_NET_RAW: AF_PACKET and vsock open without the filter
    # (vsock needs no privilege at all, and is not namespaced).
    assert _host_opens(17, 3), "the host refuses AF_PACKET to root: nothing to test"
    def body():
        syscalls.set_no_new_privs()
        security.install_seccomp()
        import socket
        def opened(*args):
            socket.socket(*args).close()
        return {"packet": errno_of(lambda: opened(17, socket.SOCK_RAW)),
                "vsock": errno_of(lambda: opened(AF_VSOCK, socket.SOCK_STREAM)),
                "uevent": errno_of(lambda: opened(socket.AF_NETLINK, socket.SOCK_RAW,
                                                  NETLINK_KOBJECT_UEVENT)),
                "unix": errno_of(lambda: [s.close() for s in socket.socketpair()]),
                "inet": errno_of(lambda: opened(socket.AF_INET, socket.SOCK_DGRAM)),
                "inet6": errno_of(lambda: opened(socket.AF_INET6, socket.SOCK_DGRAM)),
                "route": errno_of(lambda: opened(socket.AF_NETLINK, socket.SOCK_RAW, 0))}
    report = run_in_child(body)
    assert report["packet"] == errno.EAFNOSUPPORT
    assert report["vsock"] == errno.EAFNOSUPPORT
    assert report["uevent"] == errno.EPROTONOSUPPORT
    allowed = {"unix": 0, "inet": 0, "inet6": 0 if _host_opens(10, 2) else errno.EAFNOSUPPORT,
               "route": 0}
    assert {name: report[name] for name in allowed} == allowed


def test_a_container_cannot_open_vsock_but_has_unix_inet_and_netlink(pyrun):
    # --net none (the default): vsock is the one way out that the network
    # namespace does not close, so the filter must.
    if not _host_opens(AF_VSOCK, 1):
        pytest.skip("the host has no vsock (nothing to escape through)")
    ran = pyrun(SOCKET_PROBE)
    assert ran.result.exit_code == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert {name: report[name] for name in REFUSED_FAMILIES} == REFUSED_FAMILIES
    assert report["unix_pair"] == 0 and report["netlink_route"] == 0
    assert "lo" in report["interfaces"]
    assert report["http_inet"] == 200
    assert report["http_inet6"] in (200, None)
