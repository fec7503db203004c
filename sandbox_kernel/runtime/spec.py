"""What a container should be, as inert frozen dataclasses, and the parsers that
turn what users type ("512M", "0.5", "2m", "/data:/data:ro") into them.

Specs are data only: validation lives in the ``parse_*`` functions and in
``ContainerSpec.from_strings``; execution lives in ``container.py``.  A bad value
raises ``SpecError``, whose message names the field, the value and what is
accepted, so that the CLI and the magics can print it as one line.

Imports: nothing of the project (the runtime's bottom).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

NETWORK_POLICIES = ("none", "host", "bridge")
DEFAULT_DISK = 1 << 30
DEFAULT_HOSTNAME = "sandbox"
DEFAULT_USER = (65532, 65532)  # distroless "nonroot": no host user has it


class SpecError(ValueError):
    """A value a user typed that a container spec cannot hold."""

    def __init__(self, field_name: str, value, accepted: str):
        self.field = field_name
        self.value = value
        self.accepted = accepted
        super().__init__(f"invalid {field_name} {value!r}: expected {accepted}")


@dataclass(frozen=True)
class Limits:
    """Resource limits; None means "no limit"."""
    memory: int | None = None      # bytes, also the memory+swap limit
    cpus: float | None = None      # CPU cores' worth of time per period
    pids: int | None = None        # processes and threads
    disk: int = DEFAULT_DISK       # bytes in the writable layer
    timeout: float | None = None   # wall seconds


@dataclass(frozen=True)
class Mount:
    """A host path bound into the container.

    ``overlay``: the host directory is the read-only lower layer of an
    overlay whose upper layer is on the container's tmpfs: writes are seen
    inside, count against the disk limit, and never reach the host.
    ``map_owner`` (uid, gid): files of this host user show as the
    workload's own (an idmapped mount), and what the workload creates is
    that user's on the host: the container reads and writes there as the
    kernel's user would.  Root only (rootless: a plain bind).
    ``on_path``: the caller's PATH entries below ``source`` are found here
    (container.inside_path); False for what the runtime binds for its own
    use, such as the host's /usr that an agent borrows off PATH."""
    source: str
    target: str
    read_only: bool = False
    overlay: bool = False
    map_owner: tuple[int, int] | None = None
    on_path: bool = True


@dataclass(frozen=True)
class ContainerSpec:
    command: tuple[str, ...]
    limits: Limits = field(default_factory=Limits)
    network: str = "none"
    mounts: tuple[Mount, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = "/workspace"
    workspace: str | None = None   # host directory for /workspace; None: a fresh one
    image: str = "host"
    hostname: str = DEFAULT_HOSTNAME
    user: tuple[int, int] = DEFAULT_USER
    pass_fds: tuple[int, ...] = ()
    # what the container is for, as `sandbox-kernel top` and the stats endpoint show it
    # (cards.py): kind (magics, kernel, provisioner, run, grade), session, kernel_id, ...
    labels: tuple[tuple[str, str], ...] = ()
    # --net bridge only (net_bridge.py): the names whose addresses it may reach
    # (("*",): open egress; (): none), and its bandwidth in bits/s (None: no limit)
    allow: tuple[str, ...] = ()
    rate: int | None = None

    @classmethod
    def from_strings(cls, command, *, memory=None, cpus=None, pids=None, timeout=None,
                     disk=None, net="none", mounts=(), env=(), workdir=None,
                     allow=None, rate=None, **extra) -> "ContainerSpec":
        """Build a spec from what a user typed on a command line or in a magic."""
        if not command:
            raise SpecError("command", "", "a program to run, e.g. -- /bin/sh -c 'echo hi'")
        limits = Limits(
            memory=parse_size(memory, "memory"),
            cpus=parse_cpus(cpus),
            pids=parse_pids(pids),
            disk=parse_size(disk, "disk") if disk is not None else DEFAULT_DISK,
            timeout=parse_duration(timeout, "timeout"),
        )
        network = parse_network(net)
        allowed, bandwidth = parse_allow(allow), parse_rate(rate)
        _bridge_only(network, allow=(allowed, allow), rate=(bandwidth, rate))
        return cls(
            command=tuple(command), limits=limits, network=network, allow=allowed, rate=bandwidth,
            mounts=tuple(parse_mount(m) for m in mounts),
            env=tuple(parse_env(e) for e in env),
            workdir=parse_workdir(workdir) if workdir else "/workspace",
            **extra,
        )


# the patterns are compiled at their first use (re caches them): 5 compiles cost ~1 ms
# of every import, and a start with no limits given parses none
_SIZE = r"(?i)^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$"
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
SIZE_ACCEPTED = "a size such as 512M, 1.5G, 64MiB or 1048576 (bytes); K, M, G, T are powers of 1024"


def parse_size(text, field_name: str = "memory") -> int | None:
    """'512M' -> 536870912; None and '' stay None (no limit)."""
    if text is None or (isinstance(text, str) and text.strip() == ""):
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = re.match(_SIZE, str(text))
        if not match:
            raise SpecError(field_name, text, SIZE_ACCEPTED)
        number, unit, _ = match.groups()
        value = int(float(number) * _UNITS[unit.lower()])
    if value < 4096:
        raise SpecError(field_name, text, SIZE_ACCEPTED + ", at least 4K")
    return value


def parse_cpus(text) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not (0.01 <= value <= 1024) or math.isnan(value):
        raise SpecError("cpus", text, "a number of cores between 0.01 and 1024, e.g. 0.5 or 2")
    return value


def parse_pids(text) -> int | None:
    if text is None or text == "":
        return None
    try:
        value = int(str(text).strip())
    except ValueError:
        value = 0
    if value < 1:
        raise SpecError("pids", text, "a whole number of processes of at least 1, e.g. 256")
    return value


_DURATION = r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$"
_SECONDS = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}


def parse_duration(text, field_name: str = "timeout") -> float | None:
    """'30s' -> 30.0, '2m' -> 120.0, '1.5' -> 1.5 seconds."""
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = re.match(_DURATION, str(text))
        if not match:
            seconds = -1.0
        else:
            seconds = float(match.group(1)) * _SECONDS[match.group(2)]
    if seconds <= 0:
        raise SpecError(field_name, text, "a positive duration such as 30s, 2m, 1h, 500ms or 1.5 (seconds)")
    return seconds


def parse_network(text) -> str:
    value = (text or "none").strip().lower()
    if value not in NETWORK_POLICIES:
        raise SpecError("net", text, "none (loopback only), bridge (root: a veth on sbk-br0) or host")
    return value


_LABEL = r"^(?!-)[a-z0-9-]{1,63}(?<!-)$"
ALLOW_ACCEPTED = ("domain names separated by commas, e.g. pypi.org,files.pythonhosted.org, "
                  "or * alone for open egress")


def parse_allow(text) -> tuple[str, ...]:
    """'pypi.org,files.pythonhosted.org' -> ('pypi.org', 'files.pythonhosted.org');
    '*' -> ('*',) (open egress); None and '' -> () (no egress).  A name allows
    itself and its subdomains, as dnsmasq matches them (net_resolver.py)."""
    if text is None:
        return ()
    items = str(text).split(",") if isinstance(text, str) else [str(item) for item in text]
    names = [item.strip().lower().rstrip(".") for item in items if item.strip()]
    if names == ["*"]:
        return ("*",)
    for name in names:
        labels = name.split(".")
        if len(name) > 253 or len(labels) < 2 or not all(re.match(_LABEL, label) for label in labels):
            raise SpecError("allow", text, ALLOW_ACCEPTED)
    return tuple(dict.fromkeys(names))


_RATE = r"(?i)^\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit)?\s*$"
_RATE_UNITS = {None: 1, "bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}   # decimal, as tc's
RATE_ACCEPTED = "a bandwidth such as 10mbit, 500kbit or 1gbit (bits per second), at least 8kbit"


def parse_rate(text) -> int | None:
    """'10mbit' -> 10_000_000 bits/s; a bare number is bits/s; None and '' stay None."""
    if text is None or (isinstance(text, str) and text.strip() == ""):
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = re.match(_RATE, str(text))
        value = int(float(match.group(1)) * _RATE_UNITS[(match.group(2) or "").lower() or None]) \
            if match else 0
    if not 8000 <= value <= 10**12:
        raise SpecError("rate", text, RATE_ACCEPTED)
    return value


def _bridge_only(network: str, **given) -> None:
    """--allow and --rate mean something only on a bridge: refuse them elsewhere
    rather than let a user believe a limit holds."""
    for name, (parsed, typed) in given.items():
        if parsed and network != "bridge":
            raise SpecError(name, typed, f"--net bridge with --{name} (the network is {network})")


def parse_mount(text) -> Mount:
    """'SRC:DST[:ro|rw]' with absolute paths; SRC must exist."""
    if isinstance(text, Mount):
        return text
    accepted = "SRC:DST or SRC:DST:ro with absolute paths, e.g. /data:/data:ro"
    parts = str(text).split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise SpecError("mount", text, accepted)
    source, target = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw") or not (source.startswith("/") and target.startswith("/")):
        raise SpecError("mount", text, accepted)
    if ".." in target.split("/") or os.path.normpath(target) == "/":
        raise SpecError("mount", text, "a target below / without '..'")
    if not os.path.exists(source):
        raise SpecError("mount", text, f"an existing source path ({source} does not exist)")
    return Mount(os.path.realpath(source), os.path.normpath(target), mode == "ro")


_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def parse_env(text) -> tuple[str, str]:
    if isinstance(text, tuple):
        return text
    name, sep, value = str(text).partition("=")
    if not sep or not re.match(_ENV_NAME, name):
        raise SpecError("env", text, "NAME=VALUE with a name of letters, digits and _")
    return name, value


def parse_workdir(text) -> str:
    if not str(text).startswith("/") or ".." in str(text).split("/"):
        raise SpecError("workdir", text, "an absolute path without '..', e.g. /workspace")
    return os.path.normpath(str(text))
