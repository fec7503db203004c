"""A container's lifecycle, on the host side.

    created --start--> running --wait/stop--> stopped --destroy--> destroyed
       \\____________________________________________________/^
                          destroy (from any state)

An invalid move (start twice, start after destroy, wait before start)
raises ``LifecycleError``.  ``destroy`` always runs to the end, is
idempotent, and leaves nothing on the host: no process, cgroup, mount or
temporary directory.  ``with Container(spec) as box:`` destroys on exit.

How the processes are started is in spawn.py (the owner's side) and
launcher.py (theirs), told by a LauncherConfig (launch_config.py) built
here; the workload's environment is container_env.py's.  This side creates
the cgroup with its limits before any process exists, so the command never
runs a single instruction without them.

Rootless (this process is not root): the same lifecycle, with a user
namespace planned here (userns.plan: who the workload is inside) and
entered by the launcher; without a delegated cgroup the null driver's
rlimits hold the limits and ``warnings`` says so.

The fresh /workspace (no --workspace) is on the container's tmpfs layer, as
root and rootless: it counts against the disk limit, and dies with the
container.

Imports: the runtime's own modules; of the image store only image_store
(resolve, get, load, environment, HOST), never images.py or image_build.
"""
from __future__ import annotations

import dataclasses
import enum
import errno
import functools
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass

from . import cards, cleanup, image_store, rootfs, spawn, userns
from .cgroups import Cgroup, CgroupDriver, CgroupError, detect_driver
from .cgroups.base import PREFIX
from .container_env import workload_environment
from .container_net import ContainerNetwork
from .launch_config import LauncherConfig
from .spec import ContainerSpec
from .stats import CgroupStats
from .container_env import DEFAULT_PATH, inside_path  # noqa: F401 -- moved; tests still import them here
from .container_env import workload_environment as _environment  # noqa: F401 -- moved; tests still import it here
from .spawn import ContainerStartError  # noqa: F401 -- moved; cli, image_build, the session and tests import it here


def _log():
    """The module's logger; logging (~3 ms) is imported only when something
    is to be said: a start from `sandbox-kernel run` says nothing."""
    import logging
    return logging.getLogger(__name__)


class LifecycleError(RuntimeError):
    """A move the container's state does not allow."""


class State(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"
    DESTROYED = "destroyed"


@dataclass(frozen=True)
class ExitResult:
    """How the command ended, isolate-style.  status is one of
    ok, exit, signal, oom, timeout, killed."""
    status: str
    exit_code: int | None
    signal: int | None
    wall: float
    stats: CgroupStats

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class Container:
    """One container.  Stdio: file objects or fds for the command's 0, 1, 2
    (None: inherit the owner's)."""

    def __init__(self, spec: ContainerSpec, *, driver: CgroupDriver | None = None,
                 name: str | None = None, stdin=None, stdout=None, stderr=None,
                 spawn: str | None = None):
        image_store.resolve(spec.image)
        self.spec = spec
        self.name = name or f"{PREFIX}{os.getpid()}-{os.urandom(4).hex()}"
        self.state = State.CREATED
        self.cgroup: Cgroup | None = None
        self._driver = driver
        self._stdio = (stdin, stdout, stderr)
        self._spawn_mode = spawn  # "fork", "exec", "zygote", or None: the fastest safe one
        self._state_dir: str | None = None
        self._process: spawn.LauncherHandle | None = None
        self._lifeline_w: int | None = None
        # destroy() may come from two threads at once (a kernel's shutdown on its
        # control thread, a cell ending on the main one): each fd is closed once,
        # or a second close could hit a number reused meanwhile (say, by ZeroMQ)
        self._destroying = threading.Lock()
        self._unpinning = threading.Lock()   # _finish and destroy may both let the layer go
        self._started_at = 0.0
        self.started_wall = 0.0
        self.network = ContainerNetwork(self.name, spec)   # --net bridge (container_net.py)
        self._idmap: userns.IdMap | None = None   # rootless only
        self.result: ExitResult | None = None
        self.layer_size: int | None = None   # bytes of the writable layer's tmpfs (rootfs.layer_size)
        self._layer_fd: int | None = None    # O_PATH of the container's root: see _pin_layer

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> "Container":
        self._require(State.CREATED, "start")
        try:
            self._prepare_host()
            self.network.prepare(cleanup.orphaned)
            config = self._launch_config()
            self._spawn(config)
            if self.cgroup.tracks_members:
                self._track_init()
            self._pin_layer()
        except BaseException:
            self.destroy()
            raise
        self.state = State.RUNNING
        self._write_card()
        return self

    @property
    def state_dir(self) -> str | None:
        return self._state_dir

    def relabel(self, labels: dict[str, str]) -> None:
        """New labels (what the container is for), on its card too: a spare
        taken by its session is no longer a spare."""
        self.spec = dataclasses.replace(self.spec, labels=tuple(labels.items()))
        if self.state is State.RUNNING:
            self._write_card()

    def _write_card(self) -> None:
        """What this container is, for top and the stats endpoint (cards.py); a
        card that cannot be written costs the lookers, never the start."""
        try:
            cards.write(cards.card_of(self))
        except OSError as error:
            _log().warning("container %s: no card written in %s: %s", self.name, self._state_dir, error)

    def _track_init(self) -> None:
        """The null driver knows the container by its init (host pid)."""
        init = spawn.child_of(self._process.pid)
        try:
            if init is not None:   # None: the command ended already
                self.cgroup.add(init)
        except CgroupError as error:
            if error.errno != errno.ESRCH:   # ended between the two looks
                raise

    @property
    def warnings(self) -> list[str]:
        """What the user must be told about this container (limits not enforced)."""
        warning = self.cgroup.warning() if self.cgroup is not None else None
        return [warning] if warning else []

    def wait(self, timeout: float | None = None) -> ExitResult:
        """Wait for the command to end; past the timeout (or the spec's), kill
        it and report status 'timeout'."""
        if self.state is State.STOPPED:
            return self.result
        self._require(State.RUNNING, "wait for")
        limit = timeout if timeout is not None else self.spec.limits.timeout
        code = self._process.wait(limit)
        timed_out = code is None
        if timed_out:
            self.kill()
            code = self._process.wait(None)
        self._finish(code, timed_out)
        return self.result

    def poll(self) -> int | None:
        """The command's exit code if it has ended, else None; kills nothing."""
        self._require(State.RUNNING, "poll")
        return self._process.wait(0)

    def signal(self, signum: int) -> None:
        """Send a signal to the command (through the launcher and init)."""
        self._require(State.RUNNING, "signal")
        self._process.send_signal(signum)

    def kill(self) -> None:
        """Kill every process of the container now."""
        if self.cgroup is not None:
            self.cgroup.kill()
        if self._process is not None:
            self._process.send_signal(signal.SIGKILL)

    def stop(self, grace: float = 2.0) -> ExitResult:
        """SIGTERM, then after ``grace`` seconds SIGKILL."""
        self._require(State.RUNNING, "stop")
        self.signal(signal.SIGTERM)
        if self._process.wait(grace) is None:
            self.kill()
        return self.wait()

    def update_limits(self, limits) -> None:
        """Change memory, cpu and pids limits of a running container live.
        The disk size and the network need a new container."""
        if self.cgroup is None or self.state is State.DESTROYED:
            raise LifecycleError(f"cannot change limits of container {self.name}: it is {self.state.value}")
        if limits.disk != self.spec.limits.disk:
            raise LifecycleError("the disk limit is the size of the writable layer: it needs a restart")
        self.cgroup.set(limits)
        self.spec = dataclasses.replace(self.spec, limits=limits)
        self._write_card()

    def stats(self) -> CgroupStats:
        if self.cgroup is None:
            raise LifecycleError(f"container {self.name} has no cgroup ({self.state.value})")
        used, size = self.disk_usage()
        return _completed(self.cgroup.stats(), self.spec, disk_used=used, disk_limit=size)

    def net_stats(self):
        """--net bridge: the container's bytes, refusals and lookups
        (net_bridge.NetStats); None for the other networks."""
        return self.network.stats()

    @property
    def net_host_ifname(self) -> str | None:   # --net bridge: the host side of its veth
        return self.network.host_ifname

    @property
    def net_address(self) -> str | None:       # --net bridge: its IPv4 address
        return self.network.address

    @property
    def _net(self):   # net_bridge.Attachment (tests look at its resolver)
        return self.network.attachment

    def disk_usage(self) -> tuple[int | None, int | None]:
        """(bytes used, bytes in all) of the writable layer: /tmp, the fresh
        /workspace and the image's writes.  Used is None when the layer
        cannot be looked at (not pinned: see _pin_layer)."""
        with self._unpinning:   # the descriptor is not closed (and its number reused) meanwhile
            if self._layer_fd is None:
                return None, self.layer_size
            fs = os.fstatvfs(self._layer_fd)
        return (fs.f_blocks - fs.f_bfree) * fs.f_frsize, fs.f_blocks * fs.f_frsize

    def _pin_layer(self) -> None:
        """Hold the container's root (on the writable layer's tmpfs, or an
        overlay whose upper dir is there) by an O_PATH descriptor, through
        /proc/PID/root of a process of the container: no namespace is entered.

        Why: when a cell fills memory with files and the container dies of
        it, its mount namespace goes with its last process, and the tmpfs
        with it, before the owner can read how full it was.  The descriptor
        keeps the layer (and its pages, charged to the cgroup) until the
        container's end is read (_finish) or it is destroyed, so that the
        OOM message can say how much of the memory was files.  Where the
        root cannot be opened (rootless: init is not dumpable), the usage
        is unknown (None), never 0: a figure is not worth a failed start."""
        try:
            pids = self.cgroup.pids_of_one_hierarchy()
        except OSError:   # CgroupError too: the group is being removed
            return
        for pid in pids:
            try:
                fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:   # EACCES (not ours to look at), ENOENT (exited)
                continue
            if self._still_ours(pid) and self._is_layer(fd):
                self._layer_fd = fd
                return
            os.close(fd)   # a host process that reused the pid, or a root not on our tmpfs

    def _still_ours(self, pid: int) -> bool:
        try:
            return pid in self.cgroup.pids_of_one_hierarchy()
        except OSError:
            return False

    def _is_layer(self, fd: int) -> bool:
        """True when ``fd`` is on a file system of the layer's size: our tmpfs
        (size= rounds up to whole pages).  A build keeps its upper dirs on the
        host's disk (image_build.py): its figures are not the layer's."""
        try:
            fs = os.fstatvfs(fd)
        except OSError:
            return False
        return self.layer_size is not None and \
            abs(fs.f_blocks * fs.f_frsize - self.layer_size) < max(fs.f_frsize, 4096)

    def _unpin_layer(self) -> None:
        """Let the layer go: its pages leave the cgroup with the last mount."""
        with self._unpinning:
            fd, self._layer_fd = self._layer_fd, None
        if fd is not None:
            os.close(fd)

    @property
    def pid(self) -> int | None:
        """Host pid of the launcher (signals sent to it reach the command)."""
        return self._process.pid if self._process else None

    def destroy(self) -> None:
        """Kill, then remove the cgroup and the state directory.  Idempotent,
        and safe to call from several threads."""
        with self._destroying:
            if self.state is State.DESTROYED:
                return
            # An ended command's launcher is all that is left (it reported
            # init's exit after reaping it): it dies while we remove the
            # rest, and is reaped last.  Otherwise it is reaped first, so
            # that nothing of the container runs while its parts go.
            reap_last = self.state is State.STOPPED
            if self._process is not None:
                self._process.send_signal(signal.SIGKILL)
                if not reap_last:
                    self._process.reap()
            self.network.detach()
            self._unpin_layer()   # before the cgroup goes: its pages are charged there
            if self.cgroup is not None:
                self.cgroup.destroy()
            if self._lifeline_w is not None:
                os.close(self._lifeline_w)
                self._lifeline_w = None
            if self._state_dir:
                cleanup.remove_state_dir(self._state_dir)   # iterative: any depth, no symlink followed
            if self._process is not None and reap_last:
                self._process.reap()
            self.state = State.DESTROYED

    def __enter__(self) -> "Container":
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()

    # -- internals -----------------------------------------------------------

    def _require(self, state: State, action: str) -> None:
        if self.state is not state:
            raise LifecycleError(f"cannot {action} container {self.name}: it is {self.state.value}")

    def _prepare_host(self) -> None:
        if userns.rootless():
            self._idmap = userns.plan(self.spec.user)
        driver = self._driver or _host_driver()
        self.cgroup = driver.create(self.name, self.spec.limits)
        limits = self.spec.limits
        # the null driver's RLIMIT_AS does not count the layer's pages as memory
        self.layer_size = rootfs.layer_size(limits.disk, limits.memory,
                                            files_are_memory=not self.cgroup.tracks_members)
        if self._idmap is not None and self.cgroup.tracks_members:
            # RLIMIT_NPROC counts per uid of our own user namespace; with one id
            # mapped, init and the launcher share the workload's uid there
            self.cgroup.nproc_extra = 0 if self._idmap.by_tool else 2
        self._state_dir = tempfile.mkdtemp(prefix=self.name + "-", dir=_state_parent())
        os.chmod(self._state_dir, 0o711)
        for sub in ("layer", "root"):
            os.mkdir(os.path.join(self._state_dir, sub))

    def _workspace(self) -> str | None:
        """The host directory the caller chose for /workspace, or None: a
        fresh one on the container's tmpfs layer, so that what the workload
        writes there counts against the disk limit with everything else it
        writes (a host directory would fill the host's disk), and, rootless,
        no file of a subordinate uid lands where the owner cannot remove it."""
        return self.spec.workspace

    def _launch_config(self) -> LauncherConfig:
        spec, state_dir, idmap = self.spec, self._state_dir, self._idmap
        if idmap is not None:   # who the workload is inside the user namespace
            spec = dataclasses.replace(spec, user=(idmap.workload_uid, idmap.workload_gid))
        # the plan mounts the layer at its size: --disk, at most half the memory
        spec = dataclasses.replace(spec, limits=dataclasses.replace(spec.limits, disk=self.layer_size),
                                   mounts=spec.mounts + self.network.mounts(self._state_dir))
        rootless = idmap is not None
        if spec.image == image_store.HOST:
            plan = rootfs.host_image_plan(spec, state_dir, self._workspace(), rootless=rootless)
        else:
            plan = rootfs.image_plan(spec, state_dir, self._workspace(), image_store.get(spec.image),
                                     rootless=rootless)
        uid, gid = spec.user
        by_itself = self.cgroup.thread_join_files()   # init joins alone, without the global lock
        return LauncherConfig(
            userns=idmap, keep_groups=bool(idmap and not idmap.by_tool),
            command=list(spec.command), env=workload_environment(spec),
            workdir=spec.workdir, hostname=spec.hostname, uid=uid, gid=gid,
            network=self.network.launch_policy(),
            join_files=by_itself if by_itself is not None else self.cgroup.join_files(),
            join_self=by_itself is not None,
            rlimits=[list(r) for r in self.cgroup.child_rlimits()],
            cpus=self.cgroup.child_affinity(),   # where no cpuset pins it: cgroups/cpus.py
            plan=plan,
            new_root=os.path.join(state_dir, "root"),
            host_mnt_ns=os.stat("/proc/self/ns/mnt").st_ino,
            pass_fds=list(spec.pass_fds) + self.network.fds(),
            cgroup_dirs=[os.path.dirname(p) for p in self.cgroup.join_files()],
            state_dir=state_dir)

    def _spawn(self, config: LauncherConfig) -> None:
        spawn.ensure_standard_fds()
        status_r, status_w = os.pipe()
        result_r, result_w = os.pipe()
        lifeline_r, self._lifeline_w = os.pipe()
        config.status_fd, config.lifeline_fd, config.result_fd = status_w, lifeline_r, result_w
        self._started_at = time.monotonic()
        self.started_wall = time.time()   # for its card: when, as a user reads a clock
        try:
            mode = self._spawn_mode or spawn.default_mode()
            if mode == "fork" and not spawn.single_threaded():
                raise LifecycleError("cannot fork the launcher: this process has threads")
            if mode == "zygote":
                config.run_module, config.module_args = spawn.in_process_module(self.spec) or (None, [])
            config.check()   # every path: the exec and zygote ones check again what they parse
            self._process = spawn.SPAWNERS[mode](config, self._stdio, result_r)
        except BaseException:
            os.close(result_r)
            raise
        finally:
            for fd in (status_w, result_w, lifeline_r):
                os.close(fd)
        spawn.await_setup(status_r)

    def _finish(self, code: int, timed_out: bool) -> None:
        wall = time.monotonic() - self._started_at
        stats = self.stats()
        self._unpin_layer()   # the figures are read: the ended container's files are freed
        status, exit_code, signum = _classify(code, timed_out, stats)
        self.result = ExitResult(status, exit_code, signum, wall, stats)
        self.state = State.STOPPED


def _classify(code: int, timed_out: bool, stats: CgroupStats):
    if code < 0:  # the launcher itself was killed
        return ("timeout" if timed_out else "killed"), None, -code
    signum = code - 128 if 128 < code < 128 + 65 else None
    if timed_out:
        return "timeout", code, signum
    if stats.oom_kills:
        return "oom", code, signum
    if code == 0:
        return "ok", 0, None
    return ("signal" if signum else "exit"), code, signum


def _completed(stats: CgroupStats, spec: ContainerSpec, **more) -> CgroupStats:
    """The limits filled in from the spec where the driver could not read
    them, and ``more`` (the disk's figures): one copy of the stats."""
    limits = spec.limits
    return dataclasses.replace(
        stats,
        memory_limit=stats.memory_limit if stats.memory_limit is not None else limits.memory,
        pids_limit=stats.pids_limit if stats.pids_limit is not None else limits.pids,
        cpu_limit=stats.cpu_limit if stats.cpu_limit is not None else limits.cpus,
        **more,
    )


@functools.lru_cache(maxsize=None)
def _host_driver() -> CgroupDriver:
    """The host's cgroup setup does not change under a running process:
    detect it once (reading mountinfo costs more than a container's mkdir),
    and remove what containers of dead owners left behind."""
    driver = detect_driver()
    cleanup.reap_stale(driver)
    return driver


def _state_parent() -> str:
    return "/run" if os.access("/run", os.W_OK) else tempfile.gettempdir()
