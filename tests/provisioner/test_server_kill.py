"""kill -9 of a real `jupyter server` running wrapped kernels (IRkernel and
bash_kernel): their containers go by the runtime's lifeline (each launcher
reads EOF on a pipe only the server held, kills the container, removes its
cgroup and state directory); the connection directories go with the next
reap of dead owners' leftovers, which any container start runs."""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request

from provisioner.prov_helpers import WRAPPED, leftovers, until

from sandbox_kernel.runtime import cards, cleanup
from sandbox_kernel.runtime.cgroups import detect_driver

JUPYTER = os.path.join(os.path.dirname(sys.executable), "jupyter")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A jupyter server on 127.0.0.1 with a token, in a session of its own."""

    def __init__(self, root: str):
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.log = open(os.path.join(root, "server.log"), "w+")
        self.process = subprocess.Popen(
            [JUPYTER, "server", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={root}"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ))

    def api(self, path: str, body: dict | None = None):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/{path}", method="POST" if body is not None else "GET",
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=150) as response:
            return json.loads(response.read())

    def up(self) -> bool:
        try:
            return "started" in self.api("status")
        except OSError:
            return False

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)
        self.log.close()


def test_kill_9_of_the_server_leaves_no_container(jupyter_path):
    root = tempfile.mkdtemp(prefix="sbk-prov-server-")
    server = Server(root)
    try:
        assert until(server.up, timeout=90), server.output()
        kernel_ids = [server.api("kernels", {"name": WRAPPED[name]})["id"] for name in ("ir", "bash")]
        mine = {kid: until(lambda kid=kid: cards.labelled("kernel_id", kid), timeout=60) for kid in kernel_ids}
        assert all(mine.values()), server.output()
        boxes = [card for found in mine.values() for card in found]
        assert {card.owner_pid for card in boxes} == {server.process.pid}
        assert {card.labels["kind"] for card in boxes} == {"provisioner"}
        assert leftovers(server.process.pid)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(30)
        assert until(lambda: not any(_still_there(card) for card in boxes), timeout=60), \
            [card.name for card in boxes if _still_there(card)]
        cleanup.reap_stale(detect_driver())          # what the next container start of anyone does
        assert leftovers(server.process.pid) == []
    finally:
        server.stop()
        cleanup.reap_stale(detect_driver())
        subprocess.run(["rm", "-rf", root], check=False)


def _still_there(card) -> bool:
    """The container's launcher, cgroup or state directory is still there."""
    launcher_alive = card.init_pid is not None and os.path.exists(f"/proc/{card.init_pid}")
    group = card.cgroup.get("path") or next(iter(card.cgroup.get("paths", {}).values()), None)
    return launcher_alive or (group is not None and os.path.isdir(group)) or os.path.isdir(card.state_dir)
