"""An import killed mid-way leaves nothing in the image store once any store
command has run, the listing included, or once a container has started
(cleanup.reap_stale); issue 15.  Only dead owners' work goes: the caller's
own real directories and files, never a symlink or what it points to, never
the work of a process that is alive."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from sandbox_kernel.runtime import cleanup, images

BIG = 1 << 30          # apparent size of the tar's one member: a sparse file, no disk spent


def member_size(path: str) -> int:
    """BIG, or a quarter of the room where the store lives if that is less: the
    import must get well under way before it is killed, and must not be refused
    for space first (the v2 guest's /tmp is a small tmpfs)."""
    room = os.statvfs(path)
    return min(BIG, room.f_bavail * room.f_frsize // 4)


@pytest.fixture
def store(tmp_path, monkeypatch):
    root = tmp_path / "store"
    monkeypatch.setenv(images.STORE_ENV, str(root))   # the CLI's subprocesses inherit it
    monkeypatch.delenv(images.QUOTA_ENV, raising=False)
    return images.Store(str(root))


def big_tar(path: str) -> str:
    """A rootfs tar whose one member holds up to BIG zero bytes; the tar itself is
    sparse (its data blocks are holes), so it costs nothing to make."""
    info = tarfile.TarInfo("big")
    info.size = size = member_size(os.path.dirname(path))
    header = info.tobuf(tarfile.PAX_FORMAT)
    with open(path, "wb") as handle:
        handle.write(header)
        handle.truncate(len(header) + size + 2 * tarfile.RECORDSIZE)   # data, then the end blocks
    return path


def work_dirs(store: images.Store) -> list[str]:
    tmp = os.path.join(store.root, "tmp")
    return sorted(n for n in os.listdir(tmp) if n.startswith("sbk-")) if os.path.isdir(tmp) else []


def killed_import(store: images.Store, tmp_path) -> str:
    """Start an import of the big tar, SIGKILL it once its work directory
    holds data; the name of the work directory it left."""
    tar = big_tar(str(tmp_path / "big.tar"))
    importer = subprocess.Popen([sys.executable, "-m", "sandbox_kernel.cli", "images", "import", tar,
                                 "--name", "x"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and importer.poll() is None and not _writing(store):
            time.sleep(0.005)
        assert importer.poll() is None, "the import ended before it could be killed"
        assert _writing(store), "the import did not start writing"
    finally:
        importer.send_signal(signal.SIGKILL)
        importer.wait()
    left = work_dirs(store)
    assert len(left) == 1 and f"sbk-{importer.pid}-import-" in left[0], left
    return left[0]


def _writing(store: images.Store) -> bool:
    for name in work_dirs(store):
        member = os.path.join(store.root, "tmp", name, "root", "big")
        try:
            if os.stat(member).st_size > 0:
                return True
        except FileNotFoundError:
            pass
    return False


def sandbox_kernel(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sandbox_kernel.cli", *args],
                          capture_output=True, text=True, timeout=120)


def test_a_killed_import_leaves_nothing_once_the_images_are_listed(store, tmp_path):
    killed_import(store, tmp_path)
    listed = sandbox_kernel("images")
    assert listed.returncode == 0, listed.stderr
    assert work_dirs(store) == [] and store.names() == [] and store.layers() == []


def test_a_killed_import_leaves_nothing_once_a_container_starts(store, tmp_path):
    """reap_stale runs at a container's start: the store of the current user
    (SANDBOX_KERNEL_IMAGES here) is swept too, in one listdir of its tmp/."""
    killed_import(store, tmp_path)

    class NoCgroups:          # this test is about the store only: no cgroup is looked at
        def leftovers(self):
            return []
    removed = cleanup.reap_stale(NoCgroups(), state_parents=[])
    assert work_dirs(store) == [] and len(removed) == 1 and "-import-" in removed[0]


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_only_dead_owners_real_entries_go(store, tmp_path):
    """Inspect sweeps too; a symlink named like work is unlinked by nobody
    (its target stays whole), a live process's work stays."""
    tmp = os.path.join(store.root, "tmp")
    os.makedirs(tmp)
    dead = dead_pid()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("keep me\n")
    deep = os.path.join(tmp, f"sbk-{dead}-build-ab12")
    os.makedirs(os.path.join(deep, "upper", "a", "b"))
    os.symlink(victim, os.path.join(tmp, f"sbk-{dead}-import-cd34"))
    with open(os.path.join(tmp, f"sbk-{dead}-image-ef56.json"), "w") as handle:
        handle.write("{}")
    alive = os.path.join(tmp, f"sbk-{os.getpid()}-import-0a0b")
    os.mkdir(alive)
    os.mkdir(os.path.join(tmp, "not-ours"))
    with pytest.raises(images.ImageNotFound):
        images.inspect("nothing", store)
    assert sorted(os.listdir(tmp)) == sorted([f"sbk-{dead}-import-cd34", os.path.basename(alive),
                                              "not-ours"])
    assert (victim / "keep").read_text() == "keep me\n"
