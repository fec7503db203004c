"""Network policies: ``none`` (a fresh network namespace with only loopback,
the default), ``host`` (the host's namespace, shared) and ``bridge`` (root:
a namespace the owner prepared with a veth on sbk-br0, net_bridge.py).

Child side: ``setup_child(policy)`` runs in the container's init right after
it unshared its namespaces.  For ``none`` that is one netlink request that
brings ``lo`` up; no veth, no subprocess.

Why raw rtnetlink here and not pyroute2: importing pyroute2 costs about
250 ms (its package __init__ pulls in NDB, IPDB and conntrack), thirty times
a whole container start, and bringing up ``lo`` is one 32-byte RTM_NEWLINK
message.  pyroute2 is the tool for the policies that need real link work
(veth pairs and a bridge, which need root), and for inspecting links from
tests and ``doctor``.

    host side                      container side (init, after unshare(NEWNET))
    ---------                      ---------------------------------------------
    none: nothing                  RTM_NEWLINK index=1 flags=IFF_UP -> ack
    host: no new namespace         nothing
    bridge: net_bridge.prepare     setns(FD) into the prepared namespace
      makes the namespace, its     (the policy reaches init as "bridge:FD", FD
      veth, address and route,     one of pass_fds): eth0, its address, route
      before the spawn             and lo are up before the workload exists

Why the owner prepares the namespace and init joins it, rather than init
making one and the owner configuring it afterwards: the workload must not
run a single instruction before its network is what the spec says, and
the owner only hears from init when the workload is already running.

Imports: syscalls (setns) only.
"""
from __future__ import annotations

import errno
import os
import socket
import struct

from . import syscalls as sc

NETLINK_ROUTE = 0
RTM_NEWLINK = 16
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 2
IFF_UP = 0x1
LOOPBACK_INDEX = 1  # the kernel creates lo first in every network namespace


def needs_new_namespace(policy: str) -> bool:
    return policy != "host"


def setup_child(policy: str) -> None:
    if policy == "none":
        set_link_up(LOOPBACK_INDEX)
    elif policy.startswith("bridge:"):
        sc.setns(_namespace_fd(policy), sc.CLONE_NEWNET)


def bridge_policy(netns_fd: int) -> str:
    """What the launcher is told for a bridge: the prepared namespace's fd."""
    return f"bridge:{netns_fd}"


def _namespace_fd(policy: str) -> int:
    try:
        return int(policy.partition(":")[2])
    except ValueError:
        raise OSError(errno.EINVAL, f"network policy {policy!r}: expected bridge:FD") from None


def set_link_up(index: int) -> None:
    """Bring a link up by index with one RTM_NEWLINK request, and check the ack."""
    # struct ifinfomsg: family, pad, type, index, flags, change
    ifinfo = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP)
    header = struct.pack("=IHHII", 16 + len(ifinfo), RTM_NEWLINK,
                         NLM_F_REQUEST | NLM_F_ACK, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as nl:
        nl.sendto(header + ifinfo, (0, 0))
        reply = nl.recv(4096)
    _check_ack(reply, index)


def _check_ack(reply: bytes, index: int) -> None:
    _length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", reply)
    if kind != NLMSG_ERROR:
        raise OSError(errno.EPROTO, f"RTM_NEWLINK for link {index}: unexpected reply type {kind}")
    (error,) = struct.unpack_from("=i", reply, 16)
    if error:
        raise OSError(-error, f"RTM_NEWLINK for link {index} failed: {os.strerror(-error)}")
