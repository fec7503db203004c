"""A container's lifecycle, on the host side.

    created --start--> running --wait/stop--> stopped --destroy--> destroyed
       \\____________________________________________________/^
                          destroy (from any state)

An invalid move (start twice, start after destroy, wait before start)
raises ``LifecycleError``.  ``destroy`` always runs to the end, is
idempotent, and leaves nothing on the host: no process, cgroup, mount or
temporary directory.  ``with Container(spec) as box:`` destroys on exit.

How the processes are started is in launcher.py.  This side creates the
cgroup with its limits before any process exists, so the command never runs
a single instruction without them.

Rootless (this process is not root): the same lifecycle, with a user
namespace planned here (userns.plan: who the workload is inside) and
entered by the launcher; without a delegated cgroup the null driver's
rlimits hold the limits and ``warnings`` says so.

The fresh /workspace (no --workspace) is on the container's tmpfs layer, as
root and rootless: it counts against the disk limit, and dies with the
container.
"""
from __future__ import annotations

import dataclasses
import enum
import errno
import functools
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from . import cleanup, images, launcher, rootfs, userns, zygote
from .cgroups import Cgroup, CgroupDriver, CgroupError, detect_driver
from .cgroups.base import PREFIX
from .cgroups.cpus import thread_environment
from .spec import ContainerSpec
from .stats import CgroupStats

START_TIMEOUT = 30.0
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class LifecycleError(RuntimeError):
    """A move the container's state does not allow."""


class ContainerStartError(RuntimeError):
    """A setup step failed; ``step`` names it and ``errno`` is the kernel's."""

    def __init__(self, step: str, error: str, errno: int | None = None):
        self.step, self.error, self.errno = step, error, errno
        super().__init__(f"container setup failed at '{step}': {error}")


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

    def report(self) -> str:
        s = self.stats
        lines = {
            "status": self.status if self.status != "exit" else f"exit {self.exit_code}",
            "exit-code": self.exit_code, "signal": self.signal,
            "time-wall": f"{self.wall:.3f}",
            "time-user": _fmt(s.cpu_user, "{:.3f}"), "time-system": _fmt(s.cpu_system, "{:.3f}"),
            "memory-peak": s.memory_peak, "pids-peak": s.pids_peak,
            "oom-kills": s.oom_kills, "io-read": s.io_read, "io-write": s.io_write,
        }
        return "".join(f"{key}: {'n/a' if value is None else value}\n" for key, value in lines.items())

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _fmt(value, pattern: str):
    return None if value is None else pattern.format(value)


class Container:
    """One container.  Stdio: file objects or fds for the command's 0, 1, 2
    (None: inherit the owner's)."""

    def __init__(self, spec: ContainerSpec, *, driver: CgroupDriver | None = None,
                 name: str | None = None, stdin=None, stdout=None, stderr=None,
                 spawn: str | None = None):
        images.resolve(spec.image)
        self.spec = spec
        self.name = name or f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self.state = State.CREATED
        self.cgroup: Cgroup | None = None
        self._driver = driver
        self._stdio = (stdin, stdout, stderr)
        self._spawn_mode = spawn  # "fork", "exec", "zygote", or None: the fastest safe one
        self._state_dir: str | None = None
        self._process: _LauncherHandle | None = None
        self._lifeline_w: int | None = None
        # destroy() may come from two threads at once (a kernel's shutdown on its
        # control thread, a cell ending on the main one): each fd is closed once,
        # or a second close could hit a number reused meanwhile (say, by ZeroMQ)
        self._destroying = threading.Lock()
        self._unpinning = threading.Lock()   # _finish and destroy may both let the layer go
        self._started_at = 0.0
        self._idmap: userns.IdMap | None = None   # rootless only
        self.result: ExitResult | None = None
        self.layer_size: int | None = None   # bytes of the writable layer's tmpfs (rootfs.layer_size)
        self._layer_fd: int | None = None    # O_PATH of the container's root: see _pin_layer

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> "Container":
        self._require(State.CREATED, "start")
        try:
            self._prepare_host()
            config = self._launch_config()
            self._spawn(config)
            if self.cgroup.tracks_members:
                self._track_init()
            self._pin_layer()
        except BaseException:
            self.destroy()
            raise
        self.state = State.RUNNING
        return self

    def _track_init(self) -> None:
        """The null driver knows the container by its init (host pid)."""
        init = _child_of(self._process.pid)
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

    @property
    def id_map(self) -> "userns.IdMap | None":
        """The user namespace's id map (rootless), or None (root: no user namespace)."""
        return self._idmap

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

    def stats(self) -> CgroupStats:
        if self.cgroup is None:
            raise LifecycleError(f"container {self.name} has no cgroup ({self.state.value})")
        return self._with_disk(_with_limits(self.cgroup.stats(), self.spec))

    def disk_usage(self) -> tuple[int | None, int | None]:
        """(bytes used, bytes in all) of the writable layer: /tmp, the fresh
        /workspace and the image's writes.  Used is None when the layer
        cannot be looked at (not pinned: see _pin_layer)."""
        with self._unpinning:   # the descriptor is not closed (and its number reused) meanwhile
            if self._layer_fd is None:
                return None, self.layer_size
            fs = os.fstatvfs(self._layer_fd)
        return (fs.f_blocks - fs.f_bfree) * fs.f_frsize, fs.f_blocks * fs.f_frsize

    def _with_disk(self, stats: CgroupStats) -> CgroupStats:
        used, size = self.disk_usage()
        return dataclasses.replace(stats, disk_used=used, disk_limit=size)

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
            pids = self.cgroup.pids()
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
            return pid in self.cgroup.pids()
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
            if self._process is not None:
                self._process.send_signal(signal.SIGKILL)
                self._process.reap()
            self._unpin_layer()   # before the cgroup goes: its pages are charged there
            if self.cgroup is not None:
                self.cgroup.destroy()
            if self._lifeline_w is not None:
                os.close(self._lifeline_w)
                self._lifeline_w = None
            if self._state_dir:
                cleanup.remove_state_dir(self._state_dir)   # iterative: any depth, no symlink followed
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

    def _launch_config(self) -> dict:
        spec, state_dir, idmap = self.spec, self._state_dir, self._idmap
        if idmap is not None:   # who the workload is inside the user namespace
            spec = dataclasses.replace(spec, user=(idmap.workload_uid, idmap.workload_gid))
        # the plan mounts the layer at its size: --disk, at most half the memory
        spec = dataclasses.replace(spec, limits=dataclasses.replace(spec.limits, disk=self.layer_size))
        rootless = idmap is not None
        if spec.image == images.HOST:
            plan = rootfs.host_image_plan(spec, state_dir, self._workspace(), rootless=rootless)
        else:
            plan = rootfs.image_plan(spec, state_dir, self._workspace(), images.get(spec.image),
                                     rootless=rootless)
        uid, gid = spec.user
        return {
            "userns": idmap.as_config() if idmap else None,
            "keep_groups": bool(idmap and not idmap.by_tool),
            "command": list(spec.command), "env": _environment(spec),
            "workdir": spec.workdir, "hostname": spec.hostname, "uid": uid, "gid": gid,
            "network": spec.network, "join_files": self.cgroup.join_files(),
            "rlimits": [list(r) for r in self.cgroup.child_rlimits()],
            "cpus": self.cgroup.child_affinity(),   # where no cpuset pins it: cgroups/cpus.py
            "plan": plan,  # rootfs.Op objects; the exec path sends them as JSON
            "new_root": os.path.join(state_dir, "root"),
            "host_mnt_ns": os.stat("/proc/self/ns/mnt").st_ino,
            "pass_fds": list(spec.pass_fds),
            "cleanup": {"cgroup_dirs": [os.path.dirname(p) for p in self.cgroup.join_files()],
                        "state_dir": state_dir},
        }

    def _spawn(self, config: dict) -> None:
        _ensure_standard_fds()
        status_r, status_w = os.pipe()
        result_r, result_w = os.pipe()
        lifeline_r, self._lifeline_w = os.pipe()
        config.update(status_fd=status_w, lifeline_fd=lifeline_r, result_fd=result_w)
        self._started_at = time.monotonic()
        try:
            mode = self._spawn_mode or _default_spawn_mode()
            if mode == "fork" and not _single_threaded():
                raise LifecycleError("cannot fork the launcher: this process has threads")
            if mode == "zygote":
                config.update(_in_process_module(self.spec))
            self._process = _SPAWNERS[mode](config, self._stdio, result_r)
        except BaseException:
            os.close(result_r)
            raise
        finally:
            for fd in (status_w, result_w, lifeline_r):
                os.close(fd)
        _await_setup(status_r)

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


def _with_limits(stats: CgroupStats, spec: ContainerSpec) -> CgroupStats:
    """Fill the limits in from the spec where the driver could not read them."""
    limits = spec.limits
    return dataclasses.replace(
        stats,
        memory_limit=stats.memory_limit if stats.memory_limit is not None else limits.memory,
        pids_limit=stats.pids_limit if stats.pids_limit is not None else limits.pids,
        cpu_limit=stats.cpu_limit if stats.cpu_limit is not None else limits.cpus,
    )


def _environment(spec: ContainerSpec, host_path: str | None = None) -> dict:
    env = {"HOME": "/home/sandbox", "USER": "sandbox", "LOGNAME": "sandbox",
           "HOSTNAME": spec.hostname, "LANG": "C.UTF-8", "TERM": os.environ.get("TERM", "dumb")}
    image_env = images.environment(spec.image)  # a stored image's ENV and PATH; {} for host
    env.update(image_env)
    env["PATH"] = inside_path(os.environ.get("PATH", "") if host_path is None else host_path,
                              spec, image_env.get("PATH"))
    # The owner's login shell ($SHELL: %%bash, tools that start a shell) where
    # its directory is seen inside, as the host spells it when that resolves
    # the same inside (the host image keeps the host's /bin -> usr/bin), else
    # where the mount shows it; elsewhere the shell every image has.
    shell = os.environ.get("SHELL", "")
    seen_at = inside_path(os.path.dirname(shell), spec, "") if os.path.isabs(shell) \
        and os.path.isfile(shell) else ""
    if not seen_at:
        env.setdefault("SHELL", "/bin/sh")
    elif _on_host_files(spec.image) and os.path.realpath(os.path.dirname(shell)) == seen_at:
        env.setdefault("SHELL", shell)
    else:
        env.setdefault("SHELL", os.path.join(seen_at, os.path.basename(shell)))
    env.update(dict(spec.env))
    # thread pools sized to the cpus limit, unless the user or the image chose
    for name, value in thread_environment(spec.limits.cpus).items():
        env.setdefault(name, value)
    return env


def inside_path(host_path: str, spec: ContainerSpec, image_path: str | None = None) -> str:
    """The container's PATH: on the host image the interpreter's venv bin
    first; then the owner's (the kernel's) absolute PATH entries that exist
    inside as the host's own directories, in their order; then the image's
    defaults (its PATH, or the usual directories), without duplicates.  Inside are
    the host image's directories (host_image_dirs: /usr, the interpreter's
    prefix and venv...) and the mounts (the notebook's directory, --mount,
    --workspace); an entry elsewhere (~/.local/bin, a pyenv shims directory
    not below a mount) does not exist there and is dropped, and so is a
    relative one ('' or '.': the working directory)."""
    shown = [(m.target, m.source) for m in spec.mounts if m.on_path]
    if spec.workspace:
        shown.append(("/workspace", spec.workspace))
    if _on_host_files(spec.image):
        shown += [(d, d) for d in rootfs.host_image_dirs()]
    entries = [_inside(entry, shown) for entry in host_path.split(":") if os.path.isabs(entry)]
    first = []
    if image_path is None:
        image_path = DEFAULT_PATH
        if sys.prefix != sys.base_prefix and _on_host_files(spec.image):
            # python3 and pip inside are the kernel's own interpreter, as in an
            # activated venv, even where the caller's PATH names the system's first
            first = [os.path.join(sys.prefix, "bin")]
    defaults = [p for p in image_path.split(":") if p]
    return ":".join(dict.fromkeys(e for e in first + entries + defaults if e))


def _inside(entry: str, shown: list[tuple[str, str]]) -> str | None:
    """The path inside at which the host directory ``entry`` is seen, or None:
    the entry itself when it lies below a shown target, else where its real
    path (through the host's symlinks) lies below a shown source."""
    entry = os.path.normpath(entry)
    for target, source in shown:
        if _under(entry, target) and os.path.isdir(source + entry[len(target):]):
            return entry
    real = os.path.realpath(entry)
    for target, source in shown:
        if _under(real, source) and os.path.isdir(real):
            return os.path.normpath(target + real[len(source):])
    return None


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _on_host_files(name: str) -> bool:
    """The host image, or an image built on it: the host's directories are inside."""
    if name == images.HOST:
        return True
    image = images.load(name)
    return image is not None and image.base == images.HOST


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


def _ensure_standard_fds() -> None:
    """An owner started without stdin (CI, daemons) would hand fd 0 to our
    pipes, and the launcher's dup2 onto 0, 1, 2 would then clobber them."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def _default_spawn_mode() -> str:
    if _single_threaded():
        return "fork"
    return "zygote" if zygote.enabled() else "exec"


def _in_process_module(spec: ContainerSpec) -> dict:
    """``python -m MODULE`` with this very interpreter, on the host image, can
    run in the zygote's fork without exec (and without importing it again)."""
    command = spec.command
    if spec.image == images.HOST and len(command) >= 3 and command[:2] == (sys.executable, "-m"):
        return {"run_module": command[2], "module_args": list(command[3:])}
    return {}


def _child_of(parent: int) -> int | None:
    """The pid of ``parent``'s child (the launcher's init), or None if it has
    exited: a scan of /proc, since CONFIG_PROC_CHILDREN is often off.  Only
    the null driver needs it."""
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat", encoding="utf-8", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent:
            return int(name)
    return None


def _single_threaded() -> bool:
    """fork() is only safe when no other thread holds a lock we would copy."""
    return len(os.listdir("/proc/self/task")) == 1


def _await_setup(status_r: int) -> None:
    """Block until every setup step is done (EOF) or one reports failure."""
    chunks = []
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([status_r], [], [], deadline - time.monotonic())
            if not ready:
                raise ContainerStartError("start", f"no answer within {START_TIMEOUT:.0f} s")
            chunk = os.read(status_r, 4096)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(status_r)
    if chunks:
        first = json.loads(b"".join(chunks).splitlines()[0])
        raise ContainerStartError(first["step"], first["error"], first.get("errno"))


class _LauncherHandle:
    """The launcher process, however it was started: signals, the command's
    exit code from the result pipe (a wait with a timeout, no polling), and
    reaping the launcher itself once the container is released."""

    def __init__(self, pid: int, result_r: int, popen: subprocess.Popen | None = None,
                 child: bool = True):
        self.pid = pid
        self._popen = popen
        self._child = child  # a zygote's launcher is the zygote's child, not ours
        self._pidfd = os.pidfd_open(pid)
        self._result_r = result_r
        self.exit_code: int | None = None
        self.reaped = False
        self._reaping = threading.Lock()  # wait() and destroy() may race: close once

    def send_signal(self, signum: int) -> None:
        if not self.reaped:
            try:
                signal.pidfd_send_signal(self._pidfd, signum)
            except ProcessLookupError:
                pass  # exited, not yet reaped

    def wait(self, timeout: float | None) -> int | None:
        """The command's exit code (negative: the launcher itself was killed
        by that signal), or None if it still runs after ``timeout`` seconds."""
        if self.exit_code is not None:
            return self.exit_code
        if self.reaped:               # destroyed meanwhile: result_r is closed
            return self._returncode
        ready, _, _ = select.select([self._result_r], [], [], timeout)
        if not ready:
            return None
        with self._reaping:           # a reap() in another thread closes result_r
            if self.reaped:
                return self._returncode
            line = os.read(self._result_r, 64)
            # EOF without a line: the launcher died before init did
            self.exit_code = int(line) if line.strip() else self._reap_once()
        return self.exit_code

    def reap(self) -> int:
        """Wait for the launcher to exit (call after killing or releasing it)."""
        with self._reaping:
            return self._reap_once()

    def _reap_once(self) -> int:
        if not self.reaped:
            if self._popen is not None:
                self._returncode = self._popen.wait()
            elif self._child:
                self._returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
            else:  # the zygote reaps it; its pidfd turns readable when it exits
                select.select([self._pidfd], [], [])
                self._returncode = -signal.SIGKILL
            self.reaped = True
            os.close(self._pidfd)
            os.close(self._result_r)
        return self._returncode


def _stdio_fd(stream, default: int) -> int:
    """A file object, an fd, None (inherit) or subprocess.DEVNULL, as an fd."""
    if stream is None:
        return default
    if stream == subprocess.DEVNULL:
        return os.open(os.devnull, os.O_RDWR)  # the fork path's child closes it
    if isinstance(stream, int) and stream < 0:
        raise ValueError("stdio must be a file, an fd, None or subprocess.DEVNULL")
    return stream if isinstance(stream, int) else stream.fileno()


def _fork_launcher(config: dict, stdio, result_r: int) -> _LauncherHandle:
    """Fork the launcher from this (single-threaded) process: no interpreter
    start, which is most of a container's start time."""
    fds = [_stdio_fd(s, i) for i, s in enumerate(stdio)]
    pid = os.fork()
    for fd, stream in zip(fds, stdio):
        if pid and stream == subprocess.DEVNULL:
            os.close(fd)
    if pid == 0:
        code = 125
        try:
            _become_clean_child(fds, config)
            code = launcher.launcher_main(config)
        except BaseException as error:  # noqa: B036 -- never return into the owner's code
            launcher._report(config["status_fd"], "launcher", error)
        finally:
            os._exit(code)
    return _LauncherHandle(pid, result_r)


def _become_clean_child(fds: list[int], config: dict) -> None:
    """In the forked launcher: drop the owner's signal handling and files."""
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_DFL)
    for target, fd in enumerate(fds):
        if fd != target:
            os.dup2(fd, target)
    keep = {0, 1, 2, config["status_fd"], config["lifeline_fd"], config["result_fd"],
            *config["pass_fds"]}
    launcher._close_fds_except(keep)


def _zygote_launcher(config: dict, stdio, result_r: int) -> _LauncherHandle:
    """Ask this process's fork server for the launcher (zygote.py)."""
    fds = [_stdio_fd(s, i) for i, s in enumerate(stdio)]
    try:
        pid = zygote.shared().spawn(config, fds)
    finally:
        for fd, stream in zip(fds, stdio):
            if stream == subprocess.DEVNULL:
                os.close(fd)
    return _LauncherHandle(pid, result_r, child=False)


def _exec_launcher(config: dict, stdio, result_r: int) -> _LauncherHandle:
    """Start the launcher as a fresh interpreter: this process has threads,
    and forking a threaded process copies locks other threads hold."""
    config_r, config_w = os.pipe()
    keep = (config["status_fd"], config["lifeline_fd"], config["result_fd"], config_r,
            *config["pass_fds"])
    popen = subprocess.Popen(
        [sys.executable, "-m", "sandbox_kernel.runtime.launcher", str(config_r)],
        stdin=stdio[0], stdout=stdio[1], stderr=stdio[2], pass_fds=keep)
    os.close(config_r)
    with os.fdopen(config_w, "w") as handle:
        json.dump(config, handle, default=vars)  # rootfs.Op -> its fields
    return _LauncherHandle(popen.pid, result_r, popen)


_SPAWNERS = {"fork": _fork_launcher, "exec": _exec_launcher, "zygote": _zygote_launcher}
