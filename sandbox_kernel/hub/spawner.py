"""``SandboxSpawner``: JupyterHub's LocalProcessSpawner, with a ceiling.

For each start, as root (the hub):

1. the user's ceiling is made (``runtime/cgroups/delegation.py``): memory,
   cpus and pids that nothing the user runs can lift, a kernel's
   ``--policy trusted`` included;
2. the classroom kernelspec is written once per hub from ``kernel_args``
   (``sandbox-kernel install`` options; ``--policy classroom`` unless they
   say otherwise) into ``kernel_prefix``, a root-owned directory the users
   can read;
3. the single-user server is started as the user, moved into the ceiling's
   ``server`` leaf between fork and exec (so every process it forks, the
   kernels and their rootless containers, is inside), with only that
   kernelspec allowed, as the default, and no terminals.

On stop, the kernels get ``stop_grace`` seconds to remove their containers,
then ``delegation.remove`` kills whatever the user left running under the
ceiling and removes its groups, and state directories of containers a killed
kernel left are swept: no per-user host state stays.  With named servers the
ceiling is the user's, shared: it goes with the user's last server.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import sys
import tempfile
import time

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Bool, Float, List, Unicode, default

from ..kernel import install
from ..runtime import cleanup
from ..runtime import spec as runtime_spec
from ..runtime.cgroups import delegation

KERNEL_NAME = "sandbox"
KERNEL_DISPLAY_NAME = "Python 3 (sandbox)"

# the kernel_args a hub has installed, per prefix and name: each spawn of the
# same configuration finds its kernelspec written (the event loop runs one at a time)
_INSTALLED: dict[tuple[str, str], tuple[str, ...]] = {}


class SandboxSpawner(LocalProcessSpawner):
    """Single-user servers under a per-user ceiling, on the sandbox kernel."""

    ceiling_memory = Unicode("2G", config=True, help="the user's memory ceiling "
                             "(512M, 2G; 'none': no ceiling on memory)")
    ceiling_cpus = Unicode("2", config=True, help="the user's CPU ceiling in cores (1.5; 'none')")
    ceiling_pids = Unicode("1024", config=True, help="the user's ceiling on processes and threads "
                           "('none')")
    kernel_args = List(Unicode(), config=True, help="sandbox-kernel install options of the "
                       "classroom kernel, e.g. ['--memory', '1G', '--cpus', '1']; "
                       "--policy classroom unless given")
    kernel_name = Unicode(KERNEL_NAME, config=True, help="the kernelspec's name")
    kernel_display_name = Unicode(KERNEL_DISPLAY_NAME, config=True,
                                  help="the kernel's name in the launcher")
    kernel_prefix = Unicode(config=True, help="where the kernelspec goes "
                            "(PREFIX/share/jupyter/kernels); root's, readable by the users")
    only_sandbox_kernel = Bool(True, config=True, help="allow no other kernelspec and no "
                               "terminal: every cell of a student runs in a container")
    stop_grace = Float(10.0, config=True, help="seconds the kernels get, once the server has "
                       "stopped, to remove their containers before whatever is left is killed")
    private_home = Bool(True, config=True, help="make the user's home directory 0700 at start "
                        "when others can enter it (useradd's default on Debian is 0755)")

    @default("kernel_prefix")
    def _default_kernel_prefix(self) -> str:
        return os.path.join(sys.prefix, "share", "sandbox-kernel-hub")

    @default("cmd")
    def _default_cmd(self) -> list[str]:
        # the hub's own environment: the users can read it (see docs/classroom.md)
        return [os.path.join(os.path.dirname(sys.executable), "jupyterhub-singleuser")]

    def ceiling_figures(self) -> dict:
        """The configured ceiling, parsed; ValueError naming the bad setting."""
        def parsed(parse, text):
            return None if text.strip().lower() in ("", "none") else parse(text)
        try:
            return {"memory": parsed(runtime_spec.parse_size, self.ceiling_memory),
                    "cpus": parsed(runtime_spec.parse_cpus, self.ceiling_cpus),
                    "pids": parsed(runtime_spec.parse_pids, self.ceiling_pids)}
        except runtime_spec.SpecError as error:
            raise ValueError(f"SandboxSpawner ceiling: {error}") from None

    def install_args(self) -> list[str]:
        """The kernel's install options, with the classroom policy unless chosen."""
        args = list(self.kernel_args)
        if not any(a == "--policy" or a.startswith("--policy=") for a in args):
            args = ["--policy", "classroom", *args]
        return args

    def ensure_kernelspec(self) -> str:
        """Write the kernelspec when this hub has not yet, or its options changed."""
        key, args = (self.kernel_prefix, self.kernel_name), tuple(self.install_args())
        where = os.path.join(self.kernel_prefix, "share", "jupyter", "kernels", self.kernel_name)
        if _INSTALLED.get(key) == args and os.path.isfile(os.path.join(where, "kernel.json")):
            return where
        parser = argparse.ArgumentParser(prog="SandboxSpawner.kernel_args", exit_on_error=False)
        install.add_arguments(parser)
        try:
            parsed, unknown = parser.parse_known_args(
                ["--prefix", self.kernel_prefix, "--name", self.kernel_name,
                 "--display-name", self.kernel_display_name, *args])
        except argparse.ArgumentError as error:
            raise ValueError(f"SandboxSpawner.kernel_args: {error}") from None
        if unknown:
            raise ValueError(f"SandboxSpawner.kernel_args: unknown {' '.join(unknown)}: they are "
                             "sandbox-kernel install's options (sandbox-kernel install --help)")
        where = install.run(parsed)
        _INSTALLED[key] = args
        return where

    def get_args(self) -> list[str]:
        args = super().get_args()
        args.append(f"--MappingKernelManager.default_kernel_name={self.kernel_name}")
        if self.only_sandbox_kernel:
            args += [f"--KernelSpecManager.allowed_kernelspecs={self.kernel_name}",
                     "--ServerApp.terminals_enabled=False", "--ContentsManager.allow_hidden=False"]
        return args

    def get_env(self) -> dict:
        env = super().get_env()
        # the hub's kernelspec first; with only_sandbox_kernel no other is allowed anyway
        env["JUPYTER_PATH"] = os.path.join(self.kernel_prefix, "share", "jupyter")
        # the hub's temp dir: the students' containers keep their state (and cards) where
        # root's top, the admin page and the sweep on stop look, not wherever a student's
        # own fallback lands (a /tmp they cannot write sends it to their home)
        env["TMPDIR"] = tempfile.gettempdir()
        if self.only_sandbox_kernel:
            # config of root's, not ~/.jupyter: what a student writes in the home changes
            # neither the server's allowed kernels nor the kernel's settings
            env["JUPYTER_CONFIG_DIR"] = self.config_dir()
        return env

    def config_dir(self) -> str:
        """An empty configuration directory of root's, beside the kernelspec."""
        directory = os.path.join(self.kernel_prefix, "etc", "jupyter")
        os.makedirs(directory, mode=0o755, exist_ok=True)
        return directory

    async def start(self):
        figures = self.ceiling_figures()
        self.ensure_kernelspec()
        if self.private_home:
            self.close_home()
        self._ceiling = delegation.delegate(self.user.name, **figures)
        self.log.info("ceiling of %s: memory %s, cpus %s, pids %s (%s)", self.user.name,
                      figures["memory"], figures["cpus"], figures["pids"], self._ceiling.version)
        try:
            return await super().start()
        except BaseException:
            self.remove_host_state()
            raise

    def close_home(self) -> None:
        """Other users may not enter the home: notebooks, the kernels' connection
        files (~/.local/share/jupyter/runtime) and whatever else it holds."""
        home = pwd.getpwnam(self.user.name).pw_dir
        try:
            mode = os.stat(home).st_mode & 0o7777
            if mode & 0o077:
                os.chmod(home, mode & ~0o077)
                self.log.info("home of %s was mode %o, now %o", self.user.name, mode, mode & ~0o077)
        except FileNotFoundError:
            self.log.warning("home of %s, %s, does not exist", self.user.name, home)

    def make_preexec_fn(self, name):
        become_user = super().make_preexec_fn(name)
        ceiling = self._ceiling

        def preexec() -> None:
            # as root, before the uid changes: the server and all it forks are inside
            delegation.enter(ceiling, 0)
            become_user()
        return preexec

    async def stop(self, now=False):
        await super().stop(now=now)
        if self.other_servers_running():
            self.log.info("ceiling of %s kept: another server of theirs runs in it", self.user.name)
            return
        await self.wait_for_kernels()
        self.remove_host_state()

    def other_servers_running(self) -> bool:
        """Named servers of the same user share the ceiling."""
        spawners = getattr(self.user, "spawners", None) or {}
        return any(other is not self and other.active for other in spawners.values())

    async def wait_for_kernels(self) -> None:
        """A kernel whose server is gone shuts down by itself and removes its
        containers: give it stop_grace seconds before remove() kills it."""
        ceiling = delegation.ceiling_of(pwd.getpwnam(self.user.name).pw_uid)
        deadline = time.monotonic() + self.stop_grace
        while ceiling is not None and time.monotonic() < deadline:
            usage = ceiling.usage()
            if usage is None or not usage.pids:
                return
            await asyncio.sleep(0.2)

    def remove_host_state(self) -> None:
        """The ceiling and whatever still runs in it, then the state directories
        its containers left (a kernel killed before it could remove them)."""
        removed = delegation.remove(self.user.name)
        swept = sweep_state_dirs(pwd.getpwnam(self.user.name).pw_uid)
        self.log.info("host state of %s removed (ceiling: %s, state dirs left by containers: %s)",
                      self.user.name, removed, swept or "none")


def sweep_state_dirs(uid: int, parents=None) -> list[str]:
    """The user's container state directories whose owner process is gone."""
    return cleanup.reap_state_dirs_of(uid, parents)
