"""v1's io counting reads each disk's number once, and again only when the
list of disks changes: a disk that appears later is counted too, one that
went is skipped."""
from __future__ import annotations

from sandbox_kernel.runtime.cgroups.files import CgroupDir
from sandbox_kernel.runtime.cgroups.v1 import V1Driver, count_io


def add_disk(sys_block, name: str, device: str) -> None:
    (sys_block / name).mkdir(parents=True)
    (sys_block / name / "dev").write_text(device + "\n")


def test_a_disk_that_appears_later_is_counted_and_one_that_went_is_not(tmp_path):
    sys_block = tmp_path / "sys_block"
    add_disk(sys_block, "vda", "254:0")
    driver = V1Driver({"blkio": str(tmp_path / "blkio")}, sys_block=str(sys_block))
    assert driver._disks() == ["254:0"]
    add_disk(sys_block, "vdb", "254:16")
    assert driver._disks() == ["254:0", "254:16"]
    (sys_block / "vda" / "dev").unlink()
    (sys_block / "vda").rmdir()
    assert driver._disks() == ["254:16"]


def test_count_io_writes_a_no_limit_rule_per_disk_and_skips_refusals(tmp_path):
    group = tmp_path / "sbk-a"
    group.mkdir()
    rule = group / "blkio.throttle.read_bps_device"
    rule.write_text("")
    assert count_io(CgroupDir(str(group)), ["254:0"]) is True
    assert rule.read_text() == "254:0 0"
    rule.unlink()   # a kernel without the file: nothing counted, nothing raised
    assert count_io(CgroupDir(str(group)), ["254:0"]) is False
