"""The seccomp filter, run through a tiny classic-BPF interpreter (no root, no kernel).

The interpreter knows only the opcodes security.py emits and checks what the
kernel's verifier would (forward jumps inside the program, aligned loads inside
seccomp_data, a RET at the end), so a filter it accepts is one the kernel accepts.
"""
from __future__ import annotations

import errno
import os
import re
import socket
import struct

import pytest

from sandbox_kernel.runtime import security, syscalls

ARCHES = ("x86_64", "aarch64")
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_ARM = 0x40000028
SIGCHLD = 17
ALLOW = security.SECCOMP_RET_ALLOW
KILL = security.SECCOMP_RET_KILL_PROCESS
EPERM = security.SECCOMP_RET_ERRNO | errno.EPERM
ENOSYS = security.SECCOMP_RET_ERRNO | errno.ENOSYS
EAFNOSUPPORT = security.SECCOMP_RET_ERRNO | errno.EAFNOSUPPORT
EPROTONOSUPPORT = security.SECCOMP_RET_ERRNO | errno.EPROTONOSUPPORT

# Calls every program makes; note aarch64's openat (56) is x86_64's clone.
ORDINARY = {
    "x86_64": {"read": 0, "write": 1, "openat": 257, "execve": 59, "fork": 57,
               "vfork": 58, "getpid": 39, "exit_group": 231, "mmap": 9},
    "aarch64": {"read": 63, "write": 64, "openat": 56, "execve": 221,
                "getpid": 172, "exit_group": 94, "mmap": 222},
}

# What glibc passes to clone for fork() and pthread_create().
FORK_FLAGS = 0x01200000 | SIGCHLD   # CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID
THREAD_FLAGS = 0x003D0F00           # CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|
                                    # PARENT_SETTID|CHILD_CLEARTID
NAMESPACE_FLAGS = ("CLONE_NEWNS", "CLONE_NEWUTS", "CLONE_NEWIPC", "CLONE_NEWUSER",
                   "CLONE_NEWPID", "CLONE_NEWNET", "CLONE_NEWCGROUP")

SECCOMP_DATA_SIZE = 64


def seccomp_data(nr: int, arch: int, args: tuple[int, ...] = ()) -> bytes:
    """struct seccomp_data { int nr; u32 arch; u64 instruction_pointer; u64 args[6]; }"""
    args = tuple(args) + (0,) * (6 - len(args))
    return struct.pack("=iIQ6Q", nr, arch, 0x400000, *args)


def run_filter(program: bytes, data: bytes) -> int:
    """Run a classic-BPF seccomp program; return its action."""
    assert len(program) % 8 == 0 and 0 < len(program) // 8 <= 4096
    insns = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    assert insns[-1][0] == security.BPF_RET_K, "a filter must end in RET"
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == security.BPF_RET_K:
            return k
        if code == security.BPF_LD_W_ABS:
            assert k % 4 == 0 and k + 4 <= SECCOMP_DATA_SIZE, f"bad load at {k}"
            acc = struct.unpack_from("=I", data, k)[0]
            pc += 1
            continue
        if code == security.BPF_JEQ_K:
            taken = acc == k
        elif code == security.BPF_JGE_K:
            taken = acc >= k
        elif code == security.BPF_JSET_K:
            taken = bool(acc & k)
        else:
            raise AssertionError(f"opcode {code:#x} at {pc} not expected")
        pc += 1 + (jt if taken else jf)
        assert pc < len(insns), "jump past the end"


def action(arch: str, nr: int, args: tuple[int, ...] = (), audit_arch: int | None = None) -> int:
    audit = security.AUDIT_ARCH[arch] if audit_arch is None else audit_arch
    return run_filter(security.seccomp_program(arch), seccomp_data(nr, audit, args))


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("name", security.DENIED_SYSCALLS)
def test_denied_syscall_gets_eperm(arch, name):
    assert action(arch, security.SYSCALL_NUMBERS[arch][name]) == EPERM


@pytest.mark.parametrize("arch", ARCHES)
def test_every_denied_name_has_a_number(arch):
    # Both arches have all of them; a typo in the table must not silently allow one.
    assert set(security.DENIED_SYSCALLS) <= set(security.SYSCALL_NUMBERS[arch])
    numbers = list(security.SYSCALL_NUMBERS[arch].values())
    assert len(numbers) == len(set(numbers)), "two names share a number"


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("name", ORDINARY["aarch64"].keys() | ORDINARY["x86_64"].keys())
def test_ordinary_syscalls_allowed(arch, name):
    if name not in ORDINARY[arch]:
        pytest.skip(f"{arch} has no {name}")
    assert action(arch, ORDINARY[arch][name]) == ALLOW


@pytest.mark.parametrize("arch", ARCHES)
def test_everything_else_allowed(arch):
    table = security.SYSCALL_NUMBERS[arch]
    special = {table[name] for name in security.DENIED_SYSCALLS}
    special |= {table["clone"], table["clone3"], table["socket"], table["socketpair"]}
    for nr in set(range(600)) - special:
        assert action(arch, nr) == ALLOW, f"{arch} syscall {nr}"


@pytest.mark.parametrize("arch", ARCHES)
def test_clone3_gets_enosys_so_glibc_falls_back_to_clone(arch):
    assert action(arch, security.SYSCALL_NUMBERS[arch]["clone3"]) == ENOSYS


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("flags", [SIGCHLD, FORK_FLAGS, THREAD_FLAGS, 0x00004111,
                                   0xFFFFFFFF00000000 | SIGCHLD],
                         ids=["sigchld", "fork", "thread", "vfork", "high-bits"])
def test_clone_without_namespace_flags_allowed(arch, flags):
    # The kernel ignores the high 32 bits of clone's flags, so may the filter.
    assert action(arch, security.SYSCALL_NUMBERS[arch]["clone"], (flags, 0, 0, 0, 0)) == ALLOW


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("flag", NAMESPACE_FLAGS)
def test_clone_with_a_namespace_flag_gets_eperm(arch, flag):
    clone = security.SYSCALL_NUMBERS[arch]["clone"]
    flags = getattr(syscalls, flag)
    assert action(arch, clone, (flags | SIGCHLD,)) == EPERM
    assert action(arch, clone, (flags | FORK_FLAGS,)) == EPERM
    assert action(arch, clone, (flags | THREAD_FLAGS,)) == EPERM


@pytest.mark.parametrize("arch", ARCHES)
def test_clone_newuser_gets_eperm(arch):
    clone = security.SYSCALL_NUMBERS[arch]["clone"]
    assert action(arch, clone, (syscalls.CLONE_NEWUSER | SIGCHLD,)) == EPERM


SOCKET_CALLS = ("socket", "socketpair")
SOCK_TYPES = (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_RAW,
              socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
# linux/socket.h: every family the kernel knows, AF_UNSPEC (0) to AF_MCTP (45),
# and a few past the end; AF_VSOCK is 40, AF_PACKET 17, AF_ALG 38, AF_XDP 44.
OTHER_FAMILIES = sorted(set(range(64)) - set(security.ALLOWED_SOCKET_FAMILIES))


def socket_action(arch: str, call: str, family: int, kind: int = socket.SOCK_STREAM,
                  protocol: int = 0) -> int:
    return action(arch, security.SYSCALL_NUMBERS[arch][call], (family, kind, protocol, 0))


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("call", SOCKET_CALLS)
@pytest.mark.parametrize("family", [socket.AF_UNIX, socket.AF_INET, socket.AF_INET6],
                         ids=["unix", "inet", "inet6"])
def test_needed_socket_families_allowed(arch, call, family):
    for kind in SOCK_TYPES:
        for protocol in (0, socket.IPPROTO_TCP, socket.IPPROTO_UDP, socket.IPPROTO_ICMP):
            assert socket_action(arch, call, family, kind, protocol) == ALLOW


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("call", SOCKET_CALLS)
@pytest.mark.parametrize("family", OTHER_FAMILIES)
def test_other_socket_families_get_eafnosupport(arch, call, family):
    for kind in SOCK_TYPES:
        assert socket_action(arch, call, family, kind) == EAFNOSUPPORT, (call, family, kind)


@pytest.mark.parametrize("arch", ARCHES)
def test_vsock_and_packet_refused_whatever_the_high_bits(arch):
    # The kernel reads an int: the high 32 bits of the register do not count,
    # neither to smuggle a refused family through nor to refuse an allowed one.
    vsock, packet = getattr(socket, "AF_VSOCK", 40), getattr(socket, "AF_PACKET", 17)
    for high in (0, 1 << 32, 0xFFFFFFFF << 32):
        assert socket_action(arch, "socket", high | vsock) == EAFNOSUPPORT
        assert socket_action(arch, "socket", high | packet, socket.SOCK_RAW) == EAFNOSUPPORT
        assert socket_action(arch, "socket", high | socket.AF_UNIX) == ALLOW
    for family in (0xFFFFFFFF, 0x80000000 | socket.AF_INET, 0x10000 | socket.AF_UNIX):
        assert socket_action(arch, "socket", family) == EAFNOSUPPORT


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("call", SOCKET_CALLS)
def test_netlink_only_for_route_and_sock_diag(arch, call):
    for protocol in security.ALLOWED_NETLINK_PROTOCOLS:
        for high in (0, 1 << 32):
            assert socket_action(arch, call, socket.AF_NETLINK, socket.SOCK_RAW,
                                 high | protocol) == ALLOW
    # 15 KOBJECT_UEVENT (the host's device events), 9 AUDIT, 16 GENERIC,
    # 12 NETFILTER, 6 XFRM, and every other number up to past MAX_LINKS (32)
    refused = set(range(40)) - set(security.ALLOWED_NETLINK_PROTOCOLS)
    for protocol in sorted(refused) + [0xFFFFFFFF]:
        assert socket_action(arch, call, socket.AF_NETLINK, socket.SOCK_RAW,
                             protocol) == EPROTONOSUPPORT, protocol


@pytest.mark.parametrize("arch, foreign", [
    ("x86_64", AUDIT_ARCH_I386), ("x86_64", security.AUDIT_ARCH["aarch64"]),
    ("aarch64", AUDIT_ARCH_ARM), ("aarch64", security.AUDIT_ARCH["x86_64"]),
])
def test_foreign_arch_killed(arch, foreign):
    # Compat calls are numbered differently (i386's mount is 21, x86_64's is 165):
    # they are killed before any number is looked at.
    for nr in (0, 1, 11, 21, 165, 56, 435):
        assert action(arch, nr, audit_arch=foreign) == KILL


@pytest.mark.parametrize("nr", [0, 1, 39, 59, 101, 165, 272, 512, 547, 0x3FFFFFFF])
def test_x32_syscalls_refused_on_x86_64(nr):
    # x32 shares AUDIT_ARCH_X86_64; only bit 30 of the number tells it apart.
    assert action("x86_64", security.X32_SYSCALL_BIT | nr) == EPERM


def test_unknown_arch_refused():
    with pytest.raises(ValueError, match="riscv64"):
        security.seccomp_program("riscv64")


@pytest.mark.parametrize("arch", ARCHES)
def test_program_is_short_and_deterministic(arch):
    program = security.seccomp_program(arch)
    assert len(program) // 8 < 64
    assert program == security.seccomp_program(arch)


def _header_numbers(path: str) -> dict[str, int]:
    with open(path) as file:
        text = file.read()
    found = re.findall(r"#define __NR(?:3264)?_(\w+)\s+(\d+)\b", text)
    return {name: int(number) for name, number in found}


@pytest.mark.parametrize("arch, header", [
    ("x86_64", "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
    ("aarch64", "/usr/include/asm-generic/unistd.h"),
])
def test_numbers_match_installed_kernel_headers(arch, header):
    if not os.path.exists(header):
        pytest.skip(f"{header} not installed (linux-libc-dev)")
    known = _header_numbers(header)
    # Calls newer than the headers (open_tree_attr: Linux 6.15) are left out.
    checked = {name: nr for name, nr in security.SYSCALL_NUMBERS[arch].items() if name in known}
    assert checked == {name: known[name] for name in checked}
    assert len(checked) >= len(security.SYSCALL_NUMBERS[arch]) - 1
