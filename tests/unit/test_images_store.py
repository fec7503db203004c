"""The image store: imports of every form (archives made here with tarfile,
json and hashlib), whiteouts, layer sharing, digests, the lock, removal, and
the mount plan of a stored image."""
from __future__ import annotations

import json
import multiprocessing
import os
import pathlib
import stat
import sys
import time

import pytest

from sandbox_kernel.runtime import images, layers, rootfs
from sandbox_kernel.runtime.spec import ContainerSpec, Limits, Mount
import image_archives as archives   # tests/ is on pytest's pythonpath


member = archives.member
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts need root (mknod, trusted.* xattrs)")

BASE = archives.layer_tar([
    member("etc", "dir"), member("etc/os-release", data=b"ID=base\n"),
    member("etc/motd", data=b"hello\n"), member("var", "dir"), member("var/cache", "dir"),
    member("var/cache/a", data=b"a"), member("var/cache/b", data=b"b"),
])
TOP = archives.layer_tar([
    member("etc", "dir"), member("etc/.wh.motd"),            # deletes a file
    member("var/cache", "dir"), member("var/cache/.wh..wh..opq"),  # empties a directory
    member("var/cache/c", data=b"c"), member("srv", "dir"), member("srv/new", data=b"new"),
])
PLAIN = archives.layer_tar([member("etc", "dir"), member("etc/os-release", data=b"ID=plain\n")])


@pytest.fixture
def store(tmp_path, monkeypatch):
    root = tmp_path / "store"
    monkeypatch.setenv(images.STORE_ENV, str(root))
    return images.Store(str(root))


def test_the_store_root_follows_the_environment_then_root_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv(images.STORE_ENV, str(tmp_path / "s"))
    assert images.store_root() == str(tmp_path / "s")
    monkeypatch.delenv(images.STORE_ENV)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    expected = "/var/lib/sandbox-kernel" if os.geteuid() == 0 else str(tmp_path / "xdg/sandbox-kernel")
    assert images.store_root() == expected


def test_import_a_gzipped_rootfs_tarball(store, tmp_path):
    path = tmp_path / "rootfs.tar.gz"
    path.write_bytes(archives.gz(PLAIN))
    image = images.import_image(str(path))
    assert image.name == "rootfs"
    assert image.layers == (archives.sha256(PLAIN),)     # content address: sha256 of the tar
    assert (pathlib.Path(image.lower_dirs[0]) / "etc/os-release").read_text() == "ID=plain\n"
    assert image.environment()["PATH"] == images.DEFAULT_PATH
    assert images.available() == ["host", "rootfs"]


def test_import_a_rootfs_directory(store, tmp_path):
    root = tmp_path / "dir"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=dir\n")
    image = images.import_image(str(root), "fromdir")
    assert (pathlib.Path(image.find("/etc/os-release"))).read_text() == "ID=dir\n"


@needs_root
def test_oci_layout_whiteouts_and_opaque_directories_become_overlay_format(store, tmp_path):
    layout = archives.oci_layout(str(tmp_path / "oci"), [BASE, TOP])
    image = images.import_image(layout)
    assert image.name == "test/image:1"
    top = pathlib.Path(image.lower_dirs[0])
    motd = os.lstat(top / "etc/motd")
    assert stat.S_ISCHR(motd.st_mode) and motd.st_rdev == 0
    assert not (top / "etc/.wh.motd").exists()
    assert os.getxattr(top / "var/cache", layers.OPAQUE_XATTR) == b"y"
    assert not (top / "var/cache/.wh..wh..opq").exists()
    # the merged view, as the container will see it
    assert image.find("/etc/motd") is None
    assert image.find("/var/cache/a") is None and image.find("/var/cache/c")
    assert pathlib.Path(image.find("/etc/os-release")).read_text() == "ID=base\n"


@needs_root
def test_oci_layout_as_a_tar_and_its_config(store, tmp_path):
    layout = archives.oci_layout(str(tmp_path / "oci"), [BASE, TOP])
    path = archives.tar_directory(layout, str(tmp_path / "image.oci.tar"))
    image = images.import_image(path, "fromtar")
    assert len(image.layers) == 2
    assert image.environment()["GREETING"] == "hello"
    assert (image.workdir, image.cmd, image.user) == ("/srv", ("/bin/sh",), "1000")
    assert image.id == archives.sha256(archives.config_for([archives.sha256(BASE), archives.sha256(TOP)]))


def test_docker_save_legacy_form(store, tmp_path):
    path = archives.docker_save_legacy(str(tmp_path / "legacy.tar"), [BASE, PLAIN])
    image = images.import_image(path)
    assert image.name == "legacy/image:1"
    assert image.layers == (archives.sha256(BASE), archives.sha256(PLAIN))
    assert pathlib.Path(image.find("/etc/os-release")).read_text() == "ID=plain\n"


def test_docker_save_oci_form(store, tmp_path):
    path = archives.docker_save_oci(str(tmp_path / "modern.tar"), str(tmp_path / "work"), [PLAIN])
    image = images.import_image(path)
    assert image.name == "modern/image:1"
    assert image.layers == (archives.sha256(PLAIN),)


def test_the_same_layer_imported_twice_is_stored_once(store, tmp_path):
    legacy = archives.docker_save_legacy(str(tmp_path / "a.tar"), [BASE, PLAIN], tag="a:1")
    modern = archives.docker_save_oci(str(tmp_path / "b.tar"), str(tmp_path / "work"), [BASE], tag="b:1")
    rootfs_tar = tmp_path / "c.tar"
    rootfs_tar.write_bytes(BASE)
    for path in (legacy, modern, str(rootfs_tar)):
        images.import_image(path)
    assert sorted(store.layers()) == sorted({archives.sha256(BASE), archives.sha256(PLAIN)})
    info = images.inspect("b:1")
    assert sorted(info["layers"][0]["shared_with"]) == ["a:1", "c"]


def test_a_corrupt_blob_is_refused_and_leaves_nothing(store, tmp_path):
    layout = archives.oci_layout(str(tmp_path / "oci"), [PLAIN])
    manifest = _manifest(layout)
    blob = pathlib.Path(layout, "blobs/sha256", manifest["layers"][0]["digest"][7:])
    blob.write_bytes(archives.gz(archives.layer_tar([member("evil", data=b"swapped")])))
    with pytest.raises(layers.LayerError, match="blob digest mismatch"):
        images.import_image(layout, "corrupt")
    assert store.layers() == [] and store.names() == []
    assert os.listdir(os.path.join(store.root, "tmp")) == []


def test_a_layer_that_is_not_the_configs_diff_id_is_refused(store, tmp_path):
    path = archives.docker_save_legacy(str(tmp_path / "legacy.tar"), [PLAIN])
    config_path = tmp_path / "unpacked"
    import tarfile
    with tarfile.open(path) as archive:
        archive.extractall(config_path, filter="data")
    manifest = json.loads((config_path / "manifest.json").read_text())
    (config_path / manifest[0]["Layers"][0]).write_bytes(BASE)   # another layer, same name
    with pytest.raises(layers.LayerError, match="diff_id"):
        images.import_image(str(config_path), "swapped")
    assert store.layers() == []


def test_an_unknown_media_type_is_one_clear_error(store, tmp_path):
    layout = archives.oci_layout(str(tmp_path / "oci"), [PLAIN])
    manifest = _manifest(layout)
    manifest["layers"][0]["mediaType"] = "application/vnd.example.weird"
    _rewrite_manifest(layout, manifest)
    with pytest.raises(images.ImageError, match="unknown media type 'application/vnd.example.weird'"):
        images.import_image(layout, "weird")


def test_bad_input_gets_one_line(store, tmp_path):
    with pytest.raises(images.ImageError, match="no such file or directory"):
        images.import_image(str(tmp_path / "missing.tar"))
    (tmp_path / "notatar").write_bytes(b"hello, I am not a tar" * 100)
    with pytest.raises(images.ImageError, match="nor a tar archive"):
        images.import_image(str(tmp_path / "notatar"))
    path = tmp_path / "x.tar"
    path.write_bytes(PLAIN)
    images.import_image(str(path), "taken")
    with pytest.raises(images.ImageError, match="an image named 'taken' exists"):
        images.import_image(str(path), "taken")
    for bad in ("host", "../x", "a b", "-x"):
        with pytest.raises(images.ImageError):
            images.import_image(str(path), bad)


def test_zstd_layers_import_with_zstandard(store, tmp_path):
    zstandard = pytest.importorskip("zstandard")
    path = tmp_path / "layer.tar.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(PLAIN))
    assert images.import_image(str(path), "zst").layers == (archives.sha256(PLAIN),)


def test_zstd_layers_without_zstandard_are_one_clear_error(store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "zstandard", None)      # as if it were not installed
    path = tmp_path / "layer.tar.zst"
    path.write_bytes(layers.ZSTD_MAGIC + b"\x00" * 64)
    with pytest.raises(layers.LayerError, match="zstd-compressed and the zstandard package is not "
                                                "installed: pip install zstandard"):
        images.import_image(str(path), "zst")
    assert store.layers() == [] and store.names() == []


def test_rm_removes_only_the_layers_no_other_image_uses(store, tmp_path):
    images.import_image(archives.docker_save_legacy(str(tmp_path / "a.tar"), [BASE, PLAIN], tag="a"))
    images.import_image(archives.docker_save_legacy(str(tmp_path / "b.tar"), [BASE], tag="b"))
    assert images.remove("a") == [archives.sha256(PLAIN)]
    assert store.layers() == [archives.sha256(BASE)]
    assert images.get("b").find("/etc/os-release")
    assert images.remove("b") == [archives.sha256(BASE)]
    with pytest.raises(images.ImageNotFound, match="images here: host"):
        images.remove("b")


def _import_in_child(store_root: str, path: str, name: str) -> None:
    os.environ[images.STORE_ENV] = store_root
    images.import_image(path, name)


def test_two_importers_at_once_share_the_layers_and_corrupt_nothing(store, tmp_path):
    big = archives.layer_tar([member(f"f{i}", data=os.urandom(50_000)) for i in range(40)])
    path = archives.docker_save_legacy(str(tmp_path / "a.tar"), [big, PLAIN], tag="x")
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=_import_in_child, args=(store.root, path, f"copy{i}"))
                for i in range(3)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert [c.exitcode for c in children] == [0, 0, 0]
    assert store.names() == ["copy0", "copy1", "copy2"]
    assert sorted(store.layers()) == sorted([archives.sha256(big), archives.sha256(PLAIN)])
    assert os.listdir(os.path.join(store.root, "tmp")) == []


def _import_when_told(store_root: str, path: str, name: str, go) -> None:
    go.wait(10)
    _import_in_child(store_root, path, name)


def test_a_writer_waits_for_the_lock(store, tmp_path):
    path = tmp_path / "x.tar"
    path.write_bytes(PLAIN)
    context = multiprocessing.get_context("fork")
    go = context.Event()
    # forked before we take the lock: a child forked while we hold it would
    # inherit the lock's open file description, and so the lock itself
    child = context.Process(target=_import_when_told, args=(store.root, str(path), "waited", go))
    child.start()
    with store.lock():
        go.set()
        time.sleep(0.5)
        assert child.is_alive() and store.names() == []
    child.join(30)
    assert child.exitcode == 0 and store.names() == ["waited"]


def test_work_left_by_a_dead_importer_is_removed_by_the_next_writer(store, tmp_path):
    with store.lock():
        pass
    stale = os.path.join(store.root, "tmp", "sbk-999999999-import-dead")
    os.makedirs(os.path.join(stale, "root"))
    path = tmp_path / "x.tar"
    path.write_bytes(PLAIN)
    images.import_image(str(path), "next")
    assert not os.path.exists(stale)


# -- the mount plan of a stored image ------------------------------------------------


class FakeImage:
    lower_dirs = ["/store/layers/sha256/top/root", "/store/layers/sha256/bottom/root"]


def _plan(**options):
    spec = ContainerSpec(command=("sh",), limits=Limits(disk=32 << 20), image="x",
                         mounts=(Mount("/tmp", "/data", True),))
    return rootfs.image_plan(spec, "/run/sbk-x", "/run/sbk-x/workspace", FakeImage(), **options)


def test_the_image_plan_stacks_the_layers_top_first_under_a_tmpfs_upper():
    plan = _plan()
    assert (plan[0].kind, plan[0].fstype, plan[0].target) == ("mount", "tmpfs", "/run/sbk-x/layer")
    overlay = next(op for op in plan if op.fstype == "overlay")
    assert overlay.target == "/run/sbk-x/root"
    assert overlay.data == ("lowerdir=/store/layers/sha256/top/root:/store/layers/sha256/bottom/root,"
                            "upperdir=/run/sbk-x/layer/upper,workdir=/run/sbk-x/layer/work")


def test_every_path_the_plan_writes_or_mounts_on_is_confined_first():
    plan = _plan()
    touched = [op.target for op in plan if op.kind in ("bind", "write", "mkdir", "chown")
               and op.target.startswith("/run/sbk-x/root/") and not op.target.startswith(
                   ("/run/sbk-x/root/dev/", "/run/sbk-x/root/proc/"))]
    touched += [op.target + "/passwd" for op in plan if op.kind == "append_passwd"]
    for target in touched:
        first_touch = next(i for i, op in enumerate(plan) if op.kind != "confine" and (
            op.target == target or op.kind == "append_passwd" and op.target + "/passwd" == target))
        assert any(op.kind == "confine" and op.target == target for op in plan[:first_touch]), target


def test_a_build_plan_keeps_the_upper_dir_on_the_host_and_stands_alone():
    plan = _plan(upper_dir="/store/tmp/build")
    assert not any(op.fstype == "tmpfs" and op.target == "/run/sbk-x/layer" for op in plan)
    overlay = next(op for op in plan if op.fstype == "overlay")
    assert "upperdir=/store/tmp/build/upper,workdir=/store/tmp/build/work" in overlay.data
    assert "metacopy=off" in overlay.data and "redirect_dir=off" in overlay.data


def test_confine_replaces_symlinks_that_would_lead_out_of_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "etc").symlink_to(outside)          # what a hostile image could ship
    (root / "tmp").write_text("a file where a directory belongs")
    rootfs._confine(rootfs.Op("confine", str(root / "etc/hosts"), str(root)))
    rootfs._confine(rootfs.Op("confine", str(root / "tmp/x"), str(root)))
    assert (root / "etc").is_dir() and not (root / "etc").is_symlink()
    assert (root / "tmp").is_dir()
    rootfs._write(rootfs.Op("write", str(root / "etc/hosts"), data="x"))
    assert list(outside.iterdir()) == []


def _manifest(layout: str) -> dict:
    index = json.loads(pathlib.Path(layout, "index.json").read_text())
    return json.loads(pathlib.Path(layout, "blobs/sha256", index["manifests"][0]["digest"][7:]).read_text())


def _rewrite_manifest(layout: str, manifest: dict) -> None:
    index = json.loads(pathlib.Path(layout, "index.json").read_text())
    descriptor = archives.write_blob(layout, json.dumps(manifest).encode())
    index["manifests"][0].update(descriptor)
    pathlib.Path(layout, "index.json").write_text(json.dumps(index))


def test_a_build_on_the_host_keeps_each_host_dirs_upper_on_disk():
    from sandbox_kernel.runtime import image_build
    spec = ContainerSpec(command=("/bin/sh", "-c", "true"), user=(0, 0))
    plan = rootfs.host_image_plan(spec, "/run/sbk-x", "/ws")
    kept = image_build._uppers_kept_in(plan, "/run/sbk-x/layer", "/store/tmp/build")
    assert not any(op.fstype == "tmpfs" and op.target == "/run/sbk-x/layer" for op in kept)
    assert any(op.kind == "bind" and op.target == "/run/sbk-x/layer" and op.source == "/store/tmp/build"
               for op in kept)
    overlays = [op for op in kept if op.fstype == "overlay"]
    assert len(overlays) == len(rootfs.host_image_dirs())
    assert all(op.data.endswith(",index=off,metacopy=off,redirect_dir=off") for op in overlays)


def test_an_image_built_on_the_host_lays_its_layers_over_each_host_dir(tmp_path):
    usr = rootfs.host_image_dirs()[0]
    top_id, bottom_id = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    top, bottom = images.layer_root(str(tmp_path), top_id), images.layer_root(str(tmp_path), bottom_id)
    os.makedirs(top + usr)                 # the top layer changed /usr only
    os.makedirs(bottom + "/etc")
    image = images.Image(name="x", id="", layers=(bottom_id, top_id), base="host", store_root=str(tmp_path))
    plan = rootfs.image_plan(ContainerSpec(command=("/bin/true",), image="x"), "/run/sbk-x", "/ws", image)
    data = {op.target: op.data for op in plan if op.fstype == "overlay"}
    assert set(data) == {f"/run/sbk-x/root{d}" for d in rootfs.host_image_dirs()}   # the host plan
    assert f"lowerdir={top}{usr}:{usr}," in data[f"/run/sbk-x/root{usr}"]
    assert f"lowerdir={bottom}/etc:/etc," in data["/run/sbk-x/root/etc"]
    assert image.environment() == {}       # the host's PATH stays
