"""Limits hold: memory, pids, cpu, disk and wall time, read back from the
cgroup's own figures."""
from __future__ import annotations

import os

import pytest

from sandbox_kernel.runtime.spec import Limits

pytestmark = pytest.mark.usefixtures("no_leftovers")
MiB = 1 << 20


def test_memory_limit_oom_kills_and_the_caller_survives(pyrun, needs_cgroup):
    needs_cgroup("memory")
    ran = pyrun("x = bytearray(200 * 1024 * 1024); print('allocated')",
                limits=Limits(memory=64 * MiB))
    assert ran.result.status == "oom"
    assert "allocated" not in ran.stdout
    assert ran.result.stats.oom_kills >= 1
    assert ran.result.stats.memory_limit == 64 * MiB
    assert ran.result.exit_code == 128 + 9


def test_memory_peak_is_at_least_what_was_allocated(pyrun, needs_cgroup):
    needs_cgroup("memory")
    ran = pyrun("x = bytearray(48 * 1024 * 1024); x[::4096] = b'x' * len(x[::4096])",
                limits=Limits(memory=256 * MiB))
    assert ran.result.status == "ok", ran.stderr
    assert ran.result.stats.memory_peak >= 48 * MiB


FORK_BOMB = """
import os, time
children = 0
for _ in range(500):
    try:
        if os.fork() == 0:
            time.sleep(3); os._exit(0)
        children += 1
    except BlockingIOError:
        break
print(children)
"""


def test_fork_bomb_stops_at_the_pids_limit(pyrun, cgroup_driver):
    if cgroup_driver.version == "null" and os.geteuid() == 0:
        pytest.skip("no cgroups here and no user namespace: nothing limits processes safely")
    ran = pyrun(FORK_BOMB, limits=Limits(pids=32, timeout=30))
    assert ran.result.status == "ok", ran.stderr
    children = int(ran.stdout.strip())
    # init and python itself count against the limit too
    assert 20 <= children < 32
    assert ran.result.stats.pids_limit == 32


SPIN = """
import time
end = time.monotonic() + 2.0
while time.monotonic() < end:
    pass
"""


def test_cpu_limit_half_a_core(pyrun, needs_cgroup):
    needs_cgroup("cpu")
    ran = pyrun(SPIN, limits=Limits(cpus=0.5))
    stats = ran.result.stats
    assert ran.result.status == "ok", ran.stderr
    share = stats.cpu_usage / ran.result.wall
    assert 0.25 <= share <= 0.75, f"got {share:.2f} of a core"
    assert stats.nr_throttled and stats.nr_throttled > 0


def test_disk_limit_gives_enospc_and_the_host_disk_is_untouched(run):
    before = os.statvfs("/")
    ran = run("dd if=/dev/zero of=/tmp/fill bs=1M count=64 2>&1; echo rc=$?",
              limits=Limits(disk=16 * MiB))
    after = os.statvfs("/")
    assert "No space left on device" in ran.stdout
    assert "rc=1" in ran.stdout
    lost = (before.f_bavail - after.f_bavail) * before.f_frsize
    assert lost < 16 * MiB, f"the host's disk lost {lost} bytes"


def test_timeout_kills_and_reports_timeout(run):
    ran = run("sleep 60", limits=Limits(timeout=1.0))
    assert ran.result.status == "timeout"
    assert ran.result.wall < 15
