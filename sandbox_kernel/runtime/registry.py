"""Pull images over the OCI distribution API: a small client on urllib.

    GET /v2/<repo>/manifests/<tag|digest>   Accept: OCI index/manifest, Docker list/manifest
      401 + WWW-Authenticate: Bearer realm=...,service=...,scope=...
        -> GET realm?service=...&scope=repository:<repo>:pull  -> {"token": ...}
        -> the same request again with Authorization: Bearer <token>
      an index / manifest list -> the manifest for our platform (by digest)
    GET /v2/<repo>/blobs/<config digest>    the config: env, cmd, diff_ids
    GET /v2/<repo>/blobs/<layer digest>     only for the layers the store lacks
                                            (by diff_id), streamed into layers.unpack

Every manifest and blob is checked against its digest (a manifest fetched by
tag against the Docker-Content-Digest header when the registry sends one).
Anonymous access and bearer tokens only; a registry that wants a password
gets a clear error.  Registries on localhost / 127.0.0.0/8 / ::1 are spoken
to over plain http, all others over https.

Why not a library: oras-py is made for OCI artifacts (files pushed to a
registry), not for images by platform, and brings in requests; python-dxf
is a low-level Docker registry client that brings requests,
www-authenticate and jwcrypto.  Either would still leave platform selection,
digest checks, streaming into the unpacker and layer sharing to us, and the
runtime takes only the standard library and pyroute2 (DESIGN "Layout").
What the client needs is the few requests above.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from . import image_sources
from .images import ImageError
from .image_sources import INDEX_TYPES, MANIFEST_TYPES, Source

DOCKER_HUB = "registry-1.docker.io"
ACCEPT = ", ".join(MANIFEST_TYPES + INDEX_TYPES)
TIMEOUT = 60
MANIFEST_MAX = 4 << 20


@dataclass(frozen=True)
class Reference:
    registry: str          # host[:port]
    repository: str
    tag: str | None
    digest: str | None

    @property
    def ref(self) -> str:
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        return text + (f"@{self.digest}" if self.digest else f":{self.tag or 'latest'}")


_REPO = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


def parse_reference(text: str) -> Reference:
    """[REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST], Docker's way: no registry
    means Docker Hub, and a one-part name there is library/NAME."""
    rest, _, digest = text.partition("@")
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, rest = first, remainder
    else:
        registry = DOCKER_HUB
    tag = None
    if ":" in rest.rsplit("/", 1)[-1]:
        rest, tag = rest.rsplit(":", 1)
    if registry == DOCKER_HUB and "/" not in rest:
        rest = f"library/{rest}"
    if not _REPO.match(rest) or (tag is not None and not re.fullmatch(r"[\w][\w.-]{0,127}", tag)) or \
            (digest and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest)):
        raise ImageError(f"invalid image reference {text!r}: expected "
                         f"[REGISTRY/]NAME[:TAG][@sha256:DIGEST], e.g. 127.0.0.1:5000/busybox:latest")
    return Reference(registry, rest, tag, digest or None)


def _plain_http(registry: str) -> bool:
    host = urllib.parse.urlsplit(f"//{registry}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Client:
    """One repository of one registry, with its bearer token once it has one."""

    def __init__(self, reference: Reference):
        self.reference = reference
        scheme = "http" if _plain_http(reference.registry) else "https"
        self.base = f"{scheme}://{reference.registry}/v2/{reference.repository}"
        self.token: str | None = None

    def get(self, path: str, accept: str | None = None):
        """The response to GET base/path (a file-like, read it or close it)."""
        for attempt in (1, 2):
            request = urllib.request.Request(f"{self.base}/{path}")
            if accept:
                request.add_header("Accept", accept)
            if self.token:
                # unredirected: a blob's redirect to a storage host must not carry it
                request.add_unredirected_header("Authorization", f"Bearer {self.token}")
            try:
                return urllib.request.urlopen(request, timeout=TIMEOUT)
            except urllib.error.HTTPError as error:
                if error.code == 401 and attempt == 1:
                    self.token = self._token(error.headers.get("WWW-Authenticate", ""))
                    continue
                raise ImageError(f"{self.reference}: GET {path} answered {error.code} "
                                 f"{error.reason}{_hint(error.code)}") from None
            except (urllib.error.URLError, OSError) as error:
                reason = getattr(error, "reason", error)
                raise ImageError(f"cannot reach the registry {self.reference.registry}: {reason}") from None
        raise AssertionError("unreachable")

    def _token(self, challenge: str) -> str:
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() != "bearer":
            raise ImageError(f"{self.reference.registry} asks for {scheme or 'unknown'} "
                             f"authentication: only anonymous pulls are supported")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if "realm" not in fields:
            raise ImageError(f"{self.reference.registry}: a bearer challenge without a realm")
        query = {"service": fields.get("service", ""),
                 "scope": fields.get("scope", f"repository:{self.reference.repository}:pull")}
        url = f"{fields['realm']}?{urllib.parse.urlencode({k: v for k, v in query.items() if v})}"
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
                answer = json.loads(response.read(MANIFEST_MAX))
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise ImageError(f"{self.reference.registry}: no token from {fields['realm']}: {error}") from None
        token = answer.get("token") or answer.get("access_token")
        if not token:
            raise ImageError(f"{self.reference.registry}: the token answer holds no token")
        return token

    def manifest(self, ref: str) -> tuple[dict, str]:
        """(manifest or index, its digest), checked."""
        with self.get(f"manifests/{ref}", ACCEPT) as response:
            raw = response.read(MANIFEST_MAX)
            said = response.headers.get("Docker-Content-Digest")
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        expected = ref if ref.startswith("sha256:") else said
        if expected and expected != digest:
            raise ImageError(f"{self.reference}: manifest digest mismatch: expected {expected}, got {digest}")
        document = image_sources._json(raw, f"{self.reference}: the manifest")
        document.setdefault("mediaType", response.headers.get("Content-Type", "").split(";")[0])
        return document, digest

    def blob_bytes(self, descriptor: dict) -> bytes:
        with self.get(f"blobs/{descriptor['digest']}") as response:
            data = response.read(MANIFEST_MAX)
        found = "sha256:" + hashlib.sha256(data).hexdigest()
        if found != descriptor["digest"]:
            raise ImageError(f"{self.reference}: blob digest mismatch: expected "
                             f"{descriptor['digest']}, got {found}")
        return data

    def blob_opener(self, descriptor: dict):
        # layers.unpack checks this one's digest while it streams
        return lambda: self.get(f"blobs/{descriptor['digest']}")


def _hint(code: int) -> str:
    return {404: " (no such image or tag?)", 403: " (a private repository?)"}.get(code, "")


def source(text: str, platform_name: str | None = None) -> Source:
    """What images.add_image stores: the manifest for our platform, its
    config, and openers for its layers (called only for missing layers)."""
    reference = parse_reference(text)
    client = Client(reference)
    document, digest = client.manifest(reference.ref)
    if document.get("mediaType") in INDEX_TYPES or "manifests" in document:
        chosen = image_sources.pick_manifest(
            document, platform_name, lambda d: client.manifest(d["digest"])[0], where=str(reference))
        document, digest = client.manifest(chosen["digest"])
    name = text if "@" not in text else text.split("@")[0]
    description = f"pulled from {reference.registry}/{reference.repository}@{digest}"
    return image_sources.manifest_source(
        document, client.blob_bytes, client.blob_opener, name, description)
