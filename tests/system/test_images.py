"""Containers on stored images: a busybox image (from Debian's busybox-static),
whiteouts seen from inside, a build, a pull from a registry served here, and
what the session says of an image without python.  Every test uses a store
of its own (SANDBOX_KERNEL_IMAGES), never the machine's."""
from __future__ import annotations

import http.server
import json
import os
import pathlib
import re
import subprocess
import sys
import threading

import pytest

from sandbox_kernel.runtime import images
from sandbox_kernel.runtime.container import Container
from sandbox_kernel.runtime.spec import ContainerSpec
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


@pytest.fixture
def busybox(store, tmp_path):
    images.import_image(archives.busybox_rootfs(str(tmp_path / "busybox")), "busybox")
    return "busybox"


def test_a_container_on_an_imported_image_sees_the_image_not_the_host(run, busybox):
    ran = run("cat /etc/os-release; echo ---; ls /; echo ---; ls /usr 2>&1; id -u; echo $PATH",
              image=busybox)
    os_release, root, rest = ran.stdout.split("---\n")
    assert 'NAME="sbk busybox"' in os_release
    assert "bin" in root.split() and "usr" not in root.split()
    assert "No such file" in rest and "65532" in rest
    assert rest.strip().splitlines()[-1] == images.DEFAULT_PATH
    assert ran.result.status == "ok", ran.stderr


def test_writes_land_in_the_containers_layer_not_in_the_image(run, busybox, store):
    ran = run("echo scratch > /tmp/x && cat /tmp/x && echo hi > /workspace/w && cat /workspace/w",
              image=busybox)
    assert ran.stdout == "scratch\nhi\n", ran.stderr
    layer = images.get(busybox).lower_dirs[0]
    assert not os.path.exists(os.path.join(layer, "tmp/x"))
    assert run("ls /tmp", image=busybox).stdout == ""


def test_a_whiteout_and_an_opaque_directory_hide_lower_files_inside(run, store, tmp_path):
    lower = archives.layer_tar([
        member("etc", "dir"), member("etc/motd", data=b"lower motd\n"), member("var", "dir"),
        member("var/cache", "dir"), member("var/cache/a", data=b"a"), member("var/cache/b", data=b"b")])
    upper = archives.layer_tar([
        member("etc", "dir"), member("etc/.wh.motd"),
        member("var/cache", "dir"), member("var/cache/.wh..wh..opq"), member("var/cache/c", data=b"c")])
    layout = archives.oci_layout(str(tmp_path / "oci"), [archives.busybox_layer(), lower, upper],
                                 architecture=images.host_architecture())
    images.import_image(layout, "layered")
    ran = run("test -e /etc/motd && echo motd-visible; ls -A /var/cache; echo $GREETING",
              image="layered")
    assert ran.stdout.split() == ["c", "hello"], (ran.stdout, ran.stderr)


def test_build_adds_a_layer_visible_in_the_new_image_and_not_in_the_base(run, busybox, store):
    output = []
    image = images.build("built", busybox, "echo built-here > /built.txt; rm /etc/os-release; id -u",
                         on_output=output.append)
    assert "".join(output).strip() == "0"    # uid 0, without capabilities
    assert image.layers[:-1] == images.get(busybox).layers
    ran = run("cat /built.txt; test -e /etc/os-release || echo os-release-gone", image="built")
    assert ran.stdout == "built-here\nos-release-gone\n", ran.stderr
    base = run("test -e /built.txt || echo absent; cat /etc/os-release", image=busybox)
    assert base.stdout.startswith("absent\nNAME=")
    top = pathlib.Path(image.lower_dirs[0])
    assert sorted(p.name for p in top.iterdir()) == ["built.txt", "etc"]   # no setup residue


def test_a_failed_build_keeps_nothing(busybox, store):
    layers_before = store.layers()
    with pytest.raises(images.BuildError, match="exit code 3"):
        images.build("broken", busybox, "echo partial > /p; exit 3")
    assert store.layers() == layers_before and "broken" not in store.names()
    assert os.listdir(os.path.join(store.root, "tmp")) == []


def test_an_image_in_use_cannot_be_removed(busybox, store):
    spec = ContainerSpec(command=("/bin/sh", "-c", "sleep 30"), image=busybox)
    with Container(spec, stdin=subprocess.DEVNULL) as box:
        box.start()
        with pytest.raises(images.ImageError, match=r"in use by running container\(s\)"):
            images.remove(busybox)
    assert images.remove(busybox)


def test_sessions_name_the_images_there_are(busybox):
    from sandbox_kernel.session.client import Session
    with pytest.raises(images.ImageNotFound, match="images here: host, busybox"):
        Session("t", image="nope")


def test_shell_commands_run_in_the_session_container_of_an_image_without_python(busybox):
    from sandbox_kernel.session.client import Session
    outputs = []
    with Session("t", image=busybox) as session:
        result = session.run_command(["/bin/sh", "-c", "cat /etc/os-release; echo kept > /tmp/k; "
                                      "echo oops >&2; exit 3"],
                                     on_output=lambda kind, content: outputs.append((kind, content)))
        code, text = session.exec_command(["/bin/sh", "-c", "cat /tmp/k; command -v python3 || "
                                           "echo no-python; ls /usr 2>&1; env | grep -c ^PYTHON || true"])
        pid_before = session.status()["pid"]
        python = session.execute("print('hi')")
        assert session.status()["pid"] == pid_before     # the refusal did not cost the container
    streams = {(c["name"], c["text"]) for k, c in outputs if k == "stream"}
    assert ("stdout", 'NAME="sbk busybox"\nID=sbk-busybox\n') in streams and ("stderr", "oops\n") in streams
    assert result.exit_code == 3 and result.status == "ok"
    # the same container between commands; the host's python3 it borrows is not on its PATH
    assert code == 0 and text.splitlines()[:2] == ["kept", "no-python"], text
    assert "No such file" in text and text.endswith("\n0\n")   # and no PYTHON* settings of it
    assert python.status == "error" and python.reply["ename"] == "NoPythonInImage"
    assert python.reply["evalue"] == ("image 'busybox' has no python3: Python cells cannot run on it; "
                                      "shell cells do (%%container --shell, %container exec)")


def test_an_interrupt_stops_a_shell_command_on_an_image_without_python(busybox):
    from sandbox_kernel.session.client import Session
    with Session("t", image=busybox) as session:
        session.exec_command(["true"])                       # started, idle
        seen = []

        def interrupt_once_running(kind, content):
            seen.append(content.get("text", ""))
            if "ready" in content.get("text", ""):
                threading.Timer(0.3, session.interrupt).start()
        result = session.run_command(["sh", "-c", "echo ready; sleep 60; echo not-reached"],
                                     on_output=interrupt_once_running, timeout=30)
        after = session.exec_command(["echo", "still here"])
    assert result.exit_code == 130 and result.status == "ok", (result, seen)   # 128 + SIGINT
    assert "not-reached" not in "".join(seen)
    assert after == (0, "still here\n")


def test_container_shell_cells_run_on_an_image_without_python(busybox, capsys):
    """%%container --image busybox --shell through the magics, in an IPython shell."""
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "sandbox_kernel")
        first = shell.run_cell("%%container --image busybox --shell --name bb --no-stats\n"
                               "cat /etc/os-release; echo made > /workspace/w")
        second = shell.run_cell("%%container --name bb --shell --no-stats\ncat /workspace/w; exit 4")
        python = shell.run_cell("%%container --name bb --no-stats\nprint(1)")
    finally:
        shell.run_line_magic("unload_ext", "sandbox_kernel")
        InteractiveShell.clear_instance()
    out = capsys.readouterr()
    assert first.success and 'NAME="sbk busybox"' in out.out and "made" in out.out, out
    assert not second.success and "exited with code 4" in str(second.error_in_exec)
    assert not python.success and "has no python3" in str(python.error_in_exec)


def test_cli_run_on_an_image(busybox):
    ran = subprocess.run([sys.executable, "-m", "sandbox_kernel.cli", "run", "--image", busybox, "--",
                          "sh", "-c", "cat /etc/os-release; exit 5"], capture_output=True, text=True)
    assert ran.returncode == 5 and "sbk busybox" in ran.stdout, ran.stderr


# -- pull from a registry served here -----------------------------------------------


class FakeRegistry(http.server.ThreadingHTTPServer):
    """The OCI distribution API's read side over an OCI layout directory,
    behind bearer-token auth: /v2/<repo>/manifests/<tag|digest>, /blobs/<digest>."""

    TOKEN = "token-for-tests"

    def __init__(self, layout: str, repository: str, tags: dict):
        super().__init__(("127.0.0.1", 0), _RegistryHandler)
        self.layout, self.repository, self.tags = layout, repository, tags
        self.blob_requests: list[str] = []
        self.token_requests = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _RegistryHandler(http.server.BaseHTTPRequestHandler):
    server: FakeRegistry

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/token"):
            self.server.token_requests += 1
            assert "scope=repository%3A" in self.path
            return self._send(200, json.dumps({"token": FakeRegistry.TOKEN}).encode(), "application/json")
        if self.headers.get("Authorization") != f"Bearer {FakeRegistry.TOKEN}":
            realm = f"http://{self.server.address}/token"
            return self._send(401, b"{}", "application/json", {"WWW-Authenticate":
                              f'Bearer realm="{realm}",service="fake",scope="repository:x:pull"'})
        match = re.fullmatch(rf"/v2/{self.server.repository}/(manifests|blobs)/([^/]+)", self.path)
        if not match:
            return self._send(404, b"{}", "application/json")
        kind, ref = match.groups()
        digest = self.server.tags.get(ref, (ref, None))[0] if kind == "manifests" else ref
        path = os.path.join(self.server.layout, "blobs", "sha256", digest.removeprefix("sha256:"))
        if not os.path.isfile(path):
            return self._send(404, b"{}", "application/json")
        data = pathlib.Path(path).read_bytes()
        if kind == "blobs":
            self.server.blob_requests.append(digest)
            return self._send(200, data, "application/octet-stream")
        media_type = json.loads(data).get("mediaType", archives.MANIFEST)
        self._send(200, data, media_type, {"Docker-Content-Digest": digest})

    def _send(self, code: int, body: bytes, content_type: str, headers: dict | None = None):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def registry(tmp_path):
    """An index (two platforms, ours and one that is not) under tag 'latest';
    'v2' is a plain manifest sharing the busybox layer."""
    layout = str(tmp_path / "registry")
    busybox_layer = archives.busybox_layer()
    ours = archives.image_blobs(layout, [busybox_layer], architecture=images.host_architecture())
    ours["platform"] = {"os": "linux", "architecture": images.host_architecture()}
    other = archives.image_blobs(layout, [archives.layer_tar([member("other", data=b"x")])],
                                 architecture="s390x" if images.host_architecture() != "s390x" else "arm64")
    other["platform"] = {"os": "linux", "architecture": "s390x" if images.host_architecture() != "s390x"
                         else "arm64"}
    index = json.dumps({"schemaVersion": 2, "mediaType": archives.INDEX, "manifests": [other, ours]}).encode()
    index_descriptor = archives.write_blob(layout, index)
    extra = archives.layer_tar([member("etc", "dir"), member("etc/v2", data=b"second tag\n")])
    v2 = archives.image_blobs(layout, [busybox_layer, extra], architecture=images.host_architecture())
    server = FakeRegistry(layout, "sbk/busybox", {"latest": (index_descriptor["digest"], None),
                                                  "v2": (v2["digest"], None)})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_pull_from_a_registry_picks_our_platform_and_verifies_and_shares_layers(run, store, registry):
    image = images.pull(f"{registry.address}/sbk/busybox:latest")
    assert image.name == f"{registry.address}/sbk/busybox:latest"
    assert registry.token_requests >= 1
    assert len(registry.blob_requests) == 2          # config + the one layer of our platform
    ran = run("cat /etc/os-release", image=image.name)
    assert 'NAME="sbk busybox"' in ran.stdout, ran.stderr
    requested = len(registry.blob_requests)
    second = images.pull(f"{registry.address}/sbk/busybox:v2", "second")
    assert len(registry.blob_requests) == requested + 2     # its config and its new layer only
    assert second.layers[0] == image.layers[0] and len(store.layers()) == 2
    assert run("cat /etc/v2", image="second").stdout == "second tag\n"


def test_pull_refuses_a_tampered_blob(store, registry):
    index = json.loads(pathlib.Path(registry.layout, "blobs/sha256",
                                    registry.tags["v2"][0][7:]).read_text())
    victim = pathlib.Path(registry.layout, "blobs/sha256", index["layers"][1]["digest"][7:])
    victim.write_bytes(archives.gz(archives.layer_tar([member("evil", data=b"x")])))
    with pytest.raises(ValueError, match="digest mismatch"):
        images.pull(f"{registry.address}/sbk/busybox:v2", "tampered")
    assert "tampered" not in store.names()
    assert os.listdir(os.path.join(store.root, "tmp")) == []


def test_pull_of_an_unknown_tag_is_one_clear_line(store, registry):
    with pytest.raises(images.ImageError, match="404"):
        images.pull(f"{registry.address}/sbk/busybox:nope")


# -- an image with its own python3 and IPython --------------------------------------

IPYTHON_PACKAGES = ("IPython", "traitlets", "jedi", "parso", "pygments", "prompt_toolkit", "wcwidth",
                    "pexpect", "ptyprocess", "stack_data", "executing", "asttokens", "pure_eval",
                    "matplotlib_inline", "ipython_pygments_lexers.py", "typing_extensions.py",
                    "decorator.py")


def python_rootfs(root: str, with_ipython: bool = True) -> str:
    """busybox plus Debian's /usr/bin/python3.11 with its libraries and
    stdlib, and (optionally) IPython's pure-Python packages from this venv."""
    import shutil
    import sysconfig
    python = "/usr/bin/python3.11"
    if not os.path.exists(python) or not os.path.isdir("/usr/lib/python3.11"):
        pytest.skip("needs Debian's python3.11 on the host to make a python image")
    archives.busybox_rootfs(root, os_release='NAME="sbk python"\nID=sbk-python\n')
    for path in [python, "/lib64/ld-linux-x86-64.so.2"] + _libraries(python):
        target = root + path
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.realpath(path), target)
    os.symlink("python3.11", f"{root}/usr/bin/python3")
    shutil.copytree("/usr/lib/python3.11", f"{root}/usr/lib/python3.11", symlinks=True,
                    ignore=shutil.ignore_patterns("test", "idlelib", "tkinter"))
    site = f"{root}/usr/lib/python3/dist-packages"
    os.makedirs(site)
    venv_site = sysconfig.get_paths()["purelib"]
    for name in IPYTHON_PACKAGES if with_ipython else ():
        source = os.path.join(venv_site, name)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(site, name))   # with its .pyc: no compile per run
        elif os.path.exists(source):
            shutil.copy2(source, site)
    return root


def _libraries(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    return [line.split("=>")[1].split()[0] for line in out.splitlines() if "=> /" in line]


def test_a_session_on_an_image_with_its_own_python_runs_cells_with_that_python(store, tmp_path):
    from sandbox_kernel.session.client import Session
    images.import_image(python_rootfs(str(tmp_path / "py")), "pyimage")
    outputs = []
    with Session("py", image="pyimage") as session:
        result = session.execute("import sys, IPython\nprint(sys.executable, open('/etc/os-release').read())\n6 * 7",
                                 on_output=lambda kind, content: outputs.append((kind, content)))
    assert result.status == "ok", (result, outputs)
    text = "".join(c.get("text", "") for k, c in outputs if k == "stream")
    assert "/usr/bin/python3" in text and "sbk python" in text
    assert any(k == "execute_result" and c["data"]["text/plain"] == "42" for k, c in outputs)


def test_an_image_with_python_but_no_ipython_runs_cells_in_the_plain_agent(store, tmp_path):
    from sandbox_kernel.session.client import Session
    images.import_image(python_rootfs(str(tmp_path / "py"), with_ipython=False), "bare-python")
    cells = []
    with Session("bare", image="bare-python") as session:
        for code in ("import sys\nx = 6\nprint(sys.executable)\nprint('to stderr', file=sys.stderr)\nx * 7",
                     "def f():\n    return 1 / 0\nf()",
                     "y = x + 1\n'text ' + str(y)"):
            outputs = []
            result = session.execute(code, on_output=lambda kind, content: outputs.append((kind, content)))
            cells.append((result, outputs))
        pulled = session.pull(["y"])
        code, text = session.exec_command(["/bin/sh", "-c", "echo from-sh"])
    (first, out1), (second, out2), (third, out3) = cells
    streams = [(c["name"], c["text"]) for k, c in out1 if k == "stream"]
    note = [t for n, t in streams if "no IPython" in t]
    assert first.status == "ok" and len(note) == 1 and "rich output" in note[0]
    assert ("stdout", "/usr/bin/python3\n") in streams and ("stderr", "to stderr\n") in streams
    assert [c["data"] for k, c in out1 if k == "execute_result"] == [{"text/plain": "42"}]
    errors = [c for k, c in out2 if k == "error"]
    assert second.status == "error" and errors[0]["ename"] == "ZeroDivisionError"
    assert any("return 1 / 0" in line for line in errors[0]["traceback"]), errors
    assert not any("plain_agent" in line for line in errors[0]["traceback"])
    assert not any("no IPython" in c.get("text", "") for k, c in out2 + out3)   # said once
    assert [c["data"]["text/plain"] for k, c in out3 if k == "execute_result"] == ["'text 7'"]
    assert pulled == {"y": 7} and (code, text) == (0, "from-sh\n")
