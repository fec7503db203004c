"""Hostile archives: each is refused with one clear error, and nothing of it
is left in the store (no layer, no image, no work directory)."""
from __future__ import annotations

import os
import stat

import pytest

from sandbox_kernel.runtime import images, layers
import image_archives as archives   # tests/ is on pytest's pythonpath


member = archives.member


@pytest.fixture
def store(tmp_path, monkeypatch):
    root = tmp_path / "store"
    monkeypatch.setenv(images.STORE_ENV, str(root))
    return images.Store(str(root))


def left_in(store: images.Store) -> list[str]:
    """Every file or directory in the store but its skeleton and lock."""
    skeleton = {"lock", "layers", "layers/sha256", "images", "tmp"}
    found = []
    for directory, dirs, files in os.walk(store.root):
        for name in dirs + files:
            relative = os.path.relpath(os.path.join(directory, name), store.root)
            if relative not in skeleton:
                found.append(relative)
    return found


def import_tar(tmp_path, members, **options):
    path = tmp_path / "hostile.tar"
    path.write_bytes(archives.layer_tar(members))
    return images.import_image(str(path), "hostile", **options)


HOSTILE = {
    "absolute path": ([member("/etc/cron.d/evil", data=b"* * * * * root sh\n")], "absolute path"),
    "dot-dot": ([member("etc/../../escaped", data=b"x")], "climbs out"),
    "dot-dot at the start": ([member("../escaped", data=b"x")], "climbs out"),
    "symlink out": ([member("etc", "dir"), member("etc/up", "symlink", linkname="../../../../etc")],
                    "points out of the layer"),
    "write through a symlink": ([member("bin", "symlink", linkname="/etc"),
                                 member("bin/passwd", data=b"root::0:0::/:/bin/sh\n")],
                                "goes through the symlink"),
    "write through an absolute symlink dir": ([member("a", "dir"), member("a/b", "symlink", linkname="/"),
                                               member("a/b/tmp/x", data=b"x")], "goes through the symlink"),
    "hard link out": ([member("shadow", "hardlink", linkname="../../etc/shadow")], "points out"),
    "hard link to an absolute path": ([member("shadow", "hardlink", linkname="/etc/shadow")],
                                      "points out"),
    "hard link to nothing in the layer": ([member("x", "hardlink", linkname="etc/shadow")],
                                          "no such file earlier"),
    "hard link through a symlink": ([member("l", "symlink", linkname="/etc"),
                                     member("x", "hardlink", linkname="l/shadow")],
                                    "no such file earlier"),
    "block device": ([member("disk", "blk", dev=(8, 0))], "block device node"),
    "character device": ([member("etc", "dir"), member("etc/mem", "chr", dev=(1, 1))],
                         "character device node"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_and_leaves_nothing(case, store, tmp_path):
    members, message = HOSTILE[case]
    # a good file first: the refusal must also take back what was written before it
    members = [member("ok.txt", data=b"fine")] + members
    with pytest.raises(layers.LayerError, match=message):
        import_tar(tmp_path, members)
    assert left_in(store) == []
    assert images.available() == ["host"]


def test_nothing_was_written_outside_the_layer(store, tmp_path):
    target = tmp_path / "outside"
    target.mkdir()
    members = [member("link", "symlink", linkname=str(target)), member("link/pwned", data=b"x")]
    with pytest.raises(layers.LayerError):
        import_tar(tmp_path, members)
    assert list(target.iterdir()) == []


def test_setuid_and_setgid_bits_are_dropped_unless_asked_for(store, tmp_path):
    members = [member("bin", "dir"), member("bin/su", data=b"#!", mode=0o4755),
               member("bin/wall", data=b"#!", mode=0o2755), member("var", "dir", mode=0o2775)]
    image = import_tar(tmp_path, members)
    root = image.lower_dirs[0]
    assert stat.S_IMODE(os.stat(f"{root}/bin/su").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(f"{root}/bin/wall").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(f"{root}/var").st_mode) == 0o2775   # a setgid dir only passes its group on
    images.remove("hostile")
    kept = import_tar(tmp_path, members, allow_setuid=True)
    assert stat.S_IMODE(os.stat(f"{kept.lower_dirs[0]}/bin/su").st_mode) == 0o4755


def test_device_nodes_under_dev_are_skipped_not_refused(store, tmp_path):
    members = [member("dev", "dir"), member("dev/null", "chr", dev=(1, 3)), member("etc", "dir")]
    image = import_tar(tmp_path, members)
    assert os.listdir(f"{image.lower_dirs[0]}/dev") == []


def test_a_truncated_archive_is_a_clear_error(store, tmp_path):
    data = archives.gz(archives.layer_tar([member("big", data=os.urandom(100_000))]))
    path = tmp_path / "cut.tar.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises((layers.LayerError, images.ImageError), match="not a valid|not a directory"):
        images.import_image(str(path), "cut")
    assert left_in(store) == []


def test_member_paths_are_normalised_or_refused():
    assert layers.member_path("./etc//passwd") == "etc/passwd"
    assert layers.member_path("./") == ""
    for bad in ("/etc", "a/../../b", ".."):
        with pytest.raises(layers.LayerError):
            layers.member_path(bad)


def test_a_symlink_with_an_absolute_target_is_kept(store, tmp_path):
    # /etc/localtime -> /usr/share/zoneinfo/UTC is normal in images: it
    # resolves inside the container's root, and unpacking never follows it
    image = import_tar(tmp_path, [member("etc", "dir"),
                                  member("etc/localtime", "symlink", linkname="/usr/share/zoneinfo/UTC")])
    assert os.readlink(f"{image.lower_dirs[0]}/etc/localtime") == "/usr/share/zoneinfo/UTC"
