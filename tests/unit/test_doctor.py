"""doctor against fake hosts: a /proc and a /sys written into tmp_path."""
from __future__ import annotations

import json
import os
import sys

import pytest

from sandbox_kernel.runtime import doctor

# this project's development machines: v1 controllers, an empty cgroup2 at .../unified
HYBRID_MOUNTINFO = """\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_CGROUP = """\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
4:memory:/process_api/abc
2:cpuacct:/
1:cpu:/
0::/
"""
V2_MOUNTINFO = """\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
30 23 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate
"""
V2_CGROUP = "0::/test.scope\n"
FILESYSTEMS = "nodev\tsysfs\nnodev\tproc\nnodev\tcgroup2\n\text4\nnodev\toverlay\n"
ACTIONS = "kill_process kill_thread trap errno user_notif trace log allow"


def write(path, text=""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def fake_host(tmp_path, mountinfo, cgroup, uid=0, filesystems=FILESYSTEMS, sysctls=None):
    """Write a fake /proc (for this process) and return (proc_root, sys_root)."""
    proc, sys_root = str(tmp_path / "proc"), str(tmp_path / "sys")
    write(f"{proc}/self/mountinfo", mountinfo)
    write(f"{proc}/self/cgroup", cgroup)
    write(f"{proc}/self/status", f"Name:\tpython3\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"
                                 "Seccomp:\t0\nSeccomp_filters:\t0\n")
    write(f"{proc}/filesystems", filesystems)
    for ns in (*doctor.NAMESPACES, "user"):
        write(f"{proc}/self/ns/{ns}")
    settings = {"kernel/seccomp/actions_avail": ACTIONS, "user/max_user_namespaces": "63704"}
    for name, value in {**settings, **(sysctls or {})}.items():
        write(f"{proc}/sys/{name}", value + "\n")
    os.makedirs(sys_root, exist_ok=True)
    return proc, sys_root


def hybrid_host(tmp_path, **kw):
    proc, sys_root = fake_host(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP, **kw)
    for c in ("cpu", "cpuacct", "freezer", "blkio", "pids", "systemd"):
        os.makedirs(f"{sys_root}/fs/cgroup/{c}")
    write(f"{sys_root}/fs/cgroup/memory/process_api/abc/memory.memsw.limit_in_bytes", "max\n")
    write(f"{sys_root}/fs/cgroup/unified/cgroup.controllers", "")
    return proc, sys_root


def v2_host(tmp_path, **kw):
    proc, sys_root = fake_host(tmp_path, V2_MOUNTINFO, V2_CGROUP, **kw)
    top = f"{sys_root}/fs/cgroup"
    write(f"{top}/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n")
    write(f"{top}/test.scope/cgroup.controllers", "cpu io memory pids\n")
    for name in ("cgroup.subtree_control", "memory.max", "memory.swap.max"):
        write(f"{top}/test.scope/{name}", "")
    return proc, sys_root


def by_name(checks):
    return {c.name: c for c in checks}


@pytest.fixture
def bin_dir(tmp_path, monkeypatch):
    """PATH holds only this directory: the idmap tools are there only if a test puts them."""
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setenv("PATH", str(path))
    return path


def test_hybrid_host_like_the_development_machines(tmp_path, bin_dir):
    checks = by_name(doctor.diagnose(*hybrid_host(tmp_path)))
    assert checks["cgroups"].detail == "hybrid: v1 controllers, and cgroup2 at /sys/fs/cgroup/unified"
    assert checks["cgroup controllers"].ok
    assert checks["cgroup controllers"].detail == "memory cpu cpuacct pids blkio freezer"
    assert checks["swap accounting"].detail == "memory.memsw.limit_in_bytes"
    assert checks["root"].ok and checks["overlayfs"].ok and checks["seccomp"].ok
    assert not checks["newuidmap/newgidmap"].required       # root does not need them
    assert doctor.can_run_containers(list(checks.values()))


def test_hybrid_layout_finds_this_process_in_each_hierarchy(tmp_path):
    proc, sys_root = hybrid_host(tmp_path)
    layout = doctor.cgroup_layout(proc, sys_root)
    assert layout.version == "hybrid"
    assert layout.dirs["memory"] == f"{sys_root}/fs/cgroup/memory/process_api/abc"
    assert layout.dirs["pids"] == f"{sys_root}/fs/cgroup/pids"
    assert layout.unified == f"{sys_root}/fs/cgroup/unified"
    assert "systemd" not in layout.dirs                     # a name= hierarchy has no controller


def test_pure_v2_host(tmp_path, bin_dir):
    proc, sys_root = v2_host(tmp_path)
    checks = by_name(doctor.diagnose(proc, sys_root))
    assert checks["cgroups"].detail == "v2 at /sys/fs/cgroup"
    assert checks["cgroup controllers"].detail == "memory cpu pids io"
    assert checks["swap accounting"].detail == "memory.swap.max"
    assert checks["cgroup writable"].ok
    assert "test.scope/cgroup.subtree_control" in checks["cgroup writable"].detail
    assert doctor.can_run_containers(list(checks.values()))


def test_v2_without_swap_accounting(tmp_path, bin_dir):
    proc, sys_root = v2_host(tmp_path)
    os.remove(f"{sys_root}/fs/cgroup/test.scope/memory.swap.max")
    checks = doctor.diagnose(proc, sys_root)
    swap = by_name(checks)["swap accounting"]
    assert not swap.ok and not swap.required and "swapaccount=1" in swap.fix
    assert doctor.can_run_containers(checks)


def test_v2_process_in_root_cgroup_looks_at_a_child_for_swap(tmp_path, bin_dir):
    proc, sys_root = v2_host(tmp_path)
    write(f"{proc}/self/cgroup", "0::/\n")
    assert by_name(doctor.diagnose(proc, sys_root))["swap accounting"].ok


def test_v2_missing_memory_controller_names_subtree_control(tmp_path, bin_dir):
    proc, sys_root = v2_host(tmp_path)
    write(f"{sys_root}/fs/cgroup/test.scope/cgroup.controllers", "cpu pids\n")
    check = by_name(doctor.diagnose(proc, sys_root))["cgroup controllers"]
    assert not check.ok and "no limit on memory" in check.detail
    assert check.fix == f"echo +memory > {sys_root}/fs/cgroup/cgroup.subtree_control"


def test_no_overlay_cannot_run(tmp_path, bin_dir):
    checks = doctor.diagnose(*hybrid_host(tmp_path, filesystems="nodev\tproc\n\text4\n"))
    overlay = by_name(checks)["overlayfs"]
    assert not overlay.ok and overlay.required and overlay.fix.startswith("modprobe overlay")
    assert not doctor.can_run_containers(checks)
    assert "fix: modprobe overlay" in doctor.render(checks)


def test_non_root_with_userns_disabled_cannot_run(tmp_path, bin_dir):
    proc, sys_root = v2_host(tmp_path, uid=1000,
                             sysctls={"kernel/unprivileged_userns_clone": "0"})
    checks = doctor.diagnose(proc, sys_root)
    userns = by_name(checks)["user namespaces"]
    assert not userns.ok and userns.required
    assert "sysctl -w kernel.unprivileged_userns_clone=1" in userns.fix
    assert not doctor.can_run_containers(checks)
    assert "Containers cannot run on this host" in doctor.render(checks)


def test_non_root_needs_idmap_tools_and_ubuntu_apparmor_switch(tmp_path, bin_dir):
    proc, sys_root = v2_host(tmp_path, uid=1000,
                             sysctls={"kernel/apparmor_restrict_unprivileged_userns": "1"})
    checks = by_name(doctor.diagnose(proc, sys_root))
    assert "kernel.apparmor_restrict_unprivileged_userns=0" in checks["user namespaces"].fix
    # optional: without them a rootless container maps one id and still runs
    assert not checks["newuidmap/newgidmap"].required and not checks["newuidmap/newgidmap"].ok
    assert "uidmap" in checks["newuidmap/newgidmap"].fix
    assert "one id" in checks["newuidmap/newgidmap"].detail


def test_non_root_with_userns_and_idmap_tools_can_run(tmp_path, bin_dir):
    for tool in ("newuidmap", "newgidmap"):
        (bin_dir / tool).write_text("#!/bin/sh\n")
        (bin_dir / tool).chmod(0o755)
    checks = doctor.diagnose(*v2_host(tmp_path, uid=1000))
    assert "rootless" in by_name(checks)["root"].detail
    assert doctor.can_run_containers(checks)


def test_no_cgroups_is_optional_and_skips_the_controller_checks(tmp_path, bin_dir):
    checks = by_name(doctor.diagnose(*fake_host(tmp_path, "", "")))
    assert not checks["cgroups"].ok and not checks["cgroups"].required
    assert "cgroup controllers" not in checks and "swap accounting" not in checks
    assert doctor.can_run_containers(list(checks.values()))


def test_missing_namespace_names_the_kernel_option(tmp_path, bin_dir):
    proc, sys_root = hybrid_host(tmp_path)
    os.remove(f"{proc}/self/ns/net")
    check = by_name(doctor.diagnose(proc, sys_root))["namespaces"]
    assert not check.ok and check.detail == "missing: net" and "CONFIG_NET_NS=y" in check.fix


def test_seccomp_without_filters(tmp_path, bin_dir):
    proc, sys_root = hybrid_host(tmp_path)
    write(f"{proc}/self/status", "Name:\tpython3\nUid:\t0\t0\t0\t0\n")
    check = by_name(doctor.diagnose(proc, sys_root))["seccomp"]
    assert not check.ok and "CONFIG_SECCOMP_FILTER=y" in check.fix


def test_pyroute2_not_importable(tmp_path, bin_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyroute2", None)     # makes the import raise ImportError
    checks = doctor.diagnose(*hybrid_host(tmp_path))
    assert by_name(checks)["pyroute2"].fix == "pip install pyroute2"
    assert not doctor.can_run_containers(checks)


def test_read_only_cgroup_names_the_directory(tmp_path, bin_dir, monkeypatch):
    proc, sys_root = hybrid_host(tmp_path)
    memory = f"{sys_root}/fs/cgroup/memory/process_api/abc"
    real_access = os.access
    monkeypatch.setattr(doctor.os, "access", lambda p, m: p != memory and real_access(p, m))
    check = by_name(doctor.diagnose(proc, sys_root))["cgroup writable"]
    assert not check.ok and check.detail == f"not writable: {memory}"
    assert "remount" in check.fix


def test_mountinfo_escapes_and_cgroup_namespace_roots():
    line = r"50 31 0:40 /outer /sys/fs/my\040cgroup rw - cgroup cgroup rw,memory,memsw" "\n"
    (mount,) = doctor.parse_mountinfo(line)
    assert mount == doctor.CgroupMount(1, "/sys/fs/my cgroup", "/outer", ("memory",))
    own = doctor.parse_proc_cgroup("4:memory:/elsewhere\n")
    assert doctor._own_dir(mount, own, "/sys") == "/sys/fs/my cgroup"   # outside the mount


def test_render_is_a_table_with_fixes_under_their_row(tmp_path, bin_dir):
    checks = doctor.diagnose(*hybrid_host(tmp_path))
    lines = doctor.render(checks).splitlines()
    assert lines[0].split() == ["check", "status", "detail"]
    row = next(i for i, line in enumerate(lines) if line.startswith("newuidmap/newgidmap"))
    assert "missing (optional)" in lines[row]
    assert lines[row + 1].strip() == "fix: apt-get install uidmap (dnf install shadow-utils)"
    assert lines[-1].startswith("Containers can run on this host.")


def test_main_json_exit_code(capsys, monkeypatch):
    monkeypatch.setattr(doctor, "diagnose",
                        lambda: [doctor.Check("overlayfs", False, "absent", "modprobe overlay")])
    assert doctor.main(["--json"]) == 1
    assert json.loads(capsys.readouterr().out) == [
        {"name": "overlayfs", "ok": False, "detail": "absent", "fix": "modprobe overlay",
         "required": True}]
