"""The mount plan is data: what the host image shows, in what order."""
from __future__ import annotations

import os
import sys

import pytest

from sandbox_kernel.runtime import rootfs
from sandbox_kernel.runtime.spec import ContainerSpec, Limits, Mount


@pytest.fixture
def plan(tmp_path):
    spec = ContainerSpec(command=("sh",), limits=Limits(disk=32 << 20),
                         mounts=(Mount(str(tmp_path), "/data", True),))
    return rootfs.host_image_plan(spec, "/run/sbk-x", "/run/sbk-x/workspace")


def _targets(plan, kind):
    return [op.target for op in plan if op.kind == kind]


def test_the_writable_layer_is_a_tmpfs_of_the_disk_size(plan):
    first = plan[0]
    assert (first.kind, first.fstype, first.target) == ("mount", "tmpfs", "/run/sbk-x/layer")
    assert f"size={32 << 20}" in first.data


def test_host_directories_are_overlays_with_uppers_on_the_layer(plan):
    overlays = [op for op in plan if op.fstype == "overlay"]
    lowers = {op.data.split(",")[0].removeprefix("lowerdir=") for op in overlays}
    assert {"/usr", "/etc"} <= lowers
    assert os.path.realpath(sys.prefix) in lowers or os.path.realpath(sys.prefix).startswith("/usr")
    assert all("upperdir=/run/sbk-x/layer/upper/" in op.data for op in overlays)
    assert all(op.target == "/run/sbk-x/root" + lower for op, lower in
               zip(overlays, [o.data.split(",")[0][9:] for o in overlays]))


def test_nothing_of_the_hosts_root_or_home_is_shown_whole(plan):
    lowers = [op.data.split(",")[0][9:] for op in plan if op.fstype == "overlay"]
    binds = [op.source for op in plan if op.kind == "bind"]
    for shown in lowers + binds:
        assert shown not in ("/", "/root", "/home", "/tmp", "/run", "/var")


def test_proc_is_fresh_with_masks_and_read_only_parts(plan):
    assert "/run/sbk-x/root/proc" in [op.target for op in plan if op.fstype == "proc"]
    assert "/run/sbk-x/root/proc/kcore" in _targets(plan, "mask")
    assert "/run/sbk-x/root/proc/sys" in _targets(plan, "remount_ro")
    assert "/run/sbk-x/root/proc/sysrq-trigger" in _targets(plan, "remount_ro")


def test_dev_binds_only_the_design_devices(plan):
    devices = [op.source for op in plan if op.kind == "bind" and op.source.startswith("/dev/")]
    assert sorted(devices) == sorted(f"/dev/{d}" for d in rootfs.DEVICES)


def test_declared_mounts_come_after_the_image_and_read_only_is_honoured(plan, tmp_path):
    bind_index = next(i for i, op in enumerate(plan) if op.source == str(tmp_path))
    assert plan[bind_index + 1].kind == "remount_ro"
    last_overlay = max(i for i, op in enumerate(plan) if op.fstype == "overlay")
    assert bind_index > last_overlay


def test_ops_print_readably(plan):
    text = "\n".join(map(str, plan))
    assert "mount tmpfs -> /run/sbk-x/layer (tmpfs, size=" in text


def test_apply_refuses_in_the_hosts_mount_namespace(plan):
    host_ns = os.stat("/proc/self/ns/mnt").st_ino
    with pytest.raises(rootfs.MountPlanError, match="host's mount namespace"):
        rootfs.apply(plan, host_ns)
