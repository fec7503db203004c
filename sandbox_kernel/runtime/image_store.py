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

This module is the store's bottom half: what a container needs to start on
an image (container.py, rootfs.py) and what the writers share.  It imports
image_basics, layer_holds (who stacks a layer), cleanup (the sweep), safe_fs
and layers (an import's Budget); never container, image_build,
image_sources or registry, which build on it.  images.py is the face.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import safe_fs
from .image_basics import (DEFAULT_PATH, FREE_RESERVE, HOST, OWN_ENV, QUOTA_ENV, ImageError,
                           ImageNotFound, check_name, digest_parts, format_size, is_name, now,
                           store_quota, store_root)
# a container's mountinfo names no layer (issue 14 item 10): its launcher holds them
from .layer_holds import containers_stacking as containers_using

if TYPE_CHECKING:
    from .layers import Budget


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
    return os.path.join(store_root, "layers", *digest_parts(diff_id), "root")



# ---------------------------------------------------------------------------
# The store


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
        path = self._path("tmp", f"sbk-{os.getpid()}-{kind}-{_token()}")
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
        return self._path("layers", *digest_parts(diff_id))

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
        import urllib.parse   # here: a start from the host image never names a stored one
        return self._path("images", urllib.parse.quote(check_name(name), safe="") + ".json")

    def names(self) -> list[str]:
        """The names of the images here (files whose name is not a valid one are skipped)."""
        directory = self._path("images")
        if not os.path.isdir(directory):
            return []
        import urllib.parse
        found = (urllib.parse.unquote(entry[:-5]) for entry in os.listdir(directory)
                 if entry.endswith(".json"))
        return sorted(name for name in found if is_name(name))

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
        temp = self._path("tmp", f"sbk-{os.getpid()}-image-{_token()}.json")
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
            doomed = self._path("tmp", f"sbk-{os.getpid()}-rm-{_token()}")
            os.rename(self.layer_dir(diff_id), doomed)   # gone from the store at once
            _remove_tree(doomed)
            removed.append(diff_id)
        return removed

    def users_of(self, diff_id: str) -> list[str]:
        return [n for n in self.names() if (img := self.image(n)) and diff_id in img.layers]



def _token() -> str:
    """secrets.token_hex(4), without importing secrets (hmac, hashlib: ~4 ms of
    every start's imports): os.urandom is where secrets takes its bytes."""
    return os.urandom(4).hex()


def _write_json(path: str, data) -> None:
    with open(path, "w") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.write("\n")


def _remove_tree(path: str) -> None:
    """Remove a work directory or a layer: iteratively (a layer a build made
    can be any depth), entering 0500 directories, never following a link.
    What cannot be removed is logged by safe_fs and left in tmp/."""
    safe_fs.remove_tree(path)


# ---------------------------------------------------------------------------
# What a container's start asks of the store


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

