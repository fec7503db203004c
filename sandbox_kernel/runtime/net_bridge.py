"""``--net bridge`` (root): a host bridge, a veth per container, NAT out of one uplink.

    container netns                 host
    ---------------                 ----
    eth0 10.N.0.k/P  <-- veth -->   sbk<tag>h  (port of sbk-br0, isolated: containers
    default via 10.N.0.1                        never reach each other)
                                    sbk-br0 10.N.0.1/P  --forward (net_filter)-->  UPLINK
                                    dnsmasq on 10.N.0.1:<port> per container (net_resolver)

``attach`` (before the spawn) makes the container's network namespace in a
thread of the owner (unshare(CLONE_NEWNET) affects that thread only), the
veth pair with its peer inside, and configures eth0, lo and the route from a
thread that entered it; init joins the namespace by the fd (network.py), so
the workload never runs before its network is ready.  The owner keeps its
fd until ``detach``: the namespace, and the veth with its counters, outlive
the container's processes until the container is destroyed (its figures
are read after it ended), and go with the owner if it dies.  ``detach`` (destroy) stops the resolver, removes
the filter's pieces, the veth if still there, and the bridge, table and
forwarding settings when it was the last container.

Configuration, read when a bridge container starts:

    SANDBOX_KERNEL_NET_UPLINK  the interface NAT goes out of, the only one forwarded to
                               (default: the default route's interface)
    SANDBOX_KERNEL_NET_POOL    an IPv4 CIDR of /16 to /28 for the bridge and its containers
                               (default: the first 10.N.0.0/16, N from 200, that overlaps no
                               host route); fixed while the bridge exists
    SANDBOX_KERNEL_NET_DNS     the upstream resolver the containers' dnsmasq asks
                               (default: the first nameserver of /etc/resolv.conf)

Host settings changed, and given back: conf/<uplink>/forwarding is set to 1
(IPv4 forwarding per interface; the global ip_forward is not touched) and its
old value restored when the bridge goes; IPv6 is off on the bridge, the host
veths and eth0 (the filter is IPv4).  What is in use is written in RUN_DIR
(one JSON record per container, one for the bridge) under a lock, so that
several owners share the bridge and ``reap_stale`` can undo what a dead
owner left.  pyroute2 (about 100-250 ms to import) is imported inside the
functions: only a bridge pays for it.

Imports: net_filter, net_resolver, net_stats, net_records, syscalls; pyroute2 inside functions.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import threading
from dataclasses import dataclass

from . import net_filter, net_resolver, net_records
from . import syscalls as sc
from .net_records import BRIDGE, NetError
from .net_stats import Lookup, NetStats, Refusal, refusals

log = logging.getLogger(__name__)

__all__ = ["attach", "detach", "stats", "reap_stale", "Attachment", "NetError", "NetStats",
           "Refusal", "Lookup", "BRIDGE"]


@dataclass
class Attachment:
    """One container on the bridge, as its owner holds it."""
    name: str
    tag: str
    host_ifname: str
    address: str
    gateway: str
    netns_fd: int | None
    resolver: net_resolver.Resolver | None
    allow: tuple[str, ...]


def attach(name: str, allow: tuple[str, ...], rate: int | None, orphaned=None) -> Attachment:
    """_attach in a thread of its own: pyroute2's IPRoute runs an asyncio loop
    of its own, which it cannot in a thread whose loop is running (ipykernel's
    main and control threads: %%container cells, a kernel's shutdown)."""
    return _in_thread(lambda box: box.append(_attach(name, allow, rate, orphaned)))


def _attach(name: str, allow: tuple[str, ...], rate: int | None, orphaned=None) -> Attachment:
    """Everything the container's network needs, before its spawn.
    ``orphaned(name)`` (cleanup.orphaned): dead owners' records are undone
    first, so that a long-lived owner never finds the pool full of them."""
    if os.geteuid() != 0:
        raise NetError("--net bridge needs root (rootless: the pasta network, where installed)")
    tag = net_records.tag_of(name)
    with net_records.locked():
        if orphaned is not None:
            _reap_orphans(orphaned)
        bridge = _ensure_bridge()
        address = net_records.free_address(bridge)
        net_records.write_container(name, {"tag": tag, "address": address, "resolver_pid": None})
    attachment = Attachment(name, tag, f"sbk{tag}h", address, bridge["gateway"], None, None, allow)
    try:
        pending = _guard(attachment, bridge)   # resolver and rules on their way meanwhile
        try:
            _plumb(attachment, bridge, rate)
        except BaseException:
            pending.settle()   # detach removes what it made
            raise
        pending.wait()
        net_resolver.ready(attachment.resolver)
    except BaseException:
        detach(attachment)
        raise
    return attachment


def detach(attachment: Attachment) -> None:
    """_detach in a thread of its own (see attach)."""
    _in_thread(lambda box: box.append(_detach(attachment)))


def _detach(attachment: Attachment) -> None:
    """Undo attach, whatever part of it was done; idempotent."""
    if attachment.netns_fd is not None:
        os.close(attachment.netns_fd)
        attachment.netns_fd = None
    if attachment.resolver is not None:
        net_resolver.stop(attachment.resolver)
        attachment.resolver = None
    with net_records.locked():
        _undo(attachment.name, attachment.tag, attachment.address)
        _remove_bridge_if_unused()


def resolv_conf_mount(attachment: Attachment, state_dir: str):
    """A read-only /etc/resolv.conf for the container naming its gateway, where
    its resolver answers (any server it names is sent there too: net_filter)."""
    from .spec import Mount
    path = os.path.join(state_dir, "resolv.conf")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644), "w") as handle:
        handle.write(f"nameserver {attachment.gateway}\noptions ndots:0\n")
    return Mount(path, "/etc/resolv.conf", read_only=True, on_path=False)


def stats(attachment: Attachment) -> NetStats:
    """The container's bytes (its veth's counters, seen from its side) and refusals."""
    rx, tx = _counters(attachment.host_ifname)
    resolver = attachment.resolver
    looked = net_resolver.lookups(resolver.log_path, attachment.allow) if resolver else []
    answers = net_resolver.answers(resolver.log_path) if resolver else {}
    return NetStats(rx_bytes=rx, tx_bytes=tx, lookups=[Lookup(name, ok) for name, ok in looked],
                    refused=refusals(net_filter.refused(attachment.tag), answers))


def reap_stale(orphaned) -> list[str]:
    """_reap_stale in a thread of its own (see attach)."""
    return _in_thread(lambda box: box.append(_reap_stale(orphaned)))


def _reap_stale(orphaned) -> list[str]:
    """Undo what owners that died without destroying left: their records'
    resolvers, filter pieces and veths; then the bridge if nobody uses it.
    ``orphaned(name)``: whether a container's owner is gone (cleanup.orphaned)."""
    if not os.path.isdir(net_records.RUN_DIR):
        return []
    with net_records.locked():
        removed = _reap_orphans(orphaned)
        if _remove_bridge_if_unused():
            removed.append(f"net {BRIDGE}")
    return removed


def _reap_orphans(orphaned) -> list[str]:
    """Dead owners' containers: resolver, filter pieces, veth, record (under the lock)."""
    removed = []
    for name, record in net_records.orphaned_containers(orphaned):
        net_resolver.kill_if_ours(record.get("resolver_pid") or 0, f"{name}.dns.log")
        _undo(name, record["tag"], record.get("address"))
        removed.append(f"net {name}")
    return removed


# -- the pieces -----------------------------------------------------------------------

def _ensure_bridge() -> dict:
    """The bridge's record; the bridge, its address, the table and forwarding
    made first if this is the first container."""
    bridge = net_records.read_bridge()
    if bridge is not None and _link_index(BRIDGE) is not None:
        return bridge
    config = net_records.configure(_host_routes(), _default_interface())
    try:
        _make_bridge(config)
    except BaseException:
        _remove_bridge_if_unused()   # half a bridge is no bridge: the next start makes it whole
        raise
    return config


def _make_bridge(config: dict) -> None:
    from pyroute2 import IPRoute
    with IPRoute() as ip:
        if not ip.link_lookup(ifname=BRIDGE):
            ip.link("add", ifname=BRIDGE, kind="bridge")
        index = ip.link_lookup(ifname=BRIDGE)[0]
        _write_sysctl(f"/proc/sys/net/ipv6/conf/{BRIDGE}/disable_ipv6", "1")
        ip.flush_addr(index=index)
        ip.addr("add", index=index, address=config["gateway"], prefixlen=config["prefixlen"])
        ip.link("set", index=index, state="up")
    config["uplink_forwarding"] = _read_sysctl(_forwarding(config["uplink"]))
    net_records.write_bridge(config)   # before changing the host: reap_stale can give it back
    _write_sysctl(_forwarding(BRIDGE), "1")
    _write_sysctl(_forwarding(config["uplink"]), "1")
    net_filter.install(net_filter.base_rules(config["pool"], config["uplink"]))


def _plumb(attachment: Attachment, bridge: dict, rate: int | None) -> None:
    """The namespace, the veth pair, eth0 configured inside, the host side on the bridge."""
    from pyroute2 import IPRoute
    attachment.netns_fd = _new_namespace()
    peer = f"sbk{attachment.tag}c"
    with IPRoute() as ip:
        ip.link("add", ifname=attachment.host_ifname, kind="veth",
                peer={"ifname": peer, "net_ns_fd": attachment.netns_fd})
        host = ip.link_lookup(ifname=attachment.host_ifname)[0]
        _write_sysctl(f"/proc/sys/net/ipv6/conf/{attachment.host_ifname}/disable_ipv6", "1")
        ip.link("set", index=host, master=ip.link_lookup(ifname=BRIDGE)[0])
        ip.brport("set", index=host, isolated=1)   # containers never reach each other
        ip.link("set", index=host, state="up")
        if rate is not None:
            _shape(ip, host, rate)
    _in_namespace(attachment.netns_fd, _configure_inside, peer, attachment.address,
                  bridge["prefixlen"], bridge["gateway"], rate)


def _guard(attachment: Attachment, bridge: dict) -> net_filter.Pending:
    """Start the container's resolver, and the nft command that installs its
    filter pieces (they name its veth and address, which need not exist yet)."""
    log_path = net_records.dns_log(attachment.name)
    attachment.resolver = net_resolver.start(
        attachment.name, bridge["gateway"], attachment.allow, bridge["dns"],
        f"4#ip#{net_filter.TABLE}#a_{attachment.tag}", log_path)
    with net_records.locked():
        net_records.write_container(attachment.name, {
            "tag": attachment.tag, "address": attachment.address,
            "resolver_pid": attachment.resolver.pid})
    return net_filter.start_install(net_filter.container_rules(
        attachment.tag, attachment.address, bridge["uplink"], attachment.allow == ("*",),
        attachment.resolver.address, attachment.host_ifname))


def _undo(name: str, tag: str, address: str | None) -> None:
    """Remove one container's filter pieces, veth and record (under the lock)."""
    removal = net_filter.Removal(tag, address, f"sbk{tag}h")   # nft works while the veth goes
    _delete_veth(name, tag)
    for failure in removal.finish():
        log.warning("container %s: %s", name, failure)
    net_records.remove_container(name)


def _delete_veth(name: str, tag: str) -> None:
    index = _link_index(f"sbk{tag}h")
    if index is not None:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError
        with IPRoute() as ip:
            try:
                ip.link("del", index=index)
            except NetlinkError as error:   # ENODEV: its namespace went meanwhile
                if error.code != 19:
                    log.warning("container %s: deleting veth sbk%sh: %s", name, tag, error)


def _remove_bridge_if_unused() -> bool:
    """The bridge, the table and the forwarding setting go with the last container."""
    if net_records.container_names():
        return False
    bridge = net_records.read_bridge()
    index = _link_index(BRIDGE)
    if bridge is None and index is None:
        return False
    net_filter.remove_table()
    if bridge is not None and bridge.get("uplink_forwarding") is not None:
        _write_sysctl(_forwarding(bridge["uplink"]), bridge["uplink_forwarding"], missing_ok=True)
    if index is not None:
        from pyroute2 import IPRoute
        with IPRoute() as ip:
            ip.link("del", index=index)
    net_records.remove_bridge()
    return True


def _shape(ip, index: int, rate: int) -> None:
    """tbf at ``rate`` bits/s on one side's egress.  The host side's shapes what
    the container receives; what it sends is shaped on eth0's egress inside its
    namespace (_configure_inside): an ingress policer on the host side would
    need cls_u32 or matchall and act_police, which kernels leave out (this
    CI's has neither), and the workload, without CAP_NET_ADMIN, cannot touch
    either qdisc."""
    burst = max(rate // 8 // 100, 4 * 1514)   # 10 ms of traffic, at least four full frames
    ip.tc("add", "tbf", index, handle="1:", rate=f"{rate}bit", burst=burst, latency="50ms")


def _configure_inside(peer: str, address: str, prefixlen: int, gateway: str,
                      rate: int | None) -> None:
    from pyroute2 import IPRoute
    with IPRoute() as ip:
        index = ip.link_lookup(ifname=peer)[0]
        ip.link("set", index=index, ifname="eth0")
        if rate is not None:
            _shape(ip, index, rate)
        _write_sysctl("/proc/sys/net/ipv6/conf/eth0/disable_ipv6", "1")
        ip.addr("add", index=index, address=address, prefixlen=prefixlen)
        ip.link("set", index=index, state="up")
        ip.link("set", index=1, state="up")   # lo
        ip.route("add", dst="0.0.0.0/0", gateway=gateway)


def _new_namespace() -> int:
    """A fresh network namespace, held by the returned fd."""
    def make(box: list):
        sc.unshare(sc.CLONE_NEWNET)
        box.append(os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC))
    return _in_thread(make)


def _in_namespace(netns_fd: int, function, *args) -> None:
    def enter(box: list):
        sc.setns(netns_fd, sc.CLONE_NEWNET)
        box.append(function(*args))
    _in_thread(enter)


def _in_thread(function):
    """Run ``function(box)`` in a thread of its own (namespace changes stay
    there) and return what it put in the box, or raise what it raised."""
    box, errors = [], []

    def run():
        try:
            function(box)
        except BaseException as error:   # handed to the caller's thread below
            errors.append(error)
    thread = threading.Thread(target=run, name="sbk-netns")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return box[0]


def _counters(ifname: str) -> tuple[int, int]:
    """(received, sent) by the container: the host side's tx and rx."""
    figures = []
    for kind in ("tx_bytes", "rx_bytes"):
        try:
            with open(f"/sys/class/net/{ifname}/statistics/{kind}") as handle:
                figures.append(int(handle.read()))
        except (OSError, ValueError):
            figures.append(0)
    return figures[0], figures[1]


def _link_index(ifname: str) -> int | None:
    try:
        with open(f"/sys/class/net/{ifname}/ifindex") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return None


def _host_routes() -> list[ipaddress.IPv4Network]:
    from pyroute2 import IPRoute
    with IPRoute() as ip:
        routes = ip.route("dump", family=2)
    found = []
    for route in routes:
        dst = route.get("dst") or route.get_attr("RTA_DST")
        if dst and route["dst_len"]:
            found.append(ipaddress.ip_network(f"{dst}/{route['dst_len']}", strict=False))
    return found


def _default_interface() -> str | None:
    from pyroute2 import IPRoute
    with IPRoute() as ip:
        for route in ip.route("dump", family=2):
            if route["dst_len"] == 0 and route.get_attr("RTA_OIF"):
                return ip.link("get", index=route.get_attr("RTA_OIF"))[0].get_attr("IFLA_IFNAME")
    return None


def _forwarding(ifname: str) -> str:
    return f"/proc/sys/net/ipv4/conf/{ifname}/forwarding"


def _read_sysctl(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _write_sysctl(path: str, value: str, missing_ok: bool = False) -> None:
    try:
        with open(path, "w") as handle:
            handle.write(value)
    except FileNotFoundError:
        if not missing_ok:
            raise NetError(f"writing {value} to {path}: no such setting") from None
    except OSError as error:
        raise NetError(f"writing {value} to {path}: {error.strerror}") from None
