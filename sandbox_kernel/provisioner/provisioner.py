"""SandboxProvisioner: any kernelspec's kernel in a container.

A jupyter_client kernel provisioner (jupyter_client 7+, the entry point
``sandbox-provisioner``): the kernel manager asks it to start, signal, wait
for and stop the kernel process, and it does each to a runtime Container
instead of a local process::

    kernel manager                 SandboxProvisioner                  container (--net none)
    pre_start_kernel  -> pre_launch    settings checked; transport ipc in a private
                                       directory; the kernel's connection file
    launch_kernel     -> launch_kernel Container(argv of the kernelspec).start()    -> init -> kernel
    is_alive/restarter-> poll          the container's end, judged once: a Death
    interrupt_kernel  -> send_signal   SIGINT through the launcher and init         -> kernel
                         (interrupt_mode "signal"; "message" goes over the control socket)
    shutdown_kernel   -> shutdown_requested, terminate/kill, wait, cleanup (destroy)

The kernel's connection (connection.py): ipc sockets in a directory only
the server's user and the kernel can enter, bound into the container, and
moved once bound where only the server can (so the server never follows a
link the kernel made); the HMAC key is in the two connection files only.  Limits, image, network and
the notebook's directory (settings.py): the installer's, checked by the
session layer's parsers and policy.  The kernel's environment: the
runtime's clean one, the kernelspec's ``env`` and JPY_SESSION_NAME; never
the server's own (a hub's API token lives there).

If the server dies, even by SIGKILL, its containers go: each Container's
launcher holds the read end of a pipe whose write end only the server
holds (the runtime's lifeline, launcher.py), and kills the container and
removes its cgroup when it reads EOF.

Deaths (a container that ended without the manager asking) go to the
registry (registry.py) in plain words (deaths.py) for the stats endpoint.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from typing import Any

from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from traitlets import Unicode
from traitlets.config import LoggingConfigurable

from ..runtime import spawn, zygote
from ..runtime.container import Container, LifecycleError, State
from . import deaths, registry, settings
from .connection import ConnectionDir

KEPT_ENV = ("JPY_SESSION_NAME",)     # of the manager's environment, besides the kernelspec's env
POLL_INTERVAL = 0.1
CLAIM_TIMEOUT = 60.0      # from the container's start to the kernel's five sockets bound
ZYGOTE_PRELOAD_MODULE = "sandbox_kernel.provisioner.zygote_preload"


def _settings_traits() -> type:
    """A configurable with one Unicode trait per setting (settings.py), so
    that ``c.SandboxProvisioner.memory = "2G"`` works in a server's config
    file and the kernelspec's ``config`` sets them too."""
    names = (*settings.SETTINGS, *settings.POLICY_SETTINGS)
    traits = {name: Unicode(None, allow_none=True, config=True,
                            help=f"{name} of the kernel's container, as sandbox-kernel install --wrap "
                                 "takes it (sandbox_kernel/provisioner/settings.py)")
              for name in names}
    return type("SandboxProvisionerSettings", (LoggingConfigurable,), traits)


class SandboxProvisioner(KernelProvisionerBase, _settings_traits()):
    """The kernelspec's kernel in a container with the installer's limits and policy."""

    container: Container | None = None
    _dir: ConnectionDir | None = None
    _plan: settings.Plan | None = None
    _asked_to_end = False       # shutdown, terminate or kill asked by the manager: no Death
    _judged = False             # this container's end was looked at

    # -- what the manager asks -----------------------------------------------------

    @property
    def has_process(self) -> bool:
        return self.container is not None

    async def poll(self) -> int | None:
        """None while the kernel runs, else its exit code (the end is judged once)."""
        container = self.container
        if container is None:
            return 0
        if container.state is State.RUNNING and container.poll() is None:
            return None
        return self._judge_end(container)

    async def wait(self) -> int | None:
        """Until the kernel has ended (the manager bounds it with its own timeout)."""
        while (code := await self.poll()) is None:
            await asyncio.sleep(POLL_INTERVAL)
        return code

    async def send_signal(self, signum: int) -> None:
        container = self.container
        if container is None or container.state is not State.RUNNING:
            return
        if signum == signal.SIGKILL:
            container.kill()
            return
        try:
            container.signal(signum)      # the launcher forwards it to init, init to the kernel
        except (LifecycleError, ProcessLookupError):
            pass                          # ended meanwhile: poll() tells

    async def kill(self, restart: bool = False) -> None:
        self._asked_to_end = True
        if self.container is not None and self.container.state is State.RUNNING:
            self.container.kill()

    async def terminate(self, restart: bool = False) -> None:
        self._asked_to_end = True
        await self.send_signal(signal.SIGTERM)

    async def shutdown_requested(self, restart: bool = False) -> None:
        self._asked_to_end = True      # the kernel will exit by itself after shutdown_request

    async def cleanup(self, restart: bool = False) -> None:
        """The container goes; at the last shutdown the connection directory and the entry too."""
        container, self.container = self.container, None
        if container is not None:
            await asyncio.to_thread(container.destroy)
        kernel = registry.get(self.kernel_id)
        if kernel is not None:
            kernel.container = None
        if not restart:
            self._forget_directory()
            registry.remove(self.kernel_id)

    # -- the start ---------------------------------------------------------------------

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Check the settings, make the connection directory, point the manager at it."""
        km = self.parent
        if km is None:
            raise RuntimeError("sandbox-provisioner: needs the kernel manager that made it (its parent)")
        self._plan = settings.plan(self._settings())
        if self._dir is None:
            self._dir = ConnectionDir(_kernel_owner())
        km.transport = "ipc"
        km.ip = self._dir.host_ip
        env = kwargs.get("env") or {}
        km.write_connection_file(jupyter_session=env.get("JPY_SESSION_NAME", ""))
        self.connection_info = km.get_connection_info()
        cmd = km.format_kernel_cmd(extra_arguments=kwargs.pop("extra_arguments", []))
        return await super().pre_launch(cmd=cmd, **kwargs)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> dict:
        inside = self._dir.write(self.connection_info)
        host_file = self.parent.connection_file
        command = [arg.replace(host_file, inside) if host_file else arg for arg in cmd]
        spec = settings.container_spec(self._plan, command, cwd=kwargs.get("cwd"),
                                       env=self._kernel_env(kwargs.get("env") or {}),
                                       kernel_dir=self._dir.host_dir, labels=self._labels())
        _warm_zygote(spec)
        container = Container(spec, stdin=subprocess.DEVNULL)
        try:
            await asyncio.to_thread(container.start)     # a failed start destroys what it made
            # the server connects only to sockets moved where the kernel cannot write (connection.py)
            await asyncio.to_thread(self._dir.claim, self.connection_info,
                                    lambda: container.state is State.RUNNING and container.poll() is None,
                                    CLAIM_TIMEOUT)
        except BaseException:
            await asyncio.to_thread(container.destroy)
            if registry.get(self.kernel_id) is None:     # a first start: no restart will come
                self._forget_directory()
            raise
        self.container, self._asked_to_end, self._judged = container, False, False
        kernel = registry.enter(self.kernel_id, self._language(), self.kernel_spec.display_name)
        if kernel.spec is not None:                      # it ran before: this is a restart
            kernel.restarts += 1
        kernel.container, kernel.spec, kernel.started = container, spec, container.started_wall
        return self.connection_info

    def get_stable_start_time(self, recommended: float = 10.0) -> float:
        return recommended + 5.0      # a container start, and R's

    # -- helpers -----------------------------------------------------------------------

    def _forget_directory(self) -> None:
        if self._dir is not None:
            self._dir.remove()
            self._dir = None

    def _settings(self) -> dict:
        return {name: getattr(self, name) for name in (*settings.SETTINGS, *settings.POLICY_SETTINGS)
                if getattr(self, name) is not None}

    def _language(self) -> str:
        return getattr(self.kernel_spec, "language", "") or ""

    def _labels(self) -> dict:
        return {"kind": "provisioner", "kernel_id": self.kernel_id, "language": self._language(),
                "display_name": self.kernel_spec.display_name}

    def _kernel_env(self, env: dict) -> dict:
        """The kernelspec's variables (substituted by pre_launch) and JPY_SESSION_NAME."""
        names = (*(getattr(self.kernel_spec, "env", None) or {}), *KEPT_ENV)
        return {name: str(env[name]) for name in names if name in env}

    def _judge_end(self, container: Container) -> int:
        """The ended container's exit code; a Death in the registry unless the manager asked."""
        try:
            result = container.wait(0) if container.state is State.RUNNING else container.result
        except LifecycleError:        # destroyed under us: nothing left to read
            result = None
        if not self._judged:
            self._judged = True
            if not self._asked_to_end:
                registry.record_death(self.kernel_id,
                                      deaths.death_of(self._language(), result, self._plan.limits))
        if result is None:
            return -signal.SIGKILL
        return result.exit_code if result.exit_code is not None else -(result.signal or signal.SIGKILL)


def _warm_zygote(spec) -> None:
    """Start this server's zygote importing ipykernel in its idle time
    (zygote_preload.py), when the kernel is one it can run without exec."""
    if zygote.enabled() and spawn.in_process_module(spec) is not None:
        zygote.shared(preload=(ZYGOTE_PRELOAD_MODULE,))


def _kernel_owner() -> tuple[int, int] | None:
    """Who gets the connection directory: as root, the kernel's user (root
    needs nothing: it passes every permission check); rootless, None (the
    kernel is this user on the host)."""
    return settings.workload_user() if os.geteuid() == 0 else None
