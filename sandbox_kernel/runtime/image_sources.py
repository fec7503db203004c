"""What can be imported, read as one shape: a config and its layer blobs.

    path                              read as
    a directory with index.json       OCI image layout
    a directory with manifest.json    an unpacked ``docker save``
    any other directory               a root file system (one layer)
    a tar with index.json/oci-layout  OCI image layout (skopeo copy oci-archive:, ...)
    a tar with manifest.json          ``docker save``: the OCI-layout form of Docker 25+
                                      and the older <id>/layer.tar + <id>.json form
    any other tar (plain, gz, zst...) a root file system (one layer)

Every source becomes a ``Source``: the OCI config (made up for a root file
system), and per layer how to open its blob and which digests it must have.
images.add_image stores the layers the store lacks (layers.unpack checks the
digests and the archive's safety) and writes the image.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field

from . import layers
from .images import (DEFAULT_PATH, Image, ImageError, Progress, Store, config_digest,
                     host_architecture, now)

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
ROOTFS_TOP = {"bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "media", "mnt",
              "opt", "proc", "root", "run", "sbin", "srv", "sys", "tmp", "usr", "var"}
_HEX64 = re.compile(r"^[0-9a-f]{64}")


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


def open_source(path: str) -> Source:
    if not os.path.exists(path):
        raise ImageError(f"no such file or directory: {path}")
    if os.path.isdir(path):
        archive = DirArchive(path)
        if archive.exists("manifest.json"):
            return docker_save_source(archive, path)
        if archive.exists("index.json"):
            return oci_layout_source(archive, path)
        return rootfs_dir_source(path)
    if tar_kind(path) == "rootfs":
        return rootfs_tar_source(path)
    archive = TarArchive(path)
    # Docker 25+ writes an OCI layout *and* manifest.json: the latter has the tags
    if archive.exists("manifest.json"):
        return docker_save_source(archive, path)
    return oci_layout_source(archive, path)


def default_name(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    for suffix in (".tar.gz", ".tar.zst", ".tar.xz", ".tgz", ".tar", ".oci"):
        if base.endswith(suffix):
            base = base[:-len(suffix)]
            break
    return re.sub(r"[^A-Za-z0-9._-]", "-", base).lstrip("._-").lower() or "image"


# ---------------------------------------------------------------------------
# Archives: files by name in a directory or a tar


class DirArchive:
    def __init__(self, root: str):
        self.root = root

    def _full(self, name: str) -> str:
        return os.path.join(self.root, layers.member_path(name))

    def exists(self, name: str) -> bool:
        return os.path.isfile(self._full(name))

    def open(self, name: str):
        try:
            return open(self._full(name), "rb")
        except FileNotFoundError:
            raise ImageError(f"{self.root}: {name} is missing") from None

    def read(self, name: str) -> bytes:
        with self.open(name) as handle:
            return handle.read()


class TarArchive:
    def __init__(self, path: str):
        self.path = path
        try:
            with tarfile.open(path) as archive:
                self.members = {layers.member_path(m.name): m for m in archive.getmembers()
                                if m.isfile() or m.issym() or m.islnk()}
        except (tarfile.TarError, layers.LayerError) as error:
            raise ImageError(f"{path}: not a readable tar archive ({error})") from None

    def exists(self, name: str) -> bool:
        return layers.member_path(name) in self.members

    @contextlib.contextmanager
    def open(self, name: str):
        member = self.members.get(layers.member_path(name))
        if member is None:
            raise ImageError(f"{self.path}: {name} is missing")
        with tarfile.open(self.path) as archive:
            handle = archive.extractfile(member)   # follows links inside the tar
            if handle is None:
                raise ImageError(f"{self.path}: {name} is not a file")
            yield handle

    def read(self, name: str) -> bytes:
        with self.open(name) as handle:
            return handle.read()


def tar_kind(path: str) -> str:
    """rootfs, oci or docker, from the first telling member names."""
    with open(path, "rb") as handle:
        if handle.read(4) == layers.ZSTD_MAGIC:
            return "rootfs"   # tarfile cannot read zstd; only a layer can be one
    try:
        with tarfile.open(path) as archive:
            for member in archive:
                name = posixpath.normpath(member.name).lstrip("/")
                if name in ("", "."):
                    continue
                if name == "manifest.json":
                    return "docker"
                if name in ("index.json", "oci-layout"):
                    return "oci"
                top = name.split("/")[0]
                if top in ROOTFS_TOP or not (top in ("blobs", "repositories") or _HEX64.match(top)):
                    return "rootfs"
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ImageError(f"{path}: not a directory, nor a tar archive ({error})") from None
    return "rootfs"


# ---------------------------------------------------------------------------
# Root file systems: one layer, a config made up


def rootfs_tar_source(path: str) -> Source:
    def opener():
        return open(path, "rb")
    return Source(default_name(path), f"rootfs tarball {os.path.abspath(path)}",
                  _made_up_config(), None, [LayerBlob(opener, size=os.path.getsize(path))])


def rootfs_dir_source(path: str) -> Source:
    @contextlib.contextmanager
    def opener():
        # tarred into a temporary file, then unpacked like any layer: the same
        # safety checks, and a diff_id that an import of the same tar shares
        with tempfile_in_store() as temp:
            with tarfile.open(fileobj=temp, mode="w", format=tarfile.PAX_FORMAT) as archive:
                for entry in sorted(os.listdir(path)):
                    archive.add(os.path.join(path, entry), arcname=entry, filter=_normalized)
            temp.seek(0)
            yield temp
    return Source(default_name(path), f"rootfs directory {os.path.abspath(path)}",
                  _made_up_config(), None, [LayerBlob(opener)])


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uname = info.gname = ""
    return info


@contextlib.contextmanager
def tempfile_in_store():
    import tempfile
    store = Store()
    os.makedirs(os.path.join(store.root, "tmp"), exist_ok=True)
    with tempfile.TemporaryFile(dir=os.path.join(store.root, "tmp")) as temp:
        yield temp


def _made_up_config() -> dict:
    return {"architecture": host_architecture(), "os": "linux",
            "config": {"Env": [f"PATH={DEFAULT_PATH}"]},
            "rootfs": {"type": "layers", "diff_ids": []}}


# ---------------------------------------------------------------------------
# OCI image layout


def oci_layout_source(archive, path: str, platform_name: str | None = None) -> Source:
    index = _json(archive.read("index.json"), f"{path}: index.json")
    descriptor = pick_manifest(index, platform_name, lambda d: _json(read_blob(archive, d), d["digest"]),
                               where=path)
    manifest = _json(read_blob(archive, descriptor), descriptor["digest"])
    name = (descriptor.get("annotations") or {}).get("io.containerd.image.name") or default_name(path)
    return manifest_source(manifest, lambda d: read_blob(archive, d),
                           lambda d: _blob_opener(archive, d), name, f"OCI layout {os.path.abspath(path)}")


def pick_manifest(index: dict, platform_name: str | None, fetch: Callable[[dict], dict],
                  where: str) -> dict:
    """The image manifest's descriptor in an index (nested indexes too), by platform."""
    wanted = parse_platform(platform_name)
    entries = index.get("manifests") or []
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
    config_raw = read(manifest["config"])
    config = _json(config_raw, "the image config")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    blobs = manifest.get("layers") or []
    if diff_ids and len(diff_ids) != len(blobs):
        raise ImageError(f"{description}: the config names {len(diff_ids)} layers, "
                         f"the manifest {len(blobs)}")
    found = []
    for index, descriptor in enumerate(blobs):
        kind = descriptor.get("mediaType")
        if kind not in LAYER_TYPES:
            raise ImageError(f"{description}: layer {index + 1} has an unknown media type {kind!r}")
        found.append(LayerBlob(opener(descriptor), descriptor["digest"],
                               diff_ids[index] if diff_ids else None, descriptor.get("size"), kind))
    return Source(name, description, config, manifest["config"]["digest"], found)


def read_blob(archive, descriptor: dict) -> bytes:
    data = archive.read(_blob_name(descriptor["digest"]))
    layers._check("blob", descriptor["digest"], "sha256:" + hashlib.sha256(data).hexdigest())
    return data


def _blob_opener(archive, descriptor: dict):
    return lambda: archive.open(_blob_name(descriptor["digest"]))


def _blob_name(digest: str) -> str:
    algorithm, _, hexdigest = str(digest).partition(":")
    if algorithm != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexdigest):
        raise ImageError(f"unsupported or malformed digest {digest!r} (sha256 only)")
    return f"blobs/sha256/{hexdigest}"


def _json(raw: bytes, what: str) -> dict:
    try:
        value = json.loads(raw)
    except ValueError as error:
        raise ImageError(f"{what} is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise ImageError(f"{what} is not a JSON object")
    return value


# ---------------------------------------------------------------------------
# docker save


def docker_save_source(archive, path: str) -> Source:
    """manifest.json: [{"Config": ..., "RepoTags": [...], "Layers": [...]}]."""
    entries = json.loads(archive.read("manifest.json")) if archive.exists("manifest.json") else []
    if not entries or not isinstance(entries, list):
        raise ImageError(f"{path}: manifest.json names no image")
    entry = entries[0]
    config_raw = archive.read(entry["Config"])
    config_id = _digest_of_name(entry["Config"])
    if config_id:
        layers._check("config", config_id, "sha256:" + hashlib.sha256(config_raw).hexdigest())
    config = _json(config_raw, f"{path}: {entry['Config']}")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(entry.get("Layers") or []):
        raise ImageError(f"{path}: the config names {len(diff_ids)} layers, manifest.json "
                         f"{len(entry.get('Layers') or [])}")
    found = [LayerBlob(_named_opener(archive, name), _digest_of_name(name), diff_id)
             for name, diff_id in zip(entry["Layers"], diff_ids)]
    tags = entry.get("RepoTags") or []
    return Source(tags[0] if tags else default_name(path), f"docker save {os.path.abspath(path)}",
                  config, config_id, found)


def _named_opener(archive, name: str):
    return lambda: archive.open(name)


def _digest_of_name(name: str) -> str | None:
    """blobs/sha256/<hex> and <hex>.json name their digest; <id>/layer.tar does not."""
    match = re.fullmatch(r"(?:blobs/sha256/)?([0-9a-f]{64})(?:\.json)?", posixpath.normpath(name))
    return f"sha256:{match.group(1)}" if match else None


# ---------------------------------------------------------------------------
# Into the store


def store_layer(store: Store, blob: LayerBlob, index: int, count: int, progress: Progress,
                allow_setuid: bool) -> str:
    """The layer's diff_id, unpacking it unless the store has it.  Lock held."""
    label = f"layer {index + 1}/{count}"
    if store.has_layer(blob.diff_id):
        progress.start(f"{label} {blob.diff_id[7:19]}", blob.size)
        progress.end("already stored")
        return blob.diff_id
    short = (blob.digest or blob.diff_id or "")[7:19]
    progress.start(f"{label} {short}".rstrip(), blob.size)
    with store.work_dir() as work:
        os.mkdir(os.path.join(work, "root"), 0o755)
        with blob.open() as stream:
            unpacked = layers.unpack(stream, os.path.join(work, "root"), expect_digest=blob.digest,
                                     expect_diff_id=blob.diff_id, allow_setuid=allow_setuid,
                                     progress=progress.advance)
        store.commit_layer(work, unpacked.diff_id, unpacked.digest, unpacked.size)
    progress.end("; ".join(unpacked.notes))
    return unpacked.diff_id


def image_record(source: Source, name: str, diff_ids: list[str]) -> Image:
    config = dict(source.config)
    if not (config.get("rootfs") or {}).get("diff_ids"):
        config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    settings = config.get("config") or {}
    return Image(
        name=name, id=source.config_digest or config_digest(config), layers=tuple(diff_ids),
        env=tuple(settings.get("Env") or ()), workdir=settings.get("WorkingDir") or "",
        cmd=tuple(settings.get("Cmd") or ()), entrypoint=tuple(settings.get("Entrypoint") or ()),
        user=settings.get("User") or "", created=now(), source=source.description,
        architecture=config.get("architecture", ""), os=config.get("os", "linux"), config=config)

