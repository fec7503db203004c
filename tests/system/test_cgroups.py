"""Real cgroups, as root or in a delegated subtree, with whichever driver detect_driver() picks here.

The development machines pick v1 (hybrid); the v2 path runs in the guest of
shared/tools:  ../shared/tools/run-in-v2 .venv/bin/python -m pytest -q tests/system

Every child is a python that waits for a line on stdin, so that it is in the
group (add(pid)) before it does the work being measured.  Every group is
destroyed in the fixture's teardown; every wait is bounded.
"""
import os
import select
import subprocess
import sys
import time
import uuid

import pytest

from sandbox_kernel.runtime.cgroups import CgroupError, detect_driver
from sandbox_kernel.runtime.spec import Limits

# As a user these run where a cgroup v2 subtree is delegated (rootless-v2);
# elsewhere the driver fixture skips, naming what is missing.
pytestmark = [pytest.mark.system]

MiB = 1 << 20
LINE_TIMEOUT = 60   # seconds; processes start about 10x slower in the v2 guest

WAIT_FOR_GO = "import os, sys, time\nsys.stdin.readline()\n"


@pytest.fixture(scope="module")
def driver():
    driver = detect_driver()
    if driver.version == "null":
        pytest.skip(f"no usable cgroups here: {driver.reason}")
    return driver


@pytest.fixture
def make_group(driver):
    groups, children = [], []

    def make(limits=Limits()):
        group = driver.create(f"sbk-test-{uuid.uuid4().hex[:8]}", limits)
        groups.append(group)
        group.children = children
        return group

    yield make
    try:
        for group in groups:
            group.destroy()
    finally:
        for child in children:
            child.kill()
            child.wait(timeout=LINE_TIMEOUT)
            child.stdin.close()
            child.stdout.close()


def start_in(group, code: str) -> subprocess.Popen:
    """A python child, moved into group, then told to run code."""
    child = subprocess.Popen([sys.executable, "-c", WAIT_FOR_GO + code],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    group.children.append(child)
    group.add(child.pid)
    tell(child, "go")
    return child


def tell(child, line: str) -> None:
    child.stdin.write(line + "\n")
    child.stdin.flush()


def read_line(child, timeout: float = LINE_TIMEOUT) -> str:
    ready, _, _ = select.select([child.stdout], [], [], timeout)
    assert ready, f"child {child.pid} said nothing in {timeout} s"
    return child.stdout.readline().strip()


def group_file(group, name: str) -> str | None:
    """A limit file of the group, wherever its hierarchy is (None if absent)."""
    for procs in group.join_files():
        path = os.path.join(os.path.dirname(procs), name)
        if os.path.exists(path):
            with open(path) as file:
                return file.read().strip()
    return None


def test_create_writes_limits(driver, make_group):
    group = make_group(Limits(memory=64 * MiB, cpus=0.5, pids=32))
    if driver.version == "v2":
        assert (group_file(group, "memory.max"), group_file(group, "cpu.max"),
                group_file(group, "pids.max")) == (str(64 * MiB), "50000 100000", "32")
        assert group_file(group, "memory.swap.max") in ("0", None)   # None: no swap accounting
    else:
        assert (group_file(group, "memory.limit_in_bytes"), group_file(group, "cpu.cfs_quota_us"),
                group_file(group, "cpu.cfs_period_us"), group_file(group, "pids.max")) \
            == (str(64 * MiB), "50000", "100000", "32")
        assert group_file(group, "memory.memsw.limit_in_bytes") in (str(64 * MiB), None)
    stats = group.stats()
    assert (stats.memory_limit, stats.cpu_limit, stats.pids_limit) == (64 * MiB, 0.5, 32)


def test_memory_current_and_peak_rise_and_peak_resets(make_group):
    group = make_group(Limits(memory=256 * MiB))
    child = start_in(group, "data = b'x' * (64 << 20)\nprint('full', flush=True)\n"
                            "sys.stdin.readline()\ndel data\nprint('empty', flush=True)\n"
                            "sys.stdin.readline()\n")
    assert read_line(child) == "full"
    full = group.stats()
    assert full.memory_current >= 60 * MiB
    assert full.memory_peak is None or full.memory_peak >= 60 * MiB
    tell(child, "free it")
    assert read_line(child) == "empty"
    if not group.reset_peaks():
        pytest.skip("this kernel cannot reset the memory peak (memory.peak: Linux >= 6.12)")
    assert group.stats().memory_peak < 32 * MiB


def test_memory_limit_ends_in_an_oom_kill_that_stats_count(make_group):
    group = make_group(Limits(memory=32 * MiB))
    assert group.stats().oom_kills == 0
    child = start_in(group, "chunks = [b'x' * (4 << 20) for _ in range(256)]\n")   # 1 GiB at most
    assert child.wait(timeout=LINE_TIMEOUT) == -9
    stats = group.stats()
    assert stats.oom_kills >= 1
    assert stats.memory_peak is None or stats.memory_peak <= 32 * MiB


def test_pids_limit_stops_forking(make_group):
    group = make_group(Limits(pids=8))
    child = start_in(group, """
kids, refused = 0, 0
for _ in range(20):
    try:
        pid = os.fork()
    except BlockingIOError:   # EAGAIN: pids.max reached
        refused += 1
        continue
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    kids += 1
print(kids, refused, flush=True)
sys.stdin.readline()
""")
    kids, refused = map(int, read_line(child).split())
    assert (kids, refused) == (7, 13)   # the python itself is the eighth
    stats = group.stats()
    assert (stats.pids_current, stats.pids_limit) == (8, 8)
    assert stats.pids_peak in (None, 8)


def test_cpu_limit_throttles(make_group):
    group = make_group(Limits(cpus=0.2))
    child = start_in(group, "end = time.monotonic() + 1.5\nwhile time.monotonic() < end:\n"
                            "    pass\nprint('done', flush=True)\n")
    started = time.monotonic()
    assert read_line(child) == "done"
    wall = time.monotonic() - started
    stats = group.stats()
    assert stats.nr_throttled > 0 and stats.throttled_time > 0
    assert stats.cpu_usage < 0.5 * wall, f"{stats.cpu_usage:.2f} s of cpu in {wall:.2f} s at 0.2 cpus"


def test_set_changes_limits_live(make_group):
    group = make_group(Limits(memory=64 * MiB, cpus=0.5, pids=16))
    child = start_in(group, "data = b'x' * (40 << 20)\nprint('ready', flush=True)\n"
                            "sys.stdin.readline()\n")
    assert read_line(child) == "ready"
    for limits in (Limits(memory=128 * MiB, cpus=1.0, pids=32),
                   Limits(memory=96 * MiB, cpus=0.25, pids=4)):
        group.set(limits)
        stats = group.stats()
        assert (stats.memory_limit, stats.cpu_limit, stats.pids_limit) \
            == (limits.memory, limits.cpus, limits.pids)
    group.set(Limits())
    stats = group.stats()
    assert (stats.memory_limit, stats.cpu_limit, stats.pids_limit) == (None, None, None)
    assert child.poll() is None, "a live change must not hurt the process"


def test_freeze_stops_the_clock_and_thaw_restarts_it(make_group):
    group = make_group()
    child = start_in(group, "print('spinning', flush=True)\nend = time.monotonic() + 60\n"
                            "while time.monotonic() < end:\n    pass\n")
    assert read_line(child) == "spinning"
    try:
        group.freeze()
    except CgroupError as error:
        pytest.skip(f"no freezer here: {error}")
    frozen = group.stats().cpu_usage
    time.sleep(0.3)
    assert group.stats().cpu_usage - frozen < 0.01
    group.thaw()
    time.sleep(0.3)
    assert group.stats().cpu_usage - frozen > 0.05


def test_kill_and_destroy_leave_nothing(driver, make_group):
    group = make_group()
    sleeper = "time.sleep(60)\n"
    first = start_in(group, sleeper)
    group.kill()
    assert first.wait(timeout=LINE_TIMEOUT) == -9
    second = start_in(group, "pid = os.fork()\n" + sleeper)   # a grandchild too
    deadline = time.monotonic() + LINE_TIMEOUT
    while len(group.pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    group.destroy()
    assert second.wait(timeout=LINE_TIMEOUT) == -9
    assert group.pids() == []
    assert not [path for path in driver.leftovers() if path.endswith(group.name)]
    assert not any(os.path.exists(os.path.dirname(p)) for p in group.join_files())
    group.destroy()   # idempotent


def test_a_process_joins_through_join_files(make_group):
    group = make_group()
    joiner = ("import sys\nfor path in sys.argv[1:]:\n    with open(path, 'w') as f:\n"
              "        f.write('0')\nprint('joined', flush=True)\nsys.stdin.readline()\n")
    child = subprocess.Popen([sys.executable, "-c", joiner, *group.join_files()],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    group.children.append(child)
    assert read_line(child) == "joined"
    assert group.pids() == [child.pid]


def test_v2_parent_keeps_no_processes(driver, make_group):
    if driver.version != "v2":
        pytest.skip(f"the no-internal-process rule is cgroup v2's; this host runs {driver.version}")
    make_group()
    parent = driver.parent.path
    with open(os.path.join(parent, "cgroup.procs")) as procs:
        assert procs.read().split() == []
    again = detect_driver()   # we may now live in parent/leaf: the parent stays the same
    assert again.version == "v2" and again.parent.path == parent
