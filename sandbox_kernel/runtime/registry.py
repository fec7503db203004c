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

The registry is hostile input too: it names where the client goes next (a
redirect's Location, a bearer challenge's realm) and how much it sends.  So:

* only http and https URLs are opened (urllib's default opener also takes
  file://, ftp:// and data:, so a Location of file:///etc/passwd would read a
  host file): the opener here has no other handler and follows no redirect
  by itself; redirects are followed below, at most MAX_REDIRECTS of them;
* ``may_contact(host, port)`` is asked before EVERY connection (the
  registry's first request, each redirect hop, the token realm) and may
  raise to refuse it: the sandbox kernel's policy passes its own
  (Policy.check_contact), so a listed registry cannot send the kernel to a
  host the policy does not list.  Real registries send blobs to a CDN and
  tokens to an auth host: those hosts must be listed too;
* a manifest, an index, a config and a token answer are at most
  MANIFEST_MAX bytes; a layer blob at most its descriptor's size, and never
  more than the store's import budget (``blob_limit()``, the quota left).

Why not a library: oras-py is made for OCI artifacts (files pushed to a
registry), not for images by platform, and brings in requests; python-dxf
is a low-level Docker registry client that brings requests,
www-authenticate and jwcrypto.  Either would still leave platform selection,
digest checks, streaming into the unpacker and layer sharing to us, and the
runtime takes only the standard library and pyroute2 (docs/architecture.md).
What the client needs is the few requests above.

Imports image_basics and image_manifests only: what it makes is a Source,
which images.pull hands to images.add_image.
"""
from __future__ import annotations

import hashlib
import ipaddress
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from . import image_manifests
from .image_basics import ImageError, format_size
from .image_manifests import INDEX_TYPES, MANIFEST_TYPES, Source

DOCKER_HUB = "registry-1.docker.io"
ACCEPT = ", ".join(MANIFEST_TYPES + INDEX_TYPES)
TIMEOUT = 60
MANIFEST_MAX = 4 << 20
MAX_REDIRECTS = 5
REDIRECT_CODES = (301, 302, 303, 307, 308)
SCHEMES = ("http", "https")
# host[:port]: a name, IPv4 or [IPv6], nothing a URL would read as a path, query or user
_REGISTRY = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")

# may_contact(host, port): None to go ahead, raises (a one-line ValueError) to refuse
ContactCheck = Callable[[str, int], None]


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
    if registry.lower() in ("docker.io", "index.docker.io"):   # names of Docker Hub, whose API is here
        registry = DOCKER_HUB
    tag = None
    if ":" in rest.rsplit("/", 1)[-1]:
        rest, tag = rest.rsplit(":", 1)
    if registry == DOCKER_HUB and "/" not in rest:
        rest = f"library/{rest}"
    if not _REGISTRY.match(registry) or not _REPO.match(rest) or (tag is not None and not re.fullmatch(r"[\w][\w.-]{0,127}", tag)) or \
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


def _opener() -> urllib.request.OpenerDirector:
    """urllib's opener less file://, ftp://, data: and its own redirects
    (Client.open follows them, each checked); proxies from the environment
    are kept, as the admin set them."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(),
                    urllib.request.HTTPSHandler(), urllib.request.HTTPDefaultErrorHandler(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


class Client:
    """One repository of one registry, with its bearer token once it has one.
    ``may_contact(host, port)`` is asked before every connection it opens;
    ``blob_limit()`` gives the bytes a layer blob may have (None: any)."""

    def __init__(self, reference: Reference, may_contact: ContactCheck | None = None,
                 blob_limit: Callable[[], int | None] | None = None):
        self.reference = reference
        scheme = "http" if _plain_http(reference.registry) else "https"
        self.base = f"{scheme}://{reference.registry}/v2/{reference.repository}"
        self.token: str | None = None
        self.may_contact = may_contact
        self.blob_limit = blob_limit
        self.opener = _opener()

    def get(self, path: str, accept: str | None = None):
        """The response to GET base/path (a file-like, read it or close it)."""
        for attempt in (1, 2):
            headers = {"Accept": accept} if accept else {}
            # only to the registry itself: a blob's redirect to a storage host must not carry it
            auth = f"Bearer {self.token}" if self.token else None
            try:
                return self.open(f"{self.base}/{path}", headers, auth, what=f"GET {path}")
            except urllib.error.HTTPError as error:
                error.close()
                if error.code == 401 and attempt == 1:
                    self.token = self._token(error.headers.get("WWW-Authenticate", ""))
                    continue
                raise ImageError(f"{self.reference}: GET {path} answered {error.code} "
                                 f"{error.reason}{_hint(error.code)}") from None
        raise AssertionError("unreachable")

    def open(self, url: str, headers: dict, auth: str | None = None, *, what: str):
        """GET ``url``, following at most MAX_REDIRECTS redirects; each URL is
        checked (check_url) before its connection is opened.  HTTPError for
        an answer that is neither 2xx nor a redirect."""
        for hop in range(MAX_REDIRECTS + 1):
            self.check_url(url, what if hop == 0 else f"{what}: redirect {hop}")
            request = urllib.request.Request(url, headers=headers)
            if auth and hop == 0:
                request.add_header("Authorization", auth)
            try:
                return self.opener.open(request, timeout=TIMEOUT)
            except urllib.error.HTTPError as error:
                location = error.headers.get("Location") if error.code in REDIRECT_CODES else None
                if location is None:
                    raise
                error.close()
                url = urllib.parse.urljoin(url, location.strip())
            except (urllib.error.URLError, OSError) as error:
                reason = getattr(error, "reason", error)
                raise ImageError(f"cannot reach {_shown(url)} ({what} of the registry "
                                 f"{self.reference.registry}): {reason}") from None
            except ValueError as error:    # http.client's InvalidURL: control characters...
                raise ImageError(f"{self.reference.registry}: {what} leads to {_shown(url)}, "
                                 f"which cannot be opened ({error}); refused") from None
        raise ImageError(f"{self.reference.registry}: {what}: more than {MAX_REDIRECTS} redirects; "
                         f"refused")

    def check_url(self, url: str, what: str) -> None:
        """Only http and https, to a host and port that may_contact allows."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme.lower() not in SCHEMES:
            raise ImageError(f"{self.reference.registry}: {what} leads to {_shown(url)}: "
                             f"only http:// and https:// URLs are followed; refused")
        try:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise ImageError(f"{self.reference.registry}: {what} leads to {_shown(url)}: "
                             f"not a URL with a host and port; refused")
        if self.may_contact is not None:
            self.may_contact(parts.hostname, port)

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
        joiner = "&" if "?" in fields["realm"] else "?"
        url = f"{fields['realm']}{joiner}{urllib.parse.urlencode({k: v for k, v in query.items() if v})}"
        failed = f"{self.reference.registry}: no token from {_shown(fields['realm'])}"
        try:
            with self.open(url, {}, what="the token realm") as response:
                raw = _read_small(response, f"{self.reference.registry}: the token answer")
        except urllib.error.HTTPError as error:
            error.close()
            raise ImageError(f"{failed}: {error.code} {error.reason}") from None
        except OSError as error:       # a connection that broke while the answer was read
            raise ImageError(f"{failed}: {error}") from None
        answer = image_manifests.json_object(raw, f"{failed}: the answer")   # bounded depth too
        token = answer.get("token") or answer.get("access_token")
        if not token or not isinstance(token, str):
            raise ImageError(f"{self.reference.registry}: the token answer holds no token")
        return token

    def manifest(self, ref: str) -> tuple[dict, str]:
        """(manifest or index, its digest), checked."""
        with self.get(f"manifests/{ref}", ACCEPT) as response:
            raw = _read_small(response, f"{self.reference}: the manifest {ref}")
            said = response.headers.get("Docker-Content-Digest")
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        expected = ref if ref.startswith("sha256:") else said
        if expected and expected != digest:
            raise ImageError(f"{self.reference}: manifest digest mismatch: expected {expected}, got {digest}")
        document = image_manifests.json_object(raw, f"{self.reference}: the manifest")
        document.setdefault("mediaType", response.headers.get("Content-Type", "").split(";")[0])
        return document, digest

    def blob_bytes(self, descriptor: dict) -> bytes:
        with self.get(f"blobs/{descriptor['digest']}") as response:
            data = _read_small(response, f"{self.reference}: the blob {descriptor['digest']}")
        found = "sha256:" + hashlib.sha256(data).hexdigest()
        if found != descriptor["digest"]:
            raise ImageError(f"{self.reference}: blob digest mismatch: expected "
                             f"{descriptor['digest']}, got {found}")
        return data

    def blob_opener(self, descriptor: dict):
        # layers.unpack checks this one's digest while it streams
        return lambda: self._open_blob(descriptor)

    def _open_blob(self, descriptor: dict) -> "_BoundedBlob":
        """A layer blob's response, read at most to its limit: the
        descriptor's size, and the store's import budget (checked up front
        against what the descriptor and Content-Length say)."""
        what = f"{self.reference}: the layer {descriptor['digest']}"
        size = descriptor.get("size") if isinstance(descriptor.get("size"), int) else None
        budget = self.blob_limit() if self.blob_limit is not None else None
        if size is not None and budget is not None and size > budget:
            raise ImageError(f"{what} is {format_size(size)}, more than the store may take "
                             f"({format_size(budget)} left of its quota and free space): nothing was stored")
        response = self.get(f"blobs/{descriptor['digest']}")
        limits = [(n, why) for n, why in ((size, "its descriptor's size"),
                                          (budget, "what the store may take")) if n is not None]
        return _BoundedBlob(response, what, min(limits) if limits else None)


class _BoundedBlob:
    """A response that raises ImageError once more than ``limit`` (bytes,
    why) has been read, or its Content-Length says it will be."""

    def __init__(self, response, what: str, limit: tuple[int, str] | None):
        self.response, self.what, self.limit, self.count = response, what, limit, 0
        length = response.headers.get("Content-Length", "")
        if limit is not None and length.isdigit() and int(length) > limit[0]:
            response.close()
            self._refuse(int(length))

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:      # all of it: chunk by chunk, each counted
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        data = self.response.read(size)
        self.count += len(data)
        if self.limit is not None and self.count > self.limit[0]:
            self._refuse(self.count)
        return data

    def _refuse(self, count: int) -> None:
        size, why = self.limit
        raise ImageError(f"{self.what}: the registry sends {format_size(count)} or more, past "
                         f"{why} ({format_size(size)}): nothing was stored")

    def close(self) -> None:
        self.response.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_small(response, what: str) -> bytes:
    """A manifest, index, config or token answer: at most MANIFEST_MAX bytes."""
    data = response.read(MANIFEST_MAX + 1)
    if len(data) > MANIFEST_MAX:
        raise ImageError(f"{what} is larger than {format_size(MANIFEST_MAX)}: refused")
    return data


def _shown(url: str) -> str:
    """A URL the registry gave, as an error shows it: one line, bounded."""
    text = "".join(c if c.isprintable() else "?" for c in url)
    return repr(text[:200] + ("..." if len(text) > 200 else ""))


def _hint(code: int) -> str:
    return {404: " (no such image or tag?)", 403: " (a private repository?)"}.get(code, "")


def source(text: str, platform_name: str | None = None, *, may_contact: ContactCheck | None = None,
           blob_limit: Callable[[], int | None] | None = None) -> Source:
    """What images.add_image stores: the manifest for our platform, its
    config, and openers for its layers (called only for missing layers).
    ``may_contact(host, port)`` is asked before every connection (None: any
    host); ``blob_limit()``: the bytes a layer blob may have (None: any)."""
    reference = parse_reference(text)
    client = Client(reference, may_contact, blob_limit)
    document, digest = client.manifest(reference.ref)
    if document.get("mediaType") in INDEX_TYPES or "manifests" in document:
        chosen = image_manifests.pick_manifest(
            document, platform_name, lambda d: client.manifest(d["digest"])[0], where=str(reference))
        document, digest = client.manifest(chosen["digest"])
    name = text if "@" not in text else text.split("@")[0]
    description = f"pulled from {reference.registry}/{reference.repository}@{digest}"
    return image_manifests.manifest_source(
        document, client.blob_bytes, client.blob_opener, name, description)
