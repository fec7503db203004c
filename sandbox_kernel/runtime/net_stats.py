"""What ``--net bridge`` counted for one container: ``NetStats``.

rx/tx are the container's own view: what it received is its host-side veth's
tx_bytes, what it sent that veth's rx_bytes (Ethernet frames: headers count).
``refused`` is what the filter dropped, per destination, protocol and port,
with the names the container looked up that answered with that destination;
``lookups`` every name it asked its resolver, and whether the allowlist let
it through.

Imports: nothing of the project.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

_PROTOCOLS = {"1": "icmp", "6": "tcp", "17": "udp"}


@dataclass(frozen=True)
class Refusal:
    destination: str
    protocol: str              # tcp, udp, icmp, or the IP protocol's number
    port: int | None           # tcp and udp only
    count: int                 # packets dropped (a refused TCP connect counts its SYN retries)
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Lookup:
    name: str
    allowed: bool


@dataclass(frozen=True)
class NetStats:
    rx_bytes: int
    tx_bytes: int
    refused: list[Refusal] = field(default_factory=list)
    lookups: list[Lookup] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def refusals(counted, answers: dict[str, list[str]]) -> list[Refusal]:
    """net_filter's counted elements as Refusals, most refused first;
    ``answers``: address -> the names that resolved to it."""
    found = [Refusal(item.destination, _PROTOCOLS.get(item.protocol, item.protocol), item.port,
                     item.packets, tuple(answers.get(item.destination, ())))
             for item in counted]
    return sorted(found, key=lambda refusal: (-refusal.count, refusal.destination))
