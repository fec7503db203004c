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

An image (a directory or a tar) is hostile input like its layers:
* every file it names (index.json, manifest.json, blobs, the layer.tar paths
  of manifest.json) is read beneath it, never through a symlink out of it;
* every digest it gives (index and manifest descriptors, the config's
  diff_ids) is ``sha256:`` and 64 hex digits; an image whose manifest names
  layers gives a diff_id for each, so both checks always run: the blob's
  digest as it is read, the diff_id of the tar inside it.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import posixpath
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field

from . import layers, safe_fs
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


def inside(where: str, name) -> str:
    """A path the image names (manifest.json's Config and Layers...), as a
    relative path inside it; ImageError if it would leave it."""
    if not isinstance(name, str) or not name:
        raise ImageError(f"{where}: the image names a file {name!r}: expected a path inside it")
    try:
        relative = layers.member_path(name)
    except layers.LayerError as error:
        raise ImageError(f"{where}: the image names {name!r}, not a file inside it ({error})") from None
    if not relative:
        raise ImageError(f"{where}: the image names {name!r}, not a file inside it")
    return relative


class DirArchive:
    """Files of an image directory, each opened beneath it: no component of
    the path may be a symlink (one could lead anywhere on the host)."""

    def __init__(self, root: str):
        self.root = root

    def exists(self, name: str) -> bool:
        try:
            os.close(self._open(name))
            return True
        except FileNotFoundError:
            return False

    def open(self, name: str):
        try:
            return os.fdopen(self._open(name), "rb")
        except FileNotFoundError:
            raise ImageError(f"{self.root}: {name} is missing") from None

    def _open(self, name: str) -> int:
        """A read-only fd of the regular file ``name`` beneath the root
        (non-blocking to open: a FIFO there must not hang the import)."""
        relative = inside(self.root, name)
        try:
            fd = safe_fs.open_beneath(self.root, relative, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError):
            if not os.path.isdir(self.root):
                raise ImageError(f"{self.root}: not a directory any more") from None
            raise FileNotFoundError(errno.ENOENT, "missing", relative) from None
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.EXDEV):
                raise ImageError(f"{self.root}: {name} is a symlink or goes through one: an "
                                 f"image directory is read without following links") from None
            raise ImageError(f"{self.root}: cannot read {name}: {error.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ImageError(f"{self.root}: {name} is not a regular file")
        os.set_blocking(fd, True)
        return fd

    def read(self, name: str) -> bytes:
        with self.open(name) as handle:
            return _read_document(handle, self.root, name)


class TarArchive:
    MAX_MEMBERS = 100_000     # an image tar holds a few files a layer

    def __init__(self, path: str):
        self.path = path
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            with tarfile.open(path, tarinfo=layers.BoundedTarInfo) as archive:
                for member in archive:
                    if len(self.members) >= self.MAX_MEMBERS:
                        raise ImageError(f"{path}: more than {self.MAX_MEMBERS} files: not an image archive")
                    if member.isfile() or member.issym() or member.islnk():
                        self.members[layers.member_path(member.name)] = member
        except (tarfile.TarError, layers.LayerError, EOFError, OSError) as error:
            raise ImageError(f"{path}: not a readable tar archive ({error})") from None

    def exists(self, name: str) -> bool:
        return inside(self.path, name) in self.members

    @contextlib.contextmanager
    def open(self, name: str):
        member = self._file(inside(self.path, name), name)
        with tarfile.open(self.path, tarinfo=layers.BoundedTarInfo) as archive:
            handle = archive.extractfile(member)
            if handle is None:
                raise ImageError(f"{self.path}: {name} is not a file")
            yield handle

    def _file(self, relative: str, name: str) -> tarfile.TarInfo:
        """The regular member at ``relative``, links inside the tar followed
        (at most 40), never out of it."""
        for _hop in range(40):
            member = self.members.get(relative)
            if member is None:
                raise ImageError(f"{self.path}: {name} is missing")
            if member.isfile():
                return member
            target = member.linkname
            if member.issym():
                target = posixpath.join(posixpath.dirname(relative), target)
            relative = inside(self.path, posixpath.normpath(target))
        raise ImageError(f"{self.path}: {name}: too many links")

    def read(self, name: str) -> bytes:
        with self.open(name) as handle:
            return _read_document(handle, self.path, name)


def _read_document(handle, where: str, name: str) -> bytes:
    """A JSON document of the image (index, manifest, config), at most DOCUMENT_MAX bytes."""
    data = handle.read(DOCUMENT_MAX + 1)
    if len(data) > DOCUMENT_MAX:
        raise ImageError(f"{where}: {name} is larger than {DOCUMENT_MAX >> 20} MiB: not an image's document")
    return data


def tar_kind(path: str) -> str:
    """rootfs, oci or docker, from the first telling member names."""
    with open(path, "rb") as handle:
        if handle.read(4) == layers.ZSTD_MAGIC:
            return "rootfs"   # tarfile cannot read zstd; only a layer can be one
    try:
        with tarfile.open(path, tarinfo=layers.BoundedTarInfo) as archive:
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
    except layers.LayerError:
        return "rootfs"       # a header too big or too many: unpacking it says so
    except (tarfile.TarError, EOFError, OSError) as error:
        reason = "; ".join(line.strip(" -") for line in str(error).splitlines())   # tarfile's has lines
        raise ImageError(f"{path}: not a directory, nor a tar archive ({reason})") from None
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
        # safety checks as an archive's
        with tempfile_in_store() as temp:
            with tarfile.open(fileobj=temp, mode="w", format=tarfile.PAX_FORMAT) as archive:
                _tar_tree(path, archive, Store().import_budget())
            temp.seek(0)
            yield temp
    return Source(default_name(path), f"rootfs directory {os.path.abspath(path)}",
                  _made_up_config(), None, [LayerBlob(opener)])


def _tar_tree(root: str, archive: tarfile.TarFile, budget: layers.Budget) -> None:
    """Every entry under ``root`` into ``archive``, walked by safe_fs.walk:
    no recursion, no symlink followed (each is an entry), no mount entered,
    at most layers.MAX_DEPTH deep; the temporary tar counts against ``budget``."""
    hard_links: dict[tuple[int, int], str] = {}
    try:
        for relative, dir_fd, names in safe_fs.walk(root):
            if relative.count("/") + 1 >= layers.MAX_DEPTH:
                raise ImageError(f"{root}: {relative[:80]}... is more than {layers.MAX_DEPTH} "
                                 f"directories deep: at most {layers.MAX_DEPTH} in an image")
            for name in names:
                arcname = f"{relative}/{name}" if relative else name
                _tar_entry(archive, dir_fd, name, arcname, budget, hard_links)
    except layers.LayerError as error:
        raise ImageError(f"{root}: {error}") from None
    except OSError as error:
        raise ImageError(f"{root}: cannot read {error.filename or ''}: {error.strerror}") from None


def _tar_entry(archive: tarfile.TarFile, dir_fd: int, name: str, arcname: str,
               budget: layers.Budget, hard_links: dict) -> None:
    """One entry of an open directory; a regular file is read through an
    O_NOFOLLOW fd, and what is tarred is what that fd's fstat says."""
    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISSOCK(info.st_mode):
        return                       # a socket is nothing an image can hold
    if not stat.S_ISREG(info.st_mode):
        linkname = os.readlink(name, dir_fd=dir_fd) if stat.S_ISLNK(info.st_mode) else ""
        budget.charge(arcname, 0)
        archive.addfile(_tar_info(arcname, info, linkname))
        return
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return                   # replaced meanwhile: what it became is not tarred
        key = (info.st_dev, info.st_ino)
        if info.st_nlink > 1 and key in hard_links:
            budget.charge(arcname, 0)
            archive.addfile(_tar_info(arcname, info, hard_links[key], tarfile.LNKTYPE))
            return
        hard_links[key] = arcname
        budget.charge(arcname, info.st_size)
        archive.addfile(_tar_info(arcname, info), handle)


_TAR_TYPES = {stat.S_IFDIR: tarfile.DIRTYPE, stat.S_IFLNK: tarfile.SYMTYPE, stat.S_IFIFO: tarfile.FIFOTYPE,
              stat.S_IFCHR: tarfile.CHRTYPE, stat.S_IFBLK: tarfile.BLKTYPE, stat.S_IFREG: tarfile.REGTYPE}


def _tar_info(arcname: str, info: os.stat_result, linkname: str = "",
              kind: bytes | None = None) -> tarfile.TarInfo:
    entry = tarfile.TarInfo(arcname)
    entry.type = kind or _TAR_TYPES[stat.S_IFMT(info.st_mode)]
    entry.mode, entry.uid, entry.gid = stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid
    entry.mtime, entry.linkname = int(info.st_mtime), linkname
    entry.size = info.st_size if entry.type == tarfile.REGTYPE else 0
    if entry.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        entry.devmajor, entry.devminor = os.major(info.st_rdev), os.minor(info.st_rdev)
    return entry


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
    source = manifest_source(manifest, lambda d: read_blob(archive, d),
                             lambda d: _blob_opener(archive, d), name, f"OCI layout {os.path.abspath(path)}")
    _check_present(archive, path, [_blob_name(layer.digest) for layer in source.layers])
    return source


def _check_present(archive, path: str, names: list[str]) -> None:
    """Every layer file is there, beneath the image (a link out of it is an
    ImageError here), before a first layer is stored."""
    for name in names:
        if not archive.exists(name):
            raise ImageError(f"{path}: {name} is missing")


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
    config = _json(read(config_descriptor), "the image config")
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


def read_blob(archive, descriptor: dict) -> bytes:
    data = archive.read(_blob_name(descriptor["digest"]))
    layers._check("blob", descriptor["digest"], "sha256:" + hashlib.sha256(data).hexdigest())
    return data


def _blob_opener(archive, descriptor: dict):
    return lambda: archive.open(_blob_name(descriptor["digest"]))


def _blob_name(digest: str) -> str:
    return f"blobs/sha256/{check_digest(digest, 'a blob')[7:]}"


def _json(raw: bytes, what: str) -> dict:
    try:
        value = json.loads(raw)
    except ValueError as error:
        raise ImageError(f"{what} is not valid JSON ({error})") from None
    except RecursionError:
        raise ImageError(f"{what}: JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise ImageError(f"{what} is not a JSON object")
    return value


# ---------------------------------------------------------------------------
# docker save


def docker_save_source(archive, path: str) -> Source:
    """manifest.json: [{"Config": ..., "RepoTags": [...], "Layers": [...]}]."""
    entry = _docker_entry(archive, path)
    config_raw = archive.read(entry["Config"])
    config_id = _digest_of_name(entry["Config"])
    if config_id:
        layers._check("config", config_id, "sha256:" + hashlib.sha256(config_raw).hexdigest())
    config = _json(config_raw, f"{path}: {entry['Config']}")
    diff_ids = config_diff_ids(config, len(entry["Layers"]), f"{path}: {entry['Config']}")
    # a layer named blobs/sha256/<hex> has its digest checked; an old <id>/layer.tar is
    # an uncompressed tar, whose digest is its diff_id (checked)
    _check_present(archive, path, entry["Layers"])
    found = [LayerBlob(_named_opener(archive, name), _digest_of_name(name), diff_id)
             for name, diff_id in zip(entry["Layers"], diff_ids)]
    tags = entry.get("RepoTags") or []
    return Source(tags[0] if tags else default_name(path), f"docker save {os.path.abspath(path)}",
                  config, config_id, found)


def _docker_entry(archive, path: str) -> dict:
    """manifest.json's first image, its shape checked: a Config path, a list
    of Layers paths inside the archive, RepoTags strings or null."""
    try:
        entries = json.loads(archive.read("manifest.json"))
    except ValueError as error:
        raise ImageError(f"{path}: manifest.json is not valid JSON ({error})") from None
    except RecursionError:
        raise ImageError(f"{path}: manifest.json: JSON nested too deeply") from None
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise ImageError(f"{path}: manifest.json names no image")
    entry = entries[0]
    names = entry.get("Layers")
    tags = entry.get("RepoTags")
    if not isinstance(names, list) or (tags is not None and not (
            isinstance(tags, list) and all(isinstance(t, str) for t in tags))):
        raise ImageError(f"{path}: manifest.json: expected Layers: [paths], RepoTags: [tags] or null")
    for name in [entry.get("Config")] + names:
        inside(path, name)
    return entry


def _named_opener(archive, name: str):
    return lambda: archive.open(name)


def _digest_of_name(name: str) -> str | None:
    """blobs/sha256/<hex> and <hex>.json name their digest; <id>/layer.tar does not."""
    match = re.fullmatch(r"(?:blobs/sha256/)?([0-9a-f]{64})(?:\.json)?", posixpath.normpath(name))
    return f"sha256:{match.group(1)}" if match else None


# ---------------------------------------------------------------------------
# Into the store


def store_layer(store: Store, blob: LayerBlob, index: int, count: int, progress: Progress,
                allow_setuid: bool, budget: layers.Budget | None = None) -> str:
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
                                     progress=progress.advance, budget=budget)
        store.commit_layer(work, unpacked.diff_id, unpacked.digest, unpacked.size, unpacked.charged,
                           opaque_root=unpacked.opaque_root)
    progress.end("; ".join(unpacked.notes))
    return unpacked.diff_id


def image_record(source: Source, name: str, diff_ids: list[str]) -> Image:
    config = dict(source.config)
    if not (config.get("rootfs") or {}).get("diff_ids"):
        config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    settings = config.get("config") or {}
    if not isinstance(settings, dict):
        raise ImageError(f"{source.description}: the config's 'config' is not a JSON object")
    return Image(
        name=name, id=source.config_digest or config_digest(config), layers=tuple(diff_ids),
        env=_strings(settings, "Env", source), workdir=_string(settings, "WorkingDir", source),
        cmd=_strings(settings, "Cmd", source), entrypoint=_strings(settings, "Entrypoint", source),
        user=_string(settings, "User", source), created=now(), source=source.description,
        architecture=_string(config, "architecture", source), os=_string(config, "os", source) or "linux",
        config=config)


def _strings(settings: dict, key: str, source: Source) -> tuple[str, ...]:
    value = settings.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and "\0" not in v for v in value):
        raise ImageError(f"{source.description}: the config's {key} is not a list of strings")
    return tuple(value)


def _string(settings: dict, key: str, source: Source) -> str:
    value = settings.get(key) or ""
    if not isinstance(value, str) or "\0" in value:
        raise ImageError(f"{source.description}: the config's {key} is not a string")
    return value

