"""Images a container can be started from: the face the CLI, the session and
the tests use (import, pull, build, remove, inspect, list).

``host`` is the default and is not stored: the host's /usr and /etc and the
running interpreter, read-only under a writable layer (rootfs.host_image_plan).
Every other image lives in the store (image_store.py: its layout, Image,
Store, and what a container's start asks of it; image_basics.py: names,
errors, quota).  The writers build on the store: image_sources.py reads
what can be imported, registry.py pulls, image_build.py runs a script in a
container of the base image, layers.py unpacks a layer as hostile input.

This module may import every image module; none of them imports it.  It
imports the writers inside the functions that use them, so that a process
that only starts containers does not load tarfile and urllib.request.

    from sandbox_kernel.runtime import images
    images.import_image("busybox.tar", name="busybox")   # rootfs tar, OCI layout, docker save
    images.pull("127.0.0.1:5000/busybox:latest")           # registry.py
    images.build("busybox-curl", "busybox", "echo hi > /hello")   # image_build.py
    images.build("tools", "host", "pip install ./wheels/x.whl")    # layers over the host's dirs
    images.available()                                     # ["host", "busybox", ...]
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

# The store's names, re-exported: the CLI, the session, the kernel's settings and
# the tests read them here (images.HOST, images.Store, images.load, ...).
from .image_basics import (  # noqa: F401
    DEFAULT_PATH, DEFAULT_QUOTA, FREE_RESERVE, HOST, NAME_MAX, NAME_RULE, OWN_ENV, QUOTA_ENV,
    STORE_ENV, BuildError, ImageError, ImageNotFound, Progress, check_name, config_digest,
    format_size, host_architecture, now, store_quota, store_root)
from .image_store import (  # noqa: F401
    Image, Store, available, containers_using, environment, get, layer_root, load, resolve)

if TYPE_CHECKING:
    from .image_manifests import LayerBlob, Source
    from .layers import Budget


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
            diff_ids = [store_layer(store, layer, index, len(source.layers), progress,
                                    allow_setuid, budget)
                        for index, layer in enumerate(source.layers)]
            return store.write_image(image_record(source, name, store.visible_layers(diff_ids)))
        except BaseException:
            # the layers this import stored before one failed: no image names them
            store.collect_garbage([d for d in store.layers() if d not in before])
            raise


def store_layer(store: Store, blob: LayerBlob, index: int, count: int, progress: Progress,
                allow_setuid: bool, budget: Budget | None = None) -> str:
    """The layer's diff_id, unpacking it unless the store has it.  Lock held."""
    from . import layers
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

