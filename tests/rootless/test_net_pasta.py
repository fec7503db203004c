"""Rootless --net bridge through pasta (runtime/net_pasta.py), as a user who
is not root (scripts/test rootless): pasta gives a user's own network
namespace an address and a default route, and no way to the host's
loopback; where the user cannot open /dev/net/tun, the refusal is one line.

No traffic leaves this machine: the only connection tried is to the host's
127.0.0.1, from inside the namespace, and it must fail."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from sandbox_kernel.runtime import net_pasta

pytestmark = pytest.mark.skipif(os.geteuid() == 0, reason="runs as a user who is not root: "
                                                          "scripts/test rootless")
TUN_USABLE = os.access(net_pasta.TUN, os.R_OK | os.W_OK)


@pytest.fixture
def own_namespace():
    """A process in a user and network namespace of this user's own (gone after)."""
    holder = subprocess.Popen(["unshare", "-Urn", "sleep", "120"])
    try:
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{holder.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline, "unshare did not make a namespace in 10 s"
            time.sleep(0.01)
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def inside(pid: int, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", "-t", str(pid), "-U", "-n", "--preserve-credentials", *argv],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(TUN_USABLE, reason="this user can open /dev/net/tun: the pasta test runs")
def test_without_the_tun_device_the_refusal_is_one_line():
    with pytest.raises(net_pasta.RootlessNetRefused) as caught:
        net_pasta.check(("*",), None)
    message = str(caught.value)
    assert "\n" not in message and (f"cannot open {net_pasta.TUN}" in message
                                    or "pasta is not installed" in message)


@pytest.mark.skipif(not TUN_USABLE or net_pasta.pasta_path() is None,
                    reason="pasta or a /dev/net/tun this user may open is missing")
def test_pasta_gives_a_route_and_no_way_to_the_hosts_loopback(own_namespace):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    pasta = net_pasta.Pasta.attach(own_namespace, net_pasta.check(("*",), None))
    try:
        assert "default via" in inside(own_namespace, "ip", "route").stdout
        probe = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), 3)\n"
                 f"    print('reached')\nexcept OSError as e:\n    print('refused', e)")
        assert inside(own_namespace, sys.executable, "-c", probe).stdout.startswith("refused")
    finally:
        pasta.stop()
        listener.close()
    assert pasta.process.poll() is not None
