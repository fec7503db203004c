"""What a session's zygote imports, and its start ahead of everything else.

The zygote (runtime/zygote.py) imports the agent's module (IPython) in a
process of its own: started first, before a kernel imports ipykernel or
the magics import the session's modules, it does so while they do, and
the first container finds it ready.  This module imports only the
runtime's zygote module, and only when called.
"""
from __future__ import annotations

AGENT_MODULE = "sandbox_kernel.session.agent"
ZYGOTE_PRELOAD = (AGENT_MODULE,)     # what the zygote this process starts imports


def start_zygote() -> None:
    """Start this process's zygote now (nothing if it runs already, or if
    SANDBOX_KERNEL_ZYGOTE=0)."""
    from ..runtime import zygote
    if zygote.enabled():
        zygote.shared(preload=ZYGOTE_PRELOAD)
