"""delegation.py's pieces against plain files: where the ceilings go, what is
written, and that a ceiling asked of a controller the host lacks is an error
(never a silent no-limit)."""
from __future__ import annotations

import errno

import pytest

from sandbox_kernel.runtime.cgroups import delegation


def _mountinfo(tmp_path, lines):
    proc = tmp_path / "proc" / "self"
    proc.mkdir(parents=True)
    (proc / "mountinfo").write_text("".join(lines))
    return str(tmp_path / "proc")


def test_v2_with_memory_wins_and_v1_is_per_controller(tmp_path):
    unified = tmp_path / "unified"
    unified.mkdir()
    (unified / "cgroup.controllers").write_text("cpu memory pids\n")
    proc = _mountinfo(tmp_path, [f"30 20 0:26 / {unified} rw - cgroup2 cgroup2 rw\n"])
    assert delegation.hierarchies(proc) == ("v2", {"unified": str(unified)})
    (unified / "cgroup.controllers").write_text("")   # hybrid: an empty cgroup2 beside v1
    v1 = [f"3{i} 20 0:2{i} / /sys/fs/cgroup/{c} rw - cgroup cgroup rw,{c}\n"
          for i, c in enumerate(("memory", "cpu,cpuacct", "devices"))]
    proc = _mountinfo(tmp_path / "b", [f"30 20 0:26 / {unified} rw - cgroup2 cgroup2 rw\n", *v1])
    version, roots = delegation.hierarchies(proc)
    assert version == "v1" and "devices" not in roots
    assert roots["cpu"] == roots["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct"


def _v2_group(tmp_path, names):
    for name in names:
        (tmp_path / name).write_text("max\n")
    return {"unified": str(tmp_path)}


def test_v2_ceiling_files(tmp_path):
    groups = _v2_group(tmp_path, ("memory.max", "memory.swap.max", "cpu.max", "pids.max"))
    delegation._write_ceiling("v2", groups, 1 << 30, 1.5, 100)
    assert [(tmp_path / n).read_text() for n in ("memory.max", "memory.swap.max", "cpu.max",
                                                  "pids.max")] == [
        str(1 << 30), "0", "150000 100000", "100"]


def test_a_ceiling_of_a_missing_controller_is_refused(tmp_path):
    groups = _v2_group(tmp_path, ("memory.max", "cpu.max"))
    delegation._write_ceiling("v2", groups, 1 << 30, 1, None)     # no pids asked: fine
    with pytest.raises(delegation.DelegationError) as raised:
        delegation._write_ceiling("v2", groups, 1 << 30, 1, 100)
    assert raised.value.errno == errno.EOPNOTSUPP and "no pids controller" in raised.value.strerror


@pytest.mark.parametrize("user, words", [("root", "root needs no ceiling"), ("0", "root needs"),
                                         ("no-such-user-x", "no such user")])
def test_who_cannot_have_a_ceiling(user, words):
    with pytest.raises(delegation.DelegationError) as raised:
        delegation._account(user)
    assert words in raised.value.strerror
