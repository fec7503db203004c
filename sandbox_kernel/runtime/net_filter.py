"""nftables for ``--net bridge``: one table of our own, ``ip sandbox_kernel``.

    forward    from sbk-br0: ip saddr vmap @by_source -> the container's chain; unknown source: drop
               to sbk-br0: replies (ct established,related) only
    c_<id>     replies accept; not out of the uplink -> refuse; ip daddr @a_<id> accept
               ("*": accept); else refuse
    refuse_<id> tcp/udp: add (daddr . proto . port) to @r_<id> (a counter per element); others
               to @o_<id>; drop.  These sets are the refusals NetStats shows.
    prerouting (nat) from sbk-br0, udp/tcp port 53: ip saddr vmap @dns_by_source -> d_<id>:
               dnat to the container's own dnsmasq (gateway:port): a container asks its resolver
               whatever server its resolv.conf names, and no other.
    input      from sbk-br0: only what was DNATed (its DNS); the host's services stay closed
    postrouting (nat) ip saddr POOL oifname UPLINK masquerade: NAT out of the uplink only

and ``bridge sandbox_kernel``, on the frames a veth brings to the bridge: iifname vmap @ports
-> p_<id>: IPv4 from the container's own address and ARP for it pass, anything else is
dropped.  The kernel already refuses a non-local source to a process without
CAP_NET_ADMIN (IP_FREEBIND binds one, and the route lookup then fails), and the
workload has no capabilities: this holds even if some day one had.

@a_<id> is filled by the container's dnsmasq (--nftset, net_resolver.py) with the addresses
of the allowed names and of their CNAME chains; elements expire after ALLOW_TIMEOUT (dnsmasq
2.90 adds them without the record's TTL, so the set's own timeout stands for it; conntrack
keeps an accepted connection going past it).

Each container's pieces (chains, sets, map elements) are named by ``tag`` (the container
name's hex part) and go in one transaction; the table goes with the last container.  The
``nft`` command is run with ``-f -`` (one atomic batch per change) and its errors raise
``NetFilterError`` with what was asked.

Imports: nothing of the project.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass

TABLE = "sandbox_kernel"
BRIDGE = "sbk-br0"
ALLOW_TIMEOUT = "1h"
NFT_TIMEOUT = 10   # seconds for one nft command


class NetFilterError(OSError):
    """An nft command that failed: what it was asked and what it said."""


@dataclass(frozen=True)
class Counted:
    """One refused destination, as the refusal sets count it."""
    destination: str
    protocol: str        # tcp, udp, icmp or the protocol's number
    port: int | None
    packets: int


def base_rules(pool: str, uplink: str) -> str:
    """The table and its hooks (idempotent: ``add`` keeps what is there)."""
    return f"""add table ip {TABLE}
add map ip {TABLE} by_source {{ type ipv4_addr : verdict; }}
add map ip {TABLE} dns_by_source {{ type ipv4_addr : verdict; }}
add chain ip {TABLE} forward {{ type filter hook forward priority 0; policy accept; }}
add chain ip {TABLE} prerouting {{ type nat hook prerouting priority -100; }}
add chain ip {TABLE} input {{ type filter hook input priority 0; policy accept; }}
add chain ip {TABLE} postrouting {{ type nat hook postrouting priority 100; }}
flush chain ip {TABLE} forward
flush chain ip {TABLE} prerouting
flush chain ip {TABLE} input
flush chain ip {TABLE} postrouting
add rule ip {TABLE} forward iifname "{BRIDGE}" ip saddr vmap @by_source
add rule ip {TABLE} forward iifname "{BRIDGE}" drop
add rule ip {TABLE} forward oifname "{BRIDGE}" ct state established,related accept
add rule ip {TABLE} forward oifname "{BRIDGE}" drop
add rule ip {TABLE} prerouting iifname "{BRIDGE}" meta l4proto {{ tcp, udp }} th dport 53 ip saddr vmap @dns_by_source
add rule ip {TABLE} input iifname "{BRIDGE}" ct status dnat accept
add rule ip {TABLE} input iifname "{BRIDGE}" drop
add rule ip {TABLE} postrouting ip saddr {pool} oifname "{_quoted(uplink)}" masquerade
add table bridge {TABLE}
add map bridge {TABLE} ports {{ type ifname : verdict; }}
add chain bridge {TABLE} prerouting {{ type filter hook prerouting priority -200; policy accept; }}
flush chain bridge {TABLE} prerouting
add rule bridge {TABLE} prerouting iifname vmap @ports
"""


def container_rules(tag: str, address: str, uplink: str, open_egress: bool,
                    resolver: str, port: str) -> str:
    """One container's chains and sets; ``resolver`` is its dnsmasq's ip:port,
    ``port`` its veth's host side."""
    t, allow = TABLE, "accept" if open_egress else f"ip daddr @a_{tag} accept"
    return f"""add set ip {t} a_{tag} {{ type ipv4_addr; flags timeout; timeout {ALLOW_TIMEOUT}; }}
add set ip {t} r_{tag} {{ type ipv4_addr . inet_proto . inet_service; flags dynamic; counter; size 4096; }}
add set ip {t} o_{tag} {{ type ipv4_addr . inet_proto; flags dynamic; counter; size 1024; }}
add chain ip {t} refuse_{tag}
add rule ip {t} refuse_{tag} meta l4proto {{ tcp, udp }} add @r_{tag} {{ ip daddr . meta l4proto . th dport }}
add rule ip {t} refuse_{tag} meta l4proto != {{ tcp, udp }} add @o_{tag} {{ ip daddr . meta l4proto }}
add rule ip {t} refuse_{tag} drop
add chain ip {t} c_{tag}
add rule ip {t} c_{tag} ct state established,related accept
add rule ip {t} c_{tag} oifname != "{_quoted(uplink)}" goto refuse_{tag}
add rule ip {t} c_{tag} {allow}
add rule ip {t} c_{tag} goto refuse_{tag}
add chain ip {t} d_{tag}
add rule ip {t} d_{tag} meta l4proto {{ tcp, udp }} dnat ip to {resolver}
add element ip {t} by_source {{ {address} : jump c_{tag} }}
add element ip {t} dns_by_source {{ {address} : jump d_{tag} }}
add chain bridge {t} p_{tag}
add rule bridge {t} p_{tag} ether type ip ip saddr {address} accept
add rule bridge {t} p_{tag} ether type arp arp saddr ip {address} accept
add rule bridge {t} p_{tag} drop
add element bridge {t} ports {{ "{_quoted(port)}" : jump p_{tag} }}
"""


def install(batch: str) -> None:
    run(["-f", "-"], batch)


def start_install(batch: str) -> Pending:
    return Pending(["-f", "-"], batch)


class Removal:
    """One container's pieces going: in one transaction when all are there
    (the usual destroy), else each on its own (a piece already gone, as after
    a half-done start, does not keep the others).  Started at once; ``finish``
    returns what could not go."""

    def __init__(self, tag: str, address: str | None, port: str):
        self.pieces = _pieces(tag, address, port)
        self.pending = start_install("\n".join(self.pieces) + "\n")

    def finish(self) -> list[str]:
        try:
            self.pending.wait()
            return []
        except NetFilterError:
            pass
        failed = []
        for piece in self.pieces:
            try:
                install(piece + "\n")
            except NetFilterError as error:
                if "No such file or directory" not in str(error):
                    failed.append(f"{piece}: {error}")
        return failed


def _pieces(tag: str, address: str | None, port: str) -> list[str]:
    pieces = []
    if address:
        pieces += [f"delete element ip {TABLE} by_source {{ {address} }}",
                   f"delete element ip {TABLE} dns_by_source {{ {address} }}"]
    pieces += [f"delete element bridge {TABLE} ports {{ \"{_quoted(port)}\" }}",
               f"delete chain bridge {TABLE} p_{tag}"]
    pieces += [f"delete chain ip {TABLE} {kind}_{tag}" for kind in ("c", "d", "refuse")]
    pieces += [f"delete set ip {TABLE} {kind}_{tag}" for kind in ("a", "r", "o")]
    return pieces


def remove_table() -> None:
    """Both tables (the last container went)."""
    for family in ("ip", "bridge"):
        try:
            run(["delete", "table", family, TABLE])
        except NetFilterError as error:
            if "No such file or directory" not in str(error):
                raise


def table_exists() -> bool:
    try:
        run(["list", "table", "ip", TABLE])
    except NetFilterError:
        return False
    return True


def container_tags() -> list[str]:
    """The tags of the containers whose chains the table holds."""
    try:
        listing = json.loads(run(["-j", "list", "chains", "ip"]))
    except NetFilterError:
        return []
    return [item["chain"]["name"][2:] for item in listing.get("nftables", [])
            if "chain" in item and item["chain"].get("table") == TABLE
            and item["chain"]["name"].startswith("c_")]


def refused(tag: str) -> list[Counted]:
    """What the container's refusal sets counted, per destination."""
    counted = []
    for kind in ("r", "o"):
        try:
            listing = json.loads(run(["-j", "list", "set", "ip", TABLE, f"{kind}_{tag}"]))
        except NetFilterError:
            continue
        for item in listing.get("nftables", []):
            if "set" in item:
                counted += [_counted(element) for element in item["set"].get("elem", [])]
    return [entry for entry in counted if entry is not None]


def _counted(element) -> Counted | None:
    """One element of r_/o_ as nft -j lists it: {"elem": {"val": {"concat": [...]},
    "counter": {"packets": n, ...}}}."""
    inner = element.get("elem", element) if isinstance(element, dict) else {}
    parts = inner.get("val", {}).get("concat") if isinstance(inner.get("val"), dict) else None
    if not parts:
        return None
    packets = inner.get("counter", {}).get("packets", 0)
    port = parts[2] if len(parts) > 2 else None
    return Counted(str(parts[0]), str(parts[1]), port if isinstance(port, int) else None, packets)


def allowed_addresses(tag: str) -> list[str]:
    try:
        listing = json.loads(run(["-j", "list", "set", "ip", TABLE, f"a_{tag}"]))
    except NetFilterError:
        return []
    found = []
    for item in listing.get("nftables", []):
        for element in item.get("set", {}).get("elem", []):
            value = element.get("elem", {}).get("val") if isinstance(element, dict) else element
            found.append(str(value))
    return found


def run(args: list[str], batch: str | None = None) -> str:
    return Pending(args, batch).wait()


class Pending:
    """An nft command under way: a container's rules are installed while its
    veth is made and its resolver starts (net_bridge.attach)."""

    def __init__(self, args: list[str], batch: str | None = None):
        self.args, self.batch = args, batch
        nft = shutil.which("nft") or "/usr/sbin/nft"
        try:
            self.process = subprocess.Popen([nft, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True)
        except OSError as error:
            raise NetFilterError(f"nft {' '.join(args)}: {error}") from None

    def wait(self) -> str:
        """nft's output; NetFilterError if it failed."""
        try:
            out, err = self.process.communicate(self.batch, timeout=NFT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise NetFilterError(f"nft {' '.join(self.args)}: no answer within {NFT_TIMEOUT} s") from None
        if self.process.returncode != 0:   # one line: nft's first, and the batch's first
            said = (err.strip().splitlines() or ["failed"])[0]
            asked = (self.batch or "").strip().splitlines()[:1]
            raise NetFilterError(f"nft {' '.join(self.args)}{' (' + asked[0] + ')' if asked else ''}: {said}")
        return out

    def settle(self) -> None:
        """Wait for it, whatever its outcome (something else failed meanwhile)."""
        try:
            self.wait()
        except NetFilterError:
            pass


def _quoted(name: str) -> str:
    """An interface name as nft reads it inside quotes (names are checked by
    net_bridge before they get here; this only refuses what would break out)."""
    if '"' in name or "\n" in name or "\\" in name:
        raise NetFilterError(f"interface name {name!r} cannot be used in an nft rule")
    return name
