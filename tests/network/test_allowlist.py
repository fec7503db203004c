"""Egress by domain name on --net bridge: the container's resolver answers only
the allowed names (and their CNAME chains), their addresses go into its allow
set, and everything else is dropped and counted."""
from __future__ import annotations

import socket
import threading

import pytest
from fakenet import FETCH, run_python

PYPI = ("pypi.org", "files.pythonhosted.org")

PIP = """
import subprocess, sys
done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check",
                       "--target", "/tmp/site", "--index-url", sys.argv[1], "--trusted-host", "pypi.org",
                       "--trusted-host", "files.pythonhosted.org", "sbk-fake-pkg"], capture_output=True, text=True)
print(done.stdout[-2000:], done.stderr[-2000:])
sys.path.insert(0, "/tmp/site")
import sbk_fake_pkg
print("VALUE", sbk_fake_pkg.VALUE)
"""

CONNECT = """
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        print("CONNECTED", target)
    except OSError as error:
        print("REFUSED", target, error)
"""


def test_pip_installs_from_the_allowed_index(net_env):
    code, output, stats = run_python(PIP, net_env.index_url, allow=PYPI)
    assert code == 0 and "VALUE 42" in output, output
    looked = {lookup.name: lookup.allowed for lookup in stats.lookups}
    assert looked.get("pypi.org") is True and looked.get("files.pythonhosted.org") is True, stats


def test_other_names_and_raw_addresses_are_refused_and_counted(net_env):
    code, output, stats = run_python(
        CONNECT, "example.com:80", f"{net_env.raw_ip}:80", f"{net_env.addresses['example.com']}:443",
        allow=PYPI)
    assert "CONNECTED" not in output, output
    assert output.count("REFUSED") == 3, output
    refused = {(r.destination, r.protocol, r.port): r.count for r in stats.refused}
    assert refused.get((net_env.raw_ip, "tcp", 80), 0) >= 1, stats
    assert refused.get((net_env.addresses["example.com"], "tcp", 443), 0) >= 1, stats
    assert {"example.com": False}.items() <= {l.name: l.allowed for l in stats.lookups}.items(), stats


def test_no_allow_means_nothing_leaves(net_env):
    code, output, stats = run_python(
        CONNECT, "pypi.org:80", f"{net_env.addresses['pypi.org']}:80", f"{net_env.dns}:853", allow=())
    assert "CONNECTED" not in output, output
    assert [l.name for l in stats.lookups if l.allowed] == [], stats
    assert any(r.destination == net_env.addresses["pypi.org"] for r in stats.refused), stats


def test_a_cname_chain_of_an_allowed_name_is_allowed(net_env):
    # www.example.com is a CNAME of cdn.example.net: the chain's end is reachable
    # through the allowed name, and not by its own name
    code, output, _ = run_python(FETCH, "http://www.example.com/", allow=("example.com",))
    assert code == 0 and "hello from www.example.com" in output, output
    code, output, _ = run_python(FETCH, "http://cdn.example.net/", allow=("example.com",))
    assert code == 3 and "FAILED" in output, output


def test_asking_another_dns_server_still_gets_the_containers_resolver(net_env):
    code, output, stats = run_python(
        "import sys; sys.path.insert(0, sys.argv[1]); import fakenet; "
        "print('ANSWER', fakenet.resolve('example.com', sys.argv[2]))",
        "/fakenet", net_env.dns, allow=PYPI, mounts=fakenet_mount())
    assert "ANSWER []" in output, output   # NXDOMAIN from its own resolver, not the upstream's answer


@pytest.fixture
def host_listener():
    """A TCP service of the host, on every address: the containers must not reach it."""
    server = socket.create_server(("0.0.0.0", 0))
    server.settimeout(10)
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except OSError:
                pass
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        server.close()


def test_the_hosts_own_services_stay_closed(net_env, host_listener):
    gateway = "10.231.0.1"   # the bridge's address in the fake internet's pool
    code, output, _ = run_python(CONNECT, f"{gateway}:{host_listener}", f"198.18.0.1:{host_listener}",
                                 allow=("*",))
    assert "CONNECTED" not in output and output.count("REFUSED") == 2, output


def test_containers_on_the_bridge_do_not_reach_each_other(net_env):
    from sandbox_kernel.runtime.container import Container
    from sandbox_kernel.runtime.spec import ContainerSpec
    import sys
    listener = ContainerSpec(command=(sys.executable, "-c",
                                      "import socket,time; s=socket.create_server(('0.0.0.0', 8000)); time.sleep(60)"),
                             network="bridge", allow=("*",))
    with Container(listener) as first:
        first.start()
        code, output, _ = run_python(CONNECT, f"{first.net_address}:8000", allow=("*",))
    assert "CONNECTED" not in output, output


def fakenet_dir() -> str:
    import os
    return os.path.dirname(os.path.abspath(__file__))


def fakenet_mount():
    from sandbox_kernel.runtime.spec import Mount
    return (Mount(fakenet_dir(), "/fakenet", read_only=True),)
