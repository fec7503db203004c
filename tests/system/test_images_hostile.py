"""Hostile images against real containers (issue 14, item 9): what import
refuses never reaches a container, and the whiteouts it keeps at an image's
root mean in a container what they mean in the OCI spec.  Every test uses a
store of its own (SANDBOX_KERNEL_IMAGES), never the machine's."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sandbox_kernel.runtime import images, layers
import image_archives as archives   # tests/ is on pytest's pythonpath

pytestmark = pytest.mark.usefixtures("no_leftovers")

if not os.path.exists("/bin/busybox"):
    pytest.skip("no /bin/busybox: apt-get install busybox-static (scripts/install does)",
                allow_module_level=True)


member = archives.member


@pytest.fixture
def store(tmp_path, monkeypatch):
    root = tmp_path / "store"
    monkeypatch.setenv(images.STORE_ENV, str(root))
    return images.Store(str(root))


def layered(tmp_path, *layers: bytes) -> str:
    return archives.oci_layout(str(tmp_path / "oci"), [archives.busybox_layer(), *layers],
                               architecture=images.host_architecture())


def test_a_whiteout_at_the_root_hides_a_top_directory_and_the_image_still_runs(run, store, tmp_path):
    lower = archives.layer_tar([member("srv", "dir"), member("srv/old", data=b"old\n")])
    upper = archives.layer_tar([member(".wh.srv"), member("opt", "dir"), member("opt/new", data=b"new\n")])
    images.import_image(layered(tmp_path, lower, upper), "rootwhiteout")
    ran = run("test -e /srv || echo srv-hidden; cat /opt/new; cat /etc/os-release", image="rootwhiteout")
    assert ran.stdout.startswith("srv-hidden\nnew\nNAME="), (ran.stdout, ran.stderr)


def test_an_empty_root_whiteout_is_refused_so_no_container_breaks_on_it(store, tmp_path):
    # before: '.wh.' made the layer's root a device node, the import said yes,
    # and every container on the image failed to start
    upper = archives.layer_tar([member(".wh.")])
    with pytest.raises(layers.LayerError, match="whiteout") as refused:
        images.import_image(layered(tmp_path, upper), "broken")
    assert "\n" not in str(refused.value)
    assert store.names() == [] and store.layers() == []


def test_a_docker_save_dir_linking_to_a_private_host_file_never_reaches_a_container(store, tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "secret").write_text("host secret\n")
    leak = archives.layer_tar([member("bin", "dir"), member("etc", "dir"),
                               member("etc/secret", "symlink", linkname="/etc/os-release")])
    (private / "layer.tar").write_bytes(leak)
    saved_tar = archives.docker_save_legacy(str(tmp_path / "saved.tar"), [archives.busybox_layer(), leak])
    saved = tmp_path / "saved"
    saved.mkdir()
    subprocess.run(["tar", "-xf", saved_tar, "-C", str(saved)], check=True)
    entry = json.loads((saved / "manifest.json").read_text())[0]
    linked = saved / entry["Layers"][1]
    linked.unlink()
    linked.symlink_to(private / "layer.tar")
    ran = subprocess.run([sys.executable, "-m", "sandbox_kernel.cli", "images", "import", str(saved),
                          "--name", "leak"], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 2 and "symlink" in ran.stderr, ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1
    assert store.names() == [] and store.layers() == []


@pytest.mark.skipif(os.geteuid() != 0, reason="opaque directories need root (trusted.* xattrs)")
def test_an_opaque_marker_at_the_root_hides_the_layers_below(run, store, tmp_path):
    lower = archives.layer_tar([member("srv", "dir"), member("srv/old", data=b"old\n")])
    upper = archives.layer_tar([member(".wh..wh..opq"), member("bin", "dir"),
                                member("bin/busybox", data=open("/bin/busybox", "rb").read(), mode=0o755),
                                member("bin/sh", "symlink", linkname="busybox"),
                                member("bin/ls", "symlink", linkname="busybox")])
    image = images.import_image(layered(tmp_path, lower, upper), "opaque")
    assert len(image.layers) == 1        # overlayfs ignores the marker on a lower root: dropped instead
    ran = run("ls /srv 2>&1; test -e /etc/os-release || echo no-os-release; ls /bin", image="opaque")
    assert "No such file" in ran.stdout and "no-os-release" in ran.stdout, (ran.stdout, ran.stderr)
    assert ran.stdout.split()[-3:] == ["busybox", "ls", "sh"], ran.stdout
