"""The sandbox kernel's policy through a real kernel (jupyter_client): the
notebook's author tries every host-side ``%container`` subcommand with
hostile arguments.  Under the default classroom policy each is refused with
one line, nothing changes on the host (the image store's files and listing
are the same, no socket is contacted) and the kernel stays up; under
``--policy trusted`` each works as before.

Each kernel gets an image store of its own (SANDBOX_KERNEL_IMAGES, a temp
directory holding a busybox image) so that no test touches the machine's store.
Needs root (conftest.py skips the tier otherwise).  Every wait is bounded.
"""
from __future__ import annotations

import os
import queue
import socket
import threading
import time
import uuid

import pytest

from image_archives import busybox_rootfs
from sandbox_kernel.kernel import install
from sandbox_kernel.runtime import images

import kernel_fixtures as kf  # tests/jupyter is on pytest's pythonpath (pyproject)

CLASSROOM = "sbk-test-policy-classroom"
TRUSTED = "sbk-test-policy-trusted"


def _install(data: str, name: str, policy: dict) -> None:
    spec = install.kernel_json({}, policy=install.checked_policy({}, policy))
    install.write_kernelspec(os.path.join(data, "kernels", name), spec)


@pytest.fixture(scope="module", autouse=True)
def kernelspecs(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("jupyter-data"))
    _install(data, CLASSROOM, {})                     # the default: classroom
    _install(data, TRUSTED, {"name": "trusted"})
    with kf.jupyter_path(data):
        yield data


@pytest.fixture
def store(tmp_path):
    """A store of this test with busybox and spare (imported by the host, not the kernel)."""
    root = str(tmp_path / "store")
    rootfs = busybox_rootfs(str(tmp_path / "busybox-rootfs"))
    for name in ("busybox", "spare"):
        images.import_image(rootfs, name, store=images.Store(root))
    return root


@pytest.fixture
def start(store):
    with kf.kernels_of_one_test(CLASSROOM) as begin:
        yield lambda name=CLASSROOM: begin(name, env={images.STORE_ENV: store})


def store_state(root: str) -> tuple:
    """Every file of the store (path, size) but the lock, and its listing."""
    files = []
    for parent, dirs, names in os.walk(root):
        for name in names + dirs:
            path = os.path.join(parent, name)
            if name != "lock":
                files.append((os.path.relpath(path, root), os.lstat(path).st_size
                              if not os.path.isdir(path) else 0))
    listing = [(r["name"], r["id"]) for r in images.listing(images.Store(root))]
    return sorted(files), listing


def refused(kernel, line: str, ename: str = "PolicyRefused") -> str:
    ran = kernel.run(line)
    assert ran.reply["status"] == "error", (line, ran.reply)
    assert ran.reply["ename"] == ename, (line, ran.reply)
    evalue = ran.reply["evalue"]
    assert "\n" not in evalue, evalue
    return evalue


def interfaces(proc_net_dev: str) -> set[str]:
    return {line.split(":")[0].strip() for line in proc_net_dev.splitlines() if ":" in line}


class Listener:
    """A TCP listener on 127.0.0.1 that counts connections and answers each with a 404."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass

    def close(self):
        self.done.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


# ---------------------------------------------------------------------------
# classroom: every hostile line is one line of refusal, and nothing changes


def test_an_author_in_the_classroom_is_refused_everything_hostile(start, store, listener, tmp_path):
    host_dir = tmp_path / "host-secrets"
    (host_dir / "etc").mkdir(parents=True)
    (host_dir / "etc" / "shadow").write_text("root:$6$secret\n")
    outside = tmp_path / "outside"
    kernel = start()
    ok = kf.ok(kernel.run("1 + 1"))
    assert ok.result == "2"
    before = store_state(store)
    hostile = {
        "%container limits --memory 100G": "memory 100 GiB is above the cap of 1 GiB",
        "%container limits --cpus 64": "cpus 64 is above the cap of 1",
        "%container limits --pids 100000": "pids 100000 is above the cap of 256",
        "%container limits --memory ''": "no memory limit is above the cap",
        "%container limits --disk 100G": "disk 100 GiB is above the cap",
        "%container limits --net host": "network may be none, not host",
        "%container exec --name second -- true": "above the cap of 1",
        "%container image build probe --from host --run 'cat /proc/net/dev'": "the host image",
        "%container image build probe --from busybox --net host --run 'cat /proc/net/dev'":
            "build's network may be none, not host",
        f"%container image import {host_dir} --name stolen": "import reads only below listed directories",
        "%container image import /etc --name stolen": "import reads only below listed directories",
        f"%container image import {host_dir}/../host-secrets --name stolen": "has '..'",
        f"%container image pull 127.0.0.1:{listener.port}/a/b:1": "pull contacts only listed registries",
        f"%container image pull 127.0.0.1:{listener.port}/a/b:1 --name x": "not 127.0.0.1:",
        "%container image rm spare": "rm removes only images this kernel made",
        "%container image rm busybox": "rm removes only images this kernel made",
    }
    for line, words in hostile.items():
        evalue = refused(kernel, line)
        assert words in evalue and "the kernel's installer" in evalue, (line, evalue)
        assert evalue.startswith("refused by the classroom policy: "), evalue
    for line in ("%container image build ../x --from busybox --run true",
                 "%container image build a/b --from busybox --run true",
                 "%container image build /x --from busybox --run true",
                 "%container image build x --from ../../etc --run true",
                 f"%container image import {host_dir} --name ../x",
                 "%container image rm ../busybox",
                 "%container image inspect ../../etc/passwd",
                 "%container limits --image ../x"):
        reply = kernel.run(line).reply
        evalue = reply.get("evalue", "")
        assert reply["status"] == "error" and "\n" not in evalue, (line, evalue)
        assert "name" in evalue, (line, evalue)
    assert listener.connections == 0                   # no socket was opened toward it
    assert store_state(store) == before                # the store: not a file more or less
    assert not outside.exists()
    limits = kf.ok(kernel.run("%container limits")).of("display_data")[0]["data"]["text/plain"]
    assert "memory 1 GiB, cpus 1, pids 256" in limits and "net none" in limits
    assert kf.ok(kernel.run("1 + 1")).result == "2"   # still up, same container
    assert kf.ok(kernel.run("ok.result if 'ok' in dir() else 'fresh'")).result is not None


def test_a_build_in_the_classroom_sees_only_its_loopback(start, store):
    """Allowed from a stored image: with no network, whatever the host has."""
    kernel = start()
    ran = kf.ok(kernel.run("%container image build netprobe --from busybox --run 'cat /proc/net/dev'"))
    assert interfaces(ran.stdout) == {"lo"}, ran.stdout       # the build's own output
    assert "(net none)" in ran.of("display_data")[-1]["data"]["text/plain"]
    before_rm = store_state(store)
    kf.ok(kernel.run("%container image rm netprobe"))   # what this kernel made, it may remove
    assert store_state(store) != before_rm
    assert "netprobe" not in [r["name"] for r in images.listing(images.Store(store))]


def test_the_notebook_cannot_reach_the_policy(start):
    """%config and the like run in the container's IPython, not in the kernel."""
    kernel = start()
    kernel.run("%config SandboxPolicy.name = 'trusted'\n%config SandboxKernel.memory = '100G'")
    kernel.run("import os; os.environ['SANDBOX_KERNEL_POLICY'] = 'trusted'")
    assert "above the cap" in refused(kernel, "%container limits --memory 100G")
    status = kf.ok(kernel.run("%container status")).of("display_data")[0]["data"]["text/plain"]
    assert "policy" in status and "classroom (caps: memory 1 GiB, cpus 1, pids 256" in status


def test_the_side_panels_snapshot_carries_the_policy(start):
    kernel = start()
    comm_id = uuid.uuid4().hex
    kernel.kc.shell_channel.send(kernel.kc.session.msg(
        "comm_open", {"comm_id": comm_id, "target_name": "sandbox_kernel.stats", "data": {}}))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            msg = kernel.kc.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if msg["msg_type"] == "comm_msg" and msg["content"]["comm_id"] == comm_id:
            policy = msg["content"]["data"]["policy"]
            assert policy["name"] == "classroom" and policy["caps"]["memory"] == 1 << 30
            assert policy["text"].startswith("classroom (caps: memory 1 GiB")
            return
    raise AssertionError("no snapshot on the stats comm")


def test_install_trust_output_lets_the_kernels_output_through(kernelspecs, store):
    """sandbox-kernel install --trust-output: every session of the kernel shows
    its output as it is; without it, JavaScript is dropped (session/client.py)."""
    name = "sbk-test-policy-trust-output"
    spec = install.kernel_json({}, trust_output=True)
    install.write_kernelspec(os.path.join(kernelspecs, "kernels", name), spec)
    cell = 'from IPython.display import Javascript\nJavascript("window.sbk_trusted = 1")'
    with kf.kernels_of_one_test(name) as begin:
        trusting = begin(name, env={images.STORE_ENV: store})
        plain = begin(CLASSROOM, env={images.STORE_ENV: store})
        shown = kf.ok(trusting.run(cell)).of("execute_result")[-1]["data"]
        assert shown.get("application/javascript") == "window.sbk_trusted = 1"
        shown = kf.ok(plain.run(cell))
        assert not any("application/javascript" in c.get("data", {})
                       for c in shown.of("execute_result") + shown.of("display_data"))


def test_a_policy_the_kernel_cannot_keep_stops_every_cell(kernelspecs, store):
    """Fail closed: a bad preset, or limits above the caps, is not a looser policy."""
    for name, extra in (("sbk-test-policy-bad-name", ["--SandboxPolicy.name=open"]),
                        ("sbk-test-policy-above-cap", ["--SandboxKernel.memory=2G",
                                                       "--SandboxPolicy.max_memory=1G"])):
        spec = install.kernel_json({})
        spec["argv"] += extra
        install.write_kernelspec(os.path.join(kernelspecs, "kernels", name), spec)
        with kf.kernels_of_one_test(name) as begin:
            kernel = begin(name, env={images.STORE_ENV: store})
            ran = kernel.run("%container limits --memory 100G")
            assert ran.reply["ename"] == "SandboxSettingsError", ran.reply
            assert "\n" not in ran.reply["evalue"]
            assert kernel.run("1 + 1").reply["ename"] == "SandboxSettingsError"


# ---------------------------------------------------------------------------
# trusted: as before


def test_under_trusted_each_works_as_before(start, store, listener, tmp_path):
    kernel = start(TRUSTED)
    ran = kf.ok(kernel.run("%container limits --memory 100G --cpus 64 --pids 100000"))
    assert "memory, cpus, pids changed" in ran.of("display_data")[0]["data"]["text/plain"]
    ran = kf.ok(kernel.run("%container image build hostnet --from host --run 'cat /proc/net/dev'"))
    with open("/proc/net/dev") as handle:
        assert interfaces(ran.stdout) == interfaces(handle.read())      # the host's network
    rootfs = busybox_rootfs(str(tmp_path / "to-import"))
    kf.ok(kernel.run(f"%container image import {rootfs} --name imported"))
    names = [r["name"] for r in images.listing(images.Store(store))]
    assert "imported" in names and "hostnet" in names
    ran = kernel.run(f"%container image pull 127.0.0.1:{listener.port}/a/b:1 --name pulled")
    assert ran.reply["status"] == "error" and listener.connections >= 1   # it went there
    for name in ("spare", "hostnet", "imported"):
        kf.ok(kernel.run(f"%container image rm {name}"))
    assert [r["name"] for r in images.listing(images.Store(store))] == ["host", "busybox"]
    assert kf.ok(kernel.run("1 + 1")).result == "2"
