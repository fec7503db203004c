"""--net bridge at the runtime level: a container on sbk-br0 with its own
address and default route reaches the fake internet through NAT out of the
uplink, and only that; nothing is left after it."""
from __future__ import annotations

import subprocess
import sys

import pytest
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


NONE_START = """
import sys
from sandbox_kernel.runtime.container import Container
from sandbox_kernel.runtime.spec import ContainerSpec
with Container(ContainerSpec(command=("true",))) as box:
    box.start()
    box.wait(60)
print("PYROUTE2", "pyroute2" in sys.modules)
"""


def test_the_none_network_never_imports_pyroute2(net_env):
    # net_env: a bridge's run directory may exist from other tests; reap_stale still must not import it
    done = subprocess.run([sys.executable, "-c", NONE_START], capture_output=True, text=True, timeout=120)
    assert "PYROUTE2 False" in done.stdout, done.stdout + done.stderr


def test_the_network_is_ready_before_the_workload_runs(net_env):
    # the very first instruction of the workload finds eth0 up with its address and route
    code, output, _ = run_python("import fcntl, socket, struct; s = socket.socket(); "
                                 "print('ADDR', socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, "
                                 "struct.pack('256s', b'eth0'))[20:24]))")
    assert code == 0 and "ADDR 10.231.0." in output, output


def test_resolv_conf_names_the_bridge_and_cannot_be_changed(net_env):
    code, output, _ = run_python("print(open('/etc/resolv.conf').read())\n"
                                 "try:\n    open('/etc/resolv.conf', 'w')\nexcept OSError as e:\n    print('RO', e.errno)")
    assert code == 0 and "nameserver 10.231.0.1" in output and "RO " in output, output


@pytest.mark.parametrize("mode", ["fork", "exec", "zygote"])
def test_every_spawn_path_joins_the_prepared_namespace(net_env, mode):
    import tempfile
    from sandbox_kernel.runtime.container import Container
    from sandbox_kernel.runtime.spec import ContainerSpec
    code = "import socket; print(sorted(n for _, n in socket.if_nameindex()))"
    with tempfile.TemporaryFile() as output:
        with Container(ContainerSpec(command=(sys.executable, "-c", code), network="bridge"),
                       stdout=output, stderr=output, spawn=mode) as box:
            box.start()
            assert box.wait(60).exit_code == 0
        output.seek(0)
        assert "['eth0', 'lo']" in output.read().decode()
