"""A fork server: containers for threaded owners in milliseconds.

A Jupyter kernel has threads, so it must never fork; starting each launcher
as a fresh interpreter costs a Python start, and the agent inside then
imports IPython again (about 0.3 s together).  The zygote is a helper
process per owner, started once, single-threaded for its whole life, with
the modules its starter names imported (the agent's, for a session).  On request it forks a launcher exactly as the
fork path does (launcher.py), and for a ``python -m MODULE`` command with
this interpreter the workload runs the module in-process instead of exec.
What the zygote imports is its starter's choice (``shared(preload=...)``):
this module names no module of the layers above the runtime.

    owner                                   zygote (single-threaded)
      | -- request: config JSON + fds ------>  |  fork
      |    (stdin, stdout, stderr, status,     |---> launcher -> init -> workload
      |     result, lifeline, pass_fds...)     |         (runs MODULE without exec)
      | <------------------- launcher pid ---  |  reaps its children

What a forked workload inherits from the zygote, and why that is safe:
  - memory: the imported modules, and the ones they name in
    ZYGOTE_PRELOAD (the agent's: what its shell imports on first use),
    shared copy-on-write and charged to the zygote's cgroup, not the
    container's.  Not the owner's environment: the zygote starts with only
    what it needs to import the same modules the same way (ZYGOTE_ENV),
    because the environ block a process starts with stays in its memory
    whatever os.environ later says, and a cell can read it (JupyterHub puts
    the user's API token there).  Not the configs of earlier requests
    either (their env, mounts, paths): the zygote never parses a request,
    its fork does, and the buffer it came in is zeroed after each fork;
  - file descriptors: none but those of its own request (everything else is
    closed before the launcher runs, as in the fork path);
  - signal handlers: reset to the defaults in the launcher;
  - threads: none (the zygote refuses to fork if it ever has a second one);
  - random state: reseeded in the workload, so two containers never share
    a random sequence;
  - the environment: replaced by the container's, as execve would.

The zygote exits when its owner closes the request socket, or dies.

Where it comes from (``shared()``): by default it is private, the owner's
own child.  With SANDBOX_KERNEL_FORKSERVER_IDLE set to seconds, this uid's
fork server (forkserver.py, ``sbk-forkserver``) forks it from imports it holds for
every owner whose zygote would be the same (what it imports, its
environment, the interpreter and the package's files, the owner's
identity): a fresh kernel's first container then waits for no import.
The daemon never reads a request: the fork it makes per owner runs
``serve()`` on that owner's connection, so all of the above holds per
owner.  Any doubt about the daemon's directory or peer gives the owner a
private zygote.

Imports (where used: the owner's side needs none of them): forkserver, launcher,
launch_config and syscalls; a request is a LauncherConfig
as JSON, parsed and checked in the fork (launch_config.py).
"""
from __future__ import annotations

import array
import fcntl
import gc
import importlib
import json
import mmap
import os
import select
import signal
import socket
import subprocess
import sys
import threading

# Only what the owner's side needs at import: a kernel imports this module
# on its start's path (session/preload.py), and the launcher, the fork
# server and syscalls cost it 40-50 ms there.  The zygote's own side
# imports them in main(), before its first fork.

ENV_IDLE = "SANDBOX_KERNEL_FORKSERVER_IDLE"   # forkserver.ENV_IDLE: seconds, unset or 0 = off
MAX_REQUEST = 1 << 22
MAX_FDS = 64
_FD_FIELDS = ("status_fd", "result_fd", "lifeline_fd")
_STATUS_FD_INDEX = 3    # stdio first, then _FD_FIELDS in order
# The owner's environment variables the zygote keeps: where programs are
# (newuidmap, for a rootless launcher), the locale (Python's file system and
# stdio encodings), and what decides which modules Python imports.  None is a
# secret; each is also visible to a workload in its effect (sys.path,
# sys.getfilesystemencoding()).  Everything else (tokens, JPY_*, the hub's
# variables) stays out of the zygote, so out of every process it forks.
ZYGOTE_ENV = ("PATH", "LANG", "LANGUAGE", "PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH",
              "PYTHONNOUSERSITE", "PYTHONUSERBASE", "PYTHONPLATLIBDIR", "PYTHONUTF8",
              "PYTHONIOENCODING", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
ZYGOTE_ENV_PREFIXES = ("LC_",)


class ZygoteError(RuntimeError):
    pass


# ------------------------------------------------------------------ owner side

class Zygote:
    """The owner's handle on its fork server."""

    def __init__(self, preload: tuple[str, ...] = ()):
        self.preload = tuple(preload)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sandbox_kernel.runtime.zygote", str(theirs.fileno()),
             *preload],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, start_new_session=True,
            env=zygote_environment())
        theirs.close()
        self._sock = ours
        self._lock = threading.Lock()

    def alive(self) -> bool:
        return self.process.poll() is None

    def spawn(self, config: LauncherConfig, stdio_fds: list[int]) -> int:
        """Have the zygote fork a launcher for ``config``; returns its pid."""
        fds = [*stdio_fds, *(getattr(config, f) for f in _FD_FIELDS), *config.pass_fds]
        body = json.dumps(config.to_dict()).encode()
        if len(body) > MAX_REQUEST:
            raise ZygoteError(f"launch request of {len(body)} bytes is too large")
        with self._lock:  # one request at a time on the socket
            answer = self._exchange(body, fds)
        if not answer:
            raise ZygoteError("the zygote died (see its stderr)")
        reply = json.loads(answer)
        if "error" in reply:
            raise ZygoteError(reply["error"])
        return reply["pid"]

    def _exchange(self, body: bytes, fds: list[int]) -> bytes:
        socket.send_fds(self._sock, [body], fds)
        return self._sock.recv(64)

    def close(self) -> None:
        self._sock.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def zygote_environment(environ=None) -> dict:
    """The zygote's whole environment: ZYGOTE_ENV of the owner's, nothing else.
    A user site-packages the owner imports from is named by PYTHONUSERBASE,
    so the zygote finds it without the owner's HOME."""
    environ = os.environ if environ is None else environ
    kept = {name: value for name, value in environ.items()
            if name in ZYGOTE_ENV or name.startswith(ZYGOTE_ENV_PREFIXES)}
    user_site = _user_site_in_use()
    if user_site and "PYTHONUSERBASE" not in kept:
        kept["PYTHONUSERBASE"] = user_site
    return kept


def _user_site_in_use() -> str | None:
    import site
    if site.ENABLE_USER_SITE and site.USER_SITE in sys.path:
        return site.USER_BASE
    return None


class _Peer:
    """A zygote that is not our child (the fork server's): watched and
    killed through a pidfd, as Popen does for its own."""

    def __init__(self, pid: int):
        self.pid = pid
        self._pidfd = os.pidfd_open(pid)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._pidfd], [], [], 0)[0]:
            self.returncode = -signal.SIGKILL   # its status is its parent's to read
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None and not select.select([self._pidfd], [], [], timeout)[0]:
            raise subprocess.TimeoutExpired(f"zygote {self.pid}", timeout)
        return self.poll()

    def kill(self) -> None:
        try:
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        os.close(self._pidfd)


class SharedZygote(Zygote):
    """Our own zygote, forked for this owner by this uid's fork server
    (forkserver.py) from its warm imports; used exactly as a private one.
    Its pid comes on the connection once it is forked: read on first need,
    so that an owner starting the daemon does not wait for its imports.
    If the daemon fails to fork it, a private zygote takes its place."""

    def __init__(self, preload: tuple[str, ...], sock: socket.socket, starter=None):
        self.preload = tuple(preload)
        self._sock = sock
        self._starter = starter        # the daemon's first process, which leaves at once
        self._process = None
        self._lock = threading.Lock()

    @property
    def process(self):
        if self._process is None:
            with self._lock:      # not while a spawn reads the hello
                if self._process is None:
                    self._await_hello()
        return self._process

    def _await_hello(self) -> bool:
        """Read our zygote's pid; False if it never came and a private
        zygote took its place."""
        from . import forkserver
        forked = True
        try:
            self._process = _Peer(forkserver.hello(self._sock))
        except (forkserver.ForkServerUnusable, OSError):
            self._sock.close()
            private = Zygote(self.preload)
            self._sock, self._process = private._sock, private.process
            forked = False
        if self._starter is not None:
            self._starter.wait()
            self._starter = None
        return forked

    def alive(self) -> bool:
        if self._process is not None:
            return super().alive()
        try:   # not yet forked: alive unless the daemon hung up
            return self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            return True
        except OSError:
            return False

    def _exchange(self, body: bytes, fds: list[int]) -> bytes:
        """The first request goes before the zygote's hello is read: it
        waits for the zygote, which serves it as soon as it is forked
        (instead of beginning an import of its idle time)."""
        if self._process is None:
            try:
                socket.send_fds(self._sock, [body], fds)
            except OSError:
                pass   # the daemon hung up: the hello fails too
            if self._await_hello():
                return self._sock.recv(64)
        return super()._exchange(body, fds)

    def close(self) -> None:
        _ = self.process   # the hello read first: Zygote.close waits for that process
        super().close()
        if isinstance(self._process, _Peer):
            self._process.close()


def _start(preload: tuple[str, ...]) -> Zygote:
    """From the fork server when it can be used safely, else private."""
    if os.environ.get(ENV_IDLE, "").strip() in ("", "0"):
        return Zygote(preload)        # off (the default): no need to import forkserver
    from . import forkserver
    idle = forkserver.idle_seconds()
    if idle > 0:
        try:
            sock, starter = forkserver.connect(
                forkserver.key(_what_the_zygote_is(preload)),
                [sys.executable, "-m", "sandbox_kernel.runtime.zygote", "--forkserver",
                 repr(idle), ",".join(preload)],
                zygote_environment())
            return SharedZygote(preload, sock, starter)
        except (forkserver.ForkServerUnusable, OSError):
            pass   # never fail a start for it: today's zygote
    return Zygote(preload)


def _what_the_zygote_is(preload: tuple[str, ...]) -> dict:
    """What the fork server's key hashes besides the owner's identity."""
    from . import forkserver
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    version = getattr(sys.modules.get("sandbox_kernel"), "__version__", None)
    return {"executable": sys.executable, "python": sys.version, "package": package,
            "version": version, "files": forkserver.code_stamp(package),
            "preload": list(preload), "environment": sorted(zygote_environment().items()),
            "cwd": os.getcwd()}


_shared: Zygote | None = None
_shared_lock = threading.Lock()


def shared(preload: tuple[str, ...] = ()) -> Zygote:
    """This process's zygote, started on first use (and again if it died).

    The call that starts it decides what it imports: ``preload`` (module
    names, and the names those modules list in ZYGOTE_PRELOAD).  Later calls
    return the same zygote whatever they pass.  One started again after a
    death imports what the dead one did, unless this call names modules."""
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.alive():
            previous = _shared.preload if _shared is not None else ()
            _shared = _start(tuple(preload) or previous)
        return _shared


def enabled() -> bool:
    return os.environ.get("SANDBOX_KERNEL_ZYGOTE", "1") != "0"


# ----------------------------------------------------------------- zygote side

def serve(sock: socket.socket, later=()) -> None:
    """Answer requests until the owner goes; import ``later`` (module names)
    one by one while no request waits."""
    later = list(later)
    signal.signal(signal.SIGCHLD, lambda _s, _f: _reap_children())
    # A private mapping: a fork gets its own copy of the request, and what
    # this process zeroes after the fork is gone from every later fork.
    buffer = mmap.mmap(-1, MAX_REQUEST, flags=mmap.MAP_PRIVATE)
    while True:
        while later and not select.select([sock], [], [], 0)[0]:
            _import_quietly(later.pop(0))
            gc.freeze()                   # see main()
        try:
            size, fds, flags = _receive(sock, buffer)
        except InterruptedError:
            continue
        if not size and not fds:
            return  # the owner closed the socket or died
        try:
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                raise ZygoteError("launch request truncated (too large, or too many fds)")
            pid = _fork_launcher(buffer, size, fds)
            sock.send(json.dumps({"pid": pid}).encode())
        except (OSError, ValueError, ZygoteError) as error:
            sock.send(json.dumps({"error": f"{type(error).__name__}: {error}"}).encode())
        finally:
            buffer[:size] = bytes(size)   # the request's env and paths: the fork has them
            for fd in fds:
                os.close(fd)


def _receive(sock: socket.socket, buffer: mmap.mmap) -> tuple[int, list[int], int]:
    """One request into ``buffer``, not into a bytes object this process
    would free without clearing: (its size, the fds it carried, msg flags)."""
    fds = array.array("i")
    size, ancdata, flags, _addr = sock.recvmsg_into(
        [buffer], socket.CMSG_LEN(MAX_FDS * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    return size, list(fds), flags


def _fork_launcher(buffer: mmap.mmap, size: int, fds: list[int]) -> int:
    """Fork; the child parses the request (config JSON, every field's type
    checked: launch_config.py) and runs the launcher."""
    if len(os.listdir("/proc/self/task")) != 1:
        raise ZygoteError("the zygote has a second thread: refusing to fork")
    if len(fds) < _STATUS_FD_INDEX + len(_FD_FIELDS):
        raise ZygoteError(f"launch request with {len(fds)} fds: expected stdio and "
                          f"{', '.join(_FD_FIELDS)}")
    from . import launcher
    from .launch_config import LauncherConfig
    pid = os.fork()
    if pid == 0:
        code = 125
        status_fd = fds[_STATUS_FD_INDEX]
        try:
            gc.enable()                   # main() froze what we inherit
            config = LauncherConfig.from_dict(json.loads(buffer[:size]))
            _place_fds(config, fds)
            status_fd = config.status_fd
            code = launcher.launcher_main(config)
        except BaseException as error:  # noqa: B036 -- never return into the server loop
            launcher._report(status_fd, "launcher", error)
        finally:
            os._exit(code)
    return pid


def _place_fds(config: LauncherConfig, fds: list[int]) -> None:
    """Give the received fds the numbers the request names: 0, 1, 2 for stdio,
    the owner's own numbers for pass_fds (a command line may name them)."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    # park every fd above all the target numbers first, so no dup2 below
    # overwrites a received fd that is still to be placed
    base = max([256, *config.pass_fds]) + 1
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, base) for fd in fds]
    stdio, channels, passed = high[:3], high[3:6], high[6:]
    for target, fd in enumerate(stdio):
        os.dup2(fd, target)
    for name, fd in zip(_FD_FIELDS, channels):
        setattr(config, name, fd)
    for target, fd in zip(config.pass_fds, passed):
        os.dup2(fd, target)
    keep = {0, 1, 2, *channels, *config.pass_fds}
    from . import launcher
    launcher._close_fds_except(keep)


def _reap_children() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def preload(names) -> list[str]:
    """Import each module; return what they name in ZYGOTE_PRELOAD (modules
    they import later, on first use).  serve() imports those while idle: a
    request that is waiting already (the first container of a kernel) is
    not held up by them."""
    later = []
    for name in names:
        later += getattr(importlib.import_module(name), "ZYGOTE_PRELOAD", ())
    return later


def _import_quietly(name: str) -> None:
    """One that is missing is left to the workload, which then imports it
    (or fails) as it would without us."""
    try:
        importlib.import_module(name)
    except ImportError:
        pass


def main() -> None:
    # the zygote's side, imported before the first fork: every child shares it
    from . import launch_config, launcher  # noqa: F401
    from . import syscalls as sc
    sc.set_process_name("sbk-zygote")
    # A collection in a forked child writes to the header of every object
    # it walks, and each write copies a page of the zygote's: so no
    # collection here while the modules load (no holes in the pages), and
    # gc.freeze() moves them all out of the collector's reach before the
    # first fork.  The children collect what they allocate themselves.
    gc.disable()
    if sys.argv[1] == "--forkserver":
        return _fork_server(sys.argv[2:])   # never returns: the daemon exits
    sock = socket.socket(fileno=int(sys.argv[1]))
    later = preload(sys.argv[2:])
    gc.freeze()
    serve(sock, later)


def _fork_server(args: list[str]) -> None:
    """``--forkserver IDLE PRELOAD,... DIR NAME LISTENER_FD LOCK_FD``: this
    uid's daemon (forkserver.py), whose fork per client runs serve() as
    main() would."""
    from . import forkserver
    idle, names, path, name, listener, lock = args
    forkserver.run_daemon(
        path, name, int(listener), int(lock), float(idle),
        prepare=lambda: _frozen(preload([n for n in names.split(",") if n])),
        import_later=lambda module: _frozen(_import_quietly(module)),
        serve_client=_serve_client)


def _frozen(result):
    gc.freeze()   # see main()
    return result


def _serve_client(sock: socket.socket, later: list[str]) -> None:
    from . import syscalls as sc
    sc.set_process_name("sbk-zygote")
    sock.send(json.dumps({"pid": os.getpid()}).encode())
    serve(sock, later)


if __name__ == "__main__":
    main()
