"""Network policies: ``none`` (a fresh network namespace with only loopback,
the default) and ``host`` (the host's namespace, shared).

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

Imports: nothing of the project.
"""
from __future__ import annotations

import errno
import os
import socket
import struct

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
