"""Pull from a real registry: Debian's docker-registry (the CNCF distribution
registry, registry:2) started here on 127.0.0.1 with a config and storage of
the test's own, and images pushed to it with Debian's skopeo.  Nothing leaves
this machine.

It runs without authentication (anonymous pulls) and, in the last test,
behind token authentication: a token server of the test's own signs RS256
JWTs with openssl, the registry trusts its certificate, and a pull must
fetch a bearer token first (the FakeRegistry of test_images.py shows the
same dance against a Python server)."""
from __future__ import annotations

import base64
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from sandbox_kernel.runtime import images

import image_archives as archives   # tests/ is on pytest's pythonpath

member = archives.member
pytestmark = pytest.mark.usefixtures("no_leftovers")

TOOLS = ("docker-registry", "skopeo")


def _require_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    missing += ["busybox-static"] if not os.path.exists(archives.BUSYBOX) else []
    if missing:
        reason = f"needs {', '.join(missing)}: apt-get install {' '.join(missing)} (scripts/install does)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Registry:
    """docker-registry serving a storage dir of the test's, on a free loopback port."""

    def __init__(self, work: str, token_server: "TokenServer | None" = None):
        self.work = work
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = os.path.join(work, "registry.log")
        config = os.path.join(work, "config.yml")
        with open(config, "w") as handle:
            handle.write(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                         f"    rootdirectory: {work}/storage\nhttp:\n  addr: {self.address}\n"
                         f"  secret: sbk-test-secret\n")
            if token_server is not None:
                handle.write(token_server.registry_config())
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(["docker-registry", "serve", config], stdout=self.log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log_text()}")
            try:
                with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=1):
                    return
            except urllib.error.HTTPError as error:
                if error.code == 401:    # up, and asking for a token
                    return
                time.sleep(0.1)
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"docker-registry did not answer on {self.address}: {self.log_text()}")

    def push(self, layout: str, ref_name: str, target: str, *, all_platforms: bool = False) -> None:
        """skopeo copy of the layout's image tagged ``ref_name`` to REGISTRY/target."""
        policy = os.path.join(self.work, "policy.json")
        with open(policy, "w") as handle:
            json.dump({"default": [{"type": "insecureAcceptAnything"}]}, handle)
        argv = ["skopeo", "--policy", policy, "copy", "--dest-tls-verify=false",
                *(["--all"] if all_platforms else []),
                f"oci:{layout}:{ref_name}", f"docker://{self.address}/{target}"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr

    def blob_gets(self) -> list[str]:
        """The digests of the blobs served so far (from the access log)."""
        return re.findall(r'"GET /v2/[^ ]+/blobs/(sha256:[0-9a-f]{64}) HTTP', self.log_text())

    def log_text(self) -> str:
        self.log.flush()
        with open(self.log_path) as handle:
            return handle.read()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


class TokenServer(http.server.ThreadingHTTPServer):
    """The registry's token service (the distribution spec's "token
    authentication"): anyone gets a token for what they ask, an RS256 JWT
    signed (by openssl) with a key whose self-signed certificate the
    registry trusts and which the token carries in its x5c header."""

    SERVICE, ISSUER = "sbk-registry", "sbk-token-issuer"

    def __init__(self, work: str):
        super().__init__(("127.0.0.1", 0), _TokenHandler)
        self.key, self.cert = os.path.join(work, "token.key"), os.path.join(work, "token.crt")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=sbk-token-issuer", "-keyout", self.key, "-out", self.cert],
                       check=True, capture_output=True, timeout=60)
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"], check=True,
                             capture_output=True, timeout=60).stdout
        self.x5c = base64.b64encode(der).decode()
        self.scopes: list[str] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def registry_config(self) -> str:
        return (f"auth:\n  token:\n    realm: http://127.0.0.1:{self.server_address[1]}/token\n"
                f"    service: {self.SERVICE}\n    issuer: {self.ISSUER}\n"
                f"    rootcertbundle: {self.cert}\n")

    def token(self, scope: str) -> str:
        access = []
        if scope:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": self.ISSUER, "sub": "", "aud": self.SERVICE, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signed = ".".join(_b64url(json.dumps(part).encode()) for part in (header, claims))
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key], input=signed.encode(),
                                   check=True, capture_output=True, timeout=60).stdout
        return f"{signed}.{_b64url(signature)}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _TokenHandler(http.server.BaseHTTPRequestHandler):
    server: TokenServer

    def log_message(self, *args):
        pass

    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        scope = (query.get("scope") or [""])[0]
        self.server.scopes.append(scope)
        body = json.dumps({"token": self.server.token(scope), "expires_in": 300}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def store(tmp_path, monkeypatch):
    root = tmp_path / "store"
    monkeypatch.setenv(images.STORE_ENV, str(root))   # the CLI's subprocesses inherit it
    return images.Store(str(root))


@pytest.fixture
def registry(tmp_path):
    _require_tools()
    work = tmp_path / "registry"
    work.mkdir()
    server = Registry(str(work))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def token_registry(tmp_path):
    """docker-registry behind token authentication, with its token server."""
    _require_tools()
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to sign the registry's tokens")
    work = tmp_path / "registry"
    work.mkdir()
    tokens = TokenServer(str(work))
    try:
        server = Registry(str(work), tokens)
        try:
            yield server, tokens
        finally:
            server.stop()
    finally:
        tokens.stop()


def other_architecture() -> str:
    return "s390x" if images.host_architecture() != "s390x" else "arm64"


def multi_platform_layout(root: str) -> str:
    """An OCI layout whose tag 'multi' is an index of two images: one for
    this machine (busybox) and one for another architecture."""
    ours = archives.image_blobs(root, [archives.busybox_layer()], architecture=images.host_architecture())
    ours["platform"] = {"os": "linux", "architecture": images.host_architecture()}
    other = archives.image_blobs(root, [archives.layer_tar([member("other", data=b"not ours\n")])],
                                 architecture=other_architecture())
    other["platform"] = {"os": "linux", "architecture": other_architecture()}
    index = json.dumps({"schemaVersion": 2, "mediaType": archives.INDEX,
                        "manifests": [other, ours]}).encode()
    descriptor = dict(archives.write_blob(root, index), mediaType=archives.INDEX,
                      annotations={"org.opencontainers.image.ref.name": "multi"})
    with open(os.path.join(root, "index.json"), "w") as handle:
        json.dump({"schemaVersion": 2, "mediaType": archives.INDEX, "manifests": [descriptor]}, handle)
    with open(os.path.join(root, "oci-layout"), "w") as handle:
        json.dump({"imageLayoutVersion": "1.0.0"}, handle)
    return root


def sandbox_kernel(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sandbox_kernel.cli", *args],
                          capture_output=True, text=True, timeout=120)


def test_images_pull_from_a_real_registry_then_run_on_the_image(registry, store, tmp_path, run):
    layout = archives.oci_layout(str(tmp_path / "layout"), [archives.busybox_layer()],
                                 name="sbk/busybox:latest", architecture=images.host_architecture())
    registry.push(layout, "latest", "sbk/busybox:latest")
    reference = f"{registry.address}/sbk/busybox:latest"
    pulled = sandbox_kernel("images", "pull", reference)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.startswith(f"pulled {reference} (1 layer(s)")
    ran = sandbox_kernel("run", "--image", reference, "--", "/bin/sh", "-c", "cat /etc/os-release; id -u")
    assert ran.returncode == 0 and ran.stdout == 'NAME="sbk busybox"\nID=sbk-busybox\n65532\n', ran.stderr
    image = images.get(reference)
    assert image.env == ("PATH=/usr/bin:/bin", "GREETING=hello") and image.workdir == "/srv"
    assert image.source.startswith(f"pulled from {registry.address}/sbk/busybox@sha256:")
    inside = run("echo $GREETING", image=reference)      # the config's Env, in the container
    assert inside.stdout == "hello\n", inside.stderr


def test_pull_picks_this_platform_from_an_index_and_shares_layers(registry, store, tmp_path, run):
    layout = multi_platform_layout(str(tmp_path / "multi"))
    registry.push(layout, "multi", "sbk/multi:latest", all_platforms=True)
    extra = archives.layer_tar([member("etc", "dir"), member("etc/second", data=b"second image\n")])
    second = archives.oci_layout(str(tmp_path / "second"), [archives.busybox_layer(), extra],
                                 name="sbk/second:1", architecture=images.host_architecture())
    registry.push(second, "1", "sbk/second:1")
    first = images.pull(f"{registry.address}/sbk/multi:latest", "multi")
    served = registry.blob_gets()
    assert len(served) == 2             # this platform's config and its one layer, not the other's
    assert run("cat /etc/os-release", image="multi").stdout.startswith('NAME="sbk busybox"')
    other = images.pull(f"{registry.address}/sbk/second:1", "second")
    new = registry.blob_gets()[len(served):]
    assert len(new) == 2                # its config and its new layer; busybox's is shared
    assert other.layers[0] == first.layers[0] and len(store.layers()) == 2
    assert run("cat /etc/second", image="second").stdout == "second image\n"
    assert [i["shared_with"] for i in images.inspect("multi")["layers"]] == [["second"]]


def test_pull_from_a_real_registry_checks_platform_and_tag(registry, store, tmp_path):
    layout = multi_platform_layout(str(tmp_path / "multi"))
    registry.push(layout, "multi", "sbk/multi:latest", all_platforms=True)
    missing = sandbox_kernel("images", "pull", f"{registry.address}/sbk/multi:nope")
    assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1
    assert "404" in missing.stderr and "no such image or tag?" in missing.stderr
    wrong = sandbox_kernel("images", "pull", f"{registry.address}/sbk/multi:latest",
                           "--platform", "linux/mips64le")
    assert wrong.returncode == 2 and len(wrong.stderr.splitlines()) == 1
    assert "no image for linux/mips64le" in wrong.stderr and other_architecture() in wrong.stderr
    assert store.names() == []


def test_pull_from_a_registry_behind_token_auth_fetches_a_bearer_token(token_registry, store, tmp_path, run):
    registry, tokens = token_registry
    with pytest.raises(urllib.error.HTTPError) as refused:   # no token, no manifest
        urllib.request.urlopen(f"http://{registry.address}/v2/sbk/locked/manifests/latest", timeout=10)
    assert refused.value.code == 401
    assert refused.value.headers["WWW-Authenticate"].startswith("Bearer realm=")
    layout = archives.oci_layout(str(tmp_path / "layout"), [archives.busybox_layer()],
                                 name="sbk/locked:latest", architecture=images.host_architecture())
    registry.push(layout, "latest", "sbk/locked:latest")       # skopeo gets a push token
    asked = len(tokens.scopes)
    image = images.pull(f"{registry.address}/sbk/locked:latest", "locked")
    assert tokens.scopes[asked:] == ["repository:sbk/locked:pull"]    # one token, for pulling
    assert run("cat /etc/os-release", image=image.name).stdout.startswith('NAME="sbk busybox"')
