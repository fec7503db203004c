"""The environment a container's workload starts with: its variables, and
its PATH as the owner's directories are seen inside.

The owner's PATH entries are kept where the same directory is inside (the
host image's directories, declared mounts, --workspace), rewritten where a
mount shows it elsewhere, and dropped otherwise; the image's PATH (or the
usual directories) follows.  $SHELL is the owner's where it is seen inside.

Imports: image_store (the image's ENV, HOST), rootfs (host_image_dirs),
cgroups.cpus and spec.
"""
from __future__ import annotations

import os
import sys

from . import image_store, rootfs
from .cgroups.cpus import thread_environment
from .spec import ContainerSpec

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def workload_environment(spec: ContainerSpec, host_path: str | None = None) -> dict:
    """The workload's whole environment (nothing of the owner's but what is
    named here): the usual variables, the image's ENV, PATH (inside_path),
    SHELL, the spec's env, and thread pool sizes for its cpus limit.
    ``host_path``: the owner's PATH to start from (default: os.environ's)."""
    env = {"HOME": "/home/sandbox", "USER": "sandbox", "LOGNAME": "sandbox",
           "HOSTNAME": spec.hostname, "LANG": "C.UTF-8", "TERM": os.environ.get("TERM", "dumb")}
    image_env = image_store.environment(spec.image)  # a stored image's ENV and PATH; {} for host
    env.update(image_env)
    env["PATH"] = inside_path(os.environ.get("PATH", "") if host_path is None else host_path,
                              spec, image_env.get("PATH"))
    # The owner's login shell ($SHELL: %%bash, tools that start a shell) where
    # its directory is seen inside, as the host spells it when that resolves
    # the same inside (the host image keeps the host's /bin -> usr/bin), else
    # where the mount shows it; elsewhere the shell every image has.
    shell = os.environ.get("SHELL", "")
    seen_at = inside_path(os.path.dirname(shell), spec, "") if os.path.isabs(shell) \
        and os.path.isfile(shell) else ""
    if not seen_at:
        env.setdefault("SHELL", "/bin/sh")
    elif _on_host_files(spec.image) and os.path.realpath(os.path.dirname(shell)) == seen_at:
        env.setdefault("SHELL", shell)
    else:
        env.setdefault("SHELL", os.path.join(seen_at, os.path.basename(shell)))
    env.update(dict(spec.env))
    # thread pools sized to the cpus limit, unless the user or the image chose
    for name, value in thread_environment(spec.limits.cpus).items():
        env.setdefault(name, value)
    return env


def inside_path(host_path: str, spec: ContainerSpec, image_path: str | None = None) -> str:
    """The container's PATH: on the host image the interpreter's venv bin
    first; then the owner's (the kernel's) absolute PATH entries that exist
    inside as the host's own directories, in their order; then the image's
    defaults (its PATH, or the usual directories), without duplicates.  Inside are
    the host image's directories (host_image_dirs: /usr, the interpreter's
    prefix and venv...) and the mounts (the notebook's directory, --mount,
    --workspace); an entry elsewhere (~/.local/bin, a pyenv shims directory
    not below a mount) does not exist there and is dropped, and so is a
    relative one ('' or '.': the working directory)."""
    shown = [(m.target, m.source) for m in spec.mounts if m.on_path]
    if spec.workspace:
        shown.append(("/workspace", spec.workspace))
    if _on_host_files(spec.image):
        shown += [(d, d) for d in rootfs.host_image_dirs()]
    entries = [_inside(entry, shown) for entry in host_path.split(":") if os.path.isabs(entry)]
    first = []
    if image_path is None:
        image_path = DEFAULT_PATH
        if sys.prefix != sys.base_prefix and _on_host_files(spec.image):
            # python3 and pip inside are the kernel's own interpreter, as in an
            # activated venv, even where the caller's PATH names the system's first
            first = [os.path.join(sys.prefix, "bin")]
    defaults = [p for p in image_path.split(":") if p]
    return ":".join(dict.fromkeys(e for e in first + entries + defaults if e))


def _inside(entry: str, shown: list[tuple[str, str]]) -> str | None:
    """The path inside at which the host directory ``entry`` is seen, or None:
    the entry itself when it lies below a shown target, else where its real
    path (through the host's symlinks) lies below a shown source."""
    entry = os.path.normpath(entry)
    for target, source in shown:
        if _under(entry, target) and os.path.isdir(source + entry[len(target):]):
            return entry
    real = os.path.realpath(entry)
    for target, source in shown:
        if _under(real, source) and os.path.isdir(real):
            return os.path.normpath(target + real[len(source):])
    return None


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _on_host_files(name: str) -> bool:
    """The host image, or an image built on it: the host's directories are inside."""
    if name == image_store.HOST:
        return True
    image = image_store.load(name)
    return image is not None and image.base == image_store.HOST
