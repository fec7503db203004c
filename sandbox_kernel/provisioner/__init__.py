"""Any kernelspec's kernel in a container: the jupyter_client kernel
provisioner ``sandbox-provisioner`` (provisioner.py), its settings
(settings.py), the private connection directory (connection.py), and the
registry of the kernels it started with their deaths in plain words
(registry.py, deaths.py) for the stats endpoint.  docs/provisioner.md.

Imports the runtime and the session (options, policy, verdicts, stats);
nothing imports this but the server extension and the installer.
"""
from __future__ import annotations


def __getattr__(name: str):
    # the entry point names sandbox_kernel.provisioner:SandboxProvisioner; importing
    # the registry alone (the stats endpoint) must not need jupyter_client
    if name == "SandboxProvisioner":
        from .provisioner import SandboxProvisioner
        return SandboxProvisioner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
