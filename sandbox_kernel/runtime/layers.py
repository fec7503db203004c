"""Layer tarballs become directories that overlayfs can stack, safely.

One pass over the blob (layer_stream.py: decompression, the blob digest
and the diff_id, the store's content address of the layer, hashed as the
bytes go by; tar headers bounded), tarfile in stream mode, one member at a
time -> unpack into a new dir.

OCI whiteouts become what overlayfs reads: ``a/.wh.b`` is a character device
0/0 at ``a/b``, and ``a/.wh..wh..opq`` the xattr trusted.overlay.opaque=y on
``a``.  Both need root (mknod, trusted.* xattrs).

DANGER: this runs as root over archives from anywhere.  Rules, each checked
per member before anything is written:

* a member's path stays inside the layer: no absolute path, no ``..``, and
  no parent directory that is a symlink (a link made by an earlier member
  would otherwise carry later writes out of the layer: nothing here ever
  follows a symlink, files are created with O_NOFOLLOW | O_EXCL); at most
  MAX_DEPTH components (real images stay under 100; a bound keeps every
  later walk of the layer, removal included, shallow), each a file name the
  kernel takes (no NUL, at most 255 bytes);
* whiteouts name a file of their own directory (``a/.wh.b``: not ``.wh.``
  alone, ``.wh..`` or ``.wh...``), never the layer's root, and a ``.wh.``
  name is never a directory on the way to another member;
* what a layer writes is counted as it is written, against a ``Budget`` (the
  store's quota, the free space of its file system): a file counts its real
  size (a sparse file's holes too, as it is written out whole) plus
  ENTRY_BYTES, so that neither a sparse member, a gzip of zeros nor a
  million empty members can fill the disk; a file never gets more bytes
  than its header says;
* a symlink's target, if relative, stays inside the layer; an absolute
  target is kept (``/etc/localtime -> /usr/share/zoneinfo/UTC`` is normal,
  and it is resolved inside the container's root, never on the host);
* a hard link names a file this layer already holds;
* no device nodes but whiteouts (those under ``dev/`` are skipped with a
  note: the container gets a fresh /dev anyway, and rootfs tarballs of
  debootstrap and mmdebstrap carry them);
* setuid and setgid bits are dropped unless ``allow_setuid``.

The caller unpacks into a fresh private directory and removes it when
``unpack`` raises: a hostile archive leaves nothing half-written behind.
Extended attributes of members (security.capability and friends) are not
restored, on purpose.  A member the file system refuses (ENOSPC, a name too
long...) is a LayerError naming it, like any other bad member.

Imports layer_stream, image_basics (format_size) and safe_fs; the image
modules import it, never the reverse.
"""
from __future__ import annotations

import errno
import io
import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass, field

from . import safe_fs
from .image_basics import format_size
# the stream's names, re-exported: the image modules and the tests read them here
from .layer_stream import (  # noqa: F401
    BZIP2_MAGIC, CHUNK, GZIP_MAGIC, HEADER_BYTES, HEADER_CHAIN, SPARSE_EXTENTS, XZ_MAGIC,
    ZSTD_MAGIC, BoundedTarInfo, Counting, Hashing, LayerError, Progress, check_match,
    decompressed, format_errors)

OPAQUE_XATTR = "trusted.overlay.opaque"
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
# what aufs-era docker kept at a layer's root (hard link targets, its own state): skipped
AUFS_DIRS = (".wh..wh.plnk", ".wh..wh.aufs", ".wh..wh.orph")

MAX_DEPTH = 128          # path components of a member; see the module docstring
NAME_BYTES = 255         # one component (NAME_MAX)
PATH_BYTES = 3072        # a whole member path: with the store's path it stays under PATH_MAX
ENTRY_BYTES = 512        # what an entry costs besides its data: at least its tar header


class Budget:
    """What an import may still write: ``limit`` bytes (None: no limit) and
    ``entries`` inodes (None: no limit); ``where`` says what sets the limit,
    for the error ("the store quota (SANDBOX_KERNEL_STORE_QUOTA=10.0 GiB...)")."""

    def __init__(self, limit: int | None, where: str = "the limit", entries: int | None = None):
        self.limit, self.where, self.entries = limit, where, entries
        self.used = self.count = 0

    def charge(self, name: str, size: int) -> None:
        """Count one member of ``size`` real bytes before it is written."""
        self.used += size + ENTRY_BYTES
        self.count += 1
        if self.limit is not None and self.used > self.limit:
            raise LayerError(f"member {name!r} ({_size(size)}) takes the import to {_size(self.used)}, "
                             f"past {self.where}: nothing was stored")
        if self.entries is not None and self.count > self.entries:
            raise LayerError(f"member {name!r} is entry {self.count} of the import, past the "
                             f"free inodes of the store's file system: nothing was stored")


def _size(count: int) -> str:
    return format_size(count) if count >= 1024 else f"{count} B"


@dataclass
class Unpacked:
    diff_id: str                 # "sha256:<hex>" of the uncompressed tar
    digest: str                  # "sha256:<hex>" of the blob as read
    size: int = 0                # bytes of regular files
    charged: int = 0             # what it counted against the import's Budget
    opaque_root: bool = False    # a .wh..wh..opq at its root: the layers below are hidden
    notes: list[str] = field(default_factory=list)


def unpack(source, dest: str, *, expect_digest: str | None = None,
           expect_diff_id: str | None = None, allow_setuid: bool = False,
           progress: Progress | None = None, budget: Budget | None = None) -> Unpacked:
    """Unpack the layer blob read from ``source`` into the empty directory
    ``dest``; check the digests it is expected to have (each that is given:
    the caller decides which a source must give).  LayerError if the archive
    is hostile, corrupt, too big for ``budget`` or not what was expected."""
    blob = Hashing(source, progress)
    buffered = io.BufferedReader(blob, CHUNK)
    tar = decompressed(buffered)
    # an uncompressed blob is its own tar: its digest is the diff_id, hash it once
    plain = Hashing(tar) if tar is not buffered else Counting(tar, blob)
    budget = budget or Budget(None)
    before = budget.used
    writer = _Writer(dest, allow_setuid, budget)
    try:
        with tarfile.open(fileobj=plain, mode="r|", errorlevel=2, bufsize=CHUNK,
                          tarinfo=BoundedTarInfo) as archive:
            for member in archive:
                _add_member(writer, member, archive)
        plain.drain()      # the end-of-archive blocks belong to the diff_id too
        buffered.read()    # and whatever follows the compressed stream to the digest
    except format_errors() as error:
        raise LayerError(f"not a valid layer archive: {error or type(error).__name__}") from None
    try:
        writer.finish()
    except OSError as error:
        raise LayerError(f"cannot finish the layer's directories: {_os_error(error)}") from None
    found = Unpacked(plain.digest(), blob.digest(), writer.size, budget.used - before,
                     writer.opaque_root, writer.notes())
    check_match("blob", expect_digest, found.digest)
    check_match("layer (diff_id)", expect_diff_id, found.diff_id)
    return found


def _add_member(writer: "_Writer", member: tarfile.TarInfo, archive: tarfile.TarFile) -> None:
    """One member; what the file system refuses becomes a LayerError naming it."""
    try:
        writer.add(member, archive)
    except OSError as error:
        raise LayerError(f"member {member.name!r}: {_os_error(error)}") from None


def _os_error(error: OSError) -> str:
    name = errno.errorcode.get(error.errno, "") if error.errno else ""
    where = f" ({error.filename})" if error.filename else ""
    return f"{error.strerror or error}{f' [{name}]' if name else ''}{where}"


def member_path(name: str) -> str:
    """The member's path relative to the layer root ('' for the root);
    LayerError if it would leave the layer or is no path the kernel takes."""
    if "\0" in name:
        raise LayerError(f"member {name!r} has a NUL byte in its name")
    if name.startswith("/"):
        raise LayerError(f"member {name!r} has an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"member {name!r} climbs out of the layer with '..'")
    if len(parts) > MAX_DEPTH:
        raise LayerError(f"member {name[:80]!r}... is {len(parts)} directories deep: "
                         f"at most {MAX_DEPTH} in an image")
    path = "/".join(parts)
    if len(os.fsencode(path)) > PATH_BYTES or any(len(os.fsencode(p)) > NAME_BYTES for p in parts):
        raise LayerError(f"member {name[:80]!r}... has a name too long: at most {NAME_BYTES} "
                         f"bytes a component, {PATH_BYTES} in all")
    return path


def whiteout_target(path: str) -> str:
    """The path a whiteout member (``dir/.wh.NAME``) hides: ``dir/NAME``;
    LayerError unless NAME is a file name of that directory."""
    parent, base = posixpath.split(path)
    hidden = base[len(WHITEOUT):]
    if hidden in ("", ".", ".."):
        raise LayerError(f"whiteout {path!r} names no file: a whiteout is DIR/.wh.NAME, "
                         f"NAME a file of DIR (not empty, '.' or '..')")
    return posixpath.join(parent, hidden)


def _copy_exactly(data, out, member: tarfile.TarInfo) -> None:
    """The member's ``size`` bytes (its header's, charged already), not one
    more; a stream that ends early is a corrupt archive."""
    left = member.size
    while left:
        chunk = data.read(min(CHUNK, left))
        if not chunk:
            raise LayerError(f"member {member.name!r} ends {left} bytes before the "
                             f"{member.size} its header gives")
        out.write(chunk)
        left -= len(chunk)


class _Writer:
    """Writes members below ``root``, never following a symlink."""

    def __init__(self, root: str, allow_setuid: bool, budget: Budget):
        self.root, self.allow_setuid, self.budget = root, allow_setuid, budget
        self.as_root = os.geteuid() == 0
        self.real_dirs: set[str] = {""}
        self.dir_meta: dict[str, tarfile.TarInfo] = {}
        self.size = 0
        self.opaque_root = False
        self.dropped_setuid: list[str] = []
        self.skipped_devices: list[str] = []

    # -- per member ------------------------------------------------------------

    def add(self, member: tarfile.TarInfo, archive: tarfile.TarFile) -> None:
        path = member_path(member.name)
        base = posixpath.basename(path)
        if path.split("/")[0] in AUFS_DIRS:
            return None
        if any(part.startswith(WHITEOUT) for part in path.split("/")[:-1]):
            raise LayerError(f"member {member.name!r} is inside a whiteout ({WHITEOUT}...): "
                             f"whiteouts are files, not directories")
        self.budget.charge(member.name, member.size if member.isfile() else 0)
        if base.startswith(WHITEOUT):
            return self._whiteout(path, member)
        if path == "":
            if member.isdir():
                self.dir_meta[""] = member
            return None
        self._parent(path)
        if member.isdir():
            return self._dir(path, member)
        if member.issym():
            return self._symlink(path, member)
        if member.islnk():
            return self._hardlink(path, member)
        if member.isfile():
            return self._file(path, member, archive)
        if member.ischr() or member.isblk():
            return self._device(path, member)
        if member.isfifo():
            self._replace(path)
            os.mkfifo(self._abs(path), self._mode(path, member))
            return self._owner_and_times(path, member)
        raise LayerError(f"member {member.name!r} is of an unknown type {member.type!r}")

    def _whiteout(self, path: str, member: tarfile.TarInfo) -> None:
        parent, base = posixpath.split(path)
        self._parent(path)
        if base == OPAQUE:
            # overlayfs ignores the xattr on a lower layer's root: the store drops
            # the layers below this one from the image instead (images.add_image)
            self.opaque_root = self.opaque_root or parent == ""
            self._privileged(os.setxattr, self._abs(parent), OPAQUE_XATTR, b"y",
                             what=f"opaque directory {parent or '/'}")
            return
        if base.startswith(WHITEOUT + WHITEOUT):
            return  # aufs bookkeeping (.wh..wh.plnk and friends): nothing to do
        hidden = whiteout_target(path)
        self._replace(hidden)
        self._privileged(os.mknod, self._abs(hidden), stat.S_IFCHR | 0o600, os.makedev(0, 0),
                         what=f"whiteout {hidden}")

    def _dir(self, path: str, member: tarfile.TarInfo) -> None:
        self._ensure_dir(path)
        self.dir_meta[path] = member

    def _symlink(self, path: str, member: tarfile.TarInfo) -> None:
        target = member.linkname
        if "\0" in target or not target:
            raise LayerError(f"symlink {member.name!r} -> {target!r}: an empty target or a NUL byte")
        if not target.startswith("/"):
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
            if resolved == ".." or resolved.startswith("../"):
                raise LayerError(f"symlink {member.name!r} -> {target!r} points out of the layer")
        self._replace(path)
        os.symlink(target, self._abs(path))
        self._owner_and_times(path, member, follow=False)

    def _hardlink(self, path: str, member: tarfile.TarInfo) -> None:
        try:
            source = member_path(member.linkname)
        except LayerError:
            raise LayerError(f"hard link {member.name!r} -> {member.linkname!r} points out "
                             f"of the layer") from None
        if not source or self._through_symlink(source) or not self._is_non_dir(source):
            raise LayerError(f"hard link {member.name!r} -> {member.linkname!r}: no such file "
                             f"earlier in this layer")
        self._replace(path)
        os.link(self._abs(source), self._abs(path), follow_symlinks=False)

    def _file(self, path: str, member: tarfile.TarInfo, archive: tarfile.TarFile) -> None:
        self._replace(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self._abs(path), flags, 0o600)
        with os.fdopen(fd, "wb") as out:
            _copy_exactly(archive.extractfile(member), out, member)
            if self.as_root:
                os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, self._mode(path, member))  # after chown, which clears setuid
        os.utime(self._abs(path), (member.mtime, member.mtime), follow_symlinks=False)
        self.size += member.size

    def _device(self, path: str, member: tarfile.TarInfo) -> None:
        if member.ischr() and member.devmajor == 0 and member.devminor == 0:
            self._replace(path)   # already in overlay form: a whiteout
            self._privileged(os.mknod, self._abs(path), stat.S_IFCHR | 0o600, os.makedev(0, 0),
                             what=f"whiteout {path}")
            return
        if path.startswith("dev/"):
            self.skipped_devices.append(path)
            return
        kind = "character" if member.ischr() else "block"
        raise LayerError(f"member {member.name!r} is a {kind} device node "
                         f"({member.devmajor}:{member.devminor}): images may not carry devices")

    # -- helpers ---------------------------------------------------------------

    def _abs(self, path: str) -> str:
        return os.path.join(self.root, path) if path else self.root

    def _parent(self, path: str) -> None:
        """Every directory above ``path`` is a real directory of this layer
        (made if missing); LayerError if one is a symlink or a file."""
        parent = posixpath.dirname(path)
        missing = []
        while parent not in self.real_dirs:
            missing.append(parent)
            parent = posixpath.dirname(parent)
        for directory in reversed(missing):
            self._ensure_dir(directory, making_parent_of=path)

    def _through_symlink(self, path: str) -> bool:
        """Does a directory above ``path`` in this layer resolve through a symlink?"""
        parent = posixpath.dirname(path)
        while parent:
            if os.path.islink(self._abs(parent)):
                return True
            parent = posixpath.dirname(parent)
        return False

    def _is_non_dir(self, path: str) -> bool:
        try:
            return not stat.S_ISDIR(os.lstat(self._abs(path)).st_mode)
        except FileNotFoundError:
            return False

    def _ensure_dir(self, path: str, making_parent_of: str | None = None) -> None:
        full = self._abs(path)
        try:
            info = os.lstat(full)
        except FileNotFoundError:
            os.mkdir(full, 0o755)
        else:
            if stat.S_ISLNK(info.st_mode) and making_parent_of is not None:
                raise LayerError(f"member {making_parent_of!r} goes through the symlink "
                                 f"{path!r}: it could be written out of the layer")
            if not stat.S_ISDIR(info.st_mode):
                self._replace(path)
                os.mkdir(full, 0o755)
        self.real_dirs.add(path)

    def _replace(self, path: str) -> None:
        """A later member replaces an earlier one of the same path (never the root)."""
        if path == "":
            raise LayerError("a member would replace the layer's root directory")
        full = self._abs(path)
        try:
            info = os.lstat(full)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode):
            left = safe_fs.remove_tree(full)
            if left:
                raise LayerError(f"member {path!r} replaces a directory that cannot be removed: {left[0]}")
            self.real_dirs = {d for d in self.real_dirs if d != path and not d.startswith(path + "/")}
            self.dir_meta = {d: m for d, m in self.dir_meta.items()
                             if d != path and not d.startswith(path + "/")}
        else:
            os.unlink(full)

    def _mode(self, path: str, member: tarfile.TarInfo, is_dir: bool = False) -> int:
        mode = member.mode & 0o7777
        # setgid on a directory only passes its group on: harmless, and Debian uses it
        if mode & 0o6000 and not self.allow_setuid and not is_dir:
            self.dropped_setuid.append(path)
            mode &= ~0o6000
        return mode

    def _owner_and_times(self, path: str, member: tarfile.TarInfo, follow: bool = True) -> None:
        full = self._abs(path)
        if self.as_root:
            os.chown(full, member.uid, member.gid, follow_symlinks=follow)
        os.utime(full, (member.mtime, member.mtime), follow_symlinks=follow)

    @staticmethod
    def _privileged(call, *args, what: str) -> None:
        try:
            call(*args)
        except PermissionError as error:
            raise LayerError(f"{what}: {error.strerror}; overlay whiteouts and opaque "
                             f"directories need root (mknod, trusted.* xattrs)") from None
        except OSError as error:
            if error.errno == errno.ENOTSUP:
                raise LayerError(f"{what}: the store's file system does not support "
                                 f"trusted.* xattrs; put the store on ext4, xfs or tmpfs") from None
            raise

    def finish(self) -> None:
        """Directories last: their modes may forbid writing, their times
        change with every entry written into them."""
        for path in sorted(self.dir_meta, key=lambda p: -(p.count("/") + 1) if p else 1):
            member = self.dir_meta[path]
            full = self._abs(path)
            if self.as_root:
                os.chown(full, member.uid, member.gid, follow_symlinks=False)
            os.chmod(full, self._mode(path, member, is_dir=True))
            os.utime(full, (member.mtime, member.mtime), follow_symlinks=False)

    def notes(self) -> list[str]:
        notes = []
        if self.dropped_setuid:
            notes.append(f"dropped the setuid/setgid bits of {len(self.dropped_setuid)} file(s), "
                         f"e.g. /{self.dropped_setuid[0]}")
        if self.skipped_devices:
            notes.append(f"skipped {len(self.skipped_devices)} device node(s) under /dev "
                         f"(containers get a fresh /dev)")
        return notes
