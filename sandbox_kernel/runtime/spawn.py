"""How the owner starts a container's launcher, and its handle on it.

Three start paths, one result (launcher.py says what the launcher does):

    fork    this process forks the launcher: no interpreter start, most of
            a container's start time; only while this process has a single
            thread (forking a threaded process copies locks others hold)
    exec    a fresh interpreter, ``python -m sandbox_kernel.runtime.launcher
            FD``, reads the config as JSON from a pipe
    zygote  this process's zygote forks it (zygote.py: its own, or one the
            user's fork server forked for it), the config sent as JSON over
            its socket

On the exec and zygote paths the config crosses as JSON and is rebuilt and
checked there (launch_config.py); the fork path hands over the object,
which container.py checks before any path.  ``await_setup`` then reads the
status pipe until every setup step is done or one failed
(ContainerStartError), and ``LauncherHandle`` signals, waits for and reaps
the launcher however it was started.

Imports: launcher, zygote, launch_config, image_store (HOST) and spec.
"""
from __future__ import annotations

import gc
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

from . import image_store, launcher
from .launch_config import LauncherConfig
from .spec import ContainerSpec

START_TIMEOUT = 30.0


class ContainerStartError(RuntimeError):
    """A setup step failed; ``step`` names it and ``errno`` is the kernel's."""

    def __init__(self, step: str, error: str, errno: int | None = None):
        self.step, self.error, self.errno = step, error, errno
        super().__init__(f"container setup failed at '{step}': {error}")


def ensure_standard_fds() -> None:
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


def default_mode() -> str:
    """The fastest safe way from this process: fork when it is single-threaded."""
    if single_threaded():
        return "fork"
    from . import zygote   # here: it and forkserver's hashlib cost ~6 ms of every `run`
    return "zygote" if zygote.enabled() else "exec"


def in_process_module(spec: ContainerSpec) -> tuple[str, list[str]] | None:
    """(MODULE, its arguments) of ``python -m MODULE`` with this very
    interpreter on the host image, which can run in the zygote's fork
    without exec (and without importing it again); else None."""
    command = spec.command
    if spec.image == image_store.HOST and len(command) >= 3 and command[:2] == (sys.executable, "-m"):
        return command[2], list(command[3:])
    return None


def child_of(parent: int) -> int | None:
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


JOINED_THREAD_GRACE = 0.02   # seconds a joined thread may take to leave the kernel's list
_threads_not_pythons = False  # seen once: threads of a C library (ZeroMQ's), here to stay


def single_threaded() -> bool:
    """fork() is only safe when no other thread holds a lock we would copy.
    A thread Python has just joined (net_bridge runs namespace work in one)
    is still in /proc/self/task until its exit is done: when Python knows
    of no other thread, wait a moment for the kernel's list to agree, and
    answer from that list only.  A process whose extra threads outlast the
    wait has a library's threads: it is not kept waiting again."""
    global _threads_not_pythons
    if _task_count() == 1:
        return True
    if threading.active_count() != 1 or _threads_not_pythons:
        return False
    deadline = time.monotonic() + JOINED_THREAD_GRACE
    while time.monotonic() < deadline:
        time.sleep(0.0005)
        if _task_count() == 1:
            return True
    _threads_not_pythons = True
    return False


def _task_count() -> int:
    return len(os.listdir("/proc/self/task"))


def await_setup(status_r: int) -> None:
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


class LauncherHandle:
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


def _fork_launcher(config: LauncherConfig, stdio, result_r: int) -> LauncherHandle:
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
            launcher._report(config.status_fd, "launcher", error)
        finally:
            os._exit(code)
    return LauncherHandle(pid, result_r)


def _become_clean_child(fds: list[int], config: LauncherConfig) -> None:
    """In the forked launcher: drop the owner's signal handling and files."""
    # A collection here would write to the header of every object of the
    # owner's it walks, each write a page copied (as zygote.py says): the
    # owner's objects go out of the collector's reach (this process only;
    # the workload execs, and init and we collect what we allocate)
    gc.freeze()
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_DFL)
    for target, fd in enumerate(fds):
        if fd != target:
            os.dup2(fd, target)
    keep = {0, 1, 2, config.status_fd, config.lifeline_fd, config.result_fd, *config.pass_fds}
    launcher._close_fds_except(keep)


def _zygote_launcher(config: LauncherConfig, stdio, result_r: int) -> LauncherHandle:
    """Ask this process's zygote for the launcher (zygote.py)."""
    fds = [_stdio_fd(s, i) for i, s in enumerate(stdio)]
    try:
        from . import zygote
        pid = zygote.shared().spawn(config, fds)
    finally:
        for fd, stream in zip(fds, stdio):
            if stream == subprocess.DEVNULL:
                os.close(fd)
    return LauncherHandle(pid, result_r, child=False)


def _exec_launcher(config: LauncherConfig, stdio, result_r: int) -> LauncherHandle:
    """Start the launcher as a fresh interpreter: this process has threads,
    and forking a threaded process copies locks other threads hold."""
    config_r, config_w = os.pipe()
    keep = (config.status_fd, config.lifeline_fd, config.result_fd, config_r, *config.pass_fds)
    popen = subprocess.Popen(
        [sys.executable, "-m", "sandbox_kernel.runtime.launcher", str(config_r)],
        stdin=stdio[0], stdout=stdio[1], stderr=stdio[2], pass_fds=keep)
    os.close(config_r)
    with os.fdopen(config_w, "w") as handle:
        json.dump(config.to_dict(), handle)
    return LauncherHandle(popen.pid, result_r, popen)


SPAWNERS = {"fork": _fork_launcher, "exec": _exec_launcher, "zygote": _zygote_launcher}
"""The start paths by name: each takes (config, stdio, result_r) and returns a LauncherHandle."""
