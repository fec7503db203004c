"""--net bridge against --net none (issue 21): a container's start, and TCP
throughput over the bridge against the host's loopback, side by side.

    sudo .venv/bin/python benchmarks/net_bridge.py [--runs 20] [--megabytes 64]

The uplink is the network tests' fake internet (tests/network/fakenet.py: a
namespace made here, addresses of 198.18.0.0/15, taken in turn with the
tests): nothing leaves this machine.

- start: Container.start() of /bin/true, --net none and --net bridge
  (--allow none) interleaved, one of each in turn, so that a burst of load
  on this shared machine hits both alike.  A bridged container of the same
  run stays up meanwhile, as a machine with sessions has the bridge already:
  each start measures its veth, address, rules and resolver, not the
  bridge's creation.  The issue's target: the bridge costs at most 15 ms more.
- throughput: a download of --megabytes (at most 64, the server's cap) from
  the fake internet's HTTP server by address, inside a bridged container
  (--allow '*'), against the same download from the same server code over
  loopback (both in a namespace of their own: no port of the host's is
  used).  Both time the transfer alone, inside the downloading process.

Prints medians and p90 in milliseconds, MB/s, and each ratio; speed is never
asserted (tests/unit/test_benchmarks_import.py only imports this module).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from unittest import mock

NETWORK_TESTS = pathlib.Path(__file__).resolve().parents[1] / "tests" / "network"
TARGET_EXTRA_MS = 15.0


def fakenet():
    """tests/network/fakenet.py, the fake internet (imported when a run starts)."""
    sys.path[:0] = [str(NETWORK_TESTS), str(NETWORK_TESTS.parent)]   # fakenet, and its wheels
    import fakenet as module
    return module


@contextlib.contextmanager
def fake_internet():
    """The fake internet up, and the runtime's bridge pointed at it, for this block."""
    net = fakenet()
    with net.taking_turns(), tempfile.TemporaryDirectory(prefix="sbk-bench-net-") as directory:
        internet = net.start(directory)
        try:
            with mock.patch.dict(os.environ, internet.env):
                yield internet
        finally:
            net.stop(internet)


def start_ms(network: str) -> float:
    """Milliseconds of Container.start() of /bin/true on ``network``."""
    from sandbox_kernel.runtime.container import Container
    from sandbox_kernel.runtime.spec import ContainerSpec, Limits
    spec = ContainerSpec(command=("/bin/true",), network=network, limits=Limits(memory=256 << 20))
    with Container(spec) as box:
        started = time.perf_counter()
        box.start()
        elapsed = (time.perf_counter() - started) * 1000
        result = box.wait(30)
    assert result.status == "ok", result
    return elapsed


@contextlib.contextmanager
def bridge_kept_up():
    """A bridged container that sleeps while the starts are measured."""
    from sandbox_kernel.runtime.container import Container
    from sandbox_kernel.runtime.spec import ContainerSpec
    with Container(ContainerSpec(command=("/bin/sleep", "600"), network="bridge")) as keeper:
        keeper.start()
        yield


def starts(runs: int) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {"none": [], "bridge": []}
    with bridge_kept_up():
        for _ in range(runs):
            for network in figures:
                figures[network].append(start_ms(network))
    return figures


LOOPBACK = """
import os, socket, subprocess, sys, time
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
server = subprocess.Popen([sys.executable, sys.argv[1], "serve", sys.argv[2]],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", 80), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                sys.exit("the loopback server did not start in 20 s")
            time.sleep(0.05)
    done = subprocess.run([sys.executable, "-c", sys.argv[3], sys.argv[4], "120"],
                          capture_output=True, text=True, timeout=300)
    print(done.stdout, done.stderr)
finally:
    server.kill()
    server.wait()
"""
"""The fake internet's own server and a download from it, both in a network
namespace made for them (unshare --net): over that namespace's loopback, the
same code on both sides as over the bridge, in processes of their own."""


def fetched_rate(output: str) -> float:
    """MB/s of the transfer the FETCH script printed ("FETCHED LENGTH SECONDS")."""
    for line in output.splitlines():
        if line.startswith("FETCHED"):
            length, seconds = line.split()[1:3]
            return int(length) / 1e6 / float(seconds)
    raise RuntimeError(f"the download failed: {output.strip()[-300:]}")


def loopback_rate(size: int) -> float:
    net = fakenet()
    with tempfile.TemporaryDirectory(prefix="sbk-bench-net-") as directory:
        done = subprocess.run(["unshare", "--net", sys.executable, "-c", LOOPBACK, net.__file__,
                               directory, net.FETCH, f"http://127.0.0.1/blob/{size}"],
                              capture_output=True, text=True, timeout=400)
    return fetched_rate(done.stdout + done.stderr)


def bridge_rate(internet, size: int) -> float:
    _, output, _ = fakenet().run_python(fakenet().FETCH, internet.blob_url(internet.raw_ip, size),
                                           "120", allow=("*",), timeout=300)
    return fetched_rate(output)


def throughput(internet, size: int, runs: int) -> dict[str, list[float]]:
    """MB/s of each way, interleaved."""
    figures: dict[str, list[float]] = {"host loopback": [], "bridge": []}
    for _ in range(runs):
        figures["host loopback"].append(loopback_rate(size))
        figures["bridge"].append(bridge_rate(internet, size))
    return figures


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def report(start: dict, speed: dict, args) -> str:
    none, bridge = statistics.median(start["none"]), statistics.median(start["bridge"])
    extra = bridge - none
    lines = [f"start of /bin/true, {args.runs} runs each (median, p90):",
             f"  --net none    {none:7.1f} ms  {p90(start['none']):7.1f} ms",
             f"  --net bridge  {bridge:7.1f} ms  {p90(start['bridge']):7.1f} ms  ({bridge / none:.2f}x)",
             f"  the bridge's extra: {extra:.1f} ms (target <= {TARGET_EXTRA_MS:g} ms: "
             f"{'met' if extra <= TARGET_EXTRA_MS else 'NOT met'})",
             f"TCP download of {args.megabytes} MB, {args.transfers} runs each (median MB/s):"]
    loop, over = statistics.median(speed["host loopback"]), statistics.median(speed["bridge"])
    lines += [f"  host loopback  {loop:9.1f} MB/s",
              f"  over the bridge (veth, sbk-br0, NAT, the fake internet's veth)  {over:9.1f} MB/s  "
              f"({over / loop:.2f}x the loopback)"]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="starts of each network")
    parser.add_argument("--megabytes", type=int, default=64, help="size of each download")
    parser.add_argument("--transfers", type=int, default=3, help="downloads of each way")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.exit(2, "net_bridge.py: --net bridge needs root\n")
    with fake_internet() as internet:
        start = starts(args.runs)
        speed = throughput(internet, args.megabytes * 10**6, args.transfers)
    print(report(start, speed, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
