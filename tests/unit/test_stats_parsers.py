"""The parsers of stats.py against cgroupfs files recorded on real hosts
(tests/fixtures/cgroup_v1: a v1 hybrid host; cgroup_v2: the v2 guest)."""
from pathlib import Path

import pytest

from sandbox_kernel.runtime.stats import (CgroupStats, parse_blkio_v1, parse_cfs_quota,
                                          parse_cpu_max, parse_flat_keyed, parse_int,
                                          parse_io_stat_v2, parse_max, parse_nested_keyed,
                                          parse_pid_list, parse_shmem, parse_v1_limit,
                                          flat_keyed_value, v1_stats, v2_stats)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def recorded(version: str, group: str = "group") -> dict[str, str]:
    directory = FIXTURES / f"cgroup_{version}" / group
    return {path.name: path.read_text() for path in directory.iterdir()}


def test_v2_recorded_group_after_cpu_forks_io_and_oom():
    stats = v2_stats(recorded("v2"))
    assert stats.as_dict() == pytest.approx(dict(
        memory_current=192512, memory_peak=64 << 20, memory_limit=64 << 20,
        pids_current=0, pids_peak=16, pids_limit=16, pids_refused=None,
        cpu_user=1.15, cpu_system=0.12, cpu_usage=1.27, cpu_limit=0.5,
        throttled_time=1.08, nr_throttled=24,
        io_read=2 << 20, io_write=4 << 20, oom_kills=1,
        memory_shmem=None, disk_used=None, disk_limit=None))   # no memory.stat recorded


def test_v1_recorded_group_after_cpu_forks_io_and_oom():
    stats = v1_stats(recorded("v1"), clock_ticks=100)
    assert stats.as_dict() == pytest.approx(dict(
        memory_current=155648, memory_peak=64 << 20, memory_limit=64 << 20,
        pids_current=0, pids_peak=16, pids_limit=16, pids_refused=None,
        cpu_user=0.32, cpu_system=0.06, cpu_usage=0.384800433, cpu_limit=0.5,
        throttled_time=0.328975618, nr_throttled=7,
        io_read=2105344, io_write=4 << 20, oom_kills=1,
        memory_shmem=None, disk_used=None, disk_limit=None))   # no memory.stat recorded


@pytest.mark.parametrize("version, parse", [("v2", v2_stats), ("v1", v1_stats)])
def test_unlimited_groups_report_no_limits(version, parse):
    stats = parse(recorded(version, "unlimited"))
    assert (stats.memory_limit, stats.cpu_limit, stats.pids_limit) == (None, None, None)
    assert stats.oom_kills == 0 and stats.nr_throttled == 0


@pytest.mark.parametrize("parse", [v2_stats, v1_stats])
def test_missing_files_give_none_never_zero(parse):
    assert parse({}) == CgroupStats()


def test_v2_missing_optional_files_leave_the_rest():
    texts = recorded("v2")
    for name in ("memory.peak", "pids.peak", "io.stat"):
        del texts[name]
    stats = v2_stats(texts)
    assert (stats.memory_peak, stats.pids_peak, stats.io_read, stats.io_write) == (None,) * 4
    assert stats.memory_current == 192512 and stats.pids_limit == 16


def test_v1_without_pids_peak_gives_none():
    texts = recorded("v1")
    del texts["pids.peak"]
    assert v1_stats(texts).pids_peak is None


def test_single_values():
    assert parse_int("1486848\n") == 1486848
    assert parse_max("max\n") is None
    assert parse_max("16\n") == 16
    assert parse_v1_limit("9223372036854771712\n") is None
    assert parse_v1_limit("-1") is None
    assert parse_v1_limit("67108864\n") == 64 << 20


def test_cpu_limits_in_cores():
    assert parse_cpu_max("max 100000\n") is None
    assert parse_cpu_max("50000 100000\n") == 0.5
    assert parse_cpu_max("150000 50000") == 3.0
    assert parse_cfs_quota("-1\n", "100000\n") is None
    assert parse_cfs_quota("25000\n", "100000\n") == 0.25


def test_flat_keyed_files():
    events = parse_flat_keyed(recorded("v2")["memory.events"])
    assert events["oom_kill"] == 1 and events["max"] == 38
    assert parse_flat_keyed(recorded("v1")["memory.oom_control"])["oom_kill"] == 1
    assert parse_flat_keyed(recorded("v1")["cpuacct.stat"]) == {"user": 32, "system": 6}


def test_flat_keyed_skips_lines_of_another_shape():
    assert parse_flat_keyed("a 1\nodd\nb two\nc 3 4\n\nd -1\n") == {"a": 1, "d": -1}


@pytest.mark.parametrize("text", ["a 1\nodd\nb two\nc 3 4\n\nd -1\n", "x 5", "", "shmem 7\nshmem_thp 9\n",
                                  "file 1\nshmem_thp 9\nshmem 7\ntotal_shmem 11\n"])
def test_one_flat_keyed_value_is_what_the_whole_parse_gives(text):
    whole = parse_flat_keyed(text)
    for key in ("a", "b", "c", "d", "x", "odd", "shmem", "shmem_thp", "total_shmem", "hmem", "missing"):
        assert flat_keyed_value(text, key) == whole.get(key), key


def test_shmem_of_recorded_memory_stat_files_and_neighbours_of_its_name():
    assert parse_shmem("anon 4096\nshmem_thp 8192\nshmem 12288\n") == 12288
    assert parse_shmem("shmem 1\ntotal_shmem 5\n", v1=True) == 5      # the group's with its children's
    assert parse_shmem("shmem 1\n", v1=True) == 1
    assert parse_shmem("total_shmem 5\n") is None                     # v2 has no total_
    assert parse_shmem("anon 1\n") is None
    # a v1 container of this host that wrote 300000 bytes and 4 to its /tmp (42 lines)
    text = recorded("v1", "memory_stat")["memory.stat"]
    assert parse_shmem(text, v1=True) == parse_flat_keyed(text)["total_shmem"] == 307200


def test_io_stat_v2_sums_devices():
    text = "8:0 rbytes=100 wbytes=10 rios=1 wios=1 dbytes=0 dios=0\n8:16 rbytes=5 wbytes=7\n"
    assert parse_nested_keyed(text)["8:16"] == {"rbytes": 5, "wbytes": 7}
    assert parse_io_stat_v2(text) == (105, 17)
    assert parse_io_stat_v2(recorded("v2")["io.stat"]) == (2 << 20, 4 << 20)
    assert parse_io_stat_v2("") == (0, 0)


def test_blkio_v1_counts_read_and_write_once():
    # Sync, Async, Discard and both Total lines are other views of the same bytes
    assert parse_blkio_v1(recorded("v1")["blkio.throttle.io_service_bytes"]) == (2105344, 4 << 20)
    assert parse_blkio_v1("Total 0\n") == (0, 0)
    text = "8:0 Read 10\n8:0 Write 20\n8:0 Sync 30\n8:16 Read 1\n8:16 Write 2\n8:16 Total 3\nTotal 33"
    assert parse_blkio_v1(text) == (11, 22)
    assert parse_blkio_v1("8:0 Read x\n8:0 Writes 5\n8:0 Write 7 8\n") == (0, 0)   # not of the shape


def test_pid_list():
    assert parse_pid_list("757\n760\n") == [757, 760]
    assert parse_pid_list(recorded("v2")["cgroup.procs"]) == []
