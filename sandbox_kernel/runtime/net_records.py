"""What ``--net bridge`` has in use on this machine, on disk: RUN_DIR.

    RUN_DIR/lock             flock: one owner at a time changes the bridge, the pool, the table
    RUN_DIR/bridge.json      the bridge's pool, gateway, uplink, upstream DNS, and the uplink's
                             forwarding setting before we changed it (given back when it goes)
    RUN_DIR/<name>.json      one container: its tag, address and resolver pid
    RUN_DIR/<name>.dns.log   its resolver's log (lookups)

Containers are named sbk-<owner pid>-<hex> (container.py): a record whose
owner is dead is what ``net_bridge.reap_stale`` undoes.  RUN_DIR is root's,
mode 0700: nobody else can plant a record.

Imports: nothing of the project (cleanup imports net_bridge, which imports this:
who is orphaned is cleanup's to say, and comes in as a function).
"""
from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re

RUN_DIR = "/run/sandbox-kernel-net"
BRIDGE = "sbk-br0"
DEFAULT_POOLS = [f"10.{n}.0.0/16" for n in range(200, 256)]
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


class NetError(OSError):
    """A bridge network that cannot be made as asked: one line saying why."""


def tag_of(name: str) -> str:
    """The container name's random hex part: 8 characters, for link and nft names."""
    tag = name.rsplit("-", 1)[-1]
    if not re.fullmatch(r"[0-9a-f]{8}", tag):
        raise NetError(f"container name {name!r}: expected sbk-<pid>-<8 hex digits> for --net bridge")
    return tag


@contextlib.contextmanager
def locked():
    os.makedirs(RUN_DIR, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(RUN_DIR, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def configure(host_routes, default_interface: str | None) -> dict:
    """The bridge's settings from the environment (net_bridge's docstring)."""
    uplink = os.environ.get("SANDBOX_KERNEL_NET_UPLINK") or default_interface
    if not uplink or not _IFNAME.match(uplink) or not os.path.exists(f"/sys/class/net/{uplink}"):
        raise NetError(f"--net bridge: uplink {uplink!r} is not an interface of this host "
                       "(set SANDBOX_KERNEL_NET_UPLINK to one)")
    pool = _pool(os.environ.get("SANDBOX_KERNEL_NET_POOL"), host_routes)
    dns = os.environ.get("SANDBOX_KERNEL_NET_DNS") or _resolv_conf_nameserver()
    try:
        ipaddress.IPv4Address(dns)
    except ValueError:
        raise NetError(f"--net bridge: upstream DNS {dns!r} is not an IPv4 address "
                       "(set SANDBOX_KERNEL_NET_DNS to one)") from None
    return {"pool": str(pool), "gateway": str(pool[1]), "prefixlen": pool.prefixlen,
            "uplink": uplink, "dns": dns}


def _pool(text: str | None, host_routes) -> ipaddress.IPv4Network:
    if text:
        try:
            pool = ipaddress.IPv4Network(text)
        except ValueError:
            pool = None
        if pool is None or not 16 <= pool.prefixlen <= 28 or not pool.is_private:
            raise NetError(f"SANDBOX_KERNEL_NET_POOL={text!r}: expected a private IPv4 CIDR "
                           "from /16 to /28, e.g. 10.231.0.0/24")
        if any(pool.overlaps(route) for route in host_routes):
            raise NetError(f"SANDBOX_KERNEL_NET_POOL={text}: overlaps a route of this host")
        return pool
    for candidate in map(ipaddress.IPv4Network, DEFAULT_POOLS):
        if not any(candidate.overlaps(route) for route in host_routes):
            return candidate
    raise NetError("--net bridge: every 10.N.0.0/16 (N 200-255) overlaps a host route; "
                   "set SANDBOX_KERNEL_NET_POOL")


def _resolv_conf_nameserver() -> str | None:
    try:
        with open("/etc/resolv.conf") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) >= 2 and fields[0] == "nameserver":
                    return fields[1]
    except OSError:
        pass
    return None


def free_address(bridge: dict) -> str:
    """The first address of the pool neither the gateway nor a container's."""
    taken = {bridge["gateway"]} | {record.get("address") for _, record in _containers()}
    for host in ipaddress.IPv4Network(bridge["pool"]).hosts():
        if str(host) not in taken:
            return str(host)
    raise NetError(f"--net bridge: the pool {bridge['pool']} is full ({len(taken) - 1} containers)")


def read_bridge() -> dict | None:
    return _read(os.path.join(RUN_DIR, "bridge.json"))


def write_bridge(config: dict) -> None:
    _write(os.path.join(RUN_DIR, "bridge.json"), config)


def remove_bridge() -> None:
    _remove(os.path.join(RUN_DIR, "bridge.json"))


def write_container(name: str, record: dict) -> None:
    _write(os.path.join(RUN_DIR, f"{name}.json"), record)


def remove_container(name: str) -> None:
    _remove(os.path.join(RUN_DIR, f"{name}.json"))
    _remove(dns_log(name))


def dns_log(name: str) -> str:
    return os.path.join(RUN_DIR, f"{name}.dns.log")


def container_names() -> list[str]:
    return [name for name, _ in _containers()]


def orphaned_containers(orphaned) -> list[tuple[str, dict]]:
    """Records whose owner process is gone (``orphaned(name)``: cleanup.orphaned)."""
    return [(name, record) for name, record in _containers() if orphaned(name)]


def _containers() -> list[tuple[str, dict]]:
    try:
        names = sorted(os.listdir(RUN_DIR))
    except FileNotFoundError:
        return []
    found = []
    for entry in names:
        if entry.startswith("sbk-") and entry.endswith(".json"):
            record = _read(os.path.join(RUN_DIR, entry))
            if isinstance(record, dict) and "tag" in record:
                found.append((entry[:-5], record))
    return found


def _read(path: str):
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise NetError(f"reading {path}: {error}") from None


def _write(path: str, data: dict) -> None:
    temporary = path + ".tmp"
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "w") as handle:
        json.dump(data, handle)
    os.replace(temporary, path)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
