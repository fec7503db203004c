"""Browser tier: real JupyterLab and Notebook 7 servers, driven in Debian's
chromium by Playwright for Python.

Nothing is downloaded: Playwright launches /usr/bin/chromium (apt package
``chromium``, which scripts/install adds) with the flags a closed network
needs; ``playwright install`` is never run.  Each server runs on 127.0.0.1
with a token, a temporary root dir and temporary Jupyter config, data and
runtime dirs, so the user's own settings and workspaces play no part.
Every wait is bounded; servers are stopped and their kernels shut down
after each test.

The tests skip themselves (test_side_panel.py, at import: a conftest cannot
skip a directory) when root, the browser, Playwright or the built side panel
is missing; under CI=true they fail instead.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--disable-dev-shm-usage"]
SERVER_START_TIMEOUT = 90.0
SERVER_STOP_TIMEOUT = 20.0
SANDBOX_KERNEL = "sbk-browser-512m"     # the kernelspec jupyter_home installs: memory 512M


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class JupyterServer:
    """`jupyter lab` or `jupyter notebook` on 127.0.0.1 with a token."""

    app: str                  # "lab" or "notebook"
    root: Path
    env: dict
    log_path: Path
    port: int = 0
    token: str = ""
    process: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}?token={self.token}"

    def start(self) -> "JupyterServer":
        self.port, self.token = free_port(), uuid.uuid4().hex
        module = "jupyterlab" if self.app == "lab" else "notebook"
        argv = [sys.executable, "-m", module, "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                "--allow-root", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={self.root}"]
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(argv, env=self.env, cwd=self.root, stdin=subprocess.DEVNULL,
                                        stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter {self.app} exited with {self.process.returncode}: "
                                   f"{self.log_path.read_text()[-3000:]}")
            try:
                self.api("GET", "api/status")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        raise RuntimeError(f"jupyter {self.app} did not answer within {SERVER_START_TIMEOUT:g} s")

    def api(self, method: str, path: str, timeout: float = 10.0):
        request = urllib.request.Request(self.url(path), method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def stop(self) -> None:
        """Shut the kernels down (their containers with them), then the server."""
        if self.process is None:
            return
        try:
            for kernel in self.api("GET", "api/kernels") or []:
                self.api("DELETE", f"api/kernels/{kernel['id']}", timeout=30.0)
        except (urllib.error.URLError, OSError) as error:
            print(f"could not shut the kernels down through the server: {error}", file=sys.stderr)
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(SERVER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._log.close()


@pytest.fixture
def jupyter_home(tmp_path):
    """Temporary Jupyter dirs; the sandbox kernelspec (512M) installed in one
    of them; the news and update checks off (no network, no toast)."""
    config, data, runtime = tmp_path / "config", tmp_path / "data", tmp_path / "runtime"
    kernels_prefix = tmp_path / "prefix"
    notification = config / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    (config / "jupyter_server_config.json").write_text(json.dumps({
        "LabApp": {"news_url": None,
                   "check_for_updates_class": "jupyterlab.handlers.announcements.NeverCheckForUpdate"},
    }))
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_DATA_DIR": str(data),
           "JUPYTER_RUNTIME_DIR": str(runtime), "IPYTHONDIR": str(tmp_path / "ipython"),
           "JUPYTER_PATH": str(kernels_prefix / "share" / "jupyter")}
    env.pop("JUPYTER_PREFER_ENV_PATH", None)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "sandbox-kernel"), "install", "--prefix", str(kernels_prefix),
         "--name", SANDBOX_KERNEL, "--display-name", "Python 3 (sandbox, 512M)", "--memory", "512M"],
        capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return env


@pytest.fixture
def sandbox_kernel_name() -> str:
    return SANDBOX_KERNEL


@pytest.fixture
def start_server(jupyter_home, tmp_path, request):
    servers = []

    def start(app: str, root: Path) -> JupyterServer:
        ARTIFACTS.mkdir(exist_ok=True)
        log = ARTIFACTS / f"{request.node.name}-server.log"
        server = JupyterServer(app, root, jupyter_home, log).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=CHROMIUM_ARGS, timeout=60_000)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-last.png"))
    except Exception as error:        # the page may be gone; the picture is only a help
        print(f"no last screenshot: {error}", file=sys.stderr)
    (ARTIFACTS / f"{request.node.name}-console.log").write_text("\n".join(console))
    context.close()
