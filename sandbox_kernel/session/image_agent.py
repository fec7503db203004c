"""How the agent is started on an image.

* ``host``: this very interpreter, ``python -m sandbox_kernel.session.agent``
  (the host image shows the host's venv, IPython included).
* an image built FROM host: as the host (its layers lie over the host's
  directories, the venv included: what its build pip-installed imports).
* a stored image with python3: the image's own python3 runs
  ``plain_agent``, with this package bound read-only at /opt/sandbox-kernel
  and put on PYTHONPATH.  If the image has IPython, plain_agent hands over
  to the full agent (rich output as on the host); if not, it serves the
  cells itself with the standard library and says once that rich output
  needs IPython in the image.
* a stored image without python3: plain_agent ``--shell-only`` runs on the
  host's own python3, whose /usr is bound read-only at /opt/sandbox-kernel/usr
  (never on the image's PATH) and started through the host's dynamic loader
  with the host's libraries, so it needs nothing of the image.  It runs
  commands only (``%%container --shell``, ``%container exec``); a Python
  cell gets one clear error.  The host image already shows the host's /usr
  to every container: this binds nothing a host-image container lacks.
"""
from __future__ import annotations

import os
import struct
import sys
from dataclasses import dataclass

from ..runtime import images
from ..runtime.spec import Mount

PACKAGE_MOUNT = "/opt/sandbox-kernel"
HOST_USR_MOUNT = f"{PACKAGE_MOUNT}/usr"
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLAIN_AGENT = "sandbox_kernel.session.plain_agent"
PT_INTERP = 3


@dataclass(frozen=True)
class AgentLaunch:
    command: tuple[str, ...]
    mounts: tuple[Mount, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


def require_agent(image_name: str) -> None:
    """SessionError now, rather than at the first cell, if no agent can run there."""
    if image_name != images.HOST:
        agent_launch(image_name, "sandbox_kernel.session.agent", 0)


def agent_launch(image_name: str, module: str, fd: int) -> AgentLaunch:
    if image_name == images.HOST:
        return AgentLaunch((sys.executable, "-m", module, "--fd", str(fd)))
    image = images.get(image_name)
    if image.base == images.HOST:      # built FROM host: the host's python and venv, with its layers
        return AgentLaunch((sys.executable, "-m", module, "--fd", str(fd)))
    # on_path=False: the agent's own files, never where the caller's PATH is looked up
    package = Mount(os.path.realpath(PACKAGE_DIR), f"{PACKAGE_MOUNT}/sandbox_kernel", read_only=True,
                    on_path=False)
    env = (("PYTHONPATH", PACKAGE_MOUNT), ("PYTHONDONTWRITEBYTECODE", "1"))
    arguments = ("-m", PLAIN_AGENT, "--fd", str(fd), "--image", image_name, "--agent", module)
    python = image.which("python3")
    if python is not None:
        return AgentLaunch((python, *arguments), (package,), env)
    host = host_python()
    if host is None:
        from .errors import SessionError
        raise SessionError(
            f"image {image_name!r} has no python3, and this host's python3 cannot stand in "
            f"for it (it must live under /usr with its dynamic loader): run commands on this "
            f"image with: sandbox-kernel run --image {image_name} -- /bin/sh -c '...'")
    loader, library_path, interpreter = host
    usr = Mount("/usr", HOST_USR_MOUNT, read_only=True, on_path=False)
    command = (loader, "--library-path", library_path, interpreter, "-S", *arguments, "--shell-only")
    return AgentLaunch(command, (package, usr), env + (("PYTHONHOME", HOST_USR_MOUNT),))


def host_python() -> tuple[str, str, str] | None:
    """(loader, library path, interpreter) as seen inside a container that
    has the host's /usr at HOST_USR_MOUNT; None if the host's python3 is not
    a dynamically linked one under /usr (then it cannot be borrowed)."""
    for candidate in (os.path.realpath(os.path.join(sys.base_prefix, "bin", "python3")),
                      os.path.realpath("/usr/bin/python3")):
        if not candidate.startswith("/usr/") or not os.access(candidate, os.X_OK):
            continue
        loader = elf_interpreter(candidate)
        loader = os.path.realpath(loader) if loader else None
        if loader is None or not loader.startswith("/usr/"):
            continue
        inside = lambda path: HOST_USR_MOUNT + path[len("/usr"):]   # noqa: E731
        library_dirs = [os.path.dirname(loader), "/usr/lib"]
        return inside(loader), ":".join(map(inside, library_dirs)), inside(candidate)
    return None


def elf_interpreter(path: str) -> str | None:
    """The PT_INTERP of a 64-bit little-endian ELF file (its dynamic loader)."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(64)
            if header[:6] != b"\x7fELF\x02\x01":
                return None
            phoff, = struct.unpack_from("<Q", header, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
            handle.seek(phoff)
            table = handle.read(phentsize * phnum)
            for index in range(phnum):
                kind, = struct.unpack_from("<I", table, index * phentsize)
                if kind == PT_INTERP:
                    offset, = struct.unpack_from("<Q", table, index * phentsize + 8)
                    size, = struct.unpack_from("<Q", table, index * phentsize + 32)
                    handle.seek(offset)
                    return handle.read(size).rstrip(b"\0").decode()
    except (OSError, struct.error, UnicodeDecodeError):
        return None
    return None
