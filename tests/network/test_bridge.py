"""--net bridge at the runtime level: a container on sbk-br0 with its own
address and default route reaches the fake internet through NAT out of the
uplink, and only that; nothing is left after it."""
from __future__ import annotations

import subprocess
import sys

from sandbox_kernel.runtime.container import Container
from sandbox_kernel.runtime.spec import ContainerSpec


def run(command: str, **spec) -> tuple[int, str]:
    """A python -c in a bridge container; (exit code, its output)."""
    spec.setdefault("network", "bridge")
    out = subprocess.PIPE
    import tempfile
    with tempfile.TemporaryFile() as output:
        with Container(ContainerSpec(command=(sys.executable, "-c", command), **spec),
                       stdout=output, stderr=output) as box:
            box.start()
            result = box.wait(60)
        output.seek(0)
        return result.exit_code, output.read().decode(errors="replace")


FETCH = """
import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1] if len(sys.argv) > 1 else {url!r}, timeout=5).read().decode())
except OSError as error:
    print("FAILED", error); sys.exit(3)
"""


def test_the_container_has_its_address_and_default_route(net_env):
    code, output = run("print(open('/proc/net/route').read()); import socket; "
                       "print(socket.if_nameindex())")
    assert code == 0, output
    assert "eth0\t00000000" in output   # a default route, through eth0
    assert "'eth0'" in output and "'lo'" in output


def test_open_egress_reaches_the_fake_internet_by_name_and_by_address(net_env):
    code, output = run(FETCH.format(url="http://example.com/"), allow=("*",))
    assert code == 0 and "hello from example.com" in output, output
    code, output = run(FETCH.format(url=f"http://{net_env.raw_ip}/"), allow=("*",))
    assert code == 0 and f"hello from {net_env.raw_ip}" in output, output
