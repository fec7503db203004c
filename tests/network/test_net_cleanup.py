"""Nothing of --net bridge outlives its containers: the veth, the filter's
pieces and the resolver go with each container, the bridge and the table
with the last one, and reap_stale undoes what an owner killed by SIGKILL left.
(net_env checks, after each test, that nothing is left and that the uplink's
forwarding setting is what it was.)"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import fakenet
import pytest

from sandbox_kernel.runtime import cleanup, net_records
from sandbox_kernel.runtime.container import Container, ContainerStartError
from sandbox_kernel.runtime.spec import ContainerSpec

SLEEP = (sys.executable, "-c", "import time; time.sleep(120)")


def _bridge_up() -> bool:
    return os.path.exists("/sys/class/net/sbk-br0")


def test_the_bridge_goes_with_the_last_container(net_env):
    first = Container(ContainerSpec(command=SLEEP, network="bridge", allow=("pypi.org",)))
    second = Container(ContainerSpec(command=SLEEP, network="bridge"))
    try:
        first.start()
        second.start()
        assert first.net_address != second.net_address
        first.destroy()
        assert _bridge_up() and not os.path.exists(f"/sys/class/net/{first.net_host_ifname}")
        assert os.path.exists(f"/sys/class/net/{second.net_host_ifname}")
    finally:
        first.destroy()
        second.destroy()
    assert not _bridge_up()
    assert fakenet.leftovers() == []


def test_a_failed_start_leaves_nothing(net_env):
    box = Container(ContainerSpec(command=("/nonexistent/program",), network="bridge"))
    with pytest.raises(ContainerStartError):
        box.start()
    assert fakenet.leftovers() == []


def test_a_bad_uplink_is_one_clear_line_and_leaves_nothing(net_env, monkeypatch):
    monkeypatch.setenv("SANDBOX_KERNEL_NET_UPLINK", "nosuch0")
    with pytest.raises(OSError, match="uplink 'nosuch0' is not an interface of this host"):
        Container(ContainerSpec(command=SLEEP, network="bridge")).start()
    assert fakenet.leftovers() == []


OWNER = """
import sys, time
from sandbox_kernel.runtime.container import Container
from sandbox_kernel.runtime.spec import ContainerSpec
box = Container(ContainerSpec(command=(sys.executable, "-c", "import time; time.sleep(120)"),
                              network="bridge", allow=("pypi.org",), rate=10**7))
box.start()
print(box.name, flush=True)
time.sleep(120)
"""


def test_kill_9_of_the_owner_then_reap_stale_leaves_nothing(net_env):
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    try:
        name = owner.stdout.readline().strip()
        assert name.startswith("sbk-"), name
        assert any(item.startswith("dnsmasq") for item in fakenet.leftovers())
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait(30)
        owner.stdout.close()
    _await_container_gone(name)
    assert fakenet.leftovers() != []   # the resolver, the table, the bridge: the dead owner's
    removed = cleanup._reap_networks()
    assert f"net {name}" in removed and "net sbk-br0" in removed, removed
    assert fakenet.leftovers() == []
    assert not os.path.exists(os.path.join(net_records.RUN_DIR, f"{name}.json"))


def test_reap_stale_leaves_a_live_owners_network_alone(net_env):
    with Container(ContainerSpec(command=SLEEP, network="bridge")) as box:
        box.start()
        assert cleanup._reap_networks() == []
        assert os.path.exists(f"/sys/class/net/{box.net_host_ifname}")


def _await_container_gone(name: str, timeout: float = 30) -> None:
    """The launcher kills the container when its owner dies; its veth goes with its namespace."""
    tag = name.rsplit("-", 1)[1]
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/sys/class/net/sbk{tag}h") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/sys/class/net/sbk{tag}h"), "the dead owner's veth stayed"


def test_a_live_owners_next_bridge_start_undoes_a_dead_owners_network(net_env):
    # a kernel that has run for days starts containers long after its one reap_stale
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    try:
        name = owner.stdout.readline().strip()
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait(30)
        owner.stdout.close()
    _await_container_gone(name)
    with Container(ContainerSpec(command=SLEEP, network="bridge")) as box:
        box.start()
        assert not os.path.exists(os.path.join(net_records.RUN_DIR, f"{name}.json"))
        resolvers = [item for item in fakenet.leftovers() if item.startswith("dnsmasq")]
        assert resolvers == [f"dnsmasq pid {box._net.resolver.pid}"], resolvers   # its own only


def test_a_bridge_that_fails_half_made_is_removed(net_env, monkeypatch):
    from sandbox_kernel.runtime import net_filter
    monkeypatch.setattr(net_filter, "base_rules", lambda pool, uplink: "add table ip sandbox_kernel\nnonsense\n")
    with pytest.raises(net_filter.NetFilterError, match="nft -f -"):
        Container(ContainerSpec(command=SLEEP, network="bridge")).start()
    assert not _bridge_up() and not os.path.exists(os.path.join(net_records.RUN_DIR, "bridge.json"))
    monkeypatch.undo()
    with Container(ContainerSpec(command=SLEEP, network="bridge")) as box:   # the next start works
        box.start()


def test_the_command_line_says_a_bad_uplink_in_one_line(net_env):
    """run: a part the host refuses (here the uplink) is one line and exit 125, no traceback."""
    import subprocess
    import sys
    ran = subprocess.run([sys.executable, "-m", "sandbox_kernel.cli", "run", "--net", "bridge",
                          "--", "true"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "SANDBOX_KERNEL_NET_UPLINK": "nosuch0"})
    assert ran.returncode == 125, ran.stderr
    assert ran.stderr.count("\n") == 1 and "uplink 'nosuch0'" in ran.stderr, ran.stderr
