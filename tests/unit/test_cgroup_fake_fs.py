"""The v2, v1 and null drivers and detect_driver against a fake cgroupfs in
tmp_path, without root (as opencontainers/cgroups fs2/memory_test.go does).

FakeCgroupFs acts as the kernel where a plain directory cannot: mkdir fills
a new group with its files, rmdir takes a group with its files, a pid
written to cgroup.procs moves, cgroup.subtree_control refuses with EBUSY
under the no-internal-process rule, and memory.memsw.limit_in_bytes must
stay >= memory.limit_in_bytes.  Pids in fake files are above pid_max, so no
real process can ever be signalled by mistake.
"""
import collections
import errno
import itertools
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox_kernel.runtime.cgroups import CgroupError, detect_driver
from sandbox_kernel.runtime.cgroups import cpus as cpu_placement
from sandbox_kernel.runtime.cgroups.files import CgroupDir
from sandbox_kernel.runtime.cgroups.detect import group_dir, parse_mountinfo, parse_proc_cgroup
from sandbox_kernel.runtime.cgroups.null import NullDriver
from sandbox_kernel.runtime.cgroups.v1 import V1Driver
from sandbox_kernel.runtime.cgroups.v2 import V2Driver
from sandbox_kernel.runtime.spec import Limits

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
V1_UNLIMITED = "9223372036854771712\n"
FAKE_PIDS = ("9000001", "9000002")   # above any pid_max (at most 2**22)

V2_CORE = {"cgroup.procs": "", "cgroup.subtree_control": "", "cgroup.freeze": "0\n",
           "cgroup.events": "populated 0\nfrozen 0\n", "cgroup.kill": "",
           "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"}
V2_FILES = {
    "memory": {"memory.current": "0\n", "memory.peak": "0\n", "memory.max": "max\n",
               "memory.swap.max": "max\n", "memory.events": "max 0\noom 0\noom_kill 0\n"},
    "cpu": {"cpu.max": "max 100000\n"},
    "pids": {"pids.current": "0\n", "pids.peak": "0\n", "pids.max": "max\n"},
    "io": {"io.stat": ""},
    "cpuset": {"cpuset.cpus": "", "cpuset.cpus.effective": ""},
}
V1_FILES = {
    "memory": {"memory.usage_in_bytes": "0\n", "memory.max_usage_in_bytes": "0\n",
               "memory.limit_in_bytes": V1_UNLIMITED, "memory.memsw.limit_in_bytes": V1_UNLIMITED,
               "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"},
    "cpu": {"cpu.cfs_period_us": "100000\n", "cpu.cfs_quota_us": "-1\n",
            "cpu.stat": "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n"},
    "cpuacct": {"cpuacct.usage": "0\n", "cpuacct.stat": "user 0\nsystem 0\n"},
    "pids": {"pids.current": "0\n", "pids.max": "max\n"},   # no pids.peak, as before Linux 6.x
    "blkio": {"blkio.throttle.io_service_bytes": "Total 0\n", "blkio.throttle.read_bps_device": ""},
    "freezer": {"freezer.state": "THAWED\n"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},   # empty in a new group, as the kernel's
}


class FakeCgroupFs:
    """A cgroup mount under ``mount``: v2, or v1 with one directory per hierarchy
    named after its controllers ("memory", "cpu,cpuacct")."""

    def __init__(self, mount: Path, version: str, monkeypatch):
        self.mount, self.version = mount, version
        self._write, self._mkdir, self._rmdir = CgroupDir.write, os.mkdir, os.rmdir
        monkeypatch.setattr(os, "mkdir", self.mkdir)
        monkeypatch.setattr(os, "rmdir", self.rmdir)
        monkeypatch.setattr(CgroupDir, "write",
                            lambda cgroup_dir, name, value, fix="": self.write(cgroup_dir, name, value, fix))

    def owns(self, path) -> bool:
        return Path(path).is_relative_to(self.mount)

    def fill(self, path: Path, files: dict[str, str]) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (path / name).write_text(text)
        return path

    def files_for(self, path: Path) -> dict[str, str]:
        if self.version == "v2":
            enabled = (path.parent / "cgroup.subtree_control").read_text().split()
            files = {**V2_CORE, "cgroup.controllers": " ".join(enabled)}
        else:
            enabled = path.relative_to(self.mount).parts[0].split(",")
            files = {"cgroup.procs": ""}
        table = V2_FILES if self.version == "v2" else V1_FILES
        for controller in enabled:
            files.update(table.get(controller, {}))
        return files

    def mkdir(self, path, mode=0o777):
        self._mkdir(path, mode)
        # a group, not the mount or (v1) a hierarchy's root: those the tests fill
        if self.owns(path) and len(Path(path).relative_to(self.mount).parts) > (self.version == "v1"):
            self.fill(Path(path), self.files_for(Path(path)))

    def rmdir(self, path):
        if self.owns(path) and os.path.isdir(path):
            for child in Path(path).iterdir():
                if child.is_file():
                    child.unlink()
        self._rmdir(path)

    def write(self, cgroup_dir, name, value, fix=""):
        path = Path(cgroup_dir.path)
        if not self.owns(path):
            return self._write(cgroup_dir, name, value, fix)
        if name == "cgroup.procs":
            return self.move(path, value)
        if name == "cgroup.subtree_control":
            return self.enable(path, value)
        if name.startswith("memory.") and name.endswith("limit_in_bytes"):
            value = self.memsw_rule(path, name, value)
        return self._write(cgroup_dir, name, value, fix)

    def move(self, target: Path, pid: str):
        hierarchy = self.mount if self.version == "v2" else self.mount / target.relative_to(self.mount).parts[0]
        for procs in hierarchy.rglob("cgroup.procs"):
            procs.write_text("".join(f"{p}\n" for p in procs.read_text().split() if p != pid))
        with open(target / "cgroup.procs", "a") as procs:
            procs.write(f"{pid}\n")

    def enable(self, path: Path, change: str):
        if path != self.mount and (path / "cgroup.procs").read_text().strip():
            raise CgroupError(errno.EBUSY, f"{path}: no internal processes")
        enabled = set((path / "cgroup.subtree_control").read_text().split())
        for word in change.split():
            if word[1:] not in (path / "cgroup.controllers").read_text().split():
                raise CgroupError(errno.ENOENT, f"{word} not available in {path}")
            (enabled.add if word[0] == "+" else enabled.discard)(word[1:])
        (path / "cgroup.subtree_control").write_text(" ".join(sorted(enabled)) + "\n")

    def memsw_rule(self, path: Path, name: str, value: str) -> str:
        def number(text):
            return int(text) if int(text) >= 0 else int(V1_UNLIMITED)
        new = number(value)
        limit = number((path / "memory.limit_in_bytes").read_text())
        memsw = number((path / "memory.memsw.limit_in_bytes").read_text())
        if (name == "memory.limit_in_bytes" and new > memsw) or \
                (name == "memory.memsw.limit_in_bytes" and new < limit):
            raise CgroupError(errno.EINVAL, f"writing {value} to {path / name}: memsw < limit")
        return str(new)


def text(path: Path) -> str:
    return path.read_text().strip()


# -- v2 -------------------------------------------------------------------------

@pytest.fixture
def v2fs(tmp_path, monkeypatch):
    fs = FakeCgroupFs(tmp_path / "cgroup", "v2", monkeypatch)
    fs.fill(fs.mount, {"cgroup.controllers": "cpu io memory pids\n", "cgroup.procs": "",
                       "cgroup.subtree_control": "cpu io memory pids\n"})
    fs.mkdir(fs.mount / "test.scope")
    return fs


@pytest.fixture
def v2driver(v2fs):
    return V2Driver(str(v2fs.mount / "test.scope"))


def test_v2_create_writes_limits(v2driver):
    group = v2driver.create("sbk-a", Limits(memory=64 << 20, cpus=0.5, pids=16))
    path = Path(group.dir.path)
    assert path == Path(v2driver.parent.path) / "sbk-a"
    assert text(path / "memory.max") == str(64 << 20)
    assert text(path / "memory.swap.max") == "0"
    assert text(path / "cpu.max") == "50000 100000"
    assert text(path / "pids.max") == "16"
    assert group.join_files() == [str(path / "cgroup.procs")]
    assert group.thread_join_files() is None      # cgroup.threads: threaded groups only


def test_v2_no_limits_are_max(v2driver):
    path = Path(v2driver.create("sbk-a", Limits()).dir.path)
    assert [text(path / n) for n in ("memory.max", "memory.swap.max", "cpu.max", "pids.max")] \
        == ["max", "max", "max 100000", "max"]


def test_v2_set_changes_limits_and_swap_file_is_optional(v2driver):
    group = v2driver.create("sbk-a", Limits(memory=64 << 20))
    path = Path(group.dir.path)
    (path / "memory.swap.max").unlink()   # a kernel without swap accounting
    group.set(Limits(memory=32 << 20, cpus=2, pids=100))
    assert [text(path / n) for n in ("memory.max", "cpu.max", "pids.max")] \
        == [str(32 << 20), "200000 100000", "100"]
    assert group.limits == Limits(memory=32 << 20, cpus=2, pids=100)


def test_v2_processes_move_into_leaf_before_enabling(v2fs, v2driver):
    own = v2fs.mount / "test.scope"
    (own / "cgroup.procs").write_text("".join(p + "\n" for p in FAKE_PIDS))
    v2driver.create("sbk-a", Limits(memory=64 << 20))
    assert text(own / "cgroup.procs") == ""
    assert text(own / "leaf" / "cgroup.procs").split() == list(FAKE_PIDS)
    assert text(own / "cgroup.subtree_control") == "cpu io memory pids"
    assert v2driver.leftovers() == [str(own / "sbk-a")]   # leaf is ours to keep


def test_v2_missing_controller_says_how_to_fix_and_leaves_nothing(v2fs):
    own = v2fs.fill(v2fs.mount / "partial", {"cgroup.controllers": "memory pids\n",
                                            "cgroup.subtree_control": "", "cgroup.procs": ""})
    driver = V2Driver(str(own))
    assert driver.controllers == ("memory", "pids")
    with pytest.raises(CgroupError) as raised:
        driver.create("sbk-a", Limits(cpus=1))
    assert raised.value.errno == errno.EOPNOTSUPP
    assert "cpu controller" in str(raised.value) and "subtree_control" in str(raised.value)
    assert driver.leftovers() == []


def test_v2_stats_read_through_kept_open_files(v2driver):
    group = v2driver.create("sbk-a", Limits(memory=64 << 20, cpus=0.5, pids=16))
    path = Path(group.dir.path)
    for recorded in (FIXTURES / "cgroup_v2" / "group").iterdir():
        shutil.copy(recorded, path / recorded.name)
    stats = group.stats()
    assert (stats.memory_peak, stats.oom_kills, stats.nr_throttled, stats.io_write) \
        == (64 << 20, 1, 24, 4 << 20)
    (path / "memory.current").write_text("4096\n")   # same descriptor, new text
    assert group.stats().memory_current == 4096
    assert "memory.current" in group.dir._fds


def test_v2_optional_files_missing_give_none(v2driver):
    group = v2driver.create("sbk-a", Limits())
    for name in ("memory.peak", "pids.peak", "io.stat"):
        (Path(group.dir.path) / name).unlink()
    stats = group.stats()
    assert (stats.memory_peak, stats.pids_peak, stats.io_read) == (None, None, None)
    assert (stats.memory_current, stats.memory_limit, stats.cpu_limit) == (0, None, None)
    assert group.reset_peaks() is False


def test_v2_reset_peaks_writes_through_the_stats_descriptor(v2driver):
    group = v2driver.create("sbk-a", Limits())
    group.stats()
    assert group.reset_peaks() is True
    assert text(Path(group.dir.path) / "memory.peak").startswith("reset")


def test_a_stats_read_is_one_pread_per_file_and_a_reset_reads_nothing(v2driver, monkeypatch):
    """A cell reads the stats twice and resets the peaks: a cgroup file is
    made whole at each read from offset 0, so a second pread to find the end
    (or a read before a reset) made it again, some 16 files per read on v1."""
    group = v2driver.create("sbk-a", Limits(memory=64 << 20, pids=16))
    group.stats()                                  # the descriptors opened
    preads = []
    real = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, off: preads.append(off) or real(fd, n, off))
    group.stats()
    assert preads and all(offset == 0 for offset in preads)
    assert len(preads) == len([fd for fd in group.dir._fds.values() if fd is not None])
    preads.clear()
    assert group.reset_peaks() is True
    assert preads == []


def test_a_stats_file_longer_than_one_read_is_read_whole(tmp_path):
    (tmp_path / "memory.stat").write_text("x" * 70000 + "\nend 1\n")
    assert CgroupDir(str(tmp_path)).read("memory.stat").endswith("end 1\n")


def test_v2_freeze_thaw_kill(v2driver):
    group = v2driver.create("sbk-a", Limits())
    path = Path(group.dir.path)
    (path / "cgroup.events").write_text("populated 0\nfrozen 1\n")   # the kernel's answer
    group.freeze()
    assert text(path / "cgroup.freeze") == "1"
    group.thaw()
    assert text(path / "cgroup.freeze") == "0"
    group.kill()
    assert text(path / "cgroup.kill") == "1"


def test_v2_kill_without_cgroup_kill_signals_each_pid(v2driver):
    group = v2driver.create("sbk-a", Limits())
    path = Path(group.dir.path)
    (path / "cgroup.kill").unlink()                  # Linux < 5.14
    (path / "cgroup.events").write_text("frozen 1\n")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (path / "cgroup.procs").write_text(f"{sleeper.pid}\n")
        group.kill()
        assert sleeper.wait(timeout=10) == -9
        assert text(path / "cgroup.freeze") == "0"   # frozen for the kill, thawed after
    finally:
        sleeper.kill()
        sleeper.wait()
        (path / "cgroup.procs").write_text("")


def test_v2_destroy_is_idempotent_and_closes_files(v2driver):
    group = v2driver.create("sbk-a", Limits())
    group.stats()
    group.destroy()
    group.destroy()
    assert not os.path.exists(group.dir.path) and group.dir._fds == {}
    assert v2driver.leftovers() == []


def test_names_must_carry_the_prefix(v2driver):
    for name in ("a", "sbk-", "sbk-a/b"):
        with pytest.raises(CgroupError):
            v2driver.create(name, Limits())


def test_v2_existing_group_is_an_error_not_a_reuse(v2driver):
    v2driver.create("sbk-a", Limits())
    with pytest.raises(CgroupError) as raised:
        v2driver.create("sbk-a", Limits())
    assert raised.value.errno == errno.EEXIST


# -- v1 -------------------------------------------------------------------------

@pytest.fixture
def v1fs(tmp_path, monkeypatch):
    fs = FakeCgroupFs(tmp_path / "cgroup", "v1", monkeypatch)
    for hierarchy in ("memory", "cpu,cpuacct", "pids", "blkio", "freezer"):
        fs.fill(fs.mount / hierarchy, {"cgroup.procs": ""})
    fs.mkdir(fs.mount / "memory" / "process_api")
    fs.mkdir(fs.mount / "memory" / "process_api" / "ID")
    return fs


@pytest.fixture
def v1driver(v1fs, tmp_path):
    disks = tmp_path / "sys_block"
    (disks / "vda").mkdir(parents=True)
    (disks / "vda" / "dev").write_text("254:0\n")
    parents = {"memory": v1fs.mount / "memory" / "process_api" / "ID",
               "cpu": v1fs.mount / "cpu,cpuacct", "cpuacct": v1fs.mount / "cpu,cpuacct",
               "pids": v1fs.mount / "pids", "blkio": v1fs.mount / "blkio",
               "freezer": v1fs.mount / "freezer"}
    return V1Driver({c: str(p) for c, p in parents.items()}, sys_block=str(disks))


def test_v1_create_writes_limits_in_each_hierarchy(v1fs, v1driver):
    group = v1driver.create("sbk-a", Limits(memory=64 << 20, cpus=0.5, pids=16))
    memory = v1fs.mount / "memory" / "process_api" / "ID" / "sbk-a"
    cpu = v1fs.mount / "cpu,cpuacct" / "sbk-a"
    assert text(memory / "memory.limit_in_bytes") == text(memory / "memory.memsw.limit_in_bytes") \
        == str(64 << 20)
    assert (text(cpu / "cpu.cfs_period_us"), text(cpu / "cpu.cfs_quota_us")) == ("100000", "50000")
    assert text(v1fs.mount / "pids" / "sbk-a" / "pids.max") == "16"
    assert text(v1fs.mount / "blkio" / "sbk-a" / "blkio.throttle.read_bps_device") == "254:0 0"
    assert len(group.join_files()) == 5   # cpu and cpuacct share one hierarchy
    # init joins by itself through each hierarchy's tasks (no global lock)
    assert group.thread_join_files() == [p.replace("cgroup.procs", "tasks") for p in group.join_files()]


def test_v1_memsw_order_when_raising_and_lowering(v1fs, v1driver):
    group = v1driver.create("sbk-a", Limits(memory=64 << 20))
    memory = v1fs.mount / "memory" / "process_api" / "ID" / "sbk-a"
    for limit in (128 << 20, 32 << 20, None, 16 << 20):
        group.set(Limits(memory=limit))
        expected = V1_UNLIMITED.strip() if limit is None else str(limit)
        assert text(memory / "memory.limit_in_bytes") == expected
        assert text(memory / "memory.memsw.limit_in_bytes") == expected


def test_v1_no_limits(v1fs, v1driver):
    group = v1driver.create("sbk-a", Limits(cpus=1, pids=5))
    group.set(Limits())
    assert text(v1fs.mount / "cpu,cpuacct" / "sbk-a" / "cpu.cfs_quota_us") == "-1"
    assert text(v1fs.mount / "pids" / "sbk-a" / "pids.max") == "max"
    stats = group.stats()
    assert (stats.memory_limit, stats.cpu_limit, stats.pids_limit) == (None, None, None)


def test_v1_stats_from_recorded_files(v1driver):
    group = v1driver.create("sbk-a", Limits())
    for recorded in (FIXTURES / "cgroup_v1" / "group").iterdir():
        for hierarchy in group.hierarchies:
            if hierarchy.has(recorded.name) or recorded.name == "pids.peak" and \
                    hierarchy.has("pids.max"):
                shutil.copy(recorded, hierarchy.file(recorded.name))
    stats = group.stats()
    assert (stats.memory_peak, stats.oom_kills, stats.pids_peak, stats.io_read) \
        == (64 << 20, 1, 16, 2105344)
    assert stats.cpu_user == pytest.approx(0.32 * 100 / os.sysconf("SC_CLK_TCK"))


def test_v1_missing_optional_files_give_none(v1driver):
    group = v1driver.create("sbk-a", Limits())
    os.unlink(group.dirs["blkio"].file("blkio.throttle.io_service_bytes"))
    stats = group.stats()
    assert (stats.pids_peak, stats.io_read, stats.io_write) == (None, None, None)
    assert (stats.memory_current, stats.nr_throttled) == (0, 0)


def test_v1_io_is_none_when_no_disk_counts(v1fs):
    driver = V1Driver({"blkio": str(v1fs.mount / "blkio")}, sys_block="/nonexistent")
    stats = driver.create("sbk-a", Limits()).stats()
    assert (stats.io_read, stats.io_write) == (None, None)


def test_v1_reset_peaks_freeze_thaw(v1driver):
    group = v1driver.create("sbk-a", Limits())
    assert group.reset_peaks() is True
    assert text(Path(group.dirs["memory"].file("memory.max_usage_in_bytes"))) == "0"
    group.freeze()
    assert text(Path(group.dirs["freezer"].file("freezer.state"))) == "FROZEN"
    group.thaw()
    assert text(Path(group.dirs["freezer"].file("freezer.state"))) == "THAWED"


def test_v1_a_cell_resets_the_peak_through_the_kept_descriptor_and_skips_refused_resets(
        v1driver, monkeypatch):
    """A cell resets the peaks before it runs: v1's memory peak is written
    through the descriptor its stats are read from (an open, write and close
    cost a kernel's cell ~0.1 ms), and a reset the kernel refused (pids.peak
    on v1 before Linux 6.x: EINVAL) is not asked again each cell."""
    group = v1driver.create("sbk-a", Limits(memory=64 << 20, pids=16))
    Path(group.dirs["pids"].file("pids.peak")).write_text("3\n")   # Linux >= 6.x also on v1
    group.stats()                                  # the descriptors opened
    opened, written = [], []
    real_open, real_write = os.open, os.write
    monkeypatch.setattr(os, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))

    def write(fd, data):
        written.append(fd)
        if fd == group.dirs["pids"]._fds.get("pids.peak"):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)
    monkeypatch.setattr(os, "write", write)
    assert group.reset_peaks() is True and group.reset_peaks() is True
    assert opened == []
    assert text(Path(group.dirs["memory"].file("memory.max_usage_in_bytes"))).startswith("0")
    pids_fd = group.dirs["pids"]._fds["pids.peak"]
    assert written.count(pids_fd) == 1             # refused once, not tried again
    assert group.stats().pids_peak is None         # a peak from before the reset would mislead


def test_v1_stats_do_not_read_what_they_report_as_unknown(v1driver, monkeypatch):
    """Uncounted io and a pids peak that could not be reset are None: their
    files are not read (a cell reads the stats twice)."""
    group = v1driver.create("sbk-a", Limits(memory=64 << 20, pids=16))
    group.io_counted = False
    group._pids_peak_stale = True
    group.stats()
    read = []
    monkeypatch.setattr(type(group.dirs["pids"]), "read",
                        lambda self, name, real=type(group.dirs["pids"]).read: read.append(name) or real(self, name))
    stats = group.stats()
    assert (stats.io_read, stats.io_write, stats.pids_peak) == (None, None, None)
    assert not [name for name in read if "blkio" in name or "pids.peak" in name]
    assert stats.pids_limit == 16 and stats.memory_limit == 64 << 20


def test_v1_destroy_removes_every_hierarchy_and_is_idempotent(v1driver):
    group = v1driver.create("sbk-a", Limits(memory=64 << 20))
    group.stats()
    assert len(v1driver.leftovers()) == 5
    group.destroy()
    group.destroy()
    assert v1driver.leftovers() == []
    assert not any(d.present() for d in group.hierarchies)


def test_v1_missing_memory_hierarchy_says_how_to_fix(v1fs):
    driver = V1Driver({"pids": str(v1fs.mount / "pids")})
    with pytest.raises(CgroupError) as raised:
        driver.create("sbk-a", Limits(memory=64 << 20))
    assert "memory controller not mounted" in str(raised.value)
    assert driver.leftovers() == []


# -- null -------------------------------------------------------------------------

def test_null_driver_limits_itself_with_rlimits_and_reports_no_figures():
    driver = NullDriver("not root and no delegated cgroup v2 subtree")
    group = driver.create("sbk-a", Limits(memory=64 << 20, pids=10, cpus=1))
    assert group.child_rlimits() == [(resource.RLIMIT_AS, 64 << 20)]
    assert group.join_files() == [] and driver.leftovers() == []
    assert group.thread_join_files() is None
    stats = group.stats()
    assert stats.memory_limit == 64 << 20
    assert all(v is None for k, v in stats.as_dict().items() if k != "memory_limit")
    assert driver.create("sbk-b", Limits()).child_rlimits() == []


def test_null_cgroup_kills_what_was_added():
    group = NullDriver("none").create("sbk-a", Limits())
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        group.add(sleeper.pid)
        assert group.pids() == [sleeper.pid]
        group.kill()
        assert sleeper.wait(timeout=10) == -9
        assert group.pids() == []
        group.destroy()
        group.destroy()
    finally:
        sleeper.kill()
        sleeper.wait()


# -- detect -------------------------------------------------------------------------

def fake_proc(tmp_path: Path, version: str, cgroup: str | None = None) -> str:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    recorded = FIXTURES / f"cgroup_{version}" / "proc"
    shutil.copy(recorded / "mountinfo", proc / "self" / "mountinfo")
    (proc / "self" / "cgroup").write_text(cgroup or (recorded / "cgroup").read_text())
    return str(proc)


def fake_hybrid_host(root: Path) -> None:
    """The cgroupfs of the recorded v1 host: v1 controllers, an empty cgroup2."""
    base = root / "sys/fs/cgroup"
    for hierarchy in ("cpu", "cpuacct", "cpuset", "memory/process_api/ID", "devices", "freezer",
                      "blkio", "pids", "systemd"):
        (base / hierarchy).mkdir(parents=True)
        (base / hierarchy / "cgroup.procs").write_text("")
    for name, content in (("cgroup.controllers", ""), ("cgroup.subtree_control", ""),
                          ("cgroup.procs", "")):
        (base / "unified").mkdir(exist_ok=True)
        (base / "unified" / name).write_text(content)


def fake_v2_host(root: Path, controllers: str = "cpu io memory pids") -> Path:
    own = root / "sys/fs/cgroup/test.scope"
    own.mkdir(parents=True)
    for name, content in (("cgroup.controllers", controllers), ("cgroup.subtree_control", ""),
                          ("cgroup.procs", "")):
        (own / name).write_text(content)
    return own


def test_detect_picks_v1_on_a_hybrid_host(tmp_path):
    proc = fake_proc(tmp_path, "v1", (FIXTURES / "cgroup_v1/proc/cgroup").read_text()
                     .replace("/process_api/3c342346f1c5d2cd543679e6f9cf1949", "/process_api/ID"))
    fake_hybrid_host(tmp_path / "root")
    driver = detect_driver(proc, root=str(tmp_path / "root"))
    assert driver.version == "v1"
    base = tmp_path / "root/sys/fs/cgroup"
    assert driver.parents["memory"] == str(base / "memory/process_api/ID")
    assert driver.parents["cpu"] == str(base / "cpu")
    assert set(driver.controllers) == {"memory", "cpu", "cpuacct", "pids", "blkio", "freezer",
                                       "cpuset"}


@pytest.mark.parametrize("own", ["/test.scope", "/test.scope/leaf"])
def test_detect_picks_v2_with_our_own_group_as_parent(tmp_path, own):
    proc = fake_proc(tmp_path, "v2", f"0::{own}\n")
    parent = fake_v2_host(tmp_path / "root")
    (parent / "leaf").mkdir()
    driver = detect_driver(proc, root=str(tmp_path / "root"))
    assert (driver.version, driver.parent.path) == ("v2", str(parent))
    assert driver.controllers == ("cpu", "io", "memory", "pids")


def test_detect_without_writable_groups_is_null_with_a_reason(tmp_path, monkeypatch):
    proc = fake_proc(tmp_path, "v2", "0::/test.scope\n")
    fake_v2_host(tmp_path / "root")
    monkeypatch.setattr(os, "access", lambda path, mode: mode != os.W_OK)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    driver = detect_driver(proc, root=str(tmp_path / "root"))
    assert driver.version == "null"
    assert "not root and no delegated cgroup v2 subtree" in driver.reason


def test_detect_without_cgroup_mounts_is_null(tmp_path):
    proc = tmp_path / "proc" / "self"
    proc.mkdir(parents=True)
    (proc / "mountinfo").write_text("20 1 0:18 / / rw - ext4 /dev/vda rw\n")
    (proc / "cgroup").write_text("0::/\n")
    driver = detect_driver(str(tmp_path / "proc"), root=str(tmp_path))
    assert driver.version == "null" and "cgroup v1: no memory" in driver.reason


def test_detect_without_proc_is_null(tmp_path):
    driver = detect_driver(str(tmp_path / "nothing"))
    assert driver.version == "null" and "is /proc mounted?" in driver.reason


def test_parse_mountinfo_recorded_and_escaped():
    mounts = parse_mountinfo((FIXTURES / "cgroup_v1/proc/mountinfo").read_text())
    assert [m.fstype for m in mounts].count("cgroup") == 9
    memory = next(m for m in mounts if "memory" in m.options)
    assert (memory.root, memory.mount_point) == ("/", "/sys/fs/cgroup/memory")
    line = "41 31 0:38 /a\\040b /sys/fs/my\\040cg rw shared:9 master:2 - cgroup2 cgroup2 rw,nsdelegate\n"
    (mount,) = parse_mountinfo(line)
    assert (mount.root, mount.mount_point, "nsdelegate" in mount.options) \
        == ("/a b", "/sys/fs/my cg", True)


def test_parse_proc_cgroup_splits_co_mounted_controllers():
    membership = parse_proc_cgroup("2:cpu,cpuacct:/a\n0::/b:c\n9:name=systemd:/\n")
    assert membership == {"cpu": "/a", "cpuacct": "/a", "": "/b:c", "name=systemd": "/"}


def test_group_dir_below_a_mounted_subtree():
    (mount,) = parse_mountinfo("1 2 0:3 /docker/x /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    assert group_dir(mount, "/docker/x/sub") == "/sys/fs/cgroup/sub"
    assert group_dir(mount, "/docker/x") == "/sys/fs/cgroup"
    assert group_dir(mount, "/other") is None


# -- cpus: the limit as CPU affinity (cgroups/cpus.py) ------------------------------

@pytest.fixture
def four_cpus(monkeypatch):
    """The owner may use CPUs 0-3; ties are broken from CPU 0 on, in turn."""
    monkeypatch.setattr(cpu_placement, "allowed_cpus", lambda: [0, 1, 2, 3])
    monkeypatch.setattr(cpu_placement, "_rotation", itertools.count(0))


@pytest.fixture
def v1_with_cpuset(v1fs, tmp_path):
    v1fs.fill(v1fs.mount / "cpuset", {"cgroup.procs": "", "cpuset.cpus": "0-3\n",
                                      "cpuset.mems": "0-1\n"})
    return V1Driver({"cpuset": str(v1fs.mount / "cpuset"), "cpu": str(v1fs.mount / "cpu,cpuacct"),
                     "memory": str(v1fs.mount / "memory")}, sys_block=str(tmp_path / "none"))


def test_cpu_lists_parse_and_format_as_the_kernel_writes_them():
    assert cpu_placement.parse_list("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert cpu_placement.parse_list("") == []
    assert cpu_placement.format_list([11, 0, 1, 2, 8, 10]) == "0-2,8,10-11"


def test_cpu_count_is_the_limit_rounded_up_within_what_is_allowed():
    allowed = [0, 1]
    assert [cpu_placement.cpu_count_for(c, allowed) for c in (0.01, 1, 1.5, 2, 7)] == [1, 1, 2, 2, 2]
    assert cpu_placement.cpu_count_for(None, allowed) is None
    assert cpu_placement.thread_environment(None) == {}
    assert set(cpu_placement.thread_environment(1).values()) == {"1"}
    assert {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"} \
        <= set(cpu_placement.thread_environment(1))


def test_v1_cpuset_copies_mems_and_pins_groups_to_the_least_used_cpus(v1fs, v1_with_cpuset,
                                                                         four_cpus):
    first = v1_with_cpuset.create("sbk-a", Limits(cpus=1.5))
    second = v1_with_cpuset.create("sbk-b", Limits(cpus=2))
    cpuset = v1fs.mount / "cpuset"
    assert text(cpuset / "sbk-a" / "cpuset.mems") == "0-1"   # before any task may join
    assert (text(cpuset / "sbk-a" / "cpuset.cpus"), text(cpuset / "sbk-b" / "cpuset.cpus")) \
        == ("0-1", "2-3")
    assert first.child_affinity() is None   # the cpuset does it: init binds nothing
    assert cpuset / "sbk-a" / "cgroup.procs" in map(Path, first.join_files())
    first.set(Limits(cpus=1))                # live: fewer CPUs, a fresh choice
    assert len(cpu_placement.parse_list(text(cpuset / "sbk-a" / "cpuset.cpus"))) == 1
    second.set(Limits())                     # no limit: every allowed CPU
    assert text(cpuset / "sbk-b" / "cpuset.cpus") == "0-3"
    assert len(v1_with_cpuset.leftovers()) == 6   # cpuset, cpu and memory, of two groups
    first.destroy()
    second.destroy()
    assert v1_with_cpuset.leftovers() == []


def test_v1_without_cpuset_hierarchy_has_init_bind_itself(v1fs, v1driver, four_cpus):
    group = v1driver.create("sbk-a", Limits(cpus=2))
    assert group.child_affinity() == [0, 1]
    assert v1driver.create("sbk-b", Limits()).child_affinity() is None


def test_v2_cpuset_where_delegated_else_init_binds_itself(v2fs, four_cpus):
    (v2fs.mount / "cgroup.controllers").write_text("cpu io memory pids cpuset\n")
    (v2fs.mount / "cgroup.subtree_control").write_text("cpu io memory pids cpuset\n")
    v2fs.mkdir(v2fs.mount / "cpuset.scope")
    with_cpuset = V2Driver(str(v2fs.mount / "cpuset.scope"))
    group = with_cpuset.create("sbk-a", Limits(cpus=3))
    assert "cpuset" in text(v2fs.mount / "cpuset.scope" / "cgroup.subtree_control").split()
    assert text(v2fs.mount / "cpuset.scope" / "sbk-a" / "cpuset.cpus") == "0-2"
    assert group.child_affinity() is None
    without = V2Driver(str(v2fs.mount / "test.scope")).create("sbk-b", Limits(cpus=1))
    assert without.child_affinity() in ([0], [1], [2], [3])
    assert not (v2fs.mount / "test.scope" / "sbk-b" / "cpuset.cpus").exists()


def test_null_driver_pins_init_and_a_live_change_every_thread():
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: a pinned process cannot be told from an unpinned one")
    group = NullDriver("none").create("sbk-a", Limits())
    assert group.child_affinity() is None   # no limit: the owner's CPUs, nothing to bind
    assert len(NullDriver("none").create("sbk-b", Limits(cpus=1)).child_affinity()) == 1
    threads = "import threading, time\nthreading.Thread(target=time.sleep, args=(30,)).start()\n"
    child = subprocess.Popen([sys.executable, "-c", threads + "time.sleep(30)"])
    try:
        group.add(child.pid)
        tasks = lambda: [int(t) for t in os.listdir(f"/proc/{child.pid}/task")]   # noqa: E731
        deadline = time.monotonic() + 30
        while len(tasks()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        group.set(Limits(cpus=1))   # from no limit to one CPU: every thread moves
        assert {frozenset(os.sched_getaffinity(t)) for t in tasks()} == {frozenset(group.cpus)}
        group.set(Limits())
        assert group.child_affinity() is None
        assert {len(os.sched_getaffinity(t)) for t in tasks()} == {len(os.sched_getaffinity(0))}
    finally:
        group.destroy()
        child.kill()
        child.wait()


def test_cpus_in_use_are_read_from_the_sibling_groups(tmp_path):
    """cpuset.cpus where there is a cpuset, else the first process's affinity;
    our own group and non-sbk groups do not count."""
    for name, cpus in (("sbk-a", "0-1\n"), ("sbk-b", "1\n"), ("sbk-own", "0-3\n"), ("other", "2\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cpuset.cpus").write_text(cpus)
    assert cpu_placement.cpuset_use(str(tmp_path), "sbk-own") == {0: 1, 1: 2}
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(sleeper.pid, {cpu})
        (tmp_path / "sbk-a" / "cgroup.procs").write_text(f"{sleeper.pid}\n{FAKE_PIDS[0]}\n")
        (tmp_path / "sbk-b" / "cgroup.procs").write_text(f"{FAKE_PIDS[1]}\n")   # gone: skipped
        assert cpu_placement.affinity_use(str(tmp_path), "sbk-own") == {cpu: 1}
    finally:
        sleeper.kill()
        sleeper.wait()


def test_choose_takes_the_least_used_cpus_and_rotates_between_equals(four_cpus):
    in_use = collections.Counter({0: 2, 1: 1})
    assert cpu_placement.choose(2, [0, 1, 2, 3], in_use) == [2, 3]
    picks = [cpu_placement.choose(1, [0, 1, 2, 3], collections.Counter()) for _ in range(4)]
    assert sorted(p[0] for p in picks) == [0, 1, 2, 3]
