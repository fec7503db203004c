"""The policy's values: limits as typed and as shown, registries, image
references and import directories as the installer gives them, and whether
an image is on the host's files.

Part of the sandbox kernel's policy (policy.py says what it is, and lists its parts).

Imports runtime.images, runtime.spec and session.stats (its formats).
"""
from __future__ import annotations

import os

from ..runtime import images
from ..runtime.spec import SpecError, parse_pids
from . import options, stats as stats_contract

NO_LIMIT = options.NO_LIMIT
DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")


def parse_limit(setting: str, text):
    """A limit as typed; None for no limit ("", none, unlimited).  The
    limits are read as the kernel's settings read them (options.parse)."""
    if text is None or str(text).strip().lower() in NO_LIMIT:
        return None
    if setting == "sessions":
        return _parse_count(text)
    return options.parse(setting, text, options.KERNEL)


def _parse_count(text) -> int:
    """A number of sessions: a whole number of at least 1, read as --pids
    reads one (parse_limit has taken "" and none out already)."""
    try:
        return parse_pids(text)
    except SpecError:
        raise SpecError("sessions", text, "a whole number of at least 1, e.g. 1") from None


def show(setting: str, value) -> str:
    if value is None:
        return "no limit"
    if setting in ("memory", "disk"):
        return stats_contract.format_bytes(value)
    if setting == "timeout":
        return stats_contract.format_seconds(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def typed(setting: str, value) -> str:
    """A value as an install option takes it: 100G, 512M, 2.5, 30s."""
    if setting in ("memory", "disk"):
        mib = -(-value // (1 << 20))
        return f"{mib >> 10}G" if mib % 1024 == 0 else f"{mib}M"
    if setting == "timeout":
        return f"{value:g}s"
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_reference(name: str) -> str:
    """An image name as the store takes it (no '..', no odd characters), or
    host; PolicyRefused-free: the store's own one-line ImageError."""
    if name == images.HOST:
        return name
    return images.check_name(name)


def normal_registry(text: str) -> str:
    """host[:port], lower case; Docker Hub's aliases are one."""
    value = str(text).strip().lower().rstrip("/")
    if not value or "/" in value or "@" in value or any(c.isspace() for c in value):
        raise SpecError("registry", text, "HOST or HOST:PORT, e.g. 127.0.0.1:5000 or docker.io")
    return "registry-1.docker.io" if value in DOCKER_HUB_ALIASES else value


def real_dir(path: str) -> str:
    """An import directory as the installer gives it: absolute, existing; its real path."""
    if not os.path.isabs(path):
        raise SpecError("import dir", path, "an absolute path of a directory, e.g. /srv/images")
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        raise SpecError("import dir", path, f"an existing directory ({real} is not one)")
    return real


def on_host(name: str) -> bool:
    """The host image, or an image built on it (its layers go over the host's dirs)."""
    if name == images.HOST:
        return True
    image = images.load(name)
    return image is not None and image.base == images.HOST


def below(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


