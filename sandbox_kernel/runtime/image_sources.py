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
* every digest it gives is checked as image_manifests.py says (the documents
  themselves, the index's choice by platform and the Source every image
  becomes are there, shared with registry.py).

Imports image_basics, image_store (the store's tmp/ and budget), image_manifests,
layers and safe_fs; images.py imports it.
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

from . import layers, safe_fs
from .image_basics import DEFAULT_PATH, ImageError, host_architecture
# the documents' names, re-exported: the tests and older callers read them here
from .image_manifests import (  # noqa: F401
    DOCUMENT_MAX, DOCKER_LIST, DOCKER_MANIFEST, INDEX_TYPES, LAYER_TYPES, MANIFEST_TYPES, OCI_INDEX,
    OCI_MANIFEST, LayerBlob, Source, check_digest, config_diff_ids, json_object, manifest_source,
    parse_platform, pick_manifest)
from .image_store import Store
from .layer_stream import check_match

ROOTFS_TOP = {"bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "media", "mnt",
              "opt", "proc", "root", "run", "sbin", "srv", "sys", "tmp", "usr", "var"}
_HEX64 = re.compile(r"^[0-9a-f]{64}")


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
    index = json_object(archive.read("index.json"), f"{path}: index.json")
    descriptor = pick_manifest(index, platform_name, lambda d: json_object(read_blob(archive, d), d["digest"]),
                               where=path)
    manifest = json_object(read_blob(archive, descriptor), descriptor["digest"])
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


def read_blob(archive, descriptor: dict) -> bytes:
    data = archive.read(_blob_name(descriptor["digest"]))
    check_match("blob", descriptor["digest"], "sha256:" + hashlib.sha256(data).hexdigest())
    return data


def _blob_opener(archive, descriptor: dict):
    return lambda: archive.open(_blob_name(descriptor["digest"]))


def _blob_name(digest: str) -> str:
    return f"blobs/sha256/{check_digest(digest, 'a blob')[7:]}"


# ---------------------------------------------------------------------------
# docker save


def docker_save_source(archive, path: str) -> Source:
    """manifest.json: [{"Config": ..., "RepoTags": [...], "Layers": [...]}]."""
    entry = _docker_entry(archive, path)
    config_raw = archive.read(entry["Config"])
    config_id = _digest_of_name(entry["Config"])
    if config_id:
        check_match("config", config_id, "sha256:" + hashlib.sha256(config_raw).hexdigest())
    config = json_object(config_raw, f"{path}: {entry['Config']}")
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

