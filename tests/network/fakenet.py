"""The fake internet the network tests use: a network namespace this test run
makes, reached from the host by one veth (the uplink), with an HTTP server, a
PyPI-style simple index and a DNS server at addresses of 198.18.0.0/15 (the
benchmarking range: nothing real is there).  No test traffic leaves this
machine: the runtime's NAT and forwarding go out of this uplink only, and the
host gains one route, for 198.18.1.0/24, through it.

    host                                   netns fakenet-<pid>
    fkup<n> 198.18.0.1/30  <-- veth -->    fkin 198.18.0.2/30
    route 198.18.1.0/24 via 198.18.0.2     lo: 198.18.1.10 pypi.org, .11 files.pythonhosted.org,
                                           .12 example.com, .13 (raw ip, no name), .14 cdn.example.net
                                           (www.example.com is a CNAME of it), .53 DNS

Run as a script (``python fakenet.py serve DIR``) it is the servers, inside the namespace.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ADDRESSES = {"pypi.org": "198.18.1.10", "files.pythonhosted.org": "198.18.1.11",
             "example.com": "198.18.1.12", "cdn.example.net": "198.18.1.14"}
CNAMES = {"www.example.com": "cdn.example.net"}
RAW_IP = "198.18.1.13"
DNS = "198.18.1.53"
POOL = "10.231.0.0/24"
PACKAGE = ("sbk-fake-pkg", "1.0")
WHEEL = "sbk_fake_pkg-1.0-py3-none-any.whl"
TTL = 300


@dataclasses.dataclass
class FakeInternet:
    netns: str
    uplink: str
    process: subprocess.Popen | None = None
    dns: str = DNS
    addresses: dict = dataclasses.field(default_factory=lambda: dict(ADDRESSES))
    raw_ip: str = RAW_IP
    index_url: str = "http://pypi.org/simple/"
    package: tuple = PACKAGE

    @property
    def env(self) -> dict:
        return {"SANDBOX_KERNEL_NET_UPLINK": self.uplink, "SANDBOX_KERNEL_NET_POOL": POOL,
                "SANDBOX_KERNEL_NET_DNS": self.dns}

    @staticmethod
    def blob_url(host: str, size: int) -> str:
        return f"http://{host}/blob/{size}"


LOCK = "/run/sandbox-kernel-fakenet.lock"


@contextlib.contextmanager
def taking_turns(timeout: float = 1200):
    """One fake internet (and so one test run's bridge) on the machine at a
    time: they share 198.18.1.0/24 and sbk-br0, and each run's checks for
    leftovers would see, and clean, another's.  A bounded wait for the turn."""
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another test run held {LOCK} for {timeout:.0f} s") from None
                time.sleep(0.5)
        yield
    finally:
        os.close(fd)


def start(directory: str) -> FakeInternet:
    """Make the namespace, the uplink and the servers; ``stop`` undoes it all."""
    pid = os.getpid()
    internet = FakeInternet(netns=f"fakenet-{pid}", uplink=f"fkup{pid % 100000}")
    try:
        _plumb(internet)
        build_wheel(directory)
        internet.process = subprocess.Popen(
            ["ip", "netns", "exec", internet.netns, sys.executable, __file__, "serve", directory],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _await_servers(internet)
    except BaseException:
        stop(internet)
        raise
    return internet


def stop(internet: FakeInternet) -> None:
    if internet.process is not None:
        internet.process.kill()
        internet.process.wait(10)
        internet.process.stderr.close()
    subprocess.run(["ip", "link", "del", internet.uplink], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "del", internet.netns], capture_output=True, check=False)


def _plumb(internet: FakeInternet) -> None:
    ns, up = internet.netns, internet.uplink
    inside = ["ip", "netns", "exec", ns]
    for command in (["ip", "netns", "add", ns],
                    ["ip", "link", "add", up, "type", "veth", "peer", "name", "fkin", "netns", ns],
                    ["ip", "addr", "add", "198.18.0.1/30", "dev", up],
                    ["ip", "link", "set", up, "up"],
                    [*inside, "ip", "addr", "add", "198.18.0.2/30", "dev", "fkin"],
                    [*inside, "ip", "link", "set", "fkin", "up"],
                    [*inside, "ip", "link", "set", "lo", "up"],
                    *([*inside, "ip", "addr", "add", f"{a}/32", "dev", "lo"]
                      for a in [*ADDRESSES.values(), RAW_IP, DNS]),
                    ["ip", "route", "add", "198.18.1.0/24", "via", "198.18.0.2", "dev", up]):
        subprocess.run(command, check=True, capture_output=True)


def _await_servers(internet: FakeInternet, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if internet.process.poll() is not None:
            raise RuntimeError(f"fake internet exited: {internet.process.stderr.read().decode()}")
        try:
            with socket.create_connection((RAW_IP, 80), timeout=0.5):
                if resolve("pypi.org", DNS) == [ADDRESSES["pypi.org"]]:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"fake internet not answering within {timeout} s")


def leftovers() -> list[str]:
    """Every piece of the runtime's bridge network still on this host."""
    found = [f"link {name}" for name in os.listdir("/sys/class/net")
             if name == "sbk-br0" or (name.startswith("sbk") and name.endswith("h"))]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    found += [f"nft {line.strip()}" for line in tables.splitlines() if "sandbox_kernel" in line]   # ip and bridge
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmdline = handle.read()
        except OSError:
            continue
        if b"dnsmasq" in cmdline and b"sandbox-kernel-net" in cmdline:
            found.append(f"dnsmasq pid {pid}")
    return found


def run_python(code: str, *args: str, timeout: float = 120, **spec):
    """``python -c code args`` in a --net bridge container (spec fields as
    keywords, e.g. allow=("pypi.org",), rate=10**6); returns (exit code, the
    output, its NetStats read before the container went)."""
    from sandbox_kernel.runtime.container import Container
    from sandbox_kernel.runtime.spec import ContainerSpec
    spec.setdefault("network", "bridge")
    with tempfile.TemporaryFile() as output:
        with Container(ContainerSpec(command=(sys.executable, "-c", code, *args), **spec),
                       stdout=output, stderr=output) as box:
            box.start()
            result = box.wait(timeout)
            stats = box.net_stats()
        output.seek(0)
        return result.exit_code, output.read().decode(errors="replace"), stats


FETCH = """
import sys, time, urllib.request
started = time.monotonic()
try:
    body = urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]) if len(sys.argv) > 2 else 5).read()
except OSError as error:
    print("FAILED", error); sys.exit(3)
print("FETCHED", len(body), time.monotonic() - started)
print(body[:200].decode(errors="replace"))
"""


UPLOAD = """
import sys, time, urllib.request
body = b"u" * int(sys.argv[2])
started = time.monotonic()
try:
    reply = urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=body, method="POST"), timeout=120).read()
except OSError as error:
    print("FAILED", error); sys.exit(3)
print("SENT", len(body), time.monotonic() - started, reply.decode().strip())
"""


# -- the wheel ---------------------------------------------------------------------------

def build_wheel(directory: str) -> str:
    """A one-module wheel, sbk_fake_pkg.VALUE == 42, written by hand (no build tools);
    in the test's process (tests/ on its path), never in the served namespace's."""
    import wheels
    return wheels.write_wheel(directory, "sbk_fake_pkg", "1.0", {"__init__.py": b"VALUE = 42\n"})


# -- DNS ------------------------------------------------------------------------------

def _name_at(data: bytes, offset: int) -> tuple[str, int]:
    labels = []
    while data[offset]:
        labels.append(data[offset + 1:offset + 1 + data[offset]].decode())
        offset += 1 + data[offset]
    return ".".join(labels).lower(), offset + 1


def _encoded(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"


def answer(query: bytes) -> bytes:
    """One DNS reply: A records of ADDRESSES, a CNAME chain for CNAMES, else NXDOMAIN."""
    ident, = struct.unpack("!H", query[:2])
    name, end = _name_at(query, 12)
    qtype, = struct.unpack("!H", query[end:end + 2])
    question = query[12:end + 4]
    records, target = [], name
    if name in CNAMES:
        target = CNAMES[name]
        records.append(_encoded(name) + struct.pack("!HHIH", 5, 1, TTL, len(_encoded(target))) + _encoded(target))
    if target in ADDRESSES and qtype == 1:
        records.append(_encoded(target) + struct.pack("!HHIH", 1, 1, TTL, 4) + socket.inet_aton(ADDRESSES[target]))
    known = target in ADDRESSES
    flags = 0x8180 if known else 0x8183
    return struct.pack("!HHHHHH", ident, flags, 1, len(records), 0, 0) + question + b"".join(records)


def resolve(name: str, server: str, timeout: float = 2.0) -> list[str]:
    query = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + _encoded(name) + struct.pack("!HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(timeout)
        udp.sendto(query, (server, 53))
        reply = udp.recv(4096)
    return _a_records(reply)


def _a_records(reply: bytes) -> list[str]:
    count, = struct.unpack("!H", reply[6:8])
    _, offset = _name_at(reply, 12)
    offset += 4
    found = []
    for _ in range(count):
        offset = offset + 2 if reply[offset] & 0xC0 == 0xC0 else _name_at(reply, offset)[1]
        kind, _, _, length = struct.unpack("!HHIH", reply[offset:offset + 10])
        if kind == 1:
            found.append(socket.inet_ntoa(reply[offset + 10:offset + 14]))
        offset += 10 + length
    return found


def _serve_dns() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((DNS, 53))
        while True:
            query, peer = udp.recvfrom(4096)
            try:
                udp.sendto(answer(query), peer)
            except (IndexError, struct.error, UnicodeDecodeError):
                continue   # a malformed query gets no answer


# -- HTTP -----------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    directory = "."

    def do_GET(self):   # noqa: N802 -- http.server's name
        host = (self.headers.get("Host") or "").split(":")[0]
        if self.path.startswith("/blob/"):
            return self._blob(int(self.path.rsplit("/", 1)[1]))
        if self.path == "/simple/":
            return self._send(b'<a href="/simple/sbk-fake-pkg/">sbk-fake-pkg</a>', "text/html")
        if self.path.rstrip("/") == "/simple/sbk-fake-pkg":
            with open(os.path.join(self.directory, WHEEL), "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
            link = f"http://files.pythonhosted.org/packages/{WHEEL}#sha256={digest}"
            return self._send(f'<a href="{link}">{WHEEL}</a>'.encode(), "text/html")
        if self.path == f"/packages/{WHEEL}":
            with open(os.path.join(self.directory, WHEEL), "rb") as handle:
                return self._send(handle.read(), "application/octet-stream")
        if self.path == "/":
            return self._send(f"hello from {host}\n".encode(), "text/plain")
        self.send_error(404)

    def do_POST(self):   # noqa: N802 -- /sink: reads the body, answers its length
        size, left = 0, int(self.headers.get("Content-Length") or 0)
        while left > 0:
            chunk = self.rfile.read(min(left, 65536))
            if not chunk:
                break
            size, left = size + len(chunk), left - len(chunk)
        self._send(f"received {size}\n".encode(), "text/plain")

    def _send(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _blob(self, size: int) -> None:
        size = min(size, 64 << 20)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        chunk = b"x" * 65536
        while size > 0:
            self.wfile.write(chunk[:size])
            size -= len(chunk)

    def log_message(self, *args):
        pass


def serve(directory: str) -> None:
    _Handler.directory = directory
    threading.Thread(target=_serve_dns, daemon=True).start()
    ThreadingHTTPServer(("0.0.0.0", 80), _Handler).serve_forever()


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    serve(sys.argv[2])
