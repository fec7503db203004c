"""The container's last steps before it runs user code: rlimits, capabilities,
an unprivileged uid, no_new_privs and a seccomp filter.

Child side only: ``harden()`` runs in the container's workload process after it
has entered its new namespaces and pivot_rooted, while it is still root with
every capability, and just before it execs the user's command::

    harden(uid=1000, gid=1000, rlimits=[(resource.RLIMIT_NOFILE, 1024)])
    os.execve(...)

The order is forced by the kernel:

1. rlimits first: raising a hard limit needs CAP_SYS_RESOURCE, which is gone after 2.
2. capabilities, then the uid: setgroups/setresgid/setresuid need CAP_SETGID and
   CAP_SETUID, which are still in the effective set (dropping the bounding set
   does not touch it); leaving uid 0 then clears the permitted and effective sets.
3. no_new_privs: a setuid binary or file capabilities can no longer give any back.
4. seccomp last: without CAP_SYS_ADMIN the kernel only accepts a filter once
   no_new_privs is set, and the filter must not refuse a call that 1-3 make.

Rootless (a user namespace, userns.py), the same steps apply, with two
differences the kernel forces: with a single-id map setgroups is denied, so
the supplementary groups stay those the user had (``keep_groups``); and the
workload may be uid 0 of its namespace, so SECBIT_NOROOT (locked) makes sure
no execve gives a capability back to it.  Either way the bounding set is
empty, so nothing could be granted anyway: the securebit is a second lock.

Capabilities, no_new_privs and seccomp filters belong to the calling *thread*,
so every step refuses to run in a process that has more than one thread.

Every failure is an ``OSError`` (or a ``ValueError`` from setrlimit) whose message
names the operation: the container's setup steps catch exactly those.
"""
from __future__ import annotations

import errno
import os
import resource
import socket
import struct
from typing import NamedTuple

from . import syscalls

__all__ = [
    "ALLOWED_NETLINK_PROTOCOLS", "ALLOWED_SOCKET_FAMILIES", "AUDIT_ARCH", "DENIED_SYSCALLS",
    "SYSCALL_NUMBERS",
    "apply_rlimits", "drop_privileges", "seccomp_program", "install_seccomp", "harden",
]

# --- seccomp (linux/seccomp.h, linux/audit.h)
#
# We write the classic-BPF filter by hand instead of using libseccomp: its Python
# binding is not on PyPI (it comes only with distribution packages), and a fixed
# deny-list is about 60 instructions, short enough to read, print and test with a
# tiny interpreter (tests/unit/test_seccomp_filter.py).  Only the rules of clone,
# socket and socketpair read an argument, so the kernel (5.11+) caches ALLOW for
# every other call and skips the filter for them: the deny-list costs nothing on
# read/write.
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000

AUDIT_ARCH = {
    "x86_64": 0xC000003E,   # EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
    "aarch64": 0xC00000B7,  # EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
}
X32_SYSCALL_BIT = 0x40000000

# struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
_NR_OFFSET = 0
_ARCH_OFFSET = 4
_ARG0_LOW_OFFSET = 16   # low 32 bits of args[0]: both arches we support are little-endian
_ARG2_LOW_OFFSET = 32   # low 32 bits of args[2]

# Namespace flags of clone(2).  The kernel keeps only the low 32 bits of clone's
# flags, so testing the low word of args[0] is enough.  CLONE_NEWTIME (0x80) cannot
# be asked of clone (its low byte is the exit signal), only of unshare and clone3,
# both of which the filter refuses.
CLONE_NAMESPACE_FLAGS = (
    syscalls.CLONE_NEWNS | syscalls.CLONE_NEWCGROUP | syscalls.CLONE_NEWUTS
    | syscalls.CLONE_NEWIPC | syscalls.CLONE_NEWUSER | syscalls.CLONE_NEWPID
    | syscalls.CLONE_NEWNET
)

# Refused with EPERM: they reach past the container (mounts, namespaces, the kernel
# keyring, other processes' memory, kernel modules, the machine itself) or are large
# attack surfaces an unprivileged notebook does not need (bpf, perf, userfaultfd,
# io_uring, which also bypasses seccomp for the operations it submits).  Reading
# or writing another process's memory or files (process_vm_*, pidfd_getfd) and
# comparing its kernel objects (kcmp) go with ptrace: Docker's default profile
# allows them only with CAP_SYS_PTRACE, which no container here has.
DENIED_SYSCALLS = (
    "mount", "umount2", "pivot_root", "unshare", "setns",
    "fsopen", "fsconfig", "fsmount", "move_mount", "open_tree", "fspick",
    "mount_setattr", "open_tree_attr",
    "keyctl", "add_key", "request_key",
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    "bpf", "perf_event_open", "userfaultfd",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "open_by_handle_at",
)

# Socket families (linux/socket.h) a notebook may create: local sockets, IPv4,
# IPv6, and netlink for the interface queries of getaddrinfo, getifaddrs, ip and
# ss.  Everything else is refused, as an allowlist, because most other families
# reach past the container: vsock is not namespaced at all (it talks to the
# hypervisor and to other VMs' services), AF_PACKET, AF_KEY, AF_ALG, AF_XDP,
# AF_TIPC, AF_RDS, AF_CAN, Bluetooth... are rarely used kernel code (a
# frequent source of local privilege escalations) and the kernel loads their
# module on the first socket() call.  The answer is EAFNOSUPPORT, what a kernel
# built without the family says, so libraries that probe a family (AF_ALG
# for crypto, AF_VSOCK for a VM agent) fall back as they would there, instead
# of taking EPERM for a hard failure.  socketpair() gets the same rule: it
# creates its sockets (and loads the module) before it asks the family.
ALLOWED_SOCKET_FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK)
# Of netlink, only the namespaced protocols that unprivileged tools use:
# NETLINK_ROUTE (links, addresses, routes: getaddrinfo's AI_ADDRCONFIG,
# getifaddrs, ip) and NETLINK_SOCK_DIAG (ss, psutil's connections).  Others
# are refused with EPROTONOSUPPORT, as for a protocol the kernel lacks: the
# kobject uevents (host device events), audit, generic netlink (taskstats,
# wifi and other drivers' families), netfilter, xfrm and the rest.
NETLINK_ROUTE = 0
NETLINK_SOCK_DIAG = 4
ALLOWED_NETLINK_PROTOCOLS = (NETLINK_ROUTE, NETLINK_SOCK_DIAG)

# From arch/x86/entry/syscalls/syscall_64.tbl and include/uapi/asm-generic/unistd.h
# (aarch64).  An arch that lacks a call simply has no entry for it.
SYSCALL_NUMBERS = {
    "x86_64": {
        "clone": 56, "clone3": 435, "socket": 41, "socketpair": 53,
        "mount": 165, "umount2": 166, "pivot_root": 155, "unshare": 272, "setns": 308,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "mount_setattr": 442, "open_tree_attr": 467,
        "keyctl": 250, "add_key": 248, "request_key": 249,
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
        "pidfd_getfd": 438, "kcmp": 312, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
        "init_module": 175, "finit_module": 313, "delete_module": 176,
        "kexec_load": 246, "kexec_file_load": 320,
        "reboot": 169, "swapon": 167, "swapoff": 168,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "open_by_handle_at": 304,
    },
    "aarch64": {
        "clone": 220, "clone3": 435, "socket": 198, "socketpair": 199,
        "mount": 40, "umount2": 39, "pivot_root": 41, "unshare": 97, "setns": 268,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "mount_setattr": 442, "open_tree_attr": 467,
        "keyctl": 219, "add_key": 217, "request_key": 218,
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
        "pidfd_getfd": 438, "kcmp": 272, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
        "init_module": 105, "finit_module": 273, "delete_module": 106,
        "kexec_load": 104, "kexec_file_load": 294,
        "reboot": 142, "swapon": 224, "swapoff": 225,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "open_by_handle_at": 265,
    },
}

# --- classic BPF (linux/bpf_common.h): the only opcodes the filter uses
BPF_LD_W_ABS = 0x20    # BPF_LD | BPF_W | BPF_ABS: A = 32-bit word at offset k
BPF_JEQ_K = 0x15       # BPF_JMP | BPF_JEQ | BPF_K: A == k
BPF_JGE_K = 0x35       # BPF_JMP | BPF_JGE | BPF_K: A >= k (unsigned)
BPF_JSET_K = 0x45      # BPF_JMP | BPF_JSET | BPF_K: A & k != 0
BPF_RET_K = 0x06       # BPF_RET | BPF_K: return k


class _Insn(NamedTuple):
    """One sock_filter; jumps name a label (None: fall through to the next one)."""
    code: int
    k: int
    jt: str | None = None
    jf: str | None = None


def _load(offset: int) -> _Insn:
    return _Insn(BPF_LD_W_ABS, offset)


def _jump(code: int, k: int, jt: str | None = None, jf: str | None = None) -> _Insn:
    return _Insn(code, k, jt, jf)


def _ret(action: int) -> _Insn:
    return _Insn(BPF_RET_K, action)


def _assemble(items: list[_Insn | str]) -> bytes:
    """Resolve labels (the str items) into relative jumps and pack sock_filters."""
    labels: dict[str, int] = {}
    code: list[_Insn] = []
    for item in items:
        if isinstance(item, str):
            labels[item] = len(code)   # the index of the instruction that follows
        else:
            code.append(item)
    packed = []
    for index, insn in enumerate(code):
        jt = _jump_offset(labels, insn.jt, index)
        jf = _jump_offset(labels, insn.jf, index)
        # struct sock_filter { __u16 code; __u8 jt; __u8 jf; __u32 k; }
        packed.append(struct.pack("=HBBI", insn.code, jt, jf, insn.k))
    return b"".join(packed)


def _jump_offset(labels: dict[str, int], label: str | None, index: int) -> int:
    if label is None:
        return 0
    offset = labels[label] - index - 1
    # Classic BPF jumps only forward, by at most 255 instructions.
    if not 0 <= offset <= 255:
        raise ValueError(f"seccomp filter: jump to {label!r} from {index} out of range")
    return offset


def seccomp_program(arch: str | None = None) -> bytes:
    """The container's seccomp filter for ``arch`` (default: this machine's).

    Checks the arch first: a syscall made through another ABI (i386 or ARM
    compat, whose numbers differ) kills the process.  On x86_64 the x32 ABI
    shares the arch value but sets bit 30 of the number, so those are refused
    too, or every rule below could be bypassed with ``nr | 0x40000000``.
    clone3 gets ENOSYS: its flags live in a struct in memory, which seccomp
    cannot read, and glibc falls back to clone, whose flags it can.
    socket and socketpair are allowed only for ALLOWED_SOCKET_FAMILIES (and
    netlink only for ALLOWED_NETLINK_PROTOCOLS).  Their arguments are ints,
    so the kernel reads only the low 32 bits, and so does the filter.
    """
    arch = arch or os.uname().machine
    table = SYSCALL_NUMBERS.get(arch)
    if table is None:
        raise ValueError(f"seccomp filter: unsupported architecture {arch!r} "
                         f"(supported: {', '.join(SYSCALL_NUMBERS)})")
    program: list[_Insn | str] = [
        _load(_ARCH_OFFSET),
        _jump(BPF_JEQ_K, AUDIT_ARCH[arch], jf="kill"),
        _load(_NR_OFFSET),
    ]
    if arch == "x86_64":
        program.append(_jump(BPF_JGE_K, X32_SYSCALL_BIT, jt="eperm"))
    program += [
        _jump(BPF_JEQ_K, table["clone3"], jt="enosys"),
        _jump(BPF_JEQ_K, table["clone"], jt="clone"),
        _jump(BPF_JEQ_K, table["socket"], jt="socket"),
        _jump(BPF_JEQ_K, table["socketpair"], jt="socket"),
    ]
    program += [_jump(BPF_JEQ_K, table[name], jt="eperm")
                for name in DENIED_SYSCALLS if name in table]
    program += [
        _ret(SECCOMP_RET_ALLOW),
        "clone", _load(_ARG0_LOW_OFFSET),
        _jump(BPF_JSET_K, CLONE_NAMESPACE_FLAGS, jt="eperm"),
        _ret(SECCOMP_RET_ALLOW),
        *_socket_rules(),
        "kill", _ret(SECCOMP_RET_KILL_PROCESS),
        "enosys", _ret(SECCOMP_RET_ERRNO | errno.ENOSYS),
        "eperm", _ret(SECCOMP_RET_ERRNO | errno.EPERM),
    ]
    return _assemble(program)


def _socket_rules() -> list[_Insn | str]:
    """socket/socketpair(family, type, protocol): the family must be allowed,
    and a netlink socket's protocol too (see ALLOWED_SOCKET_FAMILIES)."""
    rules: list[_Insn | str] = ["socket", _load(_ARG0_LOW_OFFSET)]
    for family in ALLOWED_SOCKET_FAMILIES:
        if family == socket.AF_NETLINK:
            rules.append(_jump(BPF_JEQ_K, family, jt="netlink"))
        else:
            rules.append(_jump(BPF_JEQ_K, family, jt="allow"))
    rules += [_ret(SECCOMP_RET_ERRNO | errno.EAFNOSUPPORT),
              "netlink", _load(_ARG2_LOW_OFFSET)]
    rules += [_jump(BPF_JEQ_K, protocol, jt="allow") for protocol in ALLOWED_NETLINK_PROTOCOLS]
    rules += [_ret(SECCOMP_RET_ERRNO | errno.EPROTONOSUPPORT),
              "allow", _ret(SECCOMP_RET_ALLOW)]
    return rules


# --- the steps

def _require_single_thread(operation: str) -> None:
    # PR_CAPBSET_DROP, capset, no_new_privs and PR_SET_SECCOMP change the calling
    # thread only: any other thread would keep every privilege.
    count = len(os.listdir("/proc/self/task"))
    if count != 1:
        raise OSError(errno.EINVAL, f"{operation}: the process has {count} threads; "
                      "harden it before any thread starts (privileges are per thread)")


def _failed(operation: str, error: OSError) -> OSError:
    reason = os.strerror(error.errno) if error.errno else str(error)
    return OSError(error.errno, f"{operation} failed: {reason}")


def _rlimit_name(resource_id: int) -> str:
    for name in dir(resource):
        if name.startswith("RLIMIT_") and getattr(resource, name) == resource_id:
            return name
    return f"rlimit {resource_id}"


def apply_rlimits(rlimits: list[tuple[int, int]]) -> None:
    """setrlimit each (resource, value) with soft = hard = value."""
    for resource_id, value in rlimits:
        operation = f"setrlimit({_rlimit_name(resource_id)}, {value})"
        try:
            resource.setrlimit(resource_id, (value, value))
        except OSError as error:
            raise _failed(operation, error) from error
        except ValueError as error:   # how Python reports EPERM/EINVAL here
            raise ValueError(f"{operation} failed: {error}") from error


def _drop_bounding_set() -> None:
    # The bounding set caps what any later execve can grant (file capabilities,
    # setuid root); dropping it needs CAP_SETPCAP, so it comes before the uid switch.
    with open("/proc/sys/kernel/cap_last_cap") as file:
        last_cap = int(file.read())
    for cap in range(last_cap + 1):
        try:
            syscalls.prctl(syscalls.PR_CAPBSET_DROP, cap)
        except OSError as error:
            raise _failed(f"drop capability {cap} from the bounding set", error) from error


def drop_privileges(uid: int, gid: int, keep_groups: bool = False) -> None:
    """Drop every capability, become uid:gid, and set no_new_privs.
    ``keep_groups``: leave the supplementary groups (setgroups is denied in a
    user namespace with a single-id map)."""
    _require_single_thread("drop_privileges")
    if uid == 0:   # uid 0 of a user namespace: execve must never grant it capabilities
        _set_noroot()
    _drop_bounding_set()
    steps = [
        ("clear ambient capabilities", lambda: syscalls.prctl(
            syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL)),
    ]
    if not keep_groups:
        # Supplementary groups first: setgroups needs CAP_SETGID, gone after setresuid.
        steps.append((f"setgroups([{gid}])", lambda: os.setgroups([gid])))
    steps += [
        (f"setresgid({gid})", lambda: os.setresgid(gid, gid, gid)),
        # Leaving uid 0 (real, effective and saved) clears permitted and effective.
        (f"setresuid({uid})", lambda: os.setresuid(uid, uid, uid)),
        ("capset (clear all sets)", syscalls.capset_clear),
        ("set no_new_privs", syscalls.set_no_new_privs),
    ]
    for operation, step in steps:
        try:
            step()
        except OSError as error:
            raise _failed(operation, error) from error
    if syscalls.capget_effective() != 0:
        raise OSError(errno.EPERM, "drop_privileges: capabilities remain in the effective set")


def install_seccomp() -> None:
    """Install seccomp_program() for this machine; no_new_privs must be set."""
    _require_single_thread("install_seccomp")
    # Without CAP_SYS_ADMIN the kernel refuses a filter (EACCES) unless
    # no_new_privs is set, so that a filter cannot confuse a setuid program.
    if syscalls.prctl(syscalls.PR_GET_NO_NEW_PRIVS) != 1:
        raise OSError(errno.EACCES, "install_seccomp: no_new_privs is not set; "
                                    "call drop_privileges() first")
    arch = os.uname().machine
    try:
        syscalls.set_seccomp_filter(seccomp_program(arch))
    except OSError as error:
        hint = "; the kernel needs CONFIG_SECCOMP_FILTER" if error.errno == errno.EINVAL else ""
        raise OSError(error.errno, f"install seccomp filter ({arch}) failed: "
                                   f"{os.strerror(error.errno)}{hint}") from error


def _set_noroot() -> None:
    bits = syscalls.SECBIT_NOROOT | syscalls.SECBIT_NOROOT_LOCKED
    try:
        syscalls.prctl(syscalls.PR_SET_SECUREBITS, bits)
    except OSError as error:
        raise _failed("set SECBIT_NOROOT (locked)", error) from error


def harden(uid: int, gid: int, rlimits: list[tuple[int, int]], keep_groups: bool = False) -> None:
    """The container's last steps before exec: rlimits, privileges, seccomp."""
    apply_rlimits(rlimits)
    drop_privileges(uid, gid, keep_groups)
    install_seccomp()
