"""How the agent is started on an image.

* ``host``: this very interpreter, ``python -m sandbox_kernel.session.agent``
  (the host image shows the host's venv, IPython included).
* a stored image with python3: the image's own python3 runs the agent, with
  this package bound read-only at /opt/sandbox-kernel and put on PYTHONPATH.
  The image must bring IPython (``pip install ipython`` in a build): a line
  of sh checks that first and says so, rather than a ModuleNotFoundError.
* a stored image without python3: the session cannot start its agent, so
  neither Python cells nor ``--shell`` cells nor ``exec`` (they all go
  through the agent) run there; ``SessionError`` says so and what runs:
  ``sandbox-kernel run --image NAME -- CMD``, or a build on the image.
"""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass

from ..runtime import images
from ..runtime.spec import Mount

PACKAGE_MOUNT = "/opt/sandbox-kernel"
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class AgentLaunch:
    command: tuple[str, ...]
    mounts: tuple[Mount, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


def require_agent(image_name: str) -> None:
    """SessionError now, rather than at the first cell, if the agent cannot run there."""
    if image_name != images.HOST:
        agent_launch(image_name, "sandbox_kernel.session.agent", 0)


def agent_launch(image_name: str, module: str, fd: int) -> AgentLaunch:
    if image_name == images.HOST:
        return AgentLaunch((sys.executable, "-m", module, "--fd", str(fd)))
    image = images.get(image_name)
    python = image.which("python3")
    if python is None:
        from .client import SessionError
        raise SessionError(
            f"image {image_name!r} has no python3, and a session runs its cells through a "
            f"Python agent (IPython) inside the container: use an image with python3 and "
            f"IPython (e.g. build one: sandbox-kernel images build NAME --from {image_name} "
            f"--run '...install python3 and ipython...'), or run shell commands on this image "
            f"with: sandbox-kernel run --image {image_name} -- /bin/sh -c '...'")
    mount = Mount(os.path.realpath(PACKAGE_DIR), f"{PACKAGE_MOUNT}/sandbox_kernel", read_only=True)
    env = (("PYTHONPATH", PACKAGE_MOUNT), ("PYTHONDONTWRITEBYTECODE", "1"))
    agent = (python, "-m", module, "--fd", str(fd))
    shell = image.which("sh")
    if shell is None:
        return AgentLaunch(agent, (mount,), env)
    check = (f"{shlex.quote(python)} -c 'import importlib.util as u, sys; "
             f"sys.exit(u.find_spec(\"IPython\") is None)' || {{ echo 'sandbox-kernel: image "
             f"{image_name} has python3 but no IPython, which the session agent needs: "
             f"install it in the image (pip install ipython)' >&2; exit 3; }}; exec \"$@\"")
    return AgentLaunch((shell, "-c", check, "sh", *agent), (mount,), env)
