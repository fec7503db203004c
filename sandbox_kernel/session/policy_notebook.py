"""The notebook's directory in a new session: which directory is mounted
(the notebook's, or a root above it), how (rw, ro, overlay, none), and the
directories that never are (the root, system trees, home directories).

Part of the sandbox kernel's policy (policy.py says what it is, and lists its parts).

Imports runtime.spec and policy_values.
"""
from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

from ..runtime.spec import Mount, SpecError
from .policy_values import below

# how the notebook's directory is in the container (see Policy.notebook_mount)
NOTEBOOK_DIR_MODES = ("overlay", "ro", "rw", "none")
NOTEBOOK_DIR_WORDS = {"overlay": "read-only; writes stay in the container", "ro": "read-only",
                      "rw": "read-write", "none": "not mounted"}
# never a notebook's directory, whatever the policy: the whole host, or its
# system, shared or per-user trees; also below these
SYSTEM_TREES = ("/proc", "/sys", "/dev", "/boot", "/etc", "/run", "/usr", "/bin", "/sbin", "/lib",
                "/lib32", "/lib64", "/libx32")
SYSTEM_DIRS = ("/", "/var", "/var/tmp", "/var/lib", "/home", "/root", "/tmp", "/opt", "/srv", "/mnt",
               "/media", "/snap", "/nix")


@dataclass(frozen=True)
class NotebookDir:
    """The notebook's directory in a new session (Policy.notebook_mount)."""
    mount: Mount | None          # None: not mounted
    workdir: str | None          # the cells' working directory; None: a fresh /workspace
    words: str                   # for %container status


def notebook_dir_for(path: str | None, *, mode: str, root: str | None,
                     policy_name: str) -> NotebookDir:
    """How the notebook's directory ``path`` (the kernel's working
    directory) is in the container: a Mount at the same path, the cells'
    working directory, and the words for %container status.  ``rw``:
    read-write, and what the cells write is the host's; ``ro``:
    read-only; ``overlay``: read-only, with a writable layer in the
    container (what the cells write stays there and counts against
    --disk); ``none``: not there.  With a notebook root (an installer's
    directory the notebook's is below, or "parent": the one above it)
    that root is mounted instead, so that ``../images`` resolves as on
    the host; the working directory stays the notebook's.  The files
    show as the workload's where they are the kernel's user's
    (map_owner; an idmapped mount, as root).  Never the whole host, a
    system directory or a home directory itself (its keys, shell
    start-up files and Jupyter's connection files): cells then start in
    a fresh /workspace and the words say why."""
    fresh = "cells start in a fresh /workspace"
    if mode == "none":
        return NotebookDir(None, None, f"not mounted (the {policy_name} policy's notebook_dir none): "
                                       f"{fresh}")
    if not path:
        return NotebookDir(None, None, f"not mounted (the kernel's directory is unknown): {fresh}")
    real = os.path.realpath(path)
    why = unsafe_directory(real)
    if why is not None:
        return NotebookDir(None, None, f"not mounted: {real} is {why}: {fresh}; keep the notebook "
                                       f"in a folder of its own")
    root = _root_of(real, root)
    mount = Mount(root, root, read_only=mode == "ro",
                  overlay=mode == "overlay", map_owner=(os.geteuid(), os.getegid()))
    words = f"{real} ({NOTEBOOK_DIR_WORDS[mode]})"
    if root != real:
        words += f", in {root}, mounted whole"
    return NotebookDir(mount, real, words)


def _root_of(real: str, notebook_root: str | None) -> str:
    """The directory to mount for the notebook's directory ``real``."""
    if notebook_root == "parent":
        parent = os.path.dirname(real)
        return parent if unsafe_directory(parent) is None else real
    if notebook_root is not None and below(real, notebook_root):
        return notebook_root
    return real


def parse_notebook_root(text) -> str:
    """'parent', or an absolute directory that may be mounted whole: its real path."""
    value = str(text).strip()
    if value == "parent":
        return value
    accepted = ("parent (the notebook's directory's parent) or an absolute directory, not the "
                "root, a system or a home directory, e.g. /srv/course")
    if not os.path.isabs(value) or not os.path.isdir(value):
        raise SpecError("notebook root", text, accepted)
    real = os.path.realpath(value)
    if unsafe_directory(real) is not None:
        raise SpecError("notebook root", text, accepted)
    return real


def parse_notebook_dir(text) -> str:
    value = str(text).strip().lower()
    if value not in NOTEBOOK_DIR_MODES:
        raise SpecError("notebook dir", text, "overlay (read-only, writes stay in the container), "
                        "ro (read-only), rw (read-write) or none (not mounted)")
    return value


def unsafe_directory(real: str) -> str | None:
    """Why the real path ``real`` may not be a notebook's directory in a
    container, or None: the root, a system directory or tree, a home directory."""
    if real in SYSTEM_DIRS:
        return "the root" if real == "/" else "a system directory"
    if any(below(real, tree) for tree in SYSTEM_TREES):
        return "a system directory"
    if real in home_directories():
        return "a home directory"
    return None


def home_directories() -> set[str]:
    """The kernel's user's home (passwd and $HOME), as real paths."""
    homes = set()
    try:
        homes.add(pwd.getpwuid(os.geteuid()).pw_dir)
    except KeyError:
        pass   # a uid without a passwd entry (a container's): $HOME only
    if os.environ.get("HOME"):
        homes.add(os.environ["HOME"])
    return {os.path.realpath(h) for h in homes if os.path.isabs(h)}

