"""--net bridge at the runtime level: a container on sbk-br0 with its own
address and default route reaches the fake internet through NAT out of the
uplink, and only that; nothing is left after it."""
from __future__ import annotations

from fakenet import FETCH, run_python


def test_the_container_has_its_address_and_default_route(net_env):
    code, output, _ = run_python("print(open('/proc/net/route').read()); import socket; "
                                 "print(socket.if_nameindex())")
    assert code == 0, output
    assert "eth0\t00000000" in output   # a default route, through eth0
    assert "'eth0'" in output and "'lo'" in output


def test_open_egress_reaches_the_fake_internet_by_name_and_by_address(net_env):
    code, output, _ = run_python(FETCH, "http://example.com/", allow=("*",))
    assert code == 0 and "hello from example.com" in output, output
    code, output, _ = run_python(FETCH, f"http://{net_env.raw_ip}/", allow=("*",))
    assert code == 0 and f"hello from {net_env.raw_ip}" in output, output
