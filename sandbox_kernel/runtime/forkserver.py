"""A fork server per user that outlives its owners: even a fresh kernel's
first container comes from a warm zygote.

A zygote (zygote.py) imports the agent's modules before it can fork the
first launcher: about 0.1 s that every new owner (kernel, magics, server)
waited for.  The daemon ``sbk-forkserver`` holds those imports for every
owner of the same user whose zygote would be the same: the socket's name is
a hash (``key``) of everything that decides what the zygote is (the
interpreter, the package's files, the preload, the zygote's environment,
the working directory) and of the owner's process identity (uid, gids,
capabilities, namespaces, cgroup, limits, umask).

    owner --- connect ---> sbk-forkserver (never reads a request)
                             | fork per connection
      <---- {"pid": N} ---- sbk-zygote: zygote.serve() on that connection,
                             exits when its owner closes it

So what zygote.py's docstring lists holds per owner: each owner's requests
are read by its own zygote only, forked from a daemon that never saw one.

Never shared across users:
  - the socket lies in a directory owned by the uid, mode 0700: root's under
    /run/sandbox-kernel/forkserver, others' in $XDG_RUNTIME_DIR when it is
    theirs and 0700, else in the temp dir's sandbox-kernel-forkserver-UID.
    The directory is opened with O_NOFOLLOW and checked on the fd (owner,
    mode), and the socket is reached through that fd: a directory, link or
    socket someone else planted is never used (ForkServerUnusable: the
    caller falls back to a private zygote);
  - SO_PEERCRED both ways: the owner checks the daemon's uid, the daemon
    refuses a client of another uid.

It is off unless SANDBOX_KERNEL_FORKSERVER_IDLE names the seconds the
daemon stays without a zygote alive (600 is a good value): off, each owner
has a private zygote, its own child, as before.  Off by default because on
a quiet machine the private zygote's imports overlap the owner's own (a
fresh kernel's first cell waited no longer without the daemon: issue 22's
figures), while the daemon is a process per user and key that outlives
every kernel, and containers then hang below it, not below their kernel
(tools that look for a kernel's containers among its children).  It pays
where fresh kernels start often on a busy machine (graders, a classroom):
about 0.1 s of CPU per kernel.

One daemon per name at a time: it holds an flock on NAME.lock for its life, so
a socket left by a killed daemon is stale and replaced by the next one.

Imports: syscalls only.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import resource
import select
import socket
import stat
import struct
import subprocess
import sys
import time

from . import syscalls as sc

ENV_IDLE = "SANDBOX_KERNEL_FORKSERVER_IDLE"
DEFAULT_IDLE = 0.0      # off: see the module docstring
ROOT_DIR = "/run/sandbox-kernel/forkserver"
START_TIMEOUT = 30.0    # the daemon's interpreter start, under load
HELLO_TIMEOUT = 60.0    # a zygote forked once the daemon's preload is imported
LATER_QUIET = 1.0       # seconds without a client before each idle-time import
_PEERCRED = struct.Struct("3i")
_NAMESPACES = ("mnt", "pid", "net", "user", "ipc", "uts", "cgroup")
_STATUS_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs",
                  "Seccomp", "Umask")


class ForkServerUnusable(RuntimeError):
    """The daemon cannot be used safely: the caller starts a private zygote."""


def idle_seconds(environ=None) -> float:
    """SANDBOX_KERNEL_FORKSERVER_IDLE: seconds, 0 = no daemon.  A bad value
    is said once on stderr and the default used."""
    raw = (os.environ if environ is None else environ).get(ENV_IDLE, "")
    if not raw.strip():
        return DEFAULT_IDLE
    try:
        value = float(raw)
        if value < 0 or value != value or value == float("inf"):
            raise ValueError(raw)
    except ValueError:
        print(f"sandbox-kernel: {ENV_IDLE}={raw!r} is not a number of seconds >= 0 "
              f"(0 turns the fork server off); using {DEFAULT_IDLE:.0f} (off)", file=sys.stderr)
        return DEFAULT_IDLE
    return value


# ------------------------------------------------------------ names and places

def identity() -> dict:
    """What a process of this owner inherits from its parent besides memory:
    a daemon serves only owners that agree on all of it."""
    status = {}
    with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
        for line in handle:
            name, _, value = line.partition(":")
            if name in _STATUS_FIELDS:
                status[name] = value.strip()
    with open("/proc/self/cgroup", encoding="utf-8", errors="replace") as handle:
        cgroup = [owners_cgroup(line.rstrip("\n")) for line in handle]
    limits = {name: resource.getrlimit(getattr(resource, name))
              for name in sorted(dir(resource)) if name.startswith("RLIMIT_")}
    return {"uid": os.geteuid(), "ruid": os.getuid(), "gid": os.getegid(),
            "rgid": os.getgid(), "groups": sorted(os.getgroups()), "status": status,
            "namespaces": {ns: _stat_field(f"/proc/self/ns/{ns}", "st_ino") for ns in _NAMESPACES},
            "cgroup": cgroup, "rlimits": limits}


def owners_cgroup(line: str) -> str:
    """A line of /proc/self/cgroup, with v2's leaf taken for its parent: the
    v2 driver moves every process of an owner's group into LEAF
    (cgroups/v2.py) at its first container, daemon and later owners too,
    and they are the same owner's as before (as cgroups/detect.py says)."""
    number, controllers, path = line.split(":", 2)
    if os.path.basename(path) == V2_LEAF:
        path = os.path.dirname(path)
    return f"{number}:{controllers}:{path}"


V2_LEAF = "leaf"   # cgroups/v2.py LEAF, not imported: the zygote would import the drivers


def _stat_field(path: str, field: str) -> int | None:
    try:
        return getattr(os.stat(path), field)
    except OSError:
        return None


def code_stamp(package_dir: str) -> list:
    """The package's files and the import path's package directories, each
    with its mtime: an upgrade (pip adds and removes dist-info directories) or an
    edit makes a new daemon, and the old one idles out."""
    stamp = []
    for root, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith((".py", ".so")):
                info = os.stat(os.path.join(root, name))
                stamp.append((os.path.join(root, name), info.st_mtime_ns, info.st_size))
    for entry in sys.path:   # not a script's or the working directory: any file made there
        if os.path.basename(entry) in ("site-packages", "dist-packages"):
            stamp.append((entry, _stat_field(entry, "st_mtime_ns")))
    return stamp


def key(parts: dict) -> str:
    """The socket's name: a hash of ``parts`` (what the zygote is) and of
    this process's identity."""
    text = json.dumps({"parts": parts, "identity": identity()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def socket_dir(environ=None) -> str:
    """Where this uid's daemons listen (see the module's docstring)."""
    uid = os.geteuid()
    if uid == 0:
        return ROOT_DIR
    runtime = (os.environ if environ is None else environ).get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime):
        try:
            info = os.lstat(runtime)
        except OSError:
            info = None
        if info and stat.S_ISDIR(info.st_mode) and info.st_uid == uid \
                and stat.S_IMODE(info.st_mode) & 0o077 == 0:
            return os.path.join(runtime, "sandbox-kernel-forkserver")
    import tempfile   # only here: it costs an import of random and shutil
    return os.path.join(tempfile.gettempdir(), f"sandbox-kernel-forkserver-{uid}")


def open_private_dir(path: str, create: bool = True) -> int:
    """An fd on ``path``, made if missing: a real directory (no link), owned
    by this uid, mode 0700.  Anything else raises ForkServerUnusable."""
    if create:
        if os.geteuid() == 0 and path == ROOT_DIR:
            _mkdir(os.path.dirname(path), 0o755)
        _mkdir(path, 0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        raise ForkServerUnusable(f"open {path}: {error.strerror} (errno {error.errno})") from None
    info = os.fstat(fd)
    if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o077:
        os.close(fd)
        raise ForkServerUnusable(f"{path} is owned by uid {info.st_uid} with mode "
                                 f"{stat.S_IMODE(info.st_mode):o}: not this uid's and 0700")
    return fd


def _mkdir(path: str, mode: int) -> None:
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass
    except OSError as error:
        raise ForkServerUnusable(f"mkdir {path}: {error.strerror} (errno {error.errno})") from None


def _via(dir_fd: int, name: str) -> str:
    """The socket's path through the checked directory's fd, not its name."""
    return f"/proc/self/fd/{dir_fd}/{name}"


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the other end."""
    return _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                            _PEERCRED.size))


# ------------------------------------------------------------------ owner side

def connect(name: str, daemon_argv: list[str], env: dict) -> tuple[socket.socket, object]:
    """A connection to this uid's daemon ``name``; if none runs, this
    process binds its socket, connects, and hands the listening socket to a
    new daemon (``daemon_argv`` + [dir, name, listener fd, lock fd]): no
    wait for its start, the connection waits in the backlog.  The zygote's
    pid comes later on the connection (``hello``).  ForkServerUnusable when
    the daemon cannot be used safely.  Returns the connection and the
    daemon's starter (a Popen to reap, or None)."""
    path = socket_dir()
    dir_fd = open_private_dir(path)
    try:
        deadline = time.monotonic() + 2.0
        while True:
            sock = _connect_once(dir_fd, name)
            if sock is not None:
                return sock, None
            lock = _try_lock(dir_fd, name)
            if lock is not None:
                return _start_daemon(dir_fd, lock, name, [*daemon_argv, path, name], env)
            if time.monotonic() > deadline:   # a daemon holds the lock but does not listen
                raise ForkServerUnusable(f"the fork server at {path}/{name} does not answer")
            time.sleep(0.01)   # one starting, or leaving (idle): a moment
    finally:
        os.close(dir_fd)


def _connect_once(dir_fd: int, name: str) -> socket.socket | None:
    """Connected and checked, or None if no daemon listens there."""
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.geteuid():
        raise ForkServerUnusable(f"{name} in the fork server's directory is not this "
                                 f"uid's socket (uid {info.st_uid}, mode {info.st_mode:o})")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.connect(_via(dir_fd, name))
    except (ConnectionRefusedError, FileNotFoundError):
        sock.close()
        return None   # stale: its daemon is gone; the next one replaces it
    _pid, uid, _gid = peer_credentials(sock)
    if uid != os.geteuid():
        sock.close()
        raise ForkServerUnusable(f"the fork server at {name} runs as uid {uid}, not {os.geteuid()}")
    return sock


def _try_lock(dir_fd: int, name: str) -> int | None:
    """NAME.lock, held: no daemon of that name lives.  None: one does."""
    try:
        lock = os.open(name + ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                       0o600, dir_fd=dir_fd)
    except OSError as error:
        raise ForkServerUnusable(f"open {name}.lock: {error.strerror}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        return None
    if _stat_at(dir_fd, name + ".lock") != os.fstat(lock).st_ino:
        os.close(lock)   # a retiring daemon removed it meanwhile: ask again
        return None
    return lock


def _stat_at(dir_fd: int, name: str) -> int | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_ino
    except FileNotFoundError:
        return None


def _start_daemon(dir_fd: int, lock: int, name: str, argv: list[str],
                  env: dict) -> tuple[socket.socket, subprocess.Popen]:
    """Listen at ``name`` (replacing a stale socket: we hold the lock),
    connect, and leave the listener and the lock to the daemon."""
    try:
        listener = _listen(dir_fd, name)
        with listener:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
            sock.connect(_via(dir_fd, name))
            fds = (listener.fileno(), lock)
            try:
                starter = subprocess.Popen([*argv, *map(str, fds)], env=env, pass_fds=fds,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
            except OSError as error:
                sock.close()
                raise ForkServerUnusable(f"start {argv[0]}: {error.strerror}") from None
        return sock, starter
    finally:
        os.close(lock)   # the daemon's copy holds it now (an flock is the open file's)


def hello(sock: socket.socket) -> int:
    """The pid of our zygote, its first message once the daemon forked it
    (after the daemon's imports, for the first owner)."""
    ready, _, _ = select.select([sock], [], [], HELLO_TIMEOUT)
    try:
        answer = sock.recv(256) if ready else b""
        pid = int(json.loads(answer)["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ForkServerUnusable("the fork server sent no zygote") from None
    if _stat_field(f"/proc/{pid}", "st_uid") != os.geteuid():
        raise ForkServerUnusable(f"the fork server's zygote {pid} is not this uid's process")
    return pid


# ----------------------------------------------------------------- daemon side

def run_daemon(path: str, name: str, listener_fd: int, lock: int, idle: float,
               prepare, import_later, serve_client) -> None:
    """Become the daemon of ``name`` in ``path``, with the listening socket
    and the lock its starter made: the process started leaves at once (its
    starter reaps it) and a fork of it serves.  ``prepare()`` imports the
    preload and returns the modules to import while idle
    (``import_later(name)`` each); ``serve_client(conn, later)`` is run in
    the fork made for each connection (today's zygote, on that connection)."""
    dir_fd = open_private_dir(path, create=False)
    listener = socket.socket(fileno=listener_fd)
    for fd in (listener_fd, lock):
        os.set_inheritable(fd, False)
    if os.fork():
        os._exit(0)   # no interpreter teardown: the first owner's start waits on no CPU of ours
    sc.set_process_name("sbk-forkserver")
    later = list(prepare())
    _serve_connections(listener, idle, later, import_later,
                       lambda conn, rest: _fork_zygote(conn, rest, serve_client,
                                                       (listener.fileno(), lock, dir_fd)))
    _retire(listener, dir_fd, name, later, serve_client, lock)
    os._exit(0)


def _listen(dir_fd: int, name: str) -> socket.socket:
    """Bind ``name``, replacing a stale socket: we hold the lock, so no
    daemon listens there."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    listener.bind(_via(dir_fd, name))
    listener.listen(128)
    return listener


def _serve_connections(listener, idle, later, import_later, fork_zygote) -> None:
    """Fork a zygote per connection; import ``later`` while none waits;
    return after ``idle`` seconds without a zygote alive."""
    children: set[int] = set()
    idle_since = time.monotonic()
    while True:
        _reap(children)
        if children:
            idle_since = time.monotonic()
        # a quiet moment first: a zygote just forked imports these too, and
        # its first container should not share the CPU with us doing so
        if later and not _readable(listener, LATER_QUIET):
            import_later(later.pop(0))
            continue
        left = idle - (time.monotonic() - idle_since)
        if not children and left <= 0:
            return
        if _readable(listener, min(max(left, 0.05), 5.0) if not children else 5.0):
            pid = _accept(listener, later, fork_zygote)
            if pid is not None:
                children.add(pid)


def _readable(sock: socket.socket, timeout: float) -> bool:
    return bool(select.select([sock], [], [], timeout)[0])


def _accept(listener: socket.socket, later: list, fork_zygote) -> int | None:
    """One client, of this uid only: the pid of the zygote forked for it."""
    try:
        conn, _addr = listener.accept()
    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
        return None
    with conn:
        _pid, uid, _gid = peer_credentials(conn)
        if uid != os.geteuid():
            return None   # closing it is the answer: another user's client
        try:
            return fork_zygote(conn, list(later))
        except OSError as error:   # EAGAIN, ENOMEM: this client starts a private zygote
            print(f"sbk-forkserver: fork for a client: {error}", file=sys.stderr)
            return None


def _fork_zygote(conn: socket.socket, later: list, serve_client, ours: tuple) -> int:
    """The zygote for one client: the daemon's fds closed (its lock too: a
    zygote outliving the daemon must not keep the next one from starting)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for fd in ours:
                os.close(fd)
            serve_client(conn, later)
            code = 0
        finally:
            os._exit(code)
    return pid


def _reap(children: set[int]) -> None:
    for pid in list(children):
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            children.discard(pid)


def _retire(listener, dir_fd: int, name: str, later: list, serve_client, lock: int) -> None:
    """Idle: unlink the socket first (no new client can come), then serve
    the clients already queued, so no connection is dropped unanswered.
    The lock goes too (an owner that opened it before checks, once it holds
    it, that it is still the file of that name: _try_lock)."""
    for leftover in (name, name + ".lock"):
        try:
            os.unlink(leftover, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
    listener.setblocking(False)
    while _readable(listener, 0):
        if _accept(listener, later, lambda conn, rest: _fork_zygote(
                conn, rest, serve_client, (listener.fileno(), lock, dir_fd))) is None:
            break
