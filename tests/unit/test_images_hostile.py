"""Hostile images (issue 14, item 9; names: issue 13): sparse and compression
bombs against the store's quota, malformed whiteouts, image directories that
link out of themselves, empty or malformed digests, deep trees, and image
names that could look like paths.  Each is refused with one clear line, and
the store is left as it was: no layer, no image, no work directory."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys

import pytest

from sandbox_kernel.runtime import image_sources, images, layers, safe_fs
import image_archives as archives   # tests/ is on pytest's pythonpath


member = archives.member
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts need root (mknod, trusted.* xattrs)")
REFUSED = (layers.LayerError, images.ImageError)


@pytest.fixture
def store(tmp_path, monkeypatch):
    root = tmp_path / "store"
    monkeypatch.setenv(images.STORE_ENV, str(root))
    monkeypatch.delenv(images.QUOTA_ENV, raising=False)
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


def import_bytes(tmp_path, data: bytes, name: str = "hostile", suffix: str = ".tar"):
    path = tmp_path / f"hostile{suffix}"
    path.write_bytes(data)
    return images.import_image(str(path), name)


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text, text
    return text


# ---------------------------------------------------------------------------
# Sizes: the store's quota counts what a layer really writes


def test_a_sparse_member_counts_its_real_size_against_the_quota(store, tmp_path, monkeypatch):
    monkeypatch.setenv(images.QUOTA_ENV, "64M")
    tar = archives.gnu_sparse_tar("big", 256 << 20)     # 2 KiB of tar, 256 MiB of file
    assert len(tar) < 10 << 10
    with pytest.raises(layers.LayerError) as refused:
        import_bytes(tmp_path, tar)
    assert "'big' (256.0 MiB)" in one_line(refused) and "store quota" in str(refused.value)
    assert images.QUOTA_ENV in str(refused.value)
    assert left_in(store) == [] and store.names() == []


def test_a_sparse_member_past_the_default_quota_is_refused_before_it_is_written(store, tmp_path):
    tar = archives.gnu_sparse_tar("huge", 1 << 40)       # 1 TiB: never written, refused first
    with pytest.raises(layers.LayerError, match="past the") as refused:
        import_bytes(tmp_path, tar)
    one_line(refused)
    assert left_in(store) == []


def test_a_gzip_of_zeros_is_counted_as_it_unpacks(store, tmp_path, monkeypatch):
    monkeypatch.setenv(images.QUOTA_ENV, "16M")
    bomb = archives.zeros_member_gz("zeros", 64 << 20)   # some 64 KiB of gzip
    assert len(bomb) < 1 << 20
    with pytest.raises(layers.LayerError, match="'zeros' \\(64.0 MiB\\).*store quota"):
        import_bytes(tmp_path, bomb, suffix=".tar.gz")
    assert left_in(store) == []


def test_many_empty_members_count_too(store, tmp_path, monkeypatch):
    monkeypatch.setenv(images.QUOTA_ENV, "1M")           # 512 bytes an entry: 2048 fit
    tar = archives.layer_tar([member(f"f{n}") for n in range(3000)])
    with pytest.raises(layers.LayerError, match="store quota"):
        import_bytes(tmp_path, tar)
    assert left_in(store) == []


def test_the_quota_counts_what_the_store_holds_already(store, tmp_path, monkeypatch):
    monkeypatch.setenv(images.QUOTA_ENV, "1M")
    first = import_bytes(tmp_path, archives.layer_tar([member("a", data=os.urandom(600_000))]), "first")
    assert store.layer_info(first.layers[0])["charged"] == 600_000 + layers.ENTRY_BYTES
    with pytest.raises(layers.LayerError, match="586.4 KiB used"):
        import_bytes(tmp_path, archives.layer_tar([member("b", data=os.urandom(600_000))]), "second")
    assert store.names() == ["first"] and store.layers() == list(first.layers)
    images.remove("first")
    assert import_bytes(tmp_path, archives.layer_tar([member("b", data=os.urandom(600_000))]), "second")


@pytest.mark.parametrize("text, expected", [("", images.DEFAULT_QUOTA), ("none", None),
                                            ("10G", 10 << 30), ("512M", 512 << 20),
                                            ("2048k", 2 << 20), ("4096", 4096), ("1GiB", 1 << 30)])
def test_the_quota_setting(monkeypatch, text, expected):
    monkeypatch.setenv(images.QUOTA_ENV, text)
    assert images.store_quota() == expected


def test_a_bad_quota_setting_is_one_line(monkeypatch):
    monkeypatch.setenv(images.QUOTA_ENV, "lots")
    with pytest.raises(images.ImageError, match="SANDBOX_KERNEL_STORE_QUOTA='lots': expected a size"):
        images.store_quota()


TAR_HEADER_BOMBS = {
    "a pax header of 2 MiB": (lambda: archives.big_pax_header_tar(2 << 20), "extended tar header"),
    "2000 long-name headers in a row": (lambda: archives.long_name_chain_tar(2000), "extended tar headers"),
    "a sparse map of 70000 extents": (lambda: archives.sparse_map_bomb_tar(70_000 // 21), "extents"),
    "a pax sparse map of 10**9 extents": (lambda: archives.pax_sparse_map_bomb_tar(10**9), "extents"),
    "a pax sparse map cut short": (lambda: archives.pax_sparse_map_bomb_tar(3), "malformed sparse map"),
}


@pytest.mark.parametrize("case", sorted(TAR_HEADER_BOMBS))
def test_what_tarfile_reads_into_memory_is_bounded(case, store, tmp_path):
    make, message = TAR_HEADER_BOMBS[case]
    with pytest.raises(REFUSED, match=message) as refused:
        import_bytes(tmp_path, make())
    one_line(refused)
    assert left_in(store) == []


def test_a_multi_layer_import_that_fails_leaves_no_layer_behind(store, tmp_path):
    good = archives.layer_tar([member("etc", "dir"), member("etc/ok", data=b"ok\n")])
    bad = archives.layer_tar([member("x", "dir"), member("x/.wh.")])
    layout = archives.oci_layout(str(tmp_path / "oci"), [good, bad])
    with pytest.raises(layers.LayerError):
        images.import_image(layout, "two")
    assert left_in(store) == []


# ---------------------------------------------------------------------------
# Whiteouts


BAD_WHITEOUTS = {
    "empty name": [member("x", "dir"), member("x/.wh.")],
    "empty name at the root": [member(".wh.")],
    "dot": [member("x", "dir"), member("x/.wh..")],
    "dot at the root": [member(".wh..")],
    "dot-dot": [member("x", "dir"), member("x/.wh...")],
    "inside a whiteout": [member(".wh.x", "dir"), member(".wh.x/y", data=b"y")],
    "opaque marker as a directory on the way": [member("a/.wh..wh..opq/b", data=b"b")],
}


@pytest.mark.parametrize("case", sorted(BAD_WHITEOUTS))
def test_a_malformed_whiteout_is_one_line_and_leaves_nothing(case, store, tmp_path):
    members = [member("ok.txt", data=b"fine")] + BAD_WHITEOUTS[case]
    with pytest.raises(layers.LayerError, match="whiteout") as refused:
        import_bytes(tmp_path, archives.layer_tar(members))
    one_line(refused)
    assert left_in(store) == []


def test_what_aufs_kept_at_a_layers_root_is_skipped(store, tmp_path):
    image = import_bytes(tmp_path, archives.layer_tar([
        member(".wh..wh.plnk", "dir"), member(".wh..wh.plnk/123.456", data=b"x"),
        member(".wh..wh.aufs"), member("etc", "dir")]))
    assert os.listdir(image.lower_dirs[0]) == ["etc"]


@needs_root
def test_whiteouts_at_the_root_hide_a_file_and_keep_the_root_a_directory(store, tmp_path):
    image = import_bytes(tmp_path, archives.layer_tar([member(".wh.etc"), member("srv", "dir")]))
    root = image.lower_dirs[0]
    assert stat.S_ISDIR(os.lstat(root).st_mode)
    hidden = os.lstat(f"{root}/etc")
    assert stat.S_ISCHR(hidden.st_mode) and hidden.st_rdev == 0


@needs_root
def test_an_opaque_marker_at_the_root_marks_the_root(store, tmp_path):
    image = import_bytes(tmp_path, archives.layer_tar([member(".wh..wh..opq"), member("srv", "dir")]))
    root = image.lower_dirs[0]
    assert stat.S_ISDIR(os.lstat(root).st_mode)
    assert os.getxattr(root, layers.OPAQUE_XATTR) == b"y"


# ---------------------------------------------------------------------------
# Depth and names of members


def test_a_tree_deeper_than_the_limit_is_refused(store, tmp_path):
    with pytest.raises(layers.LayerError, match=f"at most {layers.MAX_DEPTH}") as refused:
        import_bytes(tmp_path, archives.nested_dirs_tar(layers.MAX_DEPTH + 10))
    one_line(refused)
    assert left_in(store) == []


def test_a_tree_at_the_limit_imports_and_is_removed(store, tmp_path):
    image = import_bytes(tmp_path, archives.nested_dirs_tar(layers.MAX_DEPTH - 1))
    assert image.find("/" + "/".join(["d"] * (layers.MAX_DEPTH - 1)) + "/leaf")
    images.remove("hostile")
    assert left_in(store) == []


def test_a_layer_deeper_than_python_recursion_is_removed(store, tmp_path):
    # a build keeps what its container wrote: any depth; rm must still remove it
    image = import_bytes(tmp_path, archives.layer_tar([member("etc", "dir")]))
    _nest(pathlib.Path(image.lower_dirs[0]), 3000)
    try:
        assert images.remove("hostile") == list(image.layers)
        assert left_in(store) == []
    finally:
        safe_fs.remove_tree(store.root)    # pytest's own rmtree could not, were it left


def _nest(top: pathlib.Path, depth: int) -> None:
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def test_a_rootfs_directory_deeper_than_python_recursion_is_one_line(store, tmp_path):
    top = tmp_path / "deep"
    (top / "etc").mkdir(parents=True)
    _nest(top, 3000)
    try:
        with pytest.raises(images.ImageError, match=f"at most {layers.MAX_DEPTH}") as refused:
            images.import_image(str(top), "deep")
        one_line(refused)
        assert left_in(store) == []
    finally:
        safe_fs.remove_tree(str(top))


def test_a_rootfs_directory_is_read_without_following_its_links(store, tmp_path, secret):
    top = tmp_path / "rootfs"
    (top / "etc").mkdir(parents=True)
    (top / "etc/os-release").write_text("ID=dir\n")
    (top / "private").symlink_to(secret)
    (top / "etc/hard").hardlink_to(top / "etc/os-release")
    os.mkfifo(top / "fifo")
    image = images.import_image(str(top), "fromdir")
    root = pathlib.Path(image.lower_dirs[0])
    assert os.readlink(root / "private") == str(secret) and not (root / "layer.tar").exists()
    assert os.stat(root / "etc/hard").st_ino == os.stat(root / "etc/os-release").st_ino
    assert stat.S_ISFIFO(os.lstat(root / "fifo").st_mode)


def test_a_rootfs_directory_counts_against_the_quota_as_it_is_tarred(store, tmp_path, monkeypatch):
    monkeypatch.setenv(images.QUOTA_ENV, "1M")
    top = tmp_path / "rootfs"
    top.mkdir()
    (top / "big").write_bytes(os.urandom(2 << 20))
    with pytest.raises(images.ImageError, match="store quota"):
        images.import_image(str(top), "big")
    assert left_in(store) == []


@pytest.mark.parametrize("name", ["a" * 300, "/".join(["abcdefghij" * 10] * 40)])
def test_member_names_the_kernel_would_refuse_are_one_line(store, tmp_path, name):
    with pytest.raises(layers.LayerError, match="too long") as refused:
        import_bytes(tmp_path, archives.layer_tar([member(name, data=b"x")]))
    one_line(refused)
    assert left_in(store) == []


def test_a_nul_in_a_member_name_is_refused():
    with pytest.raises(layers.LayerError, match="NUL"):
        layers.member_path("x\0y")


# ---------------------------------------------------------------------------
# Image directories are read beneath themselves


def docker_save_dir(tmp_path, layers_: list[bytes]) -> pathlib.Path:
    """An unpacked docker save (the old <id>/layer.tar form)."""
    tar = archives.docker_save_legacy(str(tmp_path / "saved.tar"), layers_)
    directory = tmp_path / "saved"
    directory.mkdir()
    subprocess.run(["tar", "-xf", tar, "-C", str(directory)], check=True)
    return directory


@pytest.fixture
def secret(tmp_path):
    """A 0700 directory outside the image holding a layer tar with a secret."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "layer.tar").write_bytes(archives.layer_tar([member("secret", data=b"host secret\n")]))
    return private


def test_a_docker_save_dir_whose_layer_links_out_is_refused(store, tmp_path, secret):
    layer = archives.layer_tar([member("secret", data=b"host secret\n")])
    saved = docker_save_dir(tmp_path, [layer])
    manifest = json.loads((saved / "manifest.json").read_text())
    linked = saved / manifest[0]["Layers"][0]
    linked.unlink()
    linked.symlink_to(secret / "layer.tar")     # the same bytes: only the link gives it away
    with pytest.raises(images.ImageError, match="symlink") as refused:
        images.import_image(str(saved), "leak")
    one_line(refused)
    assert left_in(store) == []


def test_a_docker_save_dir_whose_layer_dir_links_out_is_refused(store, tmp_path, secret):
    saved = docker_save_dir(tmp_path, [archives.layer_tar([member("secret", data=b"host secret\n")])])
    manifest = json.loads((saved / "manifest.json").read_text())
    layer_dir = saved / manifest[0]["Layers"][0].split("/")[0]
    shutil.rmtree(layer_dir)
    layer_dir.symlink_to(secret)
    with pytest.raises(images.ImageError, match="symlink"):
        images.import_image(str(saved), "leak")
    assert left_in(store) == []


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/shadow", "", "a/../../x"])
def test_manifest_json_paths_out_of_the_directory_are_refused(store, tmp_path, path):
    saved = docker_save_dir(tmp_path, [archives.layer_tar([member("x", data=b"x")])])
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest[0]["Layers"] = [path]
    (saved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(images.ImageError, match="inside it") as refused:
        images.import_image(str(saved), "leak")
    one_line(refused)
    assert left_in(store) == []


def test_an_oci_layout_whose_files_link_out_is_refused(store, tmp_path, secret):
    layout = pathlib.Path(archives.oci_layout(str(tmp_path / "oci"), [archives.layer_tar([member("x")])]))
    (secret / "index.json").write_text((layout / "index.json").read_text())
    (layout / "index.json").unlink()
    (layout / "index.json").symlink_to(secret / "index.json")
    with pytest.raises(images.ImageError, match="symlink"):
        images.import_image(str(layout), "leak")
    (layout / "index.json").unlink()
    (layout / "index.json").write_text((secret / "index.json").read_text())
    shutil.move(str(layout / "blobs"), str(secret / "blobs"))
    (layout / "blobs").symlink_to(secret / "blobs")
    with pytest.raises(images.ImageError, match="symlink"):
        images.import_image(str(layout), "leak")
    assert left_in(store) == []


def test_a_fifo_in_an_image_directory_is_not_waited_on(store, tmp_path):
    saved = docker_save_dir(tmp_path, [archives.layer_tar([member("x", data=b"x")])])
    manifest = json.loads((saved / "manifest.json").read_text())
    config = saved / manifest[0]["Config"]
    config.unlink()
    os.mkfifo(config)
    with pytest.raises(images.ImageError, match="not a regular file"):
        images.import_image(str(saved), "fifo")


def test_links_inside_an_image_tar_stay_inside_it(store, tmp_path):
    members = [member("manifest.json", "symlink", linkname="../../../etc/passwd")]
    path = tmp_path / "saved.tar"
    path.write_bytes(archives.layer_tar(members + [member("repositories", data=b"{}")]))
    with pytest.raises(images.ImageError) as refused:
        images.import_image(str(path), "leak")
    one_line(refused)
    loop = [member("manifest.json", "symlink", linkname="b"), member("b", "symlink", linkname="manifest.json")]
    path.write_bytes(archives.layer_tar(loop))
    with pytest.raises(images.ImageError, match="too many links"):
        images.import_image(str(path), "loop")
    assert left_in(store) == []


# ---------------------------------------------------------------------------
# Digests: never empty, never malformed, both checks always


def _rewrite(layout: pathlib.Path, change_config=None, change_manifest=None, change_index=None):
    """Edit an OCI layout's config / manifest / index and re-address the blobs."""
    index = json.loads((layout / "index.json").read_text())
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    if change_config:
        config = json.loads((blobs / manifest["config"]["digest"][7:]).read_text())
        change_config(config)
        raw = json.dumps(config).encode()
        (blobs / archives.sha256(raw)[7:]).write_bytes(raw)
        manifest["config"].update(digest=archives.sha256(raw), size=len(raw))
    if change_manifest:
        change_manifest(manifest)
    raw = json.dumps(manifest).encode()
    (blobs / archives.sha256(raw)[7:]).write_bytes(raw)
    index["manifests"][0].update(digest=archives.sha256(raw), size=len(raw))
    if change_index:
        change_index(index)
    (layout / "index.json").write_text(json.dumps(index))


def _set_diff_ids(value):
    return lambda config: config["rootfs"].update(diff_ids=value)


def _layer_digest(value):
    return lambda manifest: manifest["layers"][0].update(digest=value)


DIGEST_CASES = {
    "empty diff_id": dict(change_config=_set_diff_ids([""])),
    "no diff_ids": dict(change_config=lambda config: config.pop("rootfs")),
    "null diff_id": dict(change_config=_set_diff_ids([None])),
    "short diff_id": dict(change_config=_set_diff_ids(["sha256:abc"])),
    "upper-case diff_id": dict(change_config=_set_diff_ids(["sha256:" + "A" * 64])),
    "md5 diff_id": dict(change_config=_set_diff_ids(["md5:" + "0" * 32])),
    "empty layer digest": dict(change_manifest=_layer_digest("")),
    "layer digest with a path": dict(change_manifest=_layer_digest("sha256:../../../etc/passwd")),
    "empty index digest": dict(change_index=lambda index: index["manifests"][0].update(digest="")),
    "empty config digest": dict(change_manifest=lambda manifest: manifest["config"].update(digest="")),
}


@pytest.mark.parametrize("case", sorted(DIGEST_CASES))
def test_an_empty_or_malformed_digest_is_refused(case, store, tmp_path):
    layout = pathlib.Path(archives.oci_layout(str(tmp_path / "oci"), [archives.layer_tar([member("x")])]))
    _rewrite(layout, **DIGEST_CASES[case])
    with pytest.raises(images.ImageError) as refused:
        images.import_image(str(layout), "digests")
    assert "digest" in one_line(refused) or "diff_id" in str(refused.value)
    assert left_in(store) == []


def test_a_wrong_diff_id_is_caught_even_when_the_blob_digest_is_right(store, tmp_path):
    layout = pathlib.Path(archives.oci_layout(str(tmp_path / "oci"), [archives.layer_tar([member("x")])]))
    _rewrite(layout, change_config=_set_diff_ids([archives.sha256(b"something else")]))
    with pytest.raises(layers.LayerError, match="diff_id\\) digest mismatch"):
        images.import_image(str(layout), "digests")
    assert left_in(store) == []


def test_a_docker_save_with_an_empty_diff_id_is_refused(store, tmp_path):
    layer = archives.layer_tar([member("x", data=b"x")])
    saved = docker_save_dir(tmp_path, [layer])
    manifest = json.loads((saved / "manifest.json").read_text())
    config = json.loads((saved / manifest[0]["Config"]).read_text())
    config["rootfs"]["diff_ids"] = [""]
    raw = json.dumps(config).encode()
    (saved / manifest[0]["Config"]).unlink()
    manifest[0]["Config"] = archives.sha256(raw)[7:] + ".json"
    (saved / manifest[0]["Config"]).write_bytes(raw)
    (saved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(images.ImageError, match="empty or malformed"):
        images.import_image(str(saved), "digests")
    assert left_in(store) == []


@pytest.mark.parametrize("settings", [{"Env": "PATH=/bin"}, {"Cmd": [1]}, {"User": ["root"]},
                                      {"Env": ["A=\0"]}, "not an object"])
def test_a_config_of_the_wrong_shape_is_one_line(settings, store, tmp_path):
    layout = pathlib.Path(archives.oci_layout(str(tmp_path / "oci"), [archives.layer_tar([member("x")])]))
    _rewrite(layout, change_config=lambda config: config.update(config=settings))
    with pytest.raises(images.ImageError, match="the config's") as refused:
        images.import_image(str(layout), "shape")
    one_line(refused)
    assert left_in(store) == []


def test_a_bad_name_is_refused_before_the_archive_is_read(store, tmp_path):
    with pytest.raises(images.ImageError, match="invalid image name"):
        images.import_image(str(tmp_path / "missing.tar"), "../x")


def test_a_bad_name_is_refused_before_the_registry_is_contacted(store):
    import socket
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        with pytest.raises(images.ImageError, match="invalid image name"):
            images.pull(f"127.0.0.1:{port}/a/b:1", "../x")
        with pytest.raises(socket.timeout):
            listener.accept()          # no connection came


@pytest.mark.parametrize("document", [b"[" * 100_000 + b"]" * 100_000, b" " * (5 << 20) + b"{}"])
def test_an_index_too_deep_or_too_big_is_one_line(document, store, tmp_path):
    layout = pathlib.Path(archives.oci_layout(str(tmp_path / "oci"), [archives.layer_tar([member("x")])]))
    (layout / "index.json").write_bytes(document)
    with pytest.raises(images.ImageError, match="nested too deeply|larger than 4 MiB") as refused:
        images.import_image(str(layout), "json")
    one_line(refused)
    saved = docker_save_dir(tmp_path, [archives.layer_tar([member("x")])])
    (saved / "manifest.json").write_bytes(document)
    with pytest.raises(images.ImageError, match="nested too deeply|larger than 4 MiB"):
        images.import_image(str(saved), "json")
    assert left_in(store) == []


def test_digests_are_checked_as_digests():
    good = "sha256:" + "0" * 64
    assert image_sources.check_digest(good, "x") == good
    for bad in ("", None, 7, "sha256:", "sha256:" + "0" * 63, " " + good, good + "\n", "sha1:" + "0" * 40):
        with pytest.raises(images.ImageError, match="empty or malformed"):
            image_sources.check_digest(bad, "x")


# ---------------------------------------------------------------------------
# Image names


GOOD_NAMES = ["busybox", "python:3.11", "test/image:1", "127.0.0.1:5000/team/python:3.11",
              "docker.io/library/busybox:latest", "localhost:5000/a", "my_image-2", "a__b"]
BAD_NAMES = ["../x", "x/../y", "..", "/x", "/etc/passwd", "x/", "a//b", "a/./b", ".x", "a/.b", "-x",
             "", "a\0b", "a\nb", "a b", "x" * (images.NAME_MAX + 1), "a:b:c", "x:", "x:.y",
             "a@sha256:" + "0" * 64]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_image_names_docker_would_take_are_taken(name):
    assert images.check_name(name) == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_image_names_that_could_be_paths_are_refused_everywhere(name, store, tmp_path):
    path = tmp_path / "tiny.tar"
    path.write_bytes(archives.layer_tar([member("etc", "dir")]))
    with pytest.raises(images.ImageError) as refused:
        images.import_image(str(path), name or None) if name else images.check_name(name)
    one_line(refused)
    for call in (images.get, images.remove, images.inspect, store.image):
        with pytest.raises(images.ImageError):
            call(name)
    assert left_in(store) == []


def test_host_is_no_name_for_a_stored_image(store, tmp_path):
    path = tmp_path / "tiny.tar"
    path.write_bytes(archives.layer_tar([member("etc", "dir")]))
    with pytest.raises(images.ImageError, match="'host' is the host image"):
        images.import_image(str(path), "host")
    with pytest.raises(images.ImageError, match="cannot be removed"):
        images.remove("host")


def test_the_longest_name_makes_a_file_the_kernel_takes(store, tmp_path):
    name = "a/" * (images.NAME_MAX // 2 - 2) + "a:bc"     # the most characters %-escaped
    assert len(name) == images.NAME_MAX
    path = tmp_path / "tiny.tar"
    path.write_bytes(archives.layer_tar([member("etc", "dir")]))
    assert images.import_image(str(path), name).name == name
    assert store.names() == [name]


def test_a_name_an_archive_gives_itself_is_checked_too(store, tmp_path):
    path = archives.docker_save_legacy(str(tmp_path / "saved.tar"), [archives.layer_tar([member("x")])],
                                       tag="../../../etc/evil")
    with pytest.raises(images.ImageError, match="--name") as refused:
        images.import_image(path)
    one_line(refused)
    assert images.import_image(path, "fine").name == "fine"


# ---------------------------------------------------------------------------
# The command line: one line, exit status 2


def _cli(*argv, env):
    return subprocess.run([sys.executable, "-m", "sandbox_kernel.cli", "images", *argv],
                          capture_output=True, text=True, env=env, timeout=120)


def test_the_command_line_says_one_line_for_each(store, tmp_path):
    env = dict(os.environ, SANDBOX_KERNEL_STORE_QUOTA="64M")
    whiteout = tmp_path / "whiteout.tar"
    whiteout.write_bytes(archives.layer_tar([member("x", "dir"), member("x/.wh.")]))
    sparse = tmp_path / "sparse.tar"
    sparse.write_bytes(archives.gnu_sparse_tar("big", 256 << 20))
    tiny = tmp_path / "tiny.tar"
    tiny.write_bytes(archives.layer_tar([member("etc", "dir")]))
    for argv, message in (([str(whiteout), "--name", "w"], "whiteout"),
                          ([str(sparse), "--name", "s"], "store quota"),
                          ([str(tiny), "--name", "../x"], "invalid image name")):
        ran = _cli("import", *argv, env=env)
        assert ran.returncode == 2 and message in ran.stderr, (argv, ran.stderr)
        assert len(ran.stderr.strip().splitlines()) == 1, ran.stderr
    assert left_in(store) == []


# -- a pull's reference and the URLs a registry names (issue 13) -------------------------


@pytest.mark.parametrize("reference", ["127.0.0.1:5000?x=1/a/b:1", "evil.example#frag/a/b",
                                       "user@evil.example/a/b", "127.0.0.1:5000\\x/a/b",
                                       "host:port/a/b"])
def test_a_registry_that_is_not_host_port_is_refused(reference):
    from sandbox_kernel.runtime import registry
    with pytest.raises(images.ImageError, match="invalid image reference"):
        registry.parse_reference(reference)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "data:,{}",
                                 "jar:http://x/y", "http:///nohost", "http://127.0.0.1:99999/x"])
def test_a_url_the_registry_names_is_http_or_https_with_a_host(url):
    from sandbox_kernel.runtime import registry
    asked = []
    client = registry.Client(registry.parse_reference("127.0.0.1:5000/a/b:1"),
                             may_contact=lambda host, port: asked.append((host, port)))
    with pytest.raises(images.ImageError, match="refused"):
        client.check_url(url, "a redirect")
    assert asked == []
    client.check_url("https://cdn.example/blob", "a redirect")
    client.check_url("http://[::1]:5000/v2/", "a redirect")
    assert asked == [("cdn.example", 443), ("::1", 5000)]


def test_docker_hub_names_reach_its_api_host():
    """docker.io and index.docker.io name Docker Hub; its API is at
    registry-1.docker.io (the host a policy lists as docker.io)."""
    from sandbox_kernel.runtime import registry
    for text in ("docker.io/busybox", "index.docker.io/library/busybox", "busybox"):
        reference = registry.parse_reference(text)
        assert (reference.registry, reference.repository) == ("registry-1.docker.io", "library/busybox")
