"""An image's OCI documents read as data, wherever they come from (an OCI
layout, a registry): media types, descriptors and their digests, the index's
choice of a manifest by platform, the config's diff_ids, and the shape every
importable image becomes, a ``Source``: the OCI config and per layer how to
open its blob and which digests it must have.

Every digest a document gives (index and manifest descriptors, the config's
diff_ids) is ``sha256:`` and 64 hex digits; an image whose manifest names
layers gives a diff_id for each, so both checks always run when a layer is
stored: the blob's digest as it is read, the diff_id of the tar inside it.

Imports image_basics only; image_sources (files) and registry (HTTP) build
on it.
"""
from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .image_basics import ImageError, host_architecture

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
}
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
DOCUMENT_MAX = 4 << 20     # an index, manifest or config: as registry.MANIFEST_MAX


@dataclass
class LayerBlob:
    open: Callable[[], contextlib.AbstractContextManager]   # -> a readable binary file
    digest: str | None = None      # of the blob as stored (compressed)
    diff_id: str | None = None     # of the uncompressed tar (from the config)
    size: int | None = None
    media_type: str | None = None


@dataclass
class Source:
    name: str                      # the name it suggests (a tag, the file's name)
    description: str               # where it came from, for `inspect`
    config: dict                   # the OCI image config
    config_digest: str | None
    layers: list[LayerBlob] = field(default_factory=list)


def pick_manifest(index: dict, platform_name: str | None, fetch: Callable[[dict], dict],
                  where: str) -> dict:
    """The image manifest's descriptor in an index (nested indexes too), by platform."""
    wanted = parse_platform(platform_name)
    entries = _descriptors(index.get("manifests") or [], f"{where}: the index's manifests")
    images = [d for d in entries if d.get("mediaType", OCI_MANIFEST) in MANIFEST_TYPES + INDEX_TYPES]
    matching = [d for d in images if _platform_matches(d.get("platform"), wanted)]
    if not matching:
        offered = sorted({_platform_text(d.get("platform")) for d in images})
        raise ImageError(f"{where}: no image for {_platform_text(wanted)} "
                         f"(offered: {', '.join(offered) or 'nothing'}); try --platform")
    chosen = matching[0]
    if chosen.get("mediaType") in INDEX_TYPES:
        return pick_manifest(fetch(chosen), platform_name, fetch, where)
    return chosen


def parse_platform(text: str | None) -> dict:
    if not text:
        return {"os": "linux", "architecture": host_architecture()}
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ImageError(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT], e.g. linux/amd64")
    return dict(zip(("os", "architecture", "variant"), parts))


def _platform_matches(offered: dict | None, wanted: dict) -> bool:
    if not offered:
        return True     # an index without platforms (a single-image layout)
    return all(offered.get(key) == value for key, value in wanted.items()
               if key != "variant" or offered.get("variant"))


def _platform_text(platform: dict | None) -> str:
    if not platform:
        return "any"
    return "/".join(platform.get(k) for k in ("os", "architecture", "variant") if platform.get(k))


def manifest_source(manifest: dict, read: Callable[[dict], bytes], opener: Callable,
                    name: str, description: str) -> Source:
    """A Source from an image manifest; ``read``/``opener`` get blobs by descriptor."""
    media_type = manifest.get("mediaType", OCI_MANIFEST)
    if media_type not in MANIFEST_TYPES:
        raise ImageError(f"{description}: unsupported manifest media type {media_type!r}")
    config_descriptor = _descriptors([manifest.get("config")], f"{description}: the manifest's config")[0]
    config = json_object(read(config_descriptor), "the image config")
    blobs = _descriptors(manifest.get("layers") or [], f"{description}: the manifest's layers")
    diff_ids = config_diff_ids(config, len(blobs), f"{description}: the config")
    found = []
    for index, descriptor in enumerate(blobs):
        kind = descriptor.get("mediaType")
        if kind not in LAYER_TYPES:
            raise ImageError(f"{description}: layer {index + 1} has an unknown media type {kind!r}")
        size = descriptor.get("size") if isinstance(descriptor.get("size"), int) else None
        found.append(LayerBlob(opener(descriptor), descriptor["digest"], diff_ids[index], size, kind))
    return Source(name, description, config, config_descriptor["digest"], found)


def check_digest(value, what: str) -> str:
    """``value`` if it is a digest this store checks (sha256, 64 hex digits); else ImageError."""
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise ImageError(f"{what}: digest {str(value)[:100]!r} is empty or malformed: "
                         f"expected sha256: and 64 hex digits")
    return value


def _descriptors(entries, what: str) -> list[dict]:
    """Descriptors (objects with a valid digest), each checked."""
    if not isinstance(entries, list) or not all(isinstance(d, dict) for d in entries):
        raise ImageError(f"{what}: expected a list of descriptors (JSON objects)")
    for number, descriptor in enumerate(entries, 1):
        check_digest(descriptor.get("digest"), f"{what} #{number}")
    return entries


def config_diff_ids(config: dict, count: int, what: str) -> list[str]:
    """The config's rootfs.diff_ids: one valid digest for each of ``count`` layers."""
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != count:
        given = len(diff_ids) if isinstance(diff_ids, list) else "no"
        raise ImageError(f"{what} names {given} layers in rootfs.diff_ids, the manifest {count}: "
                         f"each layer needs its diff_id")
    return [check_digest(d, f"{what}: rootfs.diff_ids #{n}") for n, d in enumerate(diff_ids, 1)]



def json_object(raw: bytes, what: str) -> dict:
    try:
        value = json.loads(raw)
    except ValueError as error:
        raise ImageError(f"{what} is not valid JSON ({error})") from None
    except RecursionError:
        raise ImageError(f"{what}: JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise ImageError(f"{what} is not a JSON object")
    return value
