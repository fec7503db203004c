"""Image archives the image tests make themselves: layer tars, OCI layouts
(directory and tar), docker-save tarballs (the OCI-layout form and the older
<id>/layer.tar form), and a busybox root file system.

Tests load this file by path (pytest imports with --import-mode=importlib)::

    archives = load_archives()   # see the tests' headers
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile

LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
BUSYBOX = "/bin/busybox"
BUSYBOX_APPLETS = ("sh", "ls", "cat", "echo", "id", "mkdir", "rm", "test", "true", "false",
                   "hostname", "wc", "ps", "sleep", "env", "uname")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def member(name: str, kind: str = "file", data: bytes = b"", mode: int | None = None,
           linkname: str = "", uid: int = 0, gid: int = 0, dev: tuple[int, int] = (0, 0)) -> dict:
    return {"name": name, "kind": kind, "data": data, "mode": mode, "linkname": linkname,
            "uid": uid, "gid": gid, "dev": dev}


_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
          "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
          "fifo": tarfile.FIFOTYPE}


def layer_tar(members: list[dict]) -> bytes:
    """An uncompressed layer tar of these members, in order."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for m in members:
            info = tarfile.TarInfo(m["name"])
            info.type = _TYPES[m["kind"]]
            info.mode = m["mode"] if m["mode"] is not None else (0o755 if m["kind"] == "dir" else 0o644)
            info.uid, info.gid, info.mtime = m["uid"], m["gid"], 1_700_000_000
            info.linkname = m["linkname"]
            info.devmajor, info.devminor = m["dev"]
            if m["kind"] == "file":
                info.size = len(m["data"])
                archive.addfile(info, io.BytesIO(m["data"]))
            else:
                archive.addfile(info)
    return out.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def config_for(diff_ids: list[str], env=("PATH=/usr/bin:/bin", "GREETING=hello"), cmd=("/bin/sh",),
               architecture: str = "amd64") -> bytes:
    return json.dumps({
        "architecture": architecture, "os": "linux",
        "config": {"Env": list(env), "Cmd": list(cmd), "WorkingDir": "/srv", "User": "1000"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }).encode()


def write_blob(root: str, data: bytes) -> dict:
    digest = sha256(data)
    os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(root, "blobs", "sha256", digest[7:]), "wb") as handle:
        handle.write(data)
    return {"digest": digest, "size": len(data)}


def image_blobs(root: str, layers: list[bytes], compress: bool = True, **config) -> dict:
    """Write layer, config and manifest blobs; returns the manifest's descriptor."""
    descriptors = []
    for tar in layers:
        blob = gz(tar) if compress else tar
        descriptors.append(dict(write_blob(root, blob), mediaType=LAYER_GZIP if compress else LAYER_TAR))
    config_raw = config_for([sha256(t) for t in layers], **config)
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST,
                "config": dict(write_blob(root, config_raw), mediaType=CONFIG),
                "layers": descriptors}
    return dict(write_blob(root, json.dumps(manifest).encode()), mediaType=MANIFEST)


def oci_layout(root: str, layers: list[bytes], name: str | None = "test/image:1", **config) -> str:
    """An OCI image layout directory with one image."""
    os.makedirs(root, exist_ok=True)
    descriptor = image_blobs(root, layers, **config)
    descriptor["platform"] = {"os": "linux", "architecture": config.get("architecture", "amd64")}
    if name:
        descriptor["annotations"] = {"io.containerd.image.name": name,
                                     "org.opencontainers.image.ref.name": name.split(":")[-1]}
    with open(os.path.join(root, "index.json"), "w") as handle:
        json.dump({"schemaVersion": 2, "mediaType": INDEX, "manifests": [descriptor]}, handle)
    with open(os.path.join(root, "oci-layout"), "w") as handle:
        json.dump({"imageLayoutVersion": "1.0.0"}, handle)
    return root


def tar_directory(source: str, path: str) -> str:
    with tarfile.open(path, "w") as archive:
        for entry in sorted(os.listdir(source)):
            archive.add(os.path.join(source, entry), arcname=entry)
    return path


def docker_save_legacy(path: str, layers: list[bytes], tag: str = "legacy/image:1", **config) -> str:
    """The pre-25 docker save: <id>/layer.tar, <config hex>.json, manifest.json."""
    members = []
    config_raw = config_for([sha256(t) for t in layers], **config)
    config_name = sha256(config_raw)[7:] + ".json"
    names = []
    for index, tar in enumerate(layers):
        layer_id = hashlib.sha256(f"layer{index}".encode() + tar).hexdigest()
        names.append(f"{layer_id}/layer.tar")
        members += [member(f"{layer_id}", "dir"), member(f"{layer_id}/VERSION", data=b"1.0"),
                    member(f"{layer_id}/layer.tar", data=tar)]
    members.append(member(config_name, data=config_raw))
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": names}]
    members += [member("manifest.json", data=json.dumps(manifest).encode()),
                member("repositories", data=b"{}")]
    with open(path, "wb") as handle:
        handle.write(layer_tar(members))
    return path


def docker_save_oci(path: str, work: str, layers: list[bytes], tag: str = "modern/image:1",
                    **config) -> str:
    """Docker 25+'s docker save: an OCI layout plus manifest.json naming blobs."""
    descriptor = image_blobs(work, layers, compress=False, **config)
    with open(os.path.join(work, "blobs", "sha256", descriptor["digest"][7:])) as handle:
        manifest = json.load(handle)
    entry = {"Config": f"blobs/sha256/{manifest['config']['digest'][7:]}", "RepoTags": [tag],
             "Layers": [f"blobs/sha256/{d['digest'][7:]}" for d in manifest["layers"]]}
    return _docker_save_tar(path, work, entry, descriptor)


def _docker_save_tar(path: str, work: str, entry: dict, descriptor: dict) -> str:
    """Docker 25+'s docker save around the blobs in work: manifest.json with
    its one entry, an OCI index of the manifest, oci-layout; tarred to path."""
    files = {"manifest.json": [entry], "index.json": {"schemaVersion": 2, "manifests": [descriptor]},
             "oci-layout": {"imageLayoutVersion": "1.0.0"}}
    for name, content in files.items():
        with open(os.path.join(work, name), "w") as handle:
            json.dump(content, handle)
    return tar_directory(work, path)


def busybox_rootfs(root: str, os_release: str = 'NAME="sbk busybox"\nID=sbk-busybox\n') -> str:
    """A root file system of Debian's busybox-static: /bin/busybox and applets."""
    if not os.path.exists(BUSYBOX):
        raise FileNotFoundError("no /bin/busybox: apt-get install busybox-static")
    os.makedirs(os.path.join(root, "bin"))
    os.makedirs(os.path.join(root, "etc"))
    shutil.copy2(BUSYBOX, os.path.join(root, "bin", "busybox"))
    for applet in BUSYBOX_APPLETS:
        os.symlink("busybox", os.path.join(root, "bin", applet))
    with open(os.path.join(root, "etc", "os-release"), "w") as handle:
        handle.write(os_release)
    return root


def busybox_layer() -> bytes:
    """busybox as one layer tar (bin/busybox + applet symlinks + /etc/os-release)."""
    with open(BUSYBOX, "rb") as handle:
        binary = handle.read()
    members = [member("bin", "dir"), member("bin/busybox", data=binary, mode=0o755), member("etc", "dir"),
               member("etc/os-release", data=b'NAME="sbk busybox"\nID=sbk-busybox\n')]
    members += [member(f"bin/{a}", "symlink", linkname="busybox") for a in BUSYBOX_APPLETS]
    return layer_tar(members)


# ---------------------------------------------------------------------------
# A Debian image with python3, built with mmdebstrap once per machine

CACHE_DIR = "/var/cache/sandbox-kernel"
DEBIAN_SUITE, DEBIAN_VARIANT, DEBIAN_INCLUDE = "bookworm", "minbase", ("python3",)
DEBIAN_MIRROR = "http://deb.debian.org/debian"


def debian_python_rootfs(log=None) -> str:
    """The path of a rootfs tarball of Debian bookworm (minbase) with python3,
    built by mmdebstrap the first time and then taken from CACHE_DIR, keyed
    by everything that goes into it (suite, variant, packages, mirror,
    architecture, mmdebstrap's version).  A lock makes a second caller
    (another test run, the v2 tier) wait for the first build, not repeat it."""
    import fcntl
    import subprocess
    version = subprocess.run(["mmdebstrap", "--version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()
    inputs = json.dumps([DEBIAN_SUITE, DEBIAN_VARIANT, DEBIAN_INCLUDE, DEBIAN_MIRROR, arch, version])
    key = hashlib.sha256(inputs.encode()).hexdigest()[:16]
    os.makedirs(CACHE_DIR, exist_ok=True)
    path = os.path.join(CACHE_DIR, f"debian-{DEBIAN_SUITE}-{'-'.join(DEBIAN_INCLUDE)}-{key}.tar")
    with open(os.path.join(CACHE_DIR, "debian-python.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(path):
            return path
        partial = f"{path}.partial-{os.getpid()}"
        try:
            subprocess.run(["mmdebstrap", "--quiet", f"--variant={DEBIAN_VARIANT}",
                            f"--include={','.join(DEBIAN_INCLUDE)}", "--format=tar",
                            DEBIAN_SUITE, partial, DEBIAN_MIRROR],
                           check=True, stdout=log, stderr=log, timeout=1800)
            os.rename(partial, path)    # whole or not at all
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        with open(path + ".inputs.json", "w") as handle:
            handle.write(inputs + "\n")
    return path


def _blob_from_file(root: str, source: str, compress: bool) -> tuple[dict, str]:
    """Copy (gzipping if asked) a big file into root's blobs, streaming;
    returns (descriptor, diff_id of the uncompressed content)."""
    os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
    temp = os.path.join(root, "blobs", "incoming")
    plain, stored, size = hashlib.sha256(), hashlib.sha256(), 0

    class _Hashed(io.RawIOBase):
        def __init__(self, out):
            self.out = out

        def write(self, data):
            nonlocal size
            stored.update(data)
            size += len(data)
            return self.out.write(data)

    with open(source, "rb") as src, open(temp, "wb") as out:
        sink = _Hashed(out)
        writer = gzip.GzipFile(fileobj=sink, mode="wb", mtime=0, compresslevel=1) if compress else sink
        while chunk := src.read(1 << 20):
            plain.update(chunk)
            writer.write(chunk)
        if compress:
            writer.close()
    digest = "sha256:" + stored.hexdigest()
    os.rename(temp, os.path.join(root, "blobs", "sha256", digest[7:]))
    return {"digest": digest, "size": size}, "sha256:" + plain.hexdigest()


def oci_layout_of_rootfs(root: str, rootfs_tar: str, name: str, **config) -> str:
    """An OCI layout directory whose one (gzipped) layer is ``rootfs_tar``."""
    layer, diff_id = _blob_from_file(root, rootfs_tar, compress=True)
    config_raw = config_for([diff_id], **config)
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST,
                "config": dict(write_blob(root, config_raw), mediaType=CONFIG),
                "layers": [dict(layer, mediaType=LAYER_GZIP)]}
    descriptor = dict(write_blob(root, json.dumps(manifest).encode()), mediaType=MANIFEST,
                      annotations={"io.containerd.image.name": name,
                                   "org.opencontainers.image.ref.name": name.split(":")[-1]})
    with open(os.path.join(root, "index.json"), "w") as handle:
        json.dump({"schemaVersion": 2, "mediaType": INDEX, "manifests": [descriptor]}, handle)
    with open(os.path.join(root, "oci-layout"), "w") as handle:
        json.dump({"imageLayoutVersion": "1.0.0"}, handle)
    return root


def docker_save_of_rootfs(path: str, work: str, rootfs_tar: str, tag: str, **config) -> str:
    """A docker-save tarball (Docker 25+'s form: an OCI layout with
    manifest.json) whose one uncompressed layer is ``rootfs_tar``."""
    layer, diff_id = _blob_from_file(work, rootfs_tar, compress=False)
    config_desc = write_blob(work, config_for([diff_id], **config))
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST, "config": dict(config_desc, mediaType=CONFIG),
                "layers": [dict(layer, mediaType=LAYER_TAR)]}
    descriptor = dict(write_blob(work, json.dumps(manifest).encode()), mediaType=MANIFEST)
    entry = {"Config": f"blobs/sha256/{config_desc['digest'][7:]}", "RepoTags": [tag],
             "Layers": [f"blobs/sha256/{layer['digest'][7:]}"]}
    return _docker_save_tar(path, work, entry, descriptor)


# ---------------------------------------------------------------------------
# Hostile archives: sparse members, bombs, deep trees


def gnu_sparse_tar(name: str, real_size: int, data: bytes = b"sparse data\n") -> bytes:
    """A tar of one old-GNU sparse member ('S'): ``data`` at offset 0, then
    a hole up to ``real_size``.  The archive is a few KiB whatever
    ``real_size`` says; tarfile reads it back as ``real_size`` bytes."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
    header = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))[:512]
    header[156:157] = tarfile.GNUTYPE_SPARSE
    header[386:398] = tarfile.itn(0, 12, tarfile.GNU_FORMAT)             # the one data extent
    header[398:410] = tarfile.itn(len(data), 12, tarfile.GNU_FORMAT)
    header[482] = 0                                                     # no extension blocks
    header[483:495] = tarfile.itn(real_size, 12, tarfile.GNU_FORMAT)   # the real size
    padded = data + b"\0" * (-len(data) % 512)
    return _checksummed(header) + padded + b"\0" * 1024


def nested_dirs_tar(depth: int, leaf: bytes = b"deep\n") -> bytes:
    """A layer tar of ``depth`` nested directories d/d/d/... and a file at the bottom."""
    members, path = [], ""
    for _ in range(depth):
        path = f"{path}/d" if path else "d"
        members.append(member(path, "dir"))
    members.append(member(f"{path}/leaf", data=leaf))
    return layer_tar(members)


def zeros_member_gz(name: str, size: int) -> bytes:
    """A gzipped layer tar of one file of ``size`` zero bytes, streamed (a
    compression bomb: some 1000 times smaller than what it unpacks to)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=9) as zipped:
        with tarfile.open(fileobj=zipped, mode="w|", format=tarfile.PAX_FORMAT) as archive:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = size, 0o644, 1_700_000_000

            class Zeros(io.RawIOBase):
                def __init__(self):
                    self.left = size

                def readable(self):
                    return True

                def readinto(self, buffer):
                    count = min(len(buffer), self.left)
                    buffer[:count] = bytes(count)
                    self.left -= count
                    return count
            archive.addfile(info, io.BufferedReader(Zeros(), 1 << 20))
    return out.getvalue()


def _header(info: tarfile.TarInfo) -> bytearray:
    return bytearray(info.tobuf(format=tarfile.GNU_FORMAT))


def _checksummed(header: bytearray) -> bytes:
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header[:512])
    return bytes(header)


def big_pax_header_tar(size: int) -> bytes:
    """A layer tar whose one member carries a pax header of ``size`` bytes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("f")
        info.pax_headers = {"comment": "x" * size}
        archive.addfile(info, io.BytesIO(b""))
    return out.getvalue()


def long_name_chain_tar(count: int) -> bytes:
    """``count`` GNU long-name headers in a row, then one file (tarfile reads
    such a chain by recursion)."""
    blocks = []
    for index in range(count):
        name = f"name-{index}".encode() + b"\0"
        info = tarfile.TarInfo("././@LongLink")
        info.type, info.size = tarfile.GNUTYPE_LONGNAME, len(name)
        blocks.append(bytes(_header(info)) + name + b"\0" * (-len(name) % 512))
    blocks.append(layer_tar([member("f", data=b"x")]))
    return b"".join(blocks)


def sparse_map_bomb_tar(blocks: int) -> bytes:
    """An old-GNU sparse member whose map goes on for ``blocks`` extension
    blocks of 21 extents each (tarfile keeps the whole map in memory)."""
    info = tarfile.TarInfo("sparse")
    info.size, info.mtime = 0, 1_700_000_000
    header = _header(info)[:512]
    header[156:157] = tarfile.GNUTYPE_SPARSE
    header[482] = 1
    header[483:495] = tarfile.itn(1 << 30, 12, tarfile.GNU_FORMAT)
    out = [_checksummed(header)]
    for number in range(blocks):
        block = bytearray(512)
        for slot in range(21):
            extent = number * 21 + slot + 1
            block[slot * 24:slot * 24 + 12] = tarfile.itn(extent * 2, 12, tarfile.GNU_FORMAT)
            block[slot * 24 + 12:slot * 24 + 24] = tarfile.itn(1, 12, tarfile.GNU_FORMAT)
        block[504] = 1 if number < blocks - 1 else 0
        out.append(bytes(block))
    return b"".join(out) + b"\0" * 1024


def pax_sparse_map_bomb_tar(fields: int) -> bytes:
    """A pax sparse member (format 1.0) whose map says it has ``fields`` extents."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        data = f"{fields}\n".encode()
        info = tarfile.TarInfo("GNUSparseFile.0/f")
        info.size = len(data)
        info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                            "GNU.sparse.name": "f", "GNU.sparse.realsize": "10"}
        archive.addfile(info, io.BytesIO(data))
    return out.getvalue()
