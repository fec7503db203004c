"""The stats endpoint (sandbox_kernel/server): a real `jupyter server` with
the extension enabled, on 127.0.0.1 with a token, temporary Jupyter dirs.

REST and websocket answer the side panel's message for the sandbox kernel
(its containers' cards); a kernel that is not sandboxed and an unknown id
get 404 with the reason; without the token (or with a wrong one) both are
refused.  Every wait is bounded; the server and its kernels are stopped at
teardown (their containers with them).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import websocket
from jupyter_client import BlockingKernelClient

REPO = Path(__file__).resolve().parents[2]
SANDBOX_KERNEL = "sbk-endpoint-256m"
WRAPPED_PYTHON = "python3-provisioned-256m"
MEMORY = 256 << 20
START_TIMEOUT = 90.0


@dataclass
class Server:
    base: str
    token: str
    runtime_dir: Path
    process: subprocess.Popen

    def request(self, method: str, path: str, token: str | None = "", body: dict | None = None):
        """(status, JSON body); ``token`` "" uses the server's, None sends none."""
        headers = {"Content-Type": "application/json"}
        token = self.token if token == "" else token
        if token is not None:
            headers["Authorization"] = f"token {token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base}/{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                return error.code, json.loads(raw)
            except ValueError:
                return error.code, {"raw": raw.decode(errors="replace"), "reason": error.reason}

    def start_kernel(self, name: str) -> str:
        status, model = self.request("POST", "api/kernels", body={"name": name})
        assert status == 201, model
        return model["id"]

    def client(self, kernel_id: str) -> BlockingKernelClient:
        client = BlockingKernelClient(connection_file=str(self.runtime_dir / f"kernel-{kernel_id}.json"))
        client.load_connection_file()
        client.start_channels()
        client.wait_for_ready(timeout=60)
        return client

    def login_cookie(self) -> str:
        """The cookie a browser gets from a request with the token."""
        request = urllib.request.Request(f"{self.base}/api/status",
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            cookies = response.headers.get_all("Set-Cookie") or []
        return "; ".join(cookie.split(";", 1)[0] for cookie in cookies)

    def ws(self, kernel_id: str, token: str | None = "", origin: str | None = None,
           cookie: str | None = None) -> websocket.WebSocket:
        token = self.token if token == "" else token
        header = [f"Authorization: token {token}"] if token is not None else []
        header += [f"Cookie: {cookie}"] if cookie else []
        url = self.base.replace("http://", "ws://") + f"/sandbox-kernel/api/kernels/{kernel_id}/stats/ws"
        return websocket.create_connection(url, header=header, timeout=30, origin=origin)

    def stop(self) -> None:
        try:
            status, kernels = self.request("GET", "api/kernels") if self.base else (None, None)
            for kernel in kernels if status == 200 else []:
                self.request("DELETE", f"api/kernels/{kernel['id']}")
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGTERM)
                try:
                    self.process.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait(5)


def jupyter_env(tmp_path: Path) -> dict:
    """Temporary Jupyter dirs with the extension enabled the way the package
    enables it (jupyter-config/), and the sandbox kernelspec (256M)."""
    config, prefix = tmp_path / "config", tmp_path / "prefix"
    (config / "jupyter_server_config.d").mkdir(parents=True)
    shipped = REPO / "jupyter-config" / "jupyter_server_config.d" / "sandbox_kernel.json"
    (config / "jupyter_server_config.d" / "sandbox_kernel.json").write_text(shipped.read_text())
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_DATA_DIR": str(tmp_path / "data"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "IPYTHONDIR": str(tmp_path / "ipython"),
           "JUPYTER_PATH": str(prefix / "share" / "jupyter")}
    env.pop("JUPYTER_PREFER_ENV_PATH", None)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "sandbox-kernel"), "install", "--prefix", str(prefix),
         "--name", SANDBOX_KERNEL, "--memory", "256M"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    write_wrapped_python(prefix / "share" / "jupyter" / "kernels" / WRAPPED_PYTHON)
    return env


def write_wrapped_python(directory: Path) -> None:
    """ipykernel under the sandbox provisioner (256M), as a kernelspec says
    it (metadata.kernel_provisioner): the endpoint's concern is the kernel
    it starts, not how the kernelspec was written."""
    directory.mkdir(parents=True)
    (directory / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (provisioned, 256M)", "language": "python",
        "metadata": {"kernel_provisioner": {"provisioner_name": "sandbox-provisioner",
                                            "config": {"memory": "256M"}}}}))


def start_server(tmp_path: Path, env: dict, *options: str) -> Server:
    """A server on a port the OS picks (--port=0), read back from the
    server's info file in the runtime dir."""
    token, runtime_dir = uuid.uuid4().hex, Path(env["JUPYTER_RUNTIME_DIR"])
    log = open(tmp_path / "server.log", "w")
    argv = [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", "--port=0",
            "--allow-root", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={tmp_path}", *options]
    process = subprocess.Popen(argv, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    server = Server("", token, runtime_dir, process)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter server exited: {(tmp_path / 'server.log').read_text()[-3000:]}")
        try:
            info = json.loads((runtime_dir / f"jpserver-{process.pid}.json").read_text())
            server.base = f"http://127.0.0.1:{info['port']}"
            if server.request("GET", "api/status")[0] == 200:
                return server
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"jupyter server did not answer within {START_TIMEOUT:g} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("endpoint")
    server = start_server(tmp_path, jupyter_env(tmp_path))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sandbox_kernel(server):
    """A sandbox kernel that ran one cell: its container is up."""
    kernel_id = server.start_kernel(SANDBOX_KERNEL)
    client = server.client(kernel_id)
    try:
        reply = client.execute_interactive("x = 'a' * (8 << 20)", timeout=120)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        client.stop_channels()
    return kernel_id


def _session(message: dict) -> dict:
    assert len(message["sessions"]) == 1, message["sessions"]
    return message["sessions"][0]


def test_rest_answers_the_contract_for_the_sandbox_kernel(server, sandbox_kernel):
    status, message = server.request("GET", f"sandbox-kernel/api/kernels/{sandbox_kernel}/stats")
    assert status == 200, message
    assert (message["protocol"], message["event"], message["kernel"]) == (1, "snapshot", "sandbox")
    assert message["kernel_id"] == sandbox_kernel and message["deaths"] == []
    entry = _session(message)
    assert entry["state"] == "running" and entry["stats"]["session"] == "default"
    assert entry["stats"]["limits"]["memory"] == MEMORY
    cell = entry["stats"]["cell"]
    assert cell["memory_limit"] == MEMORY
    assert cell["memory_current"] > 8 << 20, cell      # the cell's 8 MiB string is in there
    assert cell["pids_current"] >= 1 and cell["status"] is None


def test_websocket_streams_snapshot_ticks_and_answers_requests(server, sandbox_kernel):
    sock = server.ws(sandbox_kernel)
    try:
        first = json.loads(sock.recv())
        assert (first["event"], first["reason"], first["kernel"]) == ("snapshot", "open", "sandbox")
        tick = json.loads(sock.recv())
        assert tick["event"] == "tick" and _session(tick)["stats"]["limits"]["memory"] == MEMORY
        sock.send("not json")                       # one warning in the log, the socket stays
        sock.send(json.dumps({"request": "stats"}))
        events = [json.loads(sock.recv()) for _ in range(3)]
        assert any(m["event"] == "snapshot" and m["reason"] == "request" for m in events), events
    finally:
        sock.close()


@pytest.mark.parametrize("token", [None, "wrong"], ids=["no-token", "wrong-token"])
def test_refused_without_the_token(server, sandbox_kernel, token):
    status, _ = server.request("GET", f"sandbox-kernel/api/kernels/{sandbox_kernel}/stats", token=token)
    assert status == 403
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        server.ws(sandbox_kernel, token=token)
    assert refused.value.status_code == 403


def test_websocket_from_another_origin_is_refused(server, sandbox_kernel):
    """A page of another site cannot read the stats with the user's cookie;
    the server's own pages can."""
    cookie = server.login_cookie()
    assert cookie
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        server.ws(sandbox_kernel, token=None, cookie=cookie, origin="http://evil.example")
    assert refused.value.status_code == 403
    sock = server.ws(sandbox_kernel, token=None, cookie=cookie, origin=server.base)
    try:
        assert json.loads(sock.recv())["event"] == "snapshot"
    finally:
        sock.close()


DENY_KERNELS = '''
from jupyter_server.auth.authorizer import Authorizer

class NoKernels(Authorizer):
    """Everything but the kernels resource: as a deployment may restrict it."""
    def is_authorized(self, handler, user, action, resource):
        return resource != "kernels"
'''


def test_the_servers_authorizer_decides(tmp_path):
    """An authenticated user the server's authorizer refuses the kernels
    resource gets 403 from both, as from /api/kernels."""
    (tmp_path / "deny_kernels.py").write_text(DENY_KERNELS)
    env = {**jupyter_env(tmp_path), "PYTHONPATH": str(tmp_path)}
    server = start_server(tmp_path, env, "--ServerApp.authorizer_class=deny_kernels.NoKernels")
    try:
        assert server.request("GET", "api/kernels")[0] == 403
        status, _ = server.request("GET", "sandbox-kernel/api/kernels/any/stats")
        assert status == 403
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            server.ws("any")
        assert refused.value.status_code == 403
    finally:
        server.stop()


def test_404_with_the_reason_for_unknown_and_unsandboxed_kernels(server):
    status, body = server.request("GET", "sandbox-kernel/api/kernels/no-such-kernel/stats")
    assert status == 404 and "no kernel no-such-kernel on this server" in body["message"]
    plain = server.start_kernel("python3")
    try:
        status, body = server.request("GET", f"sandbox-kernel/api/kernels/{plain}/stats")
        assert status == 404 and "is not sandboxed" in body["message"], body
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            server.ws(plain)
        assert refused.value.status_code == 404
    finally:
        server.request("DELETE", f"api/kernels/{plain}")


def wait_for(server: Server, kernel_id: str, check, timeout: float = 120.0) -> dict:
    """The first REST answer that passes ``check`` (bounded)."""
    deadline, message = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        status, message = server.request("GET", f"sandbox-kernel/api/kernels/{kernel_id}/stats")
        if status == 200 and check(message):
            return message
        time.sleep(0.5)
    raise AssertionError(f"no stats answer passed the check within {timeout:g} s; last: {message}")


def next_with_deaths(sock: websocket.WebSocket, most: int = 240) -> dict:
    """The first message on the socket that names a death (bounded: a tick
    a second, and each recv waits at most the socket's timeout)."""
    for _ in range(most):
        message = json.loads(sock.recv())
        if message["deaths"]:
            return message
    raise AssertionError(f"no death in {most} messages")


def test_a_provisioned_kernel_and_its_out_of_memory_death(server):
    """The whole kernel is one container: its figures against its limit, no
    per-cell rows; past the limit the endpoint says in plain words that the
    kernel ran out of memory, and goes on with the restarted kernel."""
    kernel_id = server.start_kernel(WRAPPED_PYTHON)
    client = server.client(kernel_id)
    try:
        message = wait_for(server, kernel_id, lambda m: m["sessions"][0]["state"] == "running")
        assert (message["kernel"], message["per_cell"], message["deaths"]) == ("provisioned", False, [])
        stats = _session(message)["stats"]
        assert stats["limits"]["memory"] == MEMORY and stats["cell"]["memory_current"] > 0
        sock = server.ws(kernel_id)
        try:
            client.execute("x = b'\\x01' * (1 << 30)   # 1 GiB under 256M")
            message = next_with_deaths(sock)
        finally:
            sock.close()
        (death,) = message["deaths"]
        assert death["reason"] == "oom", death
        assert "ran out of memory" in death["message"] and "256 MiB" in death["message"], death
        wait_for(server, kernel_id, lambda m: m["sessions"][0]["state"] == "running")  # restarted
    finally:
        client.stop_channels()
        server.request("DELETE", f"api/kernels/{kernel_id}")


def test_shipped_config_enables_the_extension():
    shipped = json.loads((REPO / "jupyter-config" / "jupyter_server_config.d" / "sandbox_kernel.json").read_text())
    assert shipped == {"ServerApp": {"jpserver_extensions": {"sandbox_kernel.server": True}}}
    from sandbox_kernel import server as extension
    assert extension._jupyter_server_extension_points() == [{"module": "sandbox_kernel.server"}]
