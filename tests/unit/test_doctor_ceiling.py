"""doctor's ceiling row against a fake cgroupfs: the ceiling over this process,
read from the ceiling's own files, on v1 and v2; none for a user outside one."""
from __future__ import annotations

from sandbox_kernel.runtime import doctor, doctor_ceiling
from sandbox_kernel.runtime.cgroups import delegation


def _write(directory, files):
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)


def test_the_base_is_the_delegation_trees():
    assert doctor_ceiling.BASE == delegation.BASE


def test_v2_ceiling_is_described_with_its_figures(tmp_path):
    ceiling = tmp_path / "sandbox-kernel-users" / "alice"
    _write(ceiling, {"memory.max": "134217728\n", "memory.current": "3145728\n",
                     "cpu.max": "150000 100000\n", "pids.max": "200\n", "pids.current": "4\n"})
    own = str(ceiling / "user" / "server" / "leaf")
    layout = doctor.CgroupLayout("v2", (), {"memory": own, "cpu": own, "pids": own}, own)
    check = doctor.check_ceiling(layout, 1000)
    assert check.ok and not check.required
    assert check.detail.startswith("alice: memory 128 MiB (in use 3 MiB), cpus 1.5, pids 200 (in use 4)")


def test_v1_ceiling_reads_each_hierarchy(tmp_path):
    root = tmp_path / "sandbox-kernel-users"
    _write(tmp_path / "memory" / root.name / "bob", {"memory.limit_in_bytes": "9223372036854771712\n",
                                                    "memory.usage_in_bytes": "1024\n"})
    _write(tmp_path / "cpu" / root.name / "bob", {"cpu.cfs_quota_us": "200000\n",
                                                 "cpu.cfs_period_us": "100000\n"})
    _write(tmp_path / "pids" / root.name / "bob", {"pids.max": "max\n", "pids.current": "oops\n"})
    dirs = {c: str(tmp_path / c / root.name / "bob" / "user") for c in ("memory", "cpu", "pids")}
    check = doctor.check_ceiling(doctor.CgroupLayout("v1", (), dirs), 1000)
    assert "bob: memory no limit (in use 1 KiB), cpus 2, pids no limit (in use oops)" in check.detail


def test_a_user_outside_any_ceiling_is_told_how_to_get_one(tmp_path):
    layout = doctor.CgroupLayout("v2", (), {"memory": str(tmp_path)}, str(tmp_path))
    check = doctor.check_ceiling(layout, 1000)
    assert not check.ok and not check.required
    assert "sandbox-kernel delegate" in check.fix
    assert doctor.check_ceiling(layout, 0) is None   # root outside one: no row


def test_a_limited_cgroup_without_a_ceiling_is_reported_as_shared(tmp_path):
    # a pod: its container's cgroup (the root of its cgroup namespace) has the pod's limit
    _write(tmp_path / "pod", {"memory.max": str(2 << 30) + "\n"})
    _write(tmp_path / "pod" / "kernel", {"memory.max": "max\n"})
    own = str(tmp_path / "pod" / "kernel")
    check = doctor.check_ceiling(doctor.CgroupLayout("v2", (), {"memory": own}, own), 1000)
    assert check.ok
    assert f"memory 2 GiB at {tmp_path / 'pod'}" in check.detail
