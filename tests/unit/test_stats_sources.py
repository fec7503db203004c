"""The stats endpoint's sources (sandbox_kernel/server/sources.py) without
a server: a provisioned kernel's view, from a stand-in of the provisioner's
registry entry, is the side panel's message with the endpoint's keys."""
from __future__ import annotations

import time
from types import SimpleNamespace

from sandbox_kernel.runtime.spec import ContainerSpec, Limits
from sandbox_kernel.runtime.stats import CgroupStats
from sandbox_kernel.server import sources

MIB = 1 << 20


def _death(at: float) -> SimpleNamespace:
    words = "the R kernel ran out of memory at the 256 MiB limit (peak 256 MiB)"
    return SimpleNamespace(as_dict=lambda: {"reason": "oom", "message": words, "at": at,
                                            "exit_code": None, "signal": 9,
                                            "memory_peak": 256 * MIB, "memory_limit": 256 * MIB})


def _provisioned(container, figures, deaths=()) -> SimpleNamespace:
    spec = ContainerSpec(command=("R",), limits=Limits(memory=256 * MIB, cpus=1.0, pids=64))
    return SimpleNamespace(kernel_id="k1", language="R", display_name="R (sandbox)", spec=spec,
                           container=container, deaths=list(deaths), restarts=len(deaths),
                           started=time.time() - 5, stats=lambda: figures)


def test_a_running_provisioned_kernel_is_one_session_of_the_contract():
    figures = CgroupStats(memory_current=40 * MIB, memory_limit=256 * MIB, pids_current=3,
                          cpu_user=1.0, cpu_system=0.5)
    message = sources.provisioned_view(_provisioned(SimpleNamespace(), figures)).message("tick")
    assert (message["kernel"], message["kernel_id"], message["language"]) == ("provisioned", "k1", "R")
    assert message["per_cell"] is False and message["deaths"] == []
    (entry,) = message["sessions"]
    assert entry["state"] == "running" and 4 < entry["uptime"] < 600
    stats = entry["stats"]
    assert stats["session"] == "R (sandbox)"
    assert stats["limits"] == {"memory": 256 * MIB, "cpus": 1.0, "pids": 64, "timeout": None}
    assert stats["cell"]["memory_current"] == 40 * MIB and stats["cell"]["status"] is None
    assert stats["cell"]["io_read"] is None and stats["cell"]["net_rx"] is None   # unknown: null, never 0


def test_between_restarts_the_kernel_says_restarting_and_keeps_its_deaths():
    deaths = [_death(time.time() - 100 + i) for i in range(sources.MAX_DEATHS + 3)]
    message = sources.provisioned_view(_provisioned(None, None, deaths)).message("snapshot", "open")
    (entry,) = message["sessions"]
    assert entry["state"] == "restarting" and entry["uptime"] is None
    assert entry["stats"]["cell"]["memory_current"] is None
    assert len(message["deaths"]) == sources.MAX_DEATHS            # the last ones only
    assert message["deaths"][-1]["message"].startswith("the R kernel ran out of memory")


def test_net_counters_come_from_the_host_side_of_the_veth_or_are_null():
    assert sources._net_counters(None) == {"net_rx": None, "net_tx": None}
    assert sources._net_counters("../../etc") == {"net_rx": None, "net_tx": None}
    assert sources._net_counters("sbk-no-such-veth") == {"net_rx": None, "net_tx": None}
    lo = sources._net_counters("lo")
    assert isinstance(lo["net_rx"], int) and isinstance(lo["net_tx"], int)


def test_a_bridged_provisioned_kernel_shows_its_bytes_and_refusals():
    refused = SimpleNamespace(destination="203.0.113.7", protocol="tcp", port=443, count=2,
                              names=("example.com",))
    net = SimpleNamespace(rx_bytes=1000, tx_bytes=200, refused=[refused], lookups=[])
    container = SimpleNamespace(net_stats=lambda: net, net_host_ifname="sbk-v-x")
    message = sources.provisioned_view(_provisioned(container, CgroupStats(memory_current=MIB))).message("tick")
    cell = message["sessions"][0]["stats"]["cell"]
    assert (cell["net_rx"], cell["net_tx"], cell["net_refused"]) == (1000, 200, 2)
    assert cell["net_refusals"][0]["names"] == ["example.com"]
