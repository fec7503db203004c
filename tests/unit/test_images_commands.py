"""The image commands of %container and of the sandbox-kernel command,
against a temporary store (no container needed for these)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sandbox_kernel.runtime import images
from sandbox_kernel.session import commands
from sandbox_kernel.session.commands import Sessions, UsageError


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv(images.STORE_ENV, str(tmp_path / "store"))
    return images.Store(str(tmp_path / "store"))


@pytest.fixture
def rootfs_tar(tmp_path):
    import io
    import tarfile
    path = tmp_path / "tiny.tar"
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo("etc/os-release")
        data = b"ID=tiny\n"
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return str(path)


class FakeSession:
    def __init__(self, name, image="host", **_):
        self.name, self.image, self.running = name, images.resolve(image), True


def test_image_import_list_inspect_rm(store, rootfs_tar):
    sessions = Sessions(factory=FakeSession)
    shown = []
    out = commands.run(f"image import {rootfs_tar} --name tiny", sessions,
                       on_output=lambda kind, content: shown.append(kind))
    assert out.text == "imported tiny (1 layer(s))"
    assert shown[0] == "display_data" and shown[-1] == "update_display_data"   # the live bar
    listing = commands.run("images", sessions)
    assert "tiny" in listing.text and "<table" in listing.html
    assert "tiny" in commands.run("image ls", sessions).text
    assert "layer 1: sha256:" in commands.run("image inspect tiny", sessions).text
    assert commands.run("image rm tiny", sessions).text.startswith("removed tiny")


def test_rm_of_an_image_a_session_uses_names_the_session(store, rootfs_tar):
    images.import_image(rootfs_tar, "tiny")
    sessions = Sessions(factory=FakeSession)
    sessions.open("grader", image="tiny")
    with pytest.raises(UsageError, match="in use by session\\(s\\) grader"):
        commands.run("image rm tiny", sessions)


def test_an_unknown_image_lists_the_images_there_are(store, rootfs_tar):
    images.import_image(rootfs_tar, "tiny")
    sessions = Sessions(factory=FakeSession)
    with pytest.raises(UsageError, match="no image named 'nope'; images here: host, tiny"):
        commands.run("image inspect nope", sessions)
    with pytest.raises(images.ImageNotFound, match="images here: host, tiny"):
        sessions.open("x", image="nope")


def test_image_bad_input_is_a_usage_error(store, tmp_path):
    sessions = Sessions(factory=FakeSession)
    with pytest.raises(UsageError, match="no such file or directory"):
        commands.run(f"image import {tmp_path}/missing.tar", sessions)
    with pytest.raises(UsageError, match="usage: %container image"):
        commands.run("image frobnicate", sessions)
    with pytest.raises(UsageError, match="--from"):
        commands.run("image build x --run true", sessions)


def _cli(*argv, env=None):
    return subprocess.run([sys.executable, "-m", "sandbox_kernel.cli", "images", *argv],
                          capture_output=True, text=True, env=env)


def _broken_layouts(tmp_path) -> tuple[str, str]:
    """An OCI layout whose layer blob was swapped, and one whose layer has a
    media type nobody knows."""
    import pathlib
    import image_archives as archives
    layer = archives.layer_tar([archives.member("etc", "dir"), archives.member("etc/x", data=b"x")])
    paths = []
    for kind in ("corrupt", "weird"):
        layout = archives.oci_layout(str(tmp_path / kind), [layer])
        index = json.loads(pathlib.Path(layout, "index.json").read_text())
        manifest_path = pathlib.Path(layout, "blobs/sha256", index["manifests"][0]["digest"][7:])
        manifest = json.loads(manifest_path.read_text())
        if kind == "corrupt":
            blob = pathlib.Path(layout, "blobs/sha256", manifest["layers"][0]["digest"][7:])
            blob.write_bytes(archives.gz(archives.layer_tar([archives.member("evil", data=b"!")])))
        else:
            manifest["layers"][0]["mediaType"] = "application/vnd.example.weird"
            raw = json.dumps(manifest).encode()
            pathlib.Path(layout, "blobs/sha256", archives.sha256(raw)[7:]).write_bytes(raw)
            index["manifests"][0].update(digest=archives.sha256(raw), size=len(raw))
            pathlib.Path(layout, "index.json").write_text(json.dumps(index))
        paths.append(layout)
    return paths[0], paths[1]


def test_cli_images(store, rootfs_tar, tmp_path):
    import os
    env = dict(os.environ)
    corrupt, weird = _broken_layouts(tmp_path)
    ran = _cli("import", rootfs_tar, "--name", "tiny", env=env)
    assert ran.returncode == 0 and "imported tiny" in ran.stdout, ran.stderr
    assert "tiny" in _cli(env=env).stdout
    assert json.loads(_cli("inspect", "tiny", "--json", env=env).stdout)["name"] == "tiny"
    for argv, message in ((["import", "/nonexistent.tar"], "no such file or directory"),
                          (["import", rootfs_tar, "--name", "tiny"], "an image named 'tiny' exists"),
                          (["inspect", "nope"], "no image named 'nope'"),
                          (["pull", "Bad Ref"], "invalid image reference"),
                          (["import", corrupt, "--name", "c"], "blob digest mismatch"),
                          (["import", weird, "--name", "w"],
                           "unknown media type 'application/vnd.example.weird'")):
        ran = _cli(*argv, env=env)
        assert ran.returncode == 2 and message in ran.stderr, (argv, ran.stderr)
        assert len(ran.stderr.strip().splitlines()) == 1
    assert _cli("rm", "tiny", env=env).returncode == 0
    assert store.names() == [] and store.layers() == []     # nothing half-imported stayed
