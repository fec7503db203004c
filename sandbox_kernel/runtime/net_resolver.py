"""A container's resolver for ``--net bridge``: one dnsmasq per container.

It listens on the bridge's address at a port of its own; net_filter's
prerouting sends the container's DNS (udp and tcp port 53, to whatever
server) there.  What it answers:

    allow ()                 every name NXDOMAIN (``--address=/#/``)
    allow ("pypi.org", ...)  those names and their subdomains forwarded to the upstream
                             (``--server=/pypi.org/UPSTREAM``), every other name NXDOMAIN;
                             the addresses of their answers, CNAME chains included, go
                             into the container's allow set (``--nftset``)
    allow ("*",)             everything forwarded; the filter accepts every destination

Its cache is off, so every lookup reaches the upstream and refreshes the
allow set; AAAA answers are filtered (the container has IPv4 only).  Each
lookup is logged to ``<run dir>/<name>.dns.log`` (``--log-queries``), which
``lookups`` reads for NetStats.

dnsmasq is started by the owner; when the owner dies without destroying,
``net_bridge.reap_stale`` stops it (its command line names the container).

Imports: nothing of the project.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

START_TIMEOUT = 5.0
_QUERY = re.compile(r"query\[[A-Z0-9]+\] (\S+) from ")
_REPLY = re.compile(r"reply (\S+) is (\d+\.\d+\.\d+\.\d+)$")


class ResolverError(OSError):
    """dnsmasq could not be started."""


@dataclass
class Resolver:
    pid: int
    address: str          # ip:port it listens on
    log_path: str
    allow: tuple[str, ...]
    process: subprocess.Popen | None = None


def arguments(listen: str, port: int, allow: tuple[str, ...], upstream: str,
              nftset: str, log_path: str) -> list[str]:
    """dnsmasq's command line (``nftset``: "4#ip#TABLE#SET")."""
    args = [_dnsmasq(), "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
            "--no-hosts", "--no-poll", "--bind-interfaces", f"--listen-address={listen}",
            f"--port={port}", "--cache-size=0", "--filter-AAAA",
            # the log's path names the container: reap_stale knows its dnsmasq by it
            "--log-queries", f"--log-facility={log_path}", "--pid-file="]
    if allow == ("*",):
        return args + [f"--server={upstream}"]
    args.append("--address=/#/")
    if allow:
        domains = "/".join(allow)
        args += [f"--server=/{domains}/{upstream}", f"--nftset=/{domains}/{nftset}"]
    return args


def start(name: str, listen: str, allow: tuple[str, ...], upstream: str, nftset: str,
          log_path: str) -> Resolver:
    """Start the container's dnsmasq; ``ready`` waits until it answers."""
    port = _free_port(listen)
    args = arguments(listen, port, allow, upstream, nftset, log_path)
    try:
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, start_new_session=True)
    except OSError as error:
        raise ResolverError(error.errno, f"starting dnsmasq for {name}: {error.strerror}") from None
    return Resolver(process.pid, f"{listen}:{port}", log_path, allow, process)


def ready(resolver: Resolver) -> None:
    """Wait until the resolver listens; raise (and stop it) if it cannot."""
    listen, port = resolver.address.rsplit(":", 1)
    _await_listening(resolver, listen, int(port))


def stop(resolver: Resolver) -> None:
    if resolver.process is not None:
        resolver.process.kill()
        resolver.process.wait(START_TIMEOUT)
        if resolver.process.stderr:
            resolver.process.stderr.close()
    else:
        kill_if_ours(resolver.pid, os.path.basename(resolver.log_path))


def kill_if_ours(pid: int, marker: str) -> bool:
    """Kill a dnsmasq left by a dead owner, if ``pid`` is still that dnsmasq
    (its command line holds ``marker``), not a process that reused the pid."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read()
    except OSError:
        return False
    if marker.encode() not in cmdline or b"dnsmasq" not in cmdline:
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


# The log is what the container asked, written by its dnsmasq: hostile in size.  The host
# reads its last LOG_READ bytes and keeps at most NAMES_KEPT names, and a read that finds
# more than LOG_KEPT cuts the log (its pages are the host's, in /run) to its last LOG_READ.
LOG_READ = 1 << 20
LOG_KEPT = 4 << 20
NAMES_KEPT = 256


def _tail_lines(log_path: str) -> list[str]:
    """The log's last LOG_READ bytes, whole lines only (the first may be cut)."""
    try:
        with open(log_path, "r+b") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - LOG_READ))
            data = handle.read(LOG_READ)
            if size > LOG_KEPT:
                _keep_only(handle, data)
    except OSError:
        return []
    lines = data.decode(errors="replace").splitlines()
    return lines[1:] if size > LOG_READ else lines


def _keep_only(handle, tail: bytes) -> None:
    """The log cut to its tail: dnsmasq appends (O_APPEND), so its next line
    follows; a flood between two reads is all the host ever holds."""
    handle.seek(0)
    handle.write(tail)
    handle.truncate(len(tail))


def lookups(log_path: str, allow: tuple[str, ...]) -> list[tuple[str, bool]]:
    """(name, allowed) of each name the container looked up, first time first
    (of the log's tail; at most NAMES_KEPT names)."""
    names = [match.group(1).lower() for match in map(_QUERY.search, _tail_lines(log_path)) if match]
    return [(name, allowed(name, allow)) for name in list(dict.fromkeys(names))[:NAMES_KEPT]]


def answers(log_path: str) -> dict[str, list[str]]:
    """address -> the names whose answers gave it (a CNAME chain's end is named by its
    target), from the log's tail; at most NAMES_KEPT addresses."""
    found: dict[str, list[str]] = {}
    for match in filter(None, (_REPLY.search(line.rstrip()) for line in _tail_lines(log_path))):
        if match.group(2) not in found and len(found) >= NAMES_KEPT:
            continue
        names = found.setdefault(match.group(2), [])
        if match.group(1) not in names and len(names) < NAMES_KEPT:
            names.append(match.group(1))
    return found


def allowed(name: str, allow: tuple[str, ...]) -> bool:
    """As dnsmasq matches: the name itself or a subdomain of an allowed one."""
    name = name.rstrip(".")
    return allow == ("*",) or any(name == a or name.endswith("." + a) for a in allow)


def _await_listening(resolver: Resolver, listen: str, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if resolver.process.poll() is not None:
            error = resolver.process.stderr.read().decode(errors="replace").strip()
            raise ResolverError(0, f"dnsmasq for {listen}:{port} exited: {error}")
        if _answers_tcp(listen, port):
            return
        time.sleep(0.005)
    stop(resolver)
    raise ResolverError(0, f"dnsmasq did not listen on {listen}:{port} within {START_TIMEOUT:.0f} s")


def _answers_tcp(listen: str, port: int) -> bool:
    try:
        with socket.create_connection((listen, port), timeout=0.2):
            return True
    except OSError:
        return False


def _free_port(listen: str) -> int:
    """A port free for both UDP and TCP on ``listen`` (dnsmasq binds both)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((listen, 0))
            port = udp.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                    tcp.bind((listen, port))
                    return port
            except OSError:
                continue
    raise ResolverError(0, f"no port free for both UDP and TCP on {listen}")


def _dnsmasq() -> str:
    found = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if os.path.exists("/usr/sbin/dnsmasq") else None)
    if found is None:
        raise ResolverError(2, "--net bridge needs dnsmasq (Debian: dnsmasq-base) for its resolver")
    return found
