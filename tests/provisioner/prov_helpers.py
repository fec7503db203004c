"""Helpers of the provisioner's tests (conftest.py has the fixtures):
``from provisioner.prov_helpers import ...`` (tests/ is on pytest's pythonpath)."""
from __future__ import annotations

import glob
import json
import os
import queue
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from sandbox_kernel.runtime.cgroups import detect_driver

MEMORY = "256M"
WRAPPED = {"ir": "ir-sandboxed", "bash": "bash-sandboxed", "python3": "python3-sandboxed"}
START_TIMEOUT = 120


def leftovers(pid: int | None = None) -> list[str]:
    """What containers and connection directories of process ``pid`` (this
    one) left: sbk-<pid>-* cgroups and /run (or temp dir) entries."""
    prefix = f"sbk-{pid or os.getpid()}-"
    groups = [path for path in detect_driver().leftovers() if os.path.basename(path).startswith(prefix)]
    dirs = [path for parent in ("/run", tempfile.gettempdir())
            for path in glob.glob(os.path.join(parent, prefix + "*"))]
    return groups + dirs


def run(kc, code: str, timeout: float = 120) -> tuple[str, str]:
    """(reply status, the text of its streams and results) of one cell."""
    texts = []

    def keep(message):
        content = message["content"]
        if message["msg_type"] == "stream":
            texts.append(content["text"])
        elif message["msg_type"] in ("execute_result", "display_data"):
            texts.append(content["data"].get("text/plain", ""))
        elif message["msg_type"] == "error":
            texts.append("\n".join(content.get("traceback") or [content.get("evalue", "")]))
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=keep)
    return reply["content"]["status"], "".join(texts)


def until(check, timeout: float = 30, step: float = 0.2):
    """check()'s first true value within ``timeout`` seconds, else None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    return None


def drain(kc) -> None:
    """Forget the iopub messages of a cell that did not finish (a dead kernel's)."""
    try:
        while True:
            kc.get_iopub_msg(timeout=0.2)
    except queue.Empty:
        pass


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

    def api(self, path: str, body: dict | None = None, *, prefix: str = "api", method: str | None = None):
        method = method or ("POST" if body is not None else "GET")
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/{prefix}/{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=150) as response:
            text = response.read()
        return json.loads(text) if text else None

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
