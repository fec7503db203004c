"""The rootless pieces that need no root and no user namespace: the id map's
plan, the mount plan's rootless changes, the null driver's /proc figures and
rlimits, doctor's rootless rows, the --systemd-scope kernelspec."""
from __future__ import annotations

import os
import resource

import pytest

from sandbox_kernel.kernel import install
from sandbox_kernel.runtime import doctor, rootfs, userns
from sandbox_kernel.runtime import syscalls as sc
from sandbox_kernel.runtime.cgroups.null import NullCgroup, parse_proc_stat, process_tree
from sandbox_kernel.runtime.spec import ContainerSpec, Limits, Mount
from sandbox_kernel.session import stats as stats_contract


@pytest.fixture
def etc(tmp_path):
    (tmp_path / "subuid").write_text("other:200000:65536\nme:100000:65536\n")
    (tmp_path / "subgid").write_text("me:100000:65536\n")
    return str(tmp_path)


@pytest.fixture
def idmap_tools(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("newuidmap", "newgidmap"):
        (bin_dir / tool).write_text("#!/bin/sh\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


def test_subordinate_range_by_name_or_number(etc):
    assert userns.subordinate_range(f"{etc}/subuid", "me", 1000) == (100000, 65536)
    assert userns.subordinate_range(f"{etc}/subuid", "nobody-here", 200000) is None
    assert userns.subordinate_range(f"{etc}/missing", "me", 1000) is None


def test_a_range_keeps_the_sandbox_uid_and_maps_the_user_to_root(etc, idmap_tools, monkeypatch):
    monkeypatch.setattr(userns.pwd, "getpwuid", lambda uid: type("P", (), {"pw_name": "me"}))
    plan = userns.plan((65532, 65532), mode="root", etc=etc)
    assert plan.by_tool and (plan.workload_uid, plan.workload_gid) == (65532, 65532)
    assert plan.uid_lines == ((0, os.geteuid(), 1), (1, 100000, 65536))
    assert plan.as_config()["uid_lines"] == [[0, os.geteuid(), 1], [1, 100000, 65536]]


def test_without_tools_or_ranges_one_id_is_mapped(etc, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))   # no newuidmap
    plan = userns.plan((65532, 65532), mode="root", etc=etc)
    assert not plan.by_tool and plan.kind == "single"
    assert plan.uid_lines == ((0, os.geteuid(), 1),) and plan.workload_uid == 0
    mine = userns.plan((65532, 65532), mode="self", etc=etc)
    assert mine.uid_lines == ((os.geteuid(), os.geteuid(), 1),) and mine.workload_uid == os.geteuid()


def test_forcing_single_and_a_bad_mode(etc, idmap_tools):
    assert not userns.plan((65532, 65532), idmap="single", etc=etc).by_tool
    with pytest.raises(userns.IdMapError, match="SANDBOX_KERNEL_USERNS 'nobody'.*root or self"):
        userns.plan((65532, 65532), mode="nobody", etc=etc)


def _plan(rootless: bool, **fields):
    spec = ContainerSpec(command=("sh",), limits=Limits(disk=32 << 20), **fields)
    return rootfs.host_image_plan(spec, "/run/sbk-x", None if rootless else "/run/sbk-x/workspace",
                                  rootless=rootless)


def test_rootless_overlays_use_userxattr_and_root_ones_do_not():
    rootless = [op.data for op in _plan(True) if op.fstype == "overlay"]
    assert rootless and all(data.endswith(",userxattr") for data in rootless)
    assert all("userxattr" not in op.data for op in _plan(False) if op.fstype == "overlay")


def test_rootless_workspace_and_etc_files_live_on_the_tmpfs_layer():
    plan = _plan(True)
    workspace = next(op for op in plan if op.target == "/run/sbk-x/root/workspace" and op.kind == "bind")
    assert workspace.source == "/run/sbk-x/layer/workspace"
    assert any(op.kind == "chown" and op.target == "/run/sbk-x/layer/workspace" for op in plan)
    hosts = next(op for op in plan if op.target == "/run/sbk-x/root/etc/hosts")
    assert (hosts.kind, hosts.source) == ("bind", "/run/sbk-x/layer/etc/hosts")
    assert not any(op.kind == "write" and op.target.startswith("/run/sbk-x/root/etc/") for op in plan)


def test_rootless_host_network_binds_sys_and_masks_the_hosts_cgroups():
    plan = _plan(True, network="host")
    sys_op = next(op for op in plan if op.target == "/run/sbk-x/root/sys" and op.kind != "mkdir")
    assert sys_op.kind == "bind" and sys_op.flags & sc.MS_RDONLY
    assert any(op.kind == "mask" and op.target == "/run/sbk-x/root/sys/fs/cgroup" for op in plan)
    assert next(op for op in _plan(True) if op.target == "/run/sbk-x/root/sys"
                and op.kind != "mkdir").fstype == "sysfs"


def test_binds_repeat_the_hosts_locked_flags_only_rootless(monkeypatch):
    mounted = os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC | os.ST_RELATIME
    monkeypatch.setattr(rootfs.os, "statvfs", lambda path: os.statvfs_result((0,) * 8 + (mounted, 255)))
    flags = rootfs._locked_flags("/data", True)
    assert flags == sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_RELATIME
    assert rootfs._locked_flags("/data", False) == 0
    spec = ContainerSpec(command=("sh",), mounts=(Mount("/proc", "/p", True),))
    ops = [op for op in rootfs.host_image_plan(spec, "/run/sbk-x", None, rootless=True)
           if op.target == "/run/sbk-x/root/p"]
    assert [op.kind for op in ops] == ["bind", "remount_ro"]
    assert all(op.flags & sc.MS_NOEXEC for op in ops)


def test_proc_stat_with_a_hostile_command_name():
    text = "42 (a) b (c) S 7 42 42 0 -1 4194560 100 0 0 0 30 20 5 4 20 0 3 0 100 1000 250 rest"
    stat = parse_proc_stat(text)
    assert (stat.pid, stat.ppid, stat.user_ticks, stat.system_ticks) == (42, 7, 35, 24)
    assert (stat.threads, stat.rss_pages, stat.children_user_ticks) == (3, 250, 5)


def test_process_tree_follows_children(tmp_path):
    for pid, ppid in ((10, 1), (11, 10), (12, 11), (13, 1)):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(
            f"{pid} (x) S {ppid} 0 0 0 -1 0 0 0 0 0 1 1 0 0 20 0 1 0 0 0 10 z")
    assert sorted(p.pid for p in process_tree([10], str(tmp_path))) == [10, 11, 12]


def test_null_rlimits_count_processes_only_in_an_own_user_namespace():
    group = NullCgroup("sbk-1-ab", Limits(memory=64 << 20, pids=32))
    assert group.child_rlimits() == [(resource.RLIMIT_AS, 64 << 20)]   # root: shared uid
    group.nproc_extra = 2   # rootless, one id mapped: init and the launcher share it
    assert (resource.RLIMIT_NPROC, 34) in group.child_rlimits()
    assert "not enforced by cgroups" in group.warning()


def test_the_footer_shows_warnings_and_the_contract_carries_them():
    stats = stats_contract.build_stats(session="s", image="host", limits=Limits(), execution_count=1,
                                       wall=0.1, figures={}, status="ok", warnings=["no cgroups"])
    assert stats["warnings"] == ["no cgroups"]
    assert stats_contract.footer_text(stats).endswith("| warning no cgroups")
    plain = stats_contract.build_stats(session="s", image="host", limits=Limits(),
                                       execution_count=1, wall=0.1, figures={}, status="ok")
    assert "warnings" not in plain and "warning" not in stats_contract.footer_text(plain)


def test_systemd_scope_kernelspec_runs_the_kernel_under_a_delegated_scope():
    argv = install.kernel_argv({}, systemd_scope=True)
    assert argv[:argv.index("--") + 1] == ["systemd-run", "--user", "--scope", "--quiet",
                                           "--collect", "-p", "Delegate=yes", "--"]
    assert argv[argv.index("--") + 2:argv.index("--") + 4] == ["-m", "sandbox_kernel.kernel"]
    assert install.kernel_argv({})[1:3] == ["-m", "sandbox_kernel.kernel"]


def test_doctor_rootless_rows(tmp_path, etc, monkeypatch):
    monkeypatch.setattr(doctor, "_user_name", lambda euid: "me")
    assert doctor.check_subordinate_ids(1000, etc).ok
    missing = doctor.check_subordinate_ids(1000, str(tmp_path / "none"))
    assert not missing.ok and "usermod --add-subuids" in missing.fix and "one id" in missing.detail
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemd-run").write_text("#!/bin/sh\n")
    (bin_dir / "systemd-run").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    v2 = doctor.CgroupLayout("v2")
    no_manager = doctor.check_systemd_scope(1000, v2, str(tmp_path / "run"))
    assert not no_manager.ok and "loginctl enable-linger me" in no_manager.fix
    (tmp_path / "run/user/1000/systemd").mkdir(parents=True)
    (tmp_path / "run/user/1000/systemd/private").write_text("")
    assert doctor.check_systemd_scope(1000, v2, str(tmp_path / "run")).ok
    hybrid = doctor.check_systemd_scope(1000, doctor.CgroupLayout("hybrid"), str(tmp_path / "run"))
    assert not hybrid.ok and "unified_cgroup_hierarchy" in hybrid.fix
    assert "a bridge needs root" in doctor.check_rootless_network().detail
