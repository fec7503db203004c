"""The vocabulary every image module shares: what names an image may have,
the errors the store raises, where the store is and how much it may hold,
and the Progress an import reports to (a no-op; the terminal's bars and
lines are sandbox_kernel/progress.py, outside the runtime).

The bottom of the image modules: it imports nothing of the project, so that
any of them (image_store, layers, image_sources, registry, image_build,
images) and cleanup may import it.
"""
from __future__ import annotations

import json
import os
import re

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
# compiled at its first use (re caches it): a start from the host image names no stored one
_NAME = rf"(?:{_HOST}(?::[0-9]{{1,5}})?/)?{_COMPONENT}(?:/{_COMPONENT})*(?::{_TAG})?"
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


def format_size(count: int | None) -> str:
    if count is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)



# ---------------------------------------------------------------------------
# Names, digests, the store's root and quota


def digest_parts(digest: str) -> tuple[str, str]:
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
    if not re.fullmatch(_NAME, name):
        raise ImageError(f"invalid image name {name!r}: {NAME_RULE}")
    if name == HOST:
        raise ImageError("'host' is the host image; choose another name")
    return name



def is_name(name: str) -> bool:
    """Whether ``name`` follows the grammar (what Store.names keeps of its files)."""
    return bool(re.fullmatch(_NAME, name)) and len(name) <= NAME_MAX


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
    machine = os.uname().machine   # platform.machine(), without importing platform
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)


def now() -> str:
    import datetime   # here: the run path of a container never needs it (~1.5 ms)
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")



def store_root() -> str:
    if os.environ.get(STORE_ENV):
        return os.path.abspath(os.environ[STORE_ENV])
    if os.geteuid() == 0:
        return "/var/lib/sandbox-kernel"
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(data, "sandbox-kernel")


def config_digest(config: dict) -> str:
    import hashlib   # here: only a store's writers need it (~3 ms of a start's imports)
    return "sha256:" + hashlib.sha256(json.dumps(config, sort_keys=True,
                                                 separators=(",", ":")).encode()).hexdigest()
