"""top.py's pieces without containers: the veth counters (a card's interface
name is its owner's input), the cpu rate between two snapshots, the screen."""
from __future__ import annotations

from sandbox_kernel import top


def test_net_reads_an_interface_and_refuses_paths():
    counters = top._net("lo")
    assert set(counters) == {"rx_bytes", "tx_bytes"} and counters["rx_bytes"] >= 0
    for hostile in ("../../etc", "lo/../../x", "a" * 16, "", None, "no-such-if0"):
        assert top._net(hostile) is None


def test_cpu_percent_needs_two_figures_and_time():
    assert top._percent(3.0, 2.0, 2.0) == 50.0
    assert top._percent(3.0, None, 2.0) is None and top._percent(None, 1.0, 2.0) is None
    assert top._percent(3.0, 2.0, 0) is None
    assert top._percent(1.0, 2.0, 1.0) == 0.0   # a counter that went back (a new group)


def test_the_screen_shows_ceilings_and_rows_with_unknowns_as_dashes():
    usage = dict.fromkeys(top.USAGE_KEYS)
    snap = {"host": "h", "cgroup": "v2", "ceilings": [
        {"user": "alice", "uid": 1001, "memory": 1 << 30, "cpus": 2.0, "pids": 100,
         "usage": {**usage, "memory": 256 << 20, "pids": 7, "cpu_percent": 12.5}}],
        "containers": [
        {"name": "sbk-1-ab", "user": "alice", "session": None, "kind": "kernel",
         "language": "python", "kernel_id": "3f2a1b9c-0000",
         "image": "host", "uptime": 3725.0, "usage": usage,
         "limits": {"memory": 512 << 20, "cpus": None, "pids": 64}, "net": None,
         "ceiling": {"memory": 1 << 30, "cpus": 2.0, "pids": 100}}]}
    screen = top.render(snap)
    assert "256.0M/1.0G" in screen and "12.5%/2" in screen and "7/100" in screen
    row = screen.splitlines()[-1]
    assert row.startswith("alice") and "-/512.0M" in row and "1:02:05" in row
    assert "python 3f2a1b9c " in row
    assert "1.0G 2.0cpu 100p" in row
