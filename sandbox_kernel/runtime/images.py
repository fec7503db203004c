"""Images a container can be started from, and the store that keeps them.

``host`` is the default and is not stored: the host's /usr and /etc and the
running interpreter, read-only under a writable layer (rootfs.host_image_plan).
Every other image lives in the store, one directory per machine::

    ROOT                        /var/lib/sandbox-kernel as root, else
                                $XDG_DATA_HOME/sandbox-kernel; $SANDBOX_KERNEL_IMAGES wins
      lock                      flock(2): one writer at a time (import, pull, build, rm)
      layers/sha256/<hex>/      one unpacked layer; <hex> is its diff_id, the sha256 of
        root/                   its uncompressed tar.  The files: an overlay lowerdir
        layer.json              {"diff_id", "digest", "size", "created"}
      images/<name>.json        the image: its layers (bottom first) and what its OCI
                                config says (env, workdir, cmd, entrypoint, user)
      tmp/sbk-<pid>-<kind>-<hex>/  work in progress: renamed into place when complete,
                                removed on failure, or if its process died by the
                                next store command of its user (listing included)
                                and at a container's start (cleanup.reap_stale)

Images come from anywhere, so the store takes them as hostile input
(layers.py, image_sources.py): an import writes at most what the store's
quota ($SANDBOX_KERNEL_STORE_QUOTA, 10G by default, 'none' for none) and 95%
of its file system's free space and inodes allow, counting what it really
writes; and an image's name (check_name: Docker's grammar, e.g. busybox,
python:3.11, 127.0.0.1:5000/team/python:3.11) is %-escaped into one file
name, never a path.

A layer is stored once however many images use it, and unpacked once: a
container stacks the layers of its image with overlayfs (rootfs.image_plan),
so starting one costs the same for a 10 MB and a 1 GB image.  Readers take no
lock: every file and layer appears by rename(2), whole or not at all.

    from sandbox_kernel.runtime import images
    images.import_image("busybox.tar", name="busybox")   # rootfs tar, OCI layout, docker save
    images.pull("127.0.0.1:5000/busybox:latest")           # registry.py
    images.build("busybox-curl", "busybox", "echo hi > /hello")   # image_build.py
    images.build("tools", "host", "pip install ./wheels/x.whl")    # layers over the host's dirs
    images.available()                                     # ["host", "busybox", ...]
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import json
import os
import platform
import re
import secrets
import stat
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .layers import Budget

HOST = "host"
STORE_ENV = "SANDBOX_KERNEL_IMAGES"
# The store's quota: what its layers may hold in all, counted as layers.Budget counts
# (the files' real sizes, sparse holes included, plus 512 bytes an entry).  An import
# also leaves FREE_RESERVE of the file system's space and inodes to everything else.
QUOTA_ENV = "SANDBOX_KERNEL_STORE_QUOTA"
DEFAULT_QUOTA = 10 << 30
FREE_RESERVE = 0.05
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# what the container sets itself, whatever the image's config says
OWN_ENV = ("HOME", "USER", "LOGNAME", "HOSTNAME")
# A stored image's name, Docker's way: [REGISTRY[:PORT]/]PATH[/PATH...][:TAG].  Pulls
# name images by their reference (127.0.0.1:5000/team/python:3.11), archives by their
# tag (docker.io/library/busybox:latest).  "/" separates components only: the image's
# file is the name %-escaped (images/127.0.0.1%3A5000%2Fteam%2Fpython%3A3.11.json),
# so no name is a path; the grammar refuses what could look like one all the same
# (.., a leading dot or slash, empty components, NUL, control characters).
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
_COMPONENT = r"[A-Za-z0-9]+(?:(?:[._]|__|-+)[A-Za-z0-9]+)*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_NAME = re.compile(rf"(?:{_HOST}(?::[0-9]{{1,5}})?/)?{_COMPONENT}(?:/{_COMPONENT})*(?::{_TAG})?")
# 120 characters: with "/" and ":" escaped as %2F and %3A its file name stays under 255 bytes
NAME_MAX = 120
NAME_RULE = ("[REGISTRY[:PORT]/]NAME[/NAME...][:TAG] of letters, digits and . _ - (not first), "
             f"at most {NAME_MAX} characters, e.g. busybox, python:3.11 or 127.0.0.1:5000/team/python:3.11")


class ImageNotFound(LookupError):
    def __init__(self, name: str, available: list[str]):
        self.name, self.available = name, available
        super().__init__(f"no image named {name!r}; images here: {', '.join(available)}")


class ImageError(ValueError):
    """Bad input for the store (a missing file, a corrupt blob, a name in
    use...): the message is one line for the user."""


class BuildError(RuntimeError):
    """A build's script failed (or its container did not start); nothing was stored."""


# ---------------------------------------------------------------------------
# Progress


class Progress:
    """What an import reports; this one reports nothing.  ``start`` a layer
    (label, total bytes or None), ``advance`` by the bytes read, ``end`` it."""

    def start(self, label: str, total: int | None) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def end(self, note: str = "") -> None:
        pass


class LineProgress(Progress):
    """One line per layer, for logs and terminals without tqdm."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.label, self.done = "", 0

    def start(self, label, total):
        self.label, self.done = label, 0

    def advance(self, count):
        self.done += count

    def end(self, note=""):
        self.stream.write(f"{self.label}: {format_size(self.done)}{' ' + note if note else ''}\n")
        self.stream.flush()


class TqdmProgress(Progress):
    def __init__(self, tqdm):
        self.tqdm, self.bar = tqdm, None

    def start(self, label, total):
        self.bar = self.tqdm(total=total, desc=label, unit="B", unit_scale=True, leave=True)

    def advance(self, count):
        self.bar.update(count)

    def end(self, note=""):
        if note:
            self.bar.set_postfix_str(note)
        self.bar.close()


def terminal_progress(stream=None) -> Progress:
    """tqdm bars on a terminal when tqdm is installed, else a line per layer."""
    stream = stream or sys.stderr
    if stream.isatty():
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return TqdmProgress(tqdm)
    return LineProgress(stream)


def format_size(count: int | None) -> str:
    if count is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)


# ---------------------------------------------------------------------------
# Images


@dataclass(frozen=True)
class Image:
    """A stored image: what a container needs to start on it."""
    name: str
    id: str                          # sha256 of its OCI config
    layers: tuple[str, ...]          # diff_ids, bottom first
    env: tuple[str, ...] = ()        # "NAME=VALUE", from the config
    workdir: str = ""
    cmd: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    user: str = ""
    created: str = ""
    source: str = ""
    architecture: str = ""
    os: str = "linux"
    base: str = ""                   # "host": built FROM host (its layers go over the host's dirs)
    config: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)
    store_root: str = dataclasses.field(default="", compare=False, repr=False)

    @property
    def lower_dirs(self) -> list[str]:
        """The layers' directories, top first, as overlayfs's lowerdir wants them."""
        return [layer_root(self.store_root, diff_id) for diff_id in reversed(self.layers)]

    def environment(self) -> dict:
        """The config's Env (PATH defaulted, unless built on the host, whose
        PATH the container sets) less what the container sets itself."""
        env = {} if self.base == HOST else {"PATH": DEFAULT_PATH}
        for item in self.env:
            name, _, value = item.partition("=")
            if name and name not in OWN_ENV:
                env[name] = value
        return env

    def find(self, path: str) -> str | None:
        """The host path of the file at ``path`` inside the image (its layers
        merged as overlayfs merges them, symlinks followed inside the image),
        or None.  For questions like "does this image have python3?"."""
        done: list[str] = []
        parts = [p for p in path.split("/") if p]
        hops = 0
        while parts:
            part = parts.pop(0)
            if part in (".", ".."):
                done = done[:-1] if part == ".." else done
                continue
            found = self._locate("/".join(done + [part]))
            if found is None:
                return None
            if os.path.islink(found):
                hops += 1
                target = os.readlink(found)
                if hops > 40:
                    return None
                done = [] if target.startswith("/") else done
                parts = [p for p in target.split("/") if p] + parts
                continue
            done.append(part)
        return self._locate("/".join(done)) if done else None

    def _locate(self, relative: str) -> str | None:
        """Top layer first: the first that has the path, unless a whiteout,
        an opaque directory or a non-directory on the way hides it."""
        for lower in self.lower_dirs:
            full = os.path.join(lower, relative)
            if os.path.lexists(full):
                return None if _is_whiteout(full) else full
            if _hides_below(lower, relative):
                return None
        return None

    def which(self, program: str) -> str | None:
        """The path inside the image of ``program`` on the image's PATH, or None."""
        for directory in self.environment()["PATH"].split(":"):
            inside = f"{directory.rstrip('/')}/{program}"
            found = self.find(inside)
            if found and os.path.isfile(found) and os.stat(found).st_mode & 0o111:
                return inside
        return None

    def as_json(self) -> dict:
        data = dataclasses.asdict(self)
        data.pop("store_root")
        return data


def _is_whiteout(path: str) -> bool:
    info = os.lstat(path)
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == 0


def _hides_below(lower: str, relative: str) -> bool:
    """Does this layer hide ``relative`` of the layers below it?"""
    parent = os.path.dirname(relative)
    while parent:
        full = os.path.join(lower, parent)
        if os.path.lexists(full):
            if not os.path.isdir(full) or os.path.islink(full):
                return True            # a whiteout, file or symlink replaces the directory
            try:
                if os.getxattr(full, "trusted.overlay.opaque", follow_symlinks=False) == b"y":
                    return True
            except OSError:
                pass
        parent = os.path.dirname(parent)
    return False


def layer_root(store_root: str, diff_id: str) -> str:
    return os.path.join(store_root, "layers", *_digest_parts(diff_id), "root")


def _digest_parts(digest: str) -> tuple[str, str]:
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexdigest):
        raise ImageError(f"not a sha256 digest: {digest!r}")
    return algorithm, hexdigest


def check_name(name: str) -> str:
    """``name`` if it may name a stored image, else ImageError saying the rule.
    Every Store method that makes a path from a name goes through here."""
    if not isinstance(name, str) or not name:
        raise ImageError(f"an image name is needed: {NAME_RULE}")
    if len(name) > NAME_MAX:
        raise ImageError(f"invalid image name {name[:40]!r}...: {len(name)} characters; {NAME_RULE}")
    if not _NAME.fullmatch(name):
        raise ImageError(f"invalid image name {name!r}: {NAME_RULE}")
    if name == HOST:
        raise ImageError("'host' is the host image; choose another name")
    return name


def store_quota() -> int | None:
    """$SANDBOX_KERNEL_STORE_QUOTA in bytes (10G, 512M, 2048K, a number, or
    'none'), DEFAULT_QUOTA if unset; ImageError for anything else."""
    text = os.environ.get(QUOTA_ENV, "").strip()
    if not text:
        return DEFAULT_QUOTA
    if text.lower() == "none":
        return None
    match = re.fullmatch(r"([0-9]+)([KMGT]?)i?B?", text, re.IGNORECASE)
    if not match:
        raise ImageError(f"{QUOTA_ENV}={text!r}: expected a size such as 10G, 512M or 'none'")
    return int(match.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[match.group(2).upper()]


def host_architecture() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------
# The store


def store_root() -> str:
    if os.environ.get(STORE_ENV):
        return os.path.abspath(os.environ[STORE_ENV])
    if os.geteuid() == 0:
        return "/var/lib/sandbox-kernel"
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(data, "sandbox-kernel")


class Store:
    """The image store at ``root`` (see the module docstring for its layout)."""

    def __init__(self, root: str | None = None):
        self.root = root or store_root()

    def _path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    # -- writers' lock and work directories --------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive: one import, pull, build or rm at a time on this machine.
        Waits for the holder; the kernel drops the lock if the holder dies."""
        for sub in ("layers/sha256", "images", "tmp"):
            os.makedirs(self._path(sub), mode=0o755, exist_ok=True)
        fd = os.open(self._path("lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.sweep()
            yield
        finally:
            os.close(fd)   # closing releases the flock

    @contextlib.contextmanager
    def work_dir(self, kind: str = "import") -> Iterator[str]:
        """A private directory on the store's file system (so that what is
        made in it can be renamed into place); removed on exit if still there."""
        os.makedirs(self._path("tmp"), mode=0o755, exist_ok=True)
        self.sweep()      # a build makes its work dir before it takes the lock
        path = self._path("tmp", f"sbk-{os.getpid()}-{kind}-{secrets.token_hex(4)}")
        os.makedirs(path, mode=0o700)
        try:
            yield path
        finally:
            _remove_tree(path)

    def sweep(self) -> list[str]:
        """Remove the work of imports, pulls and builds whose process died
        (killed mid-way, its tmp/sbk-<pid>-* stays): only the caller's own
        real directories and files, never a symlink (cleanup.reap_store_work).
        Every store command calls it, readers too: one listdir of tmp/,
        no lock needed (a live process's work is never touched)."""
        from . import cleanup
        return cleanup.reap_store_work(self._path("tmp"))

    # -- layers --------------------------------------------------------------------

    def layer_dir(self, diff_id: str) -> str:
        return self._path("layers", *_digest_parts(diff_id))

    def has_layer(self, diff_id: str | None) -> bool:
        return bool(diff_id) and os.path.isdir(self.layer_dir(diff_id))

    def layer_info(self, diff_id: str) -> dict:
        try:
            with open(os.path.join(self.layer_dir(diff_id), "layer.json")) as handle:
                return json.load(handle)
        except FileNotFoundError:
            return {"diff_id": diff_id, "size": None}

    def commit_layer(self, work: str, diff_id: str, digest: str | None, size: int,
                     charged: int | None = None, *, opaque_root: bool = False) -> str:
        """Move ``work`` (holding root/) into place as layer ``diff_id``; if the
        layer is there already, keep that one.  ``size``: bytes of regular
        files; ``charged``: what it counts against the quota; ``opaque_root``:
        it hides every layer below it.  Lock held."""
        info = {"diff_id": diff_id, "digest": digest, "size": size, "created": now(),
                "charged": size if charged is None else charged}
        if opaque_root:
            info["opaque_root"] = True
        _write_json(os.path.join(work, "layer.json"), info)
        os.chmod(work, 0o755)
        try:
            os.rename(work, self.layer_dir(diff_id))
        except OSError as error:
            if not self.has_layer(diff_id):
                raise ImageError(f"cannot store layer {diff_id}: {error}") from None
        return diff_id

    def visible_layers(self, diff_ids: list[str]) -> list[str]:
        """The layers a container stacks: from the top down to the first that
        hides all below it (an opaque marker at its root, which overlayfs
        ignores on a lower layer's root)."""
        for index in range(len(diff_ids) - 1, 0, -1):
            if self.layer_info(diff_ids[index]).get("opaque_root"):
                return diff_ids[index:]
        return diff_ids

    def used(self) -> int:
        """What the layers here count against the quota."""
        total = 0
        for diff_id in self.layers():
            info = self.layer_info(diff_id)
            total += info.get("charged") or info.get("size") or 0
        return total

    def import_budget(self) -> Budget:
        """What one import may write: the quota less what is stored, and the
        file system's free space and inodes less FREE_RESERVE of them."""
        from .layers import Budget
        fs = os.statvfs(self._path("tmp"))
        free = fs.f_bavail * fs.f_frsize - int(fs.f_blocks * fs.f_frsize * FREE_RESERVE)
        inodes = fs.f_favail - int(fs.f_files * FREE_RESERVE) if fs.f_files else None
        limits = [(free, f"the free space of the store's file system ({format_size(max(free, 0))} "
                         f"usable, keeping {FREE_RESERVE:.0%} free)")]
        room, where = self.quota_room()
        if room is not None:
            limits.append((room, where))
        limit, where = min(limits, key=lambda pair: pair[0])
        return Budget(max(limit, 0), where, None if inodes is None else max(inodes, 0))

    def quota_room(self) -> tuple[int | None, str]:
        """What the store quota leaves for new layers (None: no quota), and
        what an error says of it.  A build's layer, already on the store's
        file system when it is committed, is held to this alone."""
        quota = store_quota()
        if quota is None:
            return None, ""
        used = self.used()
        return quota - used, (f"the store quota ({QUOTA_ENV}={format_size(quota)}, "
                              f"{format_size(used)} used; raise it or images rm)")

    def layers(self) -> list[str]:
        base = self._path("layers", "sha256")
        return [f"sha256:{name}" for name in sorted(os.listdir(base))] if os.path.isdir(base) else []

    # -- images ----------------------------------------------------------------------

    def _image_file(self, name: str) -> str:
        return self._path("images", urllib.parse.quote(check_name(name), safe="") + ".json")

    def names(self) -> list[str]:
        """The names of the images here (files whose name is not a valid one are skipped)."""
        directory = self._path("images")
        if not os.path.isdir(directory):
            return []
        found = (urllib.parse.unquote(entry[:-5]) for entry in os.listdir(directory)
                 if entry.endswith(".json"))
        return sorted(name for name in found if _NAME.fullmatch(name) and len(name) <= NAME_MAX)

    def image(self, name: str) -> Image | None:
        """The image ``name``, None if there is none; ImageError for an invalid name."""
        path = self._image_file(name)
        try:
            with open(path) as handle:
                data = json.load(handle)
        except (FileNotFoundError, ValueError):
            return None
        fields = {f.name for f in dataclasses.fields(Image)}
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields}
        return Image(**data, store_root=self.root)

    def write_image(self, image: Image) -> Image:
        """Atomically (temp file, rename).  Call with the lock held."""
        missing = [d for d in image.layers if not self.has_layer(d)]
        if missing:
            raise ImageError(f"image {image.name!r} would name layers the store lacks: {missing}")
        path = self._image_file(image.name)
        temp = self._path("tmp", f"sbk-{os.getpid()}-image-{secrets.token_hex(4)}.json")
        _write_json(temp, image.as_json())
        os.replace(temp, path)
        return dataclasses.replace(image, store_root=self.root)

    def size(self, image: Image) -> int:
        return sum(self.layer_info(d).get("size") or 0 for d in image.layers)

    def remove(self, name: str) -> list[str]:
        """Remove the image, then every layer no image uses any more; returns
        those layers.  Refuses while a container runs on the image."""
        check_name(name)
        with self.lock():
            image = self.image(name)
            if image is None:
                raise ImageNotFound(name, available(self))
            users = containers_using(image.lower_dirs)
            if users:
                raise ImageError(f"image {name!r} is in use by running container(s) "
                                 f"(init pid {', '.join(map(str, users))}): stop them first")
            os.unlink(self._image_file(name))
            return self.collect_garbage()

    def collect_garbage(self, candidates: list[str] | None = None) -> list[str]:
        """Remove the layers no image names (of ``candidates``, if given).
        Call with the lock held."""
        used = {d for name in self.names() if (img := self.image(name)) for d in img.layers}
        removed = []
        for diff_id in self.layers() if candidates is None else candidates:
            if diff_id in used or not self.has_layer(diff_id) or \
                    containers_using([layer_root(self.root, diff_id)]):
                continue
            doomed = self._path("tmp", f"sbk-{os.getpid()}-rm-{secrets.token_hex(4)}")
            os.rename(self.layer_dir(diff_id), doomed)   # gone from the store at once
            _remove_tree(doomed)
            removed.append(diff_id)
        return removed

    def users_of(self, diff_id: str) -> list[str]:
        return [n for n in self.names() if (img := self.image(n)) and diff_id in img.layers]


def containers_using(dirs: list[str]) -> list[int]:
    """Init pids of running containers whose overlay stacks any of ``dirs``
    (their mounts live in their own namespaces: read each init's mountinfo)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as handle:
                if handle.read().strip() != "sbk-init":
                    continue
            with open(f"/proc/{pid}/mountinfo") as handle:
                mounts = handle.read()
        except OSError:
            continue
        # an image built on the host stacks <layer>/root/usr and the like: "{d}/" too
        if any(f"{d}{end}" in mounts for d in dirs for end in (":", ",", " ", "/")):
            found.append(int(pid))
    return found


from .launcher import containers_stacking as containers_using  # noqa: E402,F811 -- mountinfo inside names no layer (issue 14 item 10): the launchers hold them


def _write_json(path: str, data) -> None:
    with open(path, "w") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.write("\n")


def _remove_tree(path: str) -> None:
    """Remove a work directory or a layer: iteratively (a layer a build made
    can be any depth), entering 0500 directories, never following a link.
    What cannot be removed is logged by safe_fs and left in tmp/."""
    from .safe_fs import remove_tree
    remove_tree(path)


# ---------------------------------------------------------------------------
# The module's face: what the runtime, the CLI and the session use


def available(store: Store | None = None) -> list[str]:
    return [HOST] + (store or Store()).names()


def resolve(name: str) -> str:
    """The image's name if it exists, else ImageNotFound listing what does."""
    if name != HOST and load(name) is None:
        raise ImageNotFound(name, available())
    return name


def load(name: str, store: Store | None = None) -> Image | None:
    """The stored image ``name`` (None for host or a name not there)."""
    if name == HOST:
        return None
    try:
        check_name(name)
    except ImageError:
        return None
    return (store or Store()).image(name)


def get(name: str, store: Store | None = None) -> Image:
    if name != HOST:
        check_name(name)
    image = load(name, store)
    if image is None:
        raise ImageNotFound(name, available(store))
    return image


def environment(name: str) -> dict:
    """The image's environment for a container (PATH included); {} for host."""
    image = load(name)
    return image.environment() if image is not None else {}


def import_image(path: str, name: str | None = None, *, progress: Progress | None = None,
                 allow_setuid: bool = False, store: Store | None = None) -> Image:
    """Import a rootfs directory or tarball, an OCI image layout (directory
    or tar) or a ``docker save`` tarball.  ImageError for bad input."""
    from . import image_sources
    if name:
        check_name(name)           # before a byte of the archive is read
    try:
        source = image_sources.open_source(path)
        return add_image(source, name, progress=progress, allow_setuid=allow_setuid, store=store)
    except OSError as error:       # an unreadable file, a store we may not write...
        where = error.filename or path
        raise ImageError(f"cannot import {path}: {error.strerror or error} ({where})") from None


def pull(reference: str, name: str | None = None, *, platform_name: str | None = None,
         progress: Progress | None = None, store: Store | None = None,
         may_contact=None) -> Image:
    """Pull from a registry (OCI distribution API); see registry.py.
    ``may_contact(host, port)`` is asked before every connection the pull
    opens (the registry, each redirect, the token realm) and raises to
    refuse one; None: any http(s) host.  A layer blob may bring at most
    what the store's import budget has left."""
    from . import registry
    store = store or Store()
    if name:
        check_name(name)           # before the registry is contacted
    source = registry.source(reference, platform_name=platform_name, may_contact=may_contact,
                             blob_limit=lambda: store.import_budget().limit)
    return add_image(source, name or source.name, progress=progress, replace=True, store=store)


def build(name: str, base: str, script: str, **options) -> Image:
    """A new image: ``script`` run by /bin/sh in a container of ``base``,
    whose writable layer becomes a layer; see image_build.py."""
    from . import image_build
    return image_build.build(name, base, script, **options)


def add_image(source, name: str | None, *, progress: Progress | None = None,
              allow_setuid: bool = False, replace: bool = False,
              store: Store | None = None) -> Image:
    """Store the layers ``source`` offers that the store lacks, then the image."""
    from . import image_sources
    store = store or Store()
    name = _name_for(name, source.name)
    progress = progress or Progress()
    with store.lock():
        if not replace and store.image(name) is not None:
            raise ImageError(f"an image named {name!r} exists: remove it first "
                             f"(images rm {name}) or choose another --name")
        before = set(store.layers())
        try:
            budget = store.import_budget()
            diff_ids = [image_sources.store_layer(store, layer, index, len(source.layers), progress,
                                                  allow_setuid, budget)
                        for index, layer in enumerate(source.layers)]
            return store.write_image(image_sources.image_record(source, name,
                                                                store.visible_layers(diff_ids)))
        except BaseException:
            # the layers this import stored before one failed: no image names them
            store.collect_garbage([d for d in store.layers() if d not in before])
            raise


def _name_for(given: str | None, suggested: str) -> str:
    """The name to store an image under: the one given, else the one its
    archive or reference suggests (less any @digest), each checked."""
    if given:
        return check_name(given)
    suggested = str(suggested or "").split("@")[0]
    try:
        return check_name(suggested)
    except ImageError as error:
        raise ImageError(f"the image would be named {suggested[:80]!r}, which cannot be: "
                         f"give a name with --name ({error})") from None


def remove(name: str, store: Store | None = None) -> list[str]:
    """Remove an image; returns the layers that went with it (those no other
    image uses).  ImageNotFound, or ImageError while a container uses it."""
    if name == HOST:
        raise ImageError("the host image cannot be removed")
    return (store or Store()).remove(name)


def inspect(name: str, store: Store | None = None) -> dict:
    """Everything the store knows of an image, as plain data."""
    store = store or Store()
    store.sweep()
    if name == HOST:
        return {"name": HOST, "source": "the host's /usr and /etc, read-only", "layers": []}
    image = get(name, store)
    info = image.as_json()
    info.pop("config")
    info["size"] = store.size(image)
    info["layers"] = [dict(store.layer_info(d), diff_id=d,
                           shared_with=[n for n in store.users_of(d) if n != name])
                      for d in image.layers]
    return info


def listing(store: Store | None = None) -> list[dict]:
    """One row per image: name, id, layers, size, created, source."""
    store = store or Store()
    store.sweep()
    rows = [{"name": HOST, "id": "-", "layers": 0, "size": None, "created": "-", "source": "host"}]
    for name in store.names():
        image = store.image(name)
        if image is not None:
            rows.append({"name": name, "id": image.id.split(":")[-1][:12], "layers": len(image.layers),
                         "size": store.size(image), "created": image.created, "source": image.source})
    return rows


def describe(info: dict) -> str:
    """inspect's answer as text."""
    lines = [f"{key}: {info[key]}" for key in ("name", "id", "source", "created", "architecture", "os")
             if info.get(key)]
    if info.get("size") is not None:
        lines.append(f"size: {format_size(info['size'])}")
    for key in ("base", "env", "workdir", "cmd", "entrypoint", "user"):
        if info.get(key):
            value = info[key]
            lines.append(f"{key}: {' '.join(value) if isinstance(value, (list, tuple)) else value}")
    for number, layer in enumerate(info.get("layers") or [], 1):
        shared = f", shared with {', '.join(layer['shared_with'])}" if layer.get("shared_with") else ""
        lines.append(f"layer {number}: {layer['diff_id']} ({format_size(layer.get('size'))}{shared})")
    return "\n".join(lines)


def config_digest(config: dict) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(config, sort_keys=True,
                                                 separators=(",", ":")).encode()).hexdigest()
