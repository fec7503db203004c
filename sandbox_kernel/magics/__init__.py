"""The IPython extension: ``%load_ext sandbox_kernel``, then ``%%container``
and ``%container`` (see magics.py).

One ``Sessions`` per IPython process: loading the extension again keeps the
sessions.  Loading it starts the zygote and one container ahead (the warm
pool, ``Sessions.warm_up``) for the first session.  They are destroyed when the kernel is asked to shut down (a hook
in ipykernel's do_shutdown), at exit (atexit) and when the extension is
unloaded; if the kernel is killed, each container's
launcher sees its lifeline close and removes the container itself.  The
containers' comms (widgets) are relayed as the kernel's own (comm_relay.py).
"""
from __future__ import annotations

import atexit
import inspect
import sys
from typing import TYPE_CHECKING

from ..session.preload import start_zygote

if TYPE_CHECKING:
    from ..session.commands import Sessions

_sessions: Sessions | None = None
_magics = None
_relay = None


def sessions() -> Sessions:
    """The sessions of this process (created on first use)."""
    global _sessions
    if _sessions is None:
        from ..session.commands import Sessions
        _sessions = Sessions()
        atexit.register(_sessions.close_all)
    return _sessions


def load_ipython_extension(ip) -> None:
    global _magics
    # the zygote imports the agent (IPython) in its own process while this
    # one imports the session's modules (~0.1 s each): a cell sent at once
    # after %load_ext finds it ready sooner (session/preload.py)
    start_zygote()
    from ..panel import channel_for_shell
    from ..session import labels
    from ..session.commands import Sessions  # noqa: F401 -- the heavy imports, after the zygote's start
    from .magics import ContainerMagics
    if _magics is not None:
        unload_transformer(ip)
    _magics = ContainerMagics(ip, sessions())
    kernel_app = getattr(getattr(ip, "kernel", None), "parent", None)
    labels.label_process(kind="magics", kernel_id=labels.kernel_id_of(getattr(kernel_app, "connection_file", None)))
    _magics.stats_channel = channel_for_shell(ip, lambda: list(sessions().sessions.values()))
    ip.register_magics(_magics)
    ip.input_transformers_cleanup.append(_magics.auto_transformer)
    _close_before_kernel_shutdown(getattr(ip, "kernel", None))
    _relay_comms(getattr(ip, "kernel", None), sessions())
    _warm_up(sessions())


def _relay_comms(kernel, registry: Sessions) -> None:
    """The containers' comms (widgets in %%container cells) as the kernel's
    own (session/comm_relay.py): every session of ``registry``, the ones to
    come included.  Not without an ipykernel (a terminal IPython)."""
    global _relay
    if kernel is None or getattr(kernel, "comm_manager", None) is None:
        return
    from ..session.comm_relay import CommRelay
    if _relay is None or _relay.kernel is not kernel:
        _relay = CommRelay(kernel, kernel.comm_manager)
    _relay.register_targets()
    registry.factory = _relay.attaching(registry.factory)
    for session in [*registry.sessions.values(), *registry.pool]:
        _relay.attach(session)


def _warm_up(registry: Sessions) -> None:
    """Start the first session's container now, in the background, so that
    the first %%container cell finds it running (commands.Sessions.warm_up;
    SANDBOX_KERNEL_POOL=0 turns it off)."""
    from ..session.commands import UsageError, pool_size
    try:
        size = pool_size()
    except UsageError as error:
        print(f"sandbox_kernel: {error}; no container is started ahead", file=sys.stderr)
        return
    registry.warm_up(size)


def _close_before_kernel_shutdown(kernel) -> None:
    """ipykernel answers a shutdown request by terminating its child
    processes (SIGTERM, then SIGKILL) and may never run atexit: the
    containers' launchers would die before removing their cgroups.  So the
    sessions are closed first, in the kernel's do_shutdown."""
    if kernel is None or getattr(kernel, "_sandbox_kernel_hooked", False):
        return
    original = kernel.do_shutdown

    async def do_shutdown(restart):
        sessions().close_all()
        result = original(restart)
        return (await result) if inspect.isawaitable(result) else result

    kernel.do_shutdown = do_shutdown
    kernel._sandbox_kernel_hooked = True


def unload_transformer(ip) -> None:
    if _magics is not None:
        _magics.stats_channel.close()
    if _magics is not None and _magics.auto_transformer in ip.input_transformers_cleanup:
        ip.input_transformers_cleanup.remove(_magics.auto_transformer)


def unload_ipython_extension(ip) -> None:
    """Destroy every container and stop sending cells to one."""
    global _magics
    unload_transformer(ip)
    if _sessions is not None:
        _sessions.auto = None
        _sessions.close_all()
    _magics = None
