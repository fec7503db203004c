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

    def blob_gets(self, expected: int = 0, wait: float = 10.0) -> list[str]:
        """The digests of the blobs served so far (from the access log),
        waiting up to ``wait`` s for at least ``expected`` of them: the
        registry logs a request after its answer, so the client can be done
        before the line is written (seen in the loaded v2 guest)."""
        deadline = time.monotonic() + wait
        while True:
            served = re.findall(r'"GET /v2/[^ ]+/blobs/(sha256:[0-9a-f]{64}) HTTP', self.log_text())
            if len(served) >= expected or time.monotonic() > deadline:
                return served
            time.sleep(0.05)

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
    served = registry.blob_gets(expected=2)
    assert len(served) == 2             # this platform's config and its one layer, not the other's
    assert run("cat /etc/os-release", image="multi").stdout.startswith('NAME="sbk busybox"')
    other = images.pull(f"{registry.address}/sbk/second:1", "second")
    new = registry.blob_gets(expected=len(served) + 2)[len(served):]
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


# -- a hostile registry: where it sends the client, how much it sends (issue 13) ------------


class HostileRegistry(http.server.ThreadingHTTPServer):
    """A registry on 127.0.0.1 serving one image (tag 1 of x/y) from a layout
    directory, whose answers a test bends with ``bend(handler) -> bool``
    (True: it answered).  ``requests`` records (path, Authorization)."""

    def __init__(self, layout: str, manifest_digest: str):
        super().__init__(("127.0.0.1", 0), _HostileHandler)
        self.layout, self.manifest_digest = layout, manifest_digest
        self.bend = lambda handler: False
        self.requests: list[tuple[str, str | None]] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def blob(self, digest: str) -> bytes | None:
        path = os.path.join(self.layout, "blobs", "sha256", digest.removeprefix("sha256:"))
        return open(path, "rb").read() if os.path.isfile(path) else None

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _HostileHandler(http.server.BaseHTTPRequestHandler):
    server: HostileRegistry

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append((self.path, self.headers.get("Authorization")))
        if self.server.bend(self):
            return
        match = re.fullmatch(r"/(?:v2/x/y/)?(manifests|blobs)/([^/?]+)", self.path)
        kind, ref = match.groups() if match else (None, None)
        digest = self.server.manifest_digest if kind == "manifests" and ref == "1" else ref
        data = self.server.blob(digest) if digest else None
        if data is None:
            return self.send(404, b"{}")
        self.send(200, data, {"Docker-Content-Digest": digest} if kind == "manifests" else {},
                  archives.MANIFEST if kind == "manifests" else "application/octet-stream")

    def send(self, code: int, body: bytes = b"", headers: dict | None = None,
             content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str) -> None:
        self.send(302, b"", {"Location": location})


@pytest.fixture
def hostile(tmp_path):
    """A hostile registry serving x/y:1 (one small layer), stopped after the test."""
    layout = str(tmp_path / "hostile")
    layer = archives.layer_tar([member("hello", data=b"hello from the registry\n")])
    descriptor = archives.image_blobs(layout, [layer], architecture=images.host_architecture())
    server = HostileRegistry(layout, descriptor["digest"])
    try:
        yield server
    finally:
        server.stop()


class Listener:
    """A port on 127.0.0.1 that no pull may connect to: ``touched()`` says
    whether anything did (a connection waits in the backlog unaccepted)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def touched(self) -> bool:
        try:
            self.sock.accept()[0].close()
        except BlockingIOError:
            return False
        return True


@pytest.fixture
def listener():
    port = Listener()
    try:
        yield port
    finally:
        port.sock.close()


def classroom_policy(*registries: str):
    from sandbox_kernel.session import policy
    return policy.with_overrides(policy.classroom({}), {"pull_registries": list(registries)})


def one_line_refusal(hostile: HostileRegistry, *extra: str) -> str:
    pulled = sandbox_kernel("images", "pull", f"{hostile.address}/x/y:1", "--name", "y", *extra)
    assert pulled.returncode == 2, (pulled.stdout, pulled.stderr)
    assert len(pulled.stderr.splitlines()) == 1, pulled.stderr
    return pulled.stderr


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1:{port}/x",
                                    "data:,{{}}", "gopher://127.0.0.1:{port}/x"])
def test_a_redirect_out_of_http_is_refused_in_one_line(hostile, listener, store, target):
    """urllib's own redirects follow ftp:// (and its opener opens file:// and
    data:): the registry could make the kernel read host files or connect anywhere."""
    target = target.format(port=listener.port)
    hostile.bend = lambda h: "/manifests/" in h.path and (h.redirect(target) or True)
    message = one_line_refusal(hostile)
    assert "only http:// and https:// URLs are followed" in message, message
    assert target.split(":")[0] in message
    assert not listener.touched() and store.names() == []


def test_a_token_realm_out_of_http_is_refused_and_nothing_is_read(hostile, store, tmp_path):
    """The bearer challenge's realm was opened with urlopen: a file:// realm
    read a host file, and its "token" went back to the registry."""
    secret = tmp_path / "host-secret.json"
    secret.write_text(json.dumps({"token": "HOST-SECRET"}))
    realm = f"file://{secret}#"        # the fragment drops the query the client appends

    def challenge(handler) -> bool:
        if handler.headers.get("Authorization"):
            return False
        handler.send(401, b"{}", {"WWW-Authenticate": f'Bearer realm="{realm}",service="x"'})
        return True
    hostile.bend = challenge
    message = one_line_refusal(hostile)
    assert "the token realm leads to" in message and "only http:// and https://" in message, message
    assert all("HOST-SECRET" not in (auth or "") for _, auth in hostile.requests)
    assert store.names() == []


def test_a_redirect_to_a_port_the_policy_does_not_list_opens_no_connection(hostile, listener, store):
    """Under the classroom policy the registry is listed, the port it redirects
    to is not: refused before a socket is opened, in one line naming the rule."""
    from sandbox_kernel.session.policy import PolicyRefused
    port = listener.port
    hostile.bend = lambda h: "/blobs/" in h.path and (h.redirect(f"http://127.0.0.1:{port}/cdn") or True)
    policy = classroom_policy(hostile.address)
    with pytest.raises(PolicyRefused) as refused:
        images.pull(f"{hostile.address}/x/y:1", "y", may_contact=policy.check_contact)
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and f"not 127.0.0.1:{port}" in message
    assert "--pull-registry" in message and "CDN" in message
    assert not listener.touched() and store.names() == [] and store.layers() == []
    realm = f"http://127.0.0.1:{port}/token"      # the same for a token realm
    hostile.bend = lambda h: not h.headers.get("Authorization") and (
        h.send(401, b"{}", {"WWW-Authenticate": f'Bearer realm="{realm}"'}) or True)
    with pytest.raises(PolicyRefused, match=f"not 127.0.0.1:{port}"):
        images.pull(f"{hostile.address}/x/y:1", "y", may_contact=policy.check_contact)
    assert not listener.touched()


def test_trusted_follows_an_http_redirect_to_another_local_port(hostile, store, tmp_path):
    """No callback (the CLI, %%container's trusted policy): a registry that
    sends blobs to its CDN, here another server on another port, works."""
    cdn = HostileRegistry(hostile.layout, hostile.manifest_digest)
    try:
        hostile.bend = lambda h: "/blobs/" in h.path and (
            h.redirect(f"http://{cdn.address}/blobs/{h.path.rsplit('/', 1)[1]}") or True)
        image = images.pull(f"{hostile.address}/x/y:1", "y")
        assert len(image.layers) == 1 and len(cdn.requests) == 2    # the config and the layer
        assert open(os.path.join(image.lower_dirs[0], "hello")).read() == "hello from the registry\n"
        listed = classroom_policy(hostile.address, cdn.address)     # both listed: allowed too
        assert images.pull(f"{hostile.address}/x/y:1", "y", may_contact=listed.check_contact).layers \
            == image.layers
    finally:
        cdn.stop()


def test_redirects_are_bounded(hostile, store):
    """Five hops at most, however many the registry chains."""
    def chain(handler) -> bool:
        hop = re.fullmatch(r"/v2/x/y/manifests/1(?:\?hop=(\d+))?", handler.path)
        if hop is None or int(hop.group(1) or 0) >= 7:
            return False
        handler.redirect(f"/v2/x/y/manifests/1?hop={int(hop.group(1) or 0) + 1}")
        return True
    hostile.bend = chain
    message = one_line_refusal(hostile)
    assert "more than 5 redirects" in message, message


def test_answers_are_bounded(hostile, store):
    """A manifest past 4 MiB, and a layer blob past its descriptor's size, are
    refused as they come, not read whole first."""
    hostile.bend = lambda h: "/manifests/" in h.path and (h.send(200, b" " * (5 << 20)) or True)
    assert "larger than 4.0 MiB" in one_line_refusal(hostile)
    manifest = json.loads(hostile.blob(hostile.manifest_digest))
    layer = manifest["layers"][0]["digest"]

    def endless(handler) -> bool:
        if not handler.path.endswith(layer):
            return False
        handler.send_response(200)
        handler.end_headers()           # no Content-Length: it is read until it stops
        try:
            for _ in range(256):
                handler.wfile.write(b"\0" * (1 << 20))
        except OSError:                 # the client hung up: what we want
            pass
        return True
    hostile.bend = endless
    message = one_line_refusal(hostile)
    assert "past its descriptor's size" in message and store.layers() == []


def test_a_token_answer_nested_too_deeply_is_one_line(hostile, store):
    """json.loads raised RecursionError (no ValueError) on the token answer."""
    def challenge(handler) -> bool:
        if handler.path.startswith("/token"):
            handler.send(200, b"[" * 200_000)
            return True
        if handler.headers.get("Authorization"):
            return False
        realm = f"http://{hostile.address}/token"
        handler.send(401, b"{}", {"WWW-Authenticate": f'Bearer realm="{realm}",service="x"'})
        return True
    hostile.bend = challenge
    message = one_line_refusal(hostile)
    assert "no token from" in message and "nested too deeply" in message, message
