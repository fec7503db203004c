"""A build FROM host: pip install of a wheel from a local directory, with no
network, gives an image in which the package imports, while the host (and
the host image) stay as they were.  The wheel is written here by hand: a
zip of three files and the dist-info pip needs."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig

import pytest

import wheels   # tests/ is on pytest's pythonpath (pyproject)
from sandbox_kernel.runtime import images

pytestmark = pytest.mark.usefixtures("no_leftovers")

PACKAGE = "sbk_tiny_wheel"
WHEEL = f"{PACKAGE}-1.0-py3-none-any.whl"


def write_wheel(directory) -> str:
    """A pure-Python wheel of a package with three modules."""
    return wheels.write_wheel(directory, PACKAGE, "1.0", {
        "__init__.py": b"from .greet import hello\n",
        "greet.py": b"from .words import WORD\n\ndef hello():\n    return WORD + ' from a wheel'\n",
        "words.py": b"WORD = 'hello'\n"})


@pytest.fixture
def store(tmp_path, monkeypatch):
    root = tmp_path / "store"
    monkeypatch.setenv(images.STORE_ENV, str(root))
    return images.Store(str(root))


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sandbox_kernel.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_a_build_from_host_pip_installs_a_local_wheel_into_a_new_image_only(store, tmp_path, run):
    if sys.prefix == sys.base_prefix:
        pytest.skip("needs the project's venv (pip installs into it inside the build)")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    write_wheel(str(wheels))
    site = sysconfig.get_paths()["purelib"]
    before = sorted(os.listdir(site))
    built = cli("images", "build", "with-wheel", "--from", "host", "--net", "none",
                "--mount", f"{wheels}:/wheels:ro",
                "--run", f"python3 -m pip install --no-index --no-cache-dir --disable-pip-version-check "
                         f"/wheels/{WHEEL}")
    assert built.returncode == 0, built.stdout + built.stderr
    assert f"Successfully installed {PACKAGE.replace('_', '-')}-1.0" in built.stdout.replace("_", "-")
    # the host is unchanged: nothing new in its venv, and the host image cannot import it
    assert sorted(os.listdir(site)) == before and importlib.util.find_spec(PACKAGE) is None
    on_host = run(("python3", "-c", f"import {PACKAGE}"))
    assert on_host.result.exit_code != 0 and "ModuleNotFoundError" in on_host.stderr
    # the new image imports it, from the venv's site-packages, on the host's python
    ran = run(("python3", "-c", f"import sys, {PACKAGE} as p; print(p.hello()); print(p.__file__); "
               f"print(sys.prefix)"), image="with-wheel")
    assert ran.stdout.splitlines() == ["hello from a wheel", f"{site}/{PACKAGE}/__init__.py", sys.prefix], ran.stderr
    # its one layer holds the package at the venv's path, and none of the container's setup files
    image = images.get("with-wheel")
    assert image.base == "host" and len(image.layers) == 1
    layer = image.lower_dirs[0]
    assert os.path.isfile(f"{layer}{site}/{PACKAGE}/words.py")
    assert not os.path.exists(f"{layer}/etc/hosts") and not os.path.exists(f"{layer}/etc/passwd")


def test_a_session_on_an_image_built_from_host_runs_cells_with_the_package(store, tmp_path):
    from sandbox_kernel.session.client import Session
    if sys.prefix == sys.base_prefix:
        pytest.skip("needs the project's venv")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    write_wheel(str(wheels))
    images.build("tiny", "host", f"python3 -m pip install -q --no-index --no-cache-dir /wheels/{WHEEL}",
                 network="none", mounts=[f"{wheels}:/wheels:ro"])
    images.build("tiny-plus", "tiny", "echo second > /usr/local/share/sbk-second-layer", network="none")
    outputs = []
    with Session("tiny", image="tiny-plus") as session:
        result = session.execute(f"import {PACKAGE}\nprint(open('/usr/local/share/sbk-second-layer').read())\n"
                                 f"{PACKAGE}.hello()",
                                 on_output=lambda kind, content: outputs.append((kind, content)))
    assert result.status == "ok", result.reply
    assert [c["data"]["text/plain"] for k, c in outputs if k == "execute_result"] == ["'hello from a wheel'"]
    assert "".join(c["text"] for k, c in outputs if k == "stream") == "second\n\n", outputs
    assert not os.path.exists("/usr/local/share/sbk-second-layer")
    assert images.get("tiny-plus").layers[0] == images.get("tiny").layers[0]
    assert images.remove("tiny-plus") and images.remove("tiny") and store.layers() == []
