"""A real distribution image: Debian bookworm (minbase) with python3, built
by mmdebstrap once per machine (cached under /var/cache/sandbox-kernel, see
image_archives.debian_python_rootfs), wrapped here into an OCI layout and a
docker-save tarball, imported both ways, and run.  The image has python3
but no IPython: its cells run in the plain agent, on the image's own python."""
from __future__ import annotations

import hashlib
import os
import shutil

import pytest

from sandbox_kernel.runtime import images

import image_archives as archives   # tests/ is on pytest's pythonpath

pytestmark = pytest.mark.usefixtures("no_leftovers")


@pytest.fixture(scope="module")
def debian(tmp_path_factory):
    """(store, OCI-layout image name, docker-save image name), imported once."""
    if shutil.which("mmdebstrap") is None:
        reason = "needs mmdebstrap: apt-get install mmdebstrap (scripts/install does)"
        pytest.fail(reason) if os.environ.get("CI") == "true" else pytest.skip(reason)
    work = tmp_path_factory.mktemp("debian")
    with open(work / "mmdebstrap.log", "w") as log:
        rootfs = archives.debian_python_rootfs(log)   # built the first time, then cached
    layout = archives.oci_layout_of_rootfs(str(work / "oci"), rootfs, "sbk/debian:12",
                                           env=("PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"))
    saved = archives.docker_save_of_rootfs(str(work / "debian.tar"), str(work / "saved"), rootfs,
                                           "sbk/debian-saved:12")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(images.STORE_ENV, str(work / "store"))
        store = images.Store(str(work / "store"))
        images.import_image(layout, "debian-oci")
        shutil.rmtree(work / "oci")
        images.import_image(saved, "debian-saved")
        os.unlink(saved)
        yield store, "debian-oci", "debian-saved"


def test_both_wrappings_import_to_one_shared_layer(debian):
    store, oci, saved = debian
    assert images.get(oci).layers == images.get(saved).layers and len(store.layers()) == 1
    assert images.get(oci).source.startswith("OCI layout") and images.get(saved).source.startswith("docker save")
    assert images.get(oci).environment()["LANG"] == "C.UTF-8"


@pytest.mark.parametrize("which", ["oci", "saved"])
def test_a_cell_sees_debian_and_runs_on_the_images_own_python(debian, which):
    from sandbox_kernel.session.client import Session
    store, oci, saved = debian
    name = oci if which == "oci" else saved
    image = images.get(name)
    with open(image.find("/usr/bin/python3"), "rb") as handle:
        image_python = hashlib.sha256(handle.read()).hexdigest()
    code = ("import hashlib, os, sys\n"
            "print(open('/etc/os-release').read())\n"
            "print('executable', sys.executable, sys.prefix)\n"
            "print('binary', hashlib.sha256(open(os.path.realpath(sys.executable), 'rb').read()).hexdigest())\n"
            "sys.version_info[:2]")
    outputs, later = [], []
    with Session(f"debian-{which}", image=name) as session:
        first = session.execute(code, on_output=lambda kind, content: outputs.append((kind, content)))
        second = session.execute("print('again')", on_output=lambda kind, content: later.append((kind, content)))
        status, dpkg = session.exec_command(["/bin/sh", "-c", "dpkg-query -W -f='${Status}' python3"])
    stdout = "".join(c["text"] for k, c in outputs if k == "stream" and c["name"] == "stdout")
    stderr = "".join(c["text"] for k, c in outputs + later if k == "stream" and c["name"] == "stderr")
    assert first.status == "ok" and second.status == "ok", (first.reply, stderr)
    assert 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"' in stdout and "VERSION_CODENAME=bookworm" in stdout
    assert "executable /usr/bin/python3 /usr\n" in stdout           # not the host's venv
    assert f"binary {image_python}\n" in stdout                     # the image's own file
    assert [c["data"]["text/plain"] for k, c in outputs if k == "execute_result"] == ["(3, 11)"]
    assert stderr.count("has python3 but no IPython") == 1 and "rich output" in stderr
    assert (status, dpkg) == (0, "install ok installed")
