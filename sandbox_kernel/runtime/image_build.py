"""Build: run a script in a container of a base image, keep what it wrote
as a new layer (``docker commit`` of one RUN step).

How the writable layer gets out: a container's overlay upper dir normally is
on the tmpfs that dies with it.  A build container gets the image plan's
``upper_dir`` option instead: upper and work dirs in a work directory of the
store, on the host's disk.  When the script has ended and the container is
destroyed, that upper dir *is* the layer in overlayfs's own format
(whiteouts are 0/0 character devices, opaque directories carry the xattr), so
it is renamed into the store as it is, after:

* removing what the container's setup wrote, not the script (/etc/hosts,
  /etc/hostname, the 'sandbox' line in /etc/passwd and /etc/group, the empty
  mount points /proc, /dev, /sys, /workspace, /home/sandbox);
* dropping setuid/setgid bits (unless asked) and overlay's bookkeeping xattrs;
* hashing the layer as the OCI tar it stands for (whiteouts as .wh. files):
  that sha256 is its diff_id, the same an import of that tar would give.

A build FROM host (or on an image built so) has no single root overlay:
the host image overlays each host directory (/usr, /etc, the python prefix,
the venv) on its own, with its upper dir on a tmpfs.  The build runs the
host plan with that tmpfs replaced by a bind of the work directory, so the
upper dirs stay on disk; they are then gathered into one layer tree, each
at its host path (<layer>/usr/..., <layer>/<venv>/lib/...), and the image
is recorded with ``base: host``: rootfs.host_image_plan lays each layer's
subtree over the matching host directory.  What the script writes outside
the host directories (on the container's tmpfs root) is not kept.

Everything the host reads or changes in an upper dir or a layer afterwards
is resolved beneath it with ``safe_fs``: the script ran as root in the
container and may have planted a symlink at any component (``rm -rf /etc &&
ln -s /host/dir /etc``), a FIFO where a setup file was, or a tree deeper
than Python's recursion limit.  No symlink is followed, and trees are walked
without recursion.

The build mount has metacopy and redirect_dir off, so that the upper dir
stands alone.  The script runs as uid 0 without any capability (it can write
what root owns in the image, and no more), with network ``host``.  The
upper dir is on the host's disk: the build's disk limit is not enforced
while the script runs, but its layer is charged to the store's quota (as an
import is) before it is kept, and refused past it.

Imports container (a build's container is a Container), spawn (its start
error), launch_config, image_basics, image_store, layers, rootfs, safe_fs
and spec; images.build calls it.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import stat
import subprocess
import tarfile
import threading

from . import image_basics, image_store, layers, rootfs, safe_fs
from .container import Container
from .image_basics import BuildError, ImageError
from .image_store import Image, Store
from .launch_config import LauncherConfig
from .spawn import ContainerStartError
from .spec import ContainerSpec, Limits, parse_mount

BUILD_USER = (0, 0)          # root without capabilities
SETUP_FILES = ("etc/hosts", "etc/hostname")
SETUP_DIRS = ("proc", "dev", "sys", "workspace", "home/sandbox", "home", "tmp")
BUILD_PIDS = 256             # as `run`: a build script's fork bomb stays in its container
SETUP_TEXT_MAX = 16 << 20   # a bigger /etc/passwd is not the setup's: left as the script made it


def build(name: str, base: str, script: str, *, network: str = "host", limits: Limits | None = None,
          on_output=None, allow_setuid: bool = False, mounts=(), store: Store | None = None) -> Image:
    """Run ``script`` with /bin/sh in a container of ``base``; store its
    writable layer as the top layer of image ``name``.  ``on_output(text)``
    gets the script's output as it comes (stdout and stderr together).
    ``mounts`` (Mount or "SRC:DST[:ro]") are bound for the build only: what
    the script reads there is not kept, only what it writes elsewhere."""
    store = store or Store()
    image_basics.check_name(name)
    base_image = None if base == image_basics.HOST else image_store.get(base, store)
    if store.image(name) is not None:
        raise ImageError(f"an image named {name!r} exists: remove it first (images rm {name})")
    below = _Below(base_image)
    with store.work_dir("build") as work:
        _check_upper_fs(store, work)
        spec = ContainerSpec(command=("/bin/sh", "-c", script), image=base, network=network,
                             user=BUILD_USER, limits=_with_pids_limit(limits or Limits()),
                             mounts=tuple(parse_mount(m) for m in mounts))
        _run(spec, base_image, work, on_output)
        upper = _host_layer(work) if below.on_host else os.path.join(work, "upper")
        _clean_setup_residue(upper, below, spec)
        _sanitize(upper, allow_setuid)
        diff_id, size, entries = layer_digest(upper)
        with store.lock():
            if store.image(name) is not None:
                raise ImageError(f"an image named {name!r} exists: remove it first (images rm {name})")
            if base_image is not None and (store.image(base) is None
                                           or store.image(base).layers != base_image.layers):
                raise ImageError(f"the base image {base!r} was removed or replaced during the build")
            _commit_layer(store, work, upper, diff_id, size, entries)
            return store.write_image(_record(base_image, name, diff_id, script))


def _with_pids_limit(limits: Limits) -> Limits:
    """RLIMIT_NPROC is above kernel.pid_max: without a pids limit one build
    could take every pid of the host."""
    return limits if limits.pids is not None else dataclasses.replace(limits, pids=BUILD_PIDS)


class _Below:
    """What lies under the build's writable layer: a stored image's layers,
    and for a build on the host (or on an image built on it) the host's own
    directories under those."""

    def __init__(self, base: Image | None):
        self.lower_dirs = base.lower_dirs if base is not None else []
        self.on_host = base is None or base.base == image_basics.HOST

    def text(self, path: str) -> str | None:
        """The text of ``path`` in the topmost layer that has it, if a regular
        file (setup files are plain: whiteouts and opaque directories are not
        looked at).  A layer may come from an earlier build: resolved beneath
        it; the host's own files are the host's, read as they are."""
        for lower in self.lower_dirs:
            if safe_fs.lstat_beneath(lower, path) is not None:
                return _decoded(safe_fs.read_beneath(lower, path, SETUP_TEXT_MAX + 1))
        if self.on_host and os.path.lexists(os.path.join("/", path)):
            full = os.path.join("/", path)
            return _read(full) if os.path.isfile(full) and not os.path.islink(full) else None
        return None

    def has(self, path: str) -> bool:
        return any(safe_fs.lstat_beneath(lower, path) is not None for lower in self.lower_dirs)


def _check_upper_fs(store: Store, work: str) -> None:
    """overlayfs keeps whiteouts and opaque directories of an upper dir in
    trusted.* xattrs and 0/0 devices: a store elsewhere would build wrong layers."""
    try:
        os.setxattr(work, "trusted.sbk-probe", b"1")
        os.removexattr(work, "trusted.sbk-probe")
    except OSError as error:
        raise ImageError(f"the image store {store.root} is on a file system without trusted.* "
                         f"xattrs ({error.strerror}): a build's layer cannot be made there; put the "
                         f"store on ext4, xfs, btrfs or tmpfs (SANDBOX_KERNEL_IMAGES)") from None


class BuildContainer(Container):
    """A Container whose overlay keeps its upper dir in ``upper_dir``."""

    def __init__(self, spec: ContainerSpec, image: Image, upper_dir: str, **kwargs):
        super().__init__(spec, **kwargs)
        self.image, self.upper_dir = image, upper_dir

    def _launch_config(self) -> LauncherConfig:
        config = super()._launch_config()
        if self.image is None or self.image.base == image_basics.HOST:
            layers = tuple(self.image.lower_dirs) if self.image is not None else ()
            plan = rootfs.host_image_plan(self.spec, self._state_dir, self._workspace(), layers=layers)
            config.plan = _uppers_kept_in(plan, f"{self._state_dir}/layer", self.upper_dir)
        else:
            config.plan = rootfs.image_plan(self.spec, self._state_dir, self._workspace(),
                                            self.image, upper_dir=self.upper_dir)
        return config


def _uppers_kept_in(plan: list, layer: str, work: str) -> list:
    """The host plan, with its layer directory (a tmpfs that dies with the
    container, holding one upper dir per host directory) bound from ``work``
    on the host's disk instead, and each overlay made fit to be kept as a
    layer (see rootfs.overlay_options)."""
    kept, found = [], False
    for op in plan:
        if op.kind == "mount" and op.target == layer and op.fstype == "tmpfs":
            op, found = dataclasses.replace(op, kind="bind", source=work, fstype=None, flags=0,
                                            data=None), True
        elif op.kind == "mount" and op.fstype == "overlay":
            op = dataclasses.replace(op, data=op.data + ",index=off,metacopy=off,redirect_dir=off")
        kept.append(op)
    if not found:
        raise BuildError(f"the host image's plan has no tmpfs at {layer}: a build on the host "
                         f"cannot keep its layer (rootfs.host_image_plan changed?)")
    return kept


def _host_layer(work: str) -> str:
    """A build on the host wrote one upper dir per host directory
    (work/upper/<index>, in rootfs.host_image_dirs() order): gather them
    into one tree with each at its host path, e.g. <tree>/usr/...,
    <tree>/opt/venv/lib/..., which rootfs.host_image_plan lays back over
    those directories.  Writes elsewhere (on the container's tmpfs root)
    are not kept."""
    tree = os.path.join(work, "host-layer")
    os.mkdir(tree, 0o755)
    for index, directory in enumerate(rootfs.host_image_dirs()):
        upper = os.path.join(work, "upper", str(index))
        if _real_dir(upper) and os.listdir(upper):
            target = tree + directory
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            os.rename(upper, target)
    return tree


def _real_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _run(spec: ContainerSpec, image: Image, work: str, on_output) -> None:
    read_end, write_end = os.pipe()
    chunks: list[bytes] = []
    try:
        box = BuildContainer(spec, image, work, stdin=subprocess.DEVNULL,
                              stdout=write_end, stderr=write_end)
        with box:
            try:
                box.start()
            except ContainerStartError as error:
                raise BuildError(f"the build container did not start: {error}") from None
            finally:
                os.close(write_end)
            reader = threading.Thread(target=_pump, args=(read_end, chunks, on_output), daemon=True)
            reader.start()
            result = box.wait()
            reader.join(5)
    finally:
        os.close(read_end)
    if result.status != "ok":
        tail = b"".join(chunks)[-2000:].decode(errors="replace").strip().splitlines()[-5:]
        raise BuildError(f"the build script failed ({result.status}, exit code {result.exit_code}); "
                         f"nothing was kept" + (": " + " | ".join(tail) if tail else ""))


def _pump(fd: int, chunks: list[bytes], on_output) -> None:
    while data := os.read(fd, 65536):
        chunks.append(data)
        if on_output is not None:
            on_output(data.decode(errors="replace"))


def _clean_setup_residue(upper: str, below: "_Below", spec: ContainerSpec) -> None:
    """Take out of the upper dir what the container's setup made, not the
    script; every path beneath ``upper``, no symlink followed at any component."""
    for path in SETUP_FILES:
        _remove_if_file(upper, path)
    uid, gid = spec.user
    ours = {"etc/passwd": f"sandbox:x:{uid}:{gid}:sandbox:/home/sandbox:/bin/sh\n",
            "etc/group": f"sandbox:x:{gid}:\n"}
    for path, line in ours.items():
        _unappend(upper, path, line, below)
    for path in SETUP_DIRS:
        _remove_if_empty_dir(upper, path, below)


def _remove_if_file(upper: str, path: str) -> None:
    """Unlink ``path`` unless it is a directory (a symlink there is unlinked
    itself, never what it points to); a symlinked parent leaves it alone."""
    info = safe_fs.lstat_beneath(upper, path)
    if info is not None and not stat.S_ISDIR(info.st_mode):
        with safe_fs.parent_beneath(upper, path) as (parent, name):
            os.unlink(name, dir_fd=parent)


def _remove_if_empty_dir(upper: str, path: str, below: "_Below") -> None:
    info = safe_fs.lstat_beneath(upper, path)
    if info is None or not stat.S_ISDIR(info.st_mode) or below.has(path):
        return
    with safe_fs.parent_beneath(upper, path) as (parent, name):
        try:
            os.rmdir(name, dir_fd=parent)
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise


def _unappend(upper: str, path: str, line: str, below: "_Below") -> None:
    """Remove the line the setup appended; the file too if nothing else changed."""
    text = _decoded(safe_fs.read_beneath(upper, path, SETUP_TEXT_MAX + 1))
    if text is None or line not in text:
        return
    text = text.replace(line, "", 1)
    lower = below.text(path)
    if lower is not None and lower == text or lower is None and text == "":
        with safe_fs.parent_beneath(upper, path) as (parent, name):
            os.unlink(name, dir_fd=parent)
        return
    fd = safe_fs.open_beneath(upper, path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with open(fd, "w", errors="surrogateescape") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):   # replaced since it was read: not ours
            return
        handle.truncate()
        handle.write(text)


def _decoded(data: bytes | None) -> str | None:
    """Text of a setup file read with a limit; None if none, or over the limit."""
    if data is None or len(data) > SETUP_TEXT_MAX:
        return None
    return data.decode(errors="surrogateescape")


def _read(path: str) -> str:
    """A host file (trusted): the host image's own /etc/passwd."""
    with open(path, errors="surrogateescape") as handle:
        return handle.read()


def _sanitize(upper: str, allow_setuid: bool) -> None:
    """Drop setuid/setgid bits and overlay's bookkeeping xattrs; refuse
    device nodes other than whiteouts (the script has no CAP_MKNOD, so
    finding one means something is wrong).  Walked without recursion or
    following symlinks (safe_fs.walk)."""
    for directory, dir_fd, names in safe_fs.walk(upper):
        for name in names:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
                if not (stat.S_ISCHR(info.st_mode) and info.st_rdev == 0):
                    raise ImageError(f"the build left a device node at /{os.path.join(directory, name)}")
                continue
            if stat.S_ISLNK(info.st_mode):
                continue
            if info.st_mode & 0o6000 and not allow_setuid and not stat.S_ISDIR(info.st_mode):
                _chmod_entry(dir_fd, name, stat.S_IMODE(info.st_mode) & ~0o6000)
            entry = safe_fs.entry_path(dir_fd, name)
            for attribute in os.listxattr(entry, follow_symlinks=False):
                if attribute.startswith("trusted.overlay.") and attribute != layers.OPAQUE_XATTR:
                    os.removexattr(entry, attribute, follow_symlinks=False)


def _chmod_entry(dir_fd: int, name: str, mode: int) -> None:
    """chmod of an entry that is not a symlink, through an O_PATH fd of it
    (chmod of /proc/self/fd/N changes that very inode)."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if not stat.S_ISLNK(os.fstat(fd).st_mode):
            os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)


class _HashWriter:
    def __init__(self):
        self.sha256 = hashlib.sha256()

    def write(self, data) -> int:
        self.sha256.update(data)
        return len(data)


def layer_digest(upper: str) -> tuple[str, int, int]:
    """(diff_id, bytes of files, entries) of the OCI tar this overlay upper
    dir stands for: entries in os.walk order with sorted names, walked with
    safe_fs."""
    sink, size, entries = _HashWriter(), 0, 0
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        for directory, dir_fd, names in safe_fs.walk(upper):
            for name in names:
                size += _add(archive, dir_fd, os.path.join(directory, name), name)
                entries += 1
    return "sha256:" + sink.sha256.hexdigest(), size, entries


def _add(archive: tarfile.TarFile, dir_fd: int, arcname: str, name: str) -> int:
    """Entry ``name`` of the open directory ``dir_fd``, as ``arcname``."""
    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:   # overlay whiteout -> OCI whiteout
        head, tail = os.path.split(arcname)
        entry = tarfile.TarInfo(os.path.join(head, layers.WHITEOUT + tail))
        entry.mtime = int(info.st_mtime)
        archive.addfile(entry)
        return 0
    entry = archive.gettarinfo(safe_fs.entry_path(dir_fd, name), arcname)   # lstat, readlink
    entry.uname = entry.gname = ""
    if entry.isfile():
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        with open(fd, "rb") as handle:
            archive.addfile(entry, handle)
        return entry.size
    archive.addfile(entry)
    if entry.isdir() and _is_opaque(dir_fd, name):
        marker = tarfile.TarInfo(os.path.join(arcname, layers.OPAQUE))
        marker.mtime = int(info.st_mtime)
        archive.addfile(marker)
    return 0


def _is_opaque(dir_fd: int, name: str) -> bool:
    try:
        return os.getxattr(safe_fs.entry_path(dir_fd, name), layers.OPAQUE_XATTR,
                           follow_symlinks=False) == b"y"
    except OSError:
        return False


def _commit_layer(store: Store, work: str, upper: str, diff_id: str, size: int, entries: int) -> None:
    """The upper dir becomes the layer's root/ (a rename: nothing is copied),
    if the store quota has room for it (ImageError if not: the caller's work
    dir goes, and nothing is kept).  Lock held."""
    if store.has_layer(diff_id):
        return
    charge = _charge_layer(store, size, entries)
    layer_work = os.path.join(work, "layer")
    os.mkdir(layer_work)
    os.rename(upper, os.path.join(layer_work, "root"))
    root = safe_fs.open_beneath(layer_work, "root", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fchmod(root, 0o755)
    finally:
        os.close(root)
    store.commit_layer(layer_work, diff_id, None, size, charge)


def _charge_layer(store: Store, size: int, entries: int) -> int:
    """What the layer counts against the store, as an import's Budget counts
    it (its files' sizes, ENTRY_BYTES an entry), checked against what the
    store quota has left: the script wrote it already, in the store's tmp/,
    so without this a build could fill the store past any quota.  (The
    layer is on the store's file system already and the commit is a rename:
    free space and inodes are not charged twice.)"""
    charge = size + entries * layers.ENTRY_BYTES
    room, where = store.quota_room()
    if room is not None and charge > room:
        raise ImageError(f"the build's layer ({image_basics.format_size(charge)} in {entries} entries) is "
                         f"past {where}: nothing was kept")
    return charge


def _record(base: Image | None, name: str, diff_id: str, script: str) -> Image:
    if base is None:                   # FROM host: the host's directories are not layers
        base = Image(name="host", id="", layers=(), base=image_basics.HOST, source="host",
                     architecture=image_basics.host_architecture(),
                     config={"architecture": image_basics.host_architecture(), "os": "linux", "config": {}})
    config = dict(base.config)
    config["rootfs"] = {"type": "layers", "diff_ids": [*base.layers, diff_id]}
    history = list(config.get("history") or [])
    history.append({"created": image_basics.now(), "created_by": f"/bin/sh -c {script}",
                    "comment": "sandbox-kernel build"})
    config["history"] = history
    return dataclasses.replace(base, name=name, id=image_basics.config_digest(config),
                               layers=(*base.layers, diff_id), created=image_basics.now(),
                               source=f"built from {base.name}", config=config)
