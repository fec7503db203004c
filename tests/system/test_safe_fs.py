"""remove_tree never enters a mount point left in a tree (a tmpfs, or a bind
mount of a host directory on the same file system, which has the same
st_dev): what the mount shows stays, and the rest of the tree goes.
Needs root (mounts), in a throwaway temp directory."""
from __future__ import annotations

import os
import subprocess

import pytest

from sandbox_kernel.runtime import safe_fs, syscalls

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


@pytest.fixture(params=["openat2", "walk"])
def resolver(request, monkeypatch):
    if request.param == "openat2" and not safe_fs._have_openat2():
        pytest.skip("this kernel has no openat2 (before 5.6)")
    monkeypatch.setattr(safe_fs, "_openat2_works", request.param == "openat2")
    return request.param


@pytest.fixture
def mounted(tmp_path):
    """Mount points made by the test, unmounted (lazily) whatever happens."""
    points = []
    yield points
    for point in reversed(points):
        subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)
    subprocess.run(["rm", "-rf", "--one-file-system", str(tmp_path / "state")], check=False)


def files_of(directory) -> dict:
    return {str(path): (path.lstat().st_ino, path.read_bytes() if path.is_file() else None)
            for path in sorted(directory.rglob("*"))}


@pytest.mark.parametrize("kind", ["tmpfs", "bind"])
def test_remove_tree_does_not_enter_a_mount_point(tmp_path, mounted, resolver, kind):
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "passwd").write_text("victim\n")
    (victim / "sub" / "keep").write_text("keep\n")
    state = tmp_path / "state"
    point = state / "rootfs" / "workspace"
    point.mkdir(parents=True)
    (state / "rootfs" / "other").write_text("x")
    (state / "config").mkdir()
    if kind == "tmpfs":
        syscalls.mount("tmpfs", str(point), "tmpfs", 0, "size=1m")
        (point / "on-tmpfs").write_text("mounted\n")
        victim = point
    else:
        syscalls.mount(str(victim), str(point), None, syscalls.MS_BIND)
    mounted.append(point)
    before = files_of(victim)

    left = safe_fs.remove_tree(str(state))

    assert [entry.path for entry in left] == [str(point)]
    assert "mount point" in left[0].reason
    assert files_of(victim) == before
    assert sorted(os.listdir(state)) == ["rootfs"]
    assert os.listdir(state / "rootfs") == ["workspace"]
