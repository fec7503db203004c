"""A container cannot borrow another's address (and with it that one's allowlist).
IP_FREEBIND lets an unprivileged process bind an address that is not its own;
the kernel then refuses the route (a non-local source needs IP_TRANSPARENT,
which needs CAP_NET_ADMIN), and the bridge's own filter (net_filter: bridge
sandbox_kernel) would drop such frames if a workload ever had the capability."""
from __future__ import annotations

import sys

from fakenet import run_python

from sandbox_kernel.runtime.container import Container
from sandbox_kernel.runtime.spec import ContainerSpec

SPOOF = """
import socket, sys
IP_FREEBIND = 15
for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
    s.bind((sys.argv[1], 0))
    s.settimeout(2)
    try:
        if kind == socket.SOCK_DGRAM:
            for _ in range(20):
                s.sendto(b"x" * 1000, (sys.argv[2], 9))
        else:
            s.connect((sys.argv[2], 80))
        print("SENT", kind)
    except OSError as error:
        print("ERROR", kind, error)
"""


def _uplink_tx(uplink: str) -> int:
    with open(f"/sys/class/net/{uplink}/statistics/tx_packets") as handle:
        return int(handle.read())


def test_a_container_cannot_send_as_another(net_env):
    victim = ContainerSpec(command=(sys.executable, "-c", "import time; time.sleep(60)"),
                           network="bridge", allow=("*",))
    with Container(victim) as open_one:
        open_one.start()
        before = _uplink_tx(net_env.uplink)
        code, output, stats = run_python(SPOOF, open_one.net_address, net_env.raw_ip, allow=())
        after = _uplink_tx(net_env.uplink)
    assert after - before < 5, f"{after - before} packets left as {open_one.net_address}: {output}"


TRANSPARENT_SPOOF = SPOOF.replace("IP_FREEBIND = 15", "IP_FREEBIND = 19")   # IP_TRANSPARENT: needs CAP_NET_ADMIN


def test_even_with_cap_net_admin_the_bridge_drops_another_address(net_env):
    # root entering a container's namespace has every capability: IP_TRANSPARENT
    # sends from any source, and only the bridge's filter stands in the way
    import subprocess
    sleeper = (sys.executable, "-c", "import time; time.sleep(60)")
    with Container(ContainerSpec(command=sleeper, network="bridge", allow=("*",))) as open_one, \
            Container(ContainerSpec(command=sleeper, network="bridge")) as closed_one:
        open_one.start()
        closed_one.start()
        inside = closed_one.cgroup.pids()[0]
        before = _uplink_tx(net_env.uplink)
        done = subprocess.run(["nsenter", f"--net=/proc/{inside}/ns/net", sys.executable, "-c",
                               TRANSPARENT_SPOOF, open_one.net_address, net_env.raw_ip],
                              capture_output=True, text=True, timeout=60)
        after = _uplink_tx(net_env.uplink)
    assert "SENT" in done.stdout, done.stdout + done.stderr   # the kernel let them out of eth0
    # a leak is at least the 20 datagrams (27 packets without the filter); the
    # uplink also carries a few of the host's own in those 2 s (an earlier
    # test's connections closing: 5 were seen once), so the bar is below 20
    assert after - before < 15, f"{after - before} packets left as {open_one.net_address}: {done.stdout}"
