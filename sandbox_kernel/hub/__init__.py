"""A classroom on JupyterHub: what ``jupyterhub_config.py`` needs.

    from sandbox_kernel.hub import SandboxSpawner, admin_service

    c.JupyterHub.spawner_class = SandboxSpawner        # LocalProcessSpawner + a ceiling
    c.SandboxSpawner.ceiling_memory = "2G"             # per student, all notebooks together
    c.SandboxSpawner.ceiling_cpus = "2"
    c.SandboxSpawner.ceiling_pids = "1024"
    c.SandboxSpawner.kernel_args = ["--memory", "1G", "--cpus", "1"]   # the classroom kernel
    c.JupyterHub.services = [admin_service()]           # /services/sandbox-top/, admins only

The hub runs as root with real system users (PAM, the default authenticator).
Each server starts inside its user's ceiling (``runtime/cgroups/delegation``)
on the sandbox kernel, the only kernel it offers; the ceiling goes when the
server stops.  docs/classroom.md tells the whole set-up.

``spawner`` and ``service`` import JupyterHub; importing this package alone
does not, so that the names resolve lazily.
"""
from __future__ import annotations

import sys

SERVICE_NAME = "sandbox-top"


def admin_service(name: str = SERVICE_NAME, port: int | None = None) -> dict:
    """The ``c.JupyterHub.services`` entry of the admin page: started by the
    hub (as root, to read every user's containers), reached through the hub
    at /services/NAME/."""
    from jupyterhub.utils import random_port
    return {"name": name, "url": f"http://127.0.0.1:{port or random_port()}",
            "command": [sys.executable, "-m", "sandbox_kernel.hub.service"],
            "oauth_no_confirm": True, "display": True}


def __getattr__(name: str):
    if name == "SandboxSpawner":
        from .spawner import SandboxSpawner
        return SandboxSpawner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
