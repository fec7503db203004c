"""Real system users for tests, and commands run as them (needs root).

``system_user()`` makes ``sbk-t-<random>`` with useradd and always removes it
again: its ceiling (if one was delegated), every process left in it, its
temporary home, the account.  ``run_as(user, argv, ceiling=...)`` runs argv as
that user, entered into the ceiling's server leaf before the privileges are
dropped (as a hub's spawner does), with a user's environment.

The venv's interpreter may live where only root can pass (pyenv under /root,
mode 0700); then argv runs in a private mount namespace where that directory
is a tmpfs with only the interpreter's tree bound back in, as
tests/rootless/as-user does.  Nothing on the host changes.
"""
from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from sandbox_kernel.runtime import cleanup
from sandbox_kernel.runtime.cgroups import delegation

PREFIX = "sbk-t-"
NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="makes system users and ceilings: needs root")
CLI = [sys.executable, "-m", "sandbox_kernel.cli"]           # as root, this interpreter
SANDBOX_KERNEL = os.path.join(os.path.dirname(sys.executable), "sandbox-kernel")   # for run_as

_INNER = r'''
set -e
if [ -n "$CLOSED" ]; then
  keep=$(mktemp -d /run/sbk-t-keep.XXXXXX)
  child=${INTERPRETER#"$CLOSED"/}; child=${child%%/*}
  mount --bind "$CLOSED/$child" "$keep"
  mount -t tmpfs -o mode=0755,size=64k tmpfs "$CLOSED"
  mkdir "$CLOSED/$child"
  mount --move "$keep" "$CLOSED/$child"
  rmdir "$keep"
fi
while read -r _ _ _ _ point _; do   # the v2 guest's modules below /usr (see as-user)
  case $point in /usr/*) umount -l "$point" 2>/dev/null || true ;; esac
done < /proc/self/mountinfo
exec setpriv --reuid="$RUN_USER" --regid="$RUN_USER" --init-groups --inh-caps=-all env -i "$@"
'''


@contextlib.contextmanager
def system_user():
    """A fresh user sbk-t-<hex> with a home under /run; removed after, also on failure."""
    name = PREFIX + secrets.token_hex(4)
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name],
                   check=True, capture_output=True)
    home = None
    try:
        entry = pwd.getpwnam(name)
        home = tempfile.mkdtemp(prefix=f"{name}-home.", dir="/run")
        os.chown(home, entry.pw_uid, entry.pw_gid)
        yield name
    finally:
        try:
            delegation.remove(name)   # kills what is left in the ceiling
            # and what its containers could not remove, killed with it
            cleanup.reap_state_dirs_of(pwd.getpwnam(name).pw_uid)
        finally:
            if home is not None:
                shutil.rmtree(home, ignore_errors=True)
            _delete_user(name)


def _processes_of(uid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and os.stat(f"/proc/{name}").st_uid == uid:
                found.append(int(name))
        except FileNotFoundError:
            continue
    return found


def _delete_user(name: str) -> None:
    """userdel refuses while a process of the user exists (one still dying after
    the ceiling's kill, or one started outside it): kill those, by pid, first."""
    uid = pwd.getpwnam(name).pw_uid
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = _processes_of(uid)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    ran = subprocess.run(["userdel", name], check=False, capture_output=True, text=True)
    if ran.returncode != 0:
        ran = subprocess.run(["userdel", "--force", name], check=False, capture_output=True, text=True)
    if ran.returncode != 0:
        raise RuntimeError(f"userdel {name} failed ({ran.returncode}): {ran.stderr.strip()}")


def home_of(user: str) -> str:
    """The temporary home system_user() made (under /run)."""
    candidates = [n for n in os.listdir("/run") if n.startswith(f"{user}-home.")]
    return os.path.join("/run", candidates[0])


def _closed_dir(path: str, user: str) -> str:
    """The last directory on the way to path the user cannot pass, or ''."""
    entry = pwd.getpwnam(user)
    closed, directory = "", path
    while directory != "/":
        directory = os.path.dirname(directory)
        mode = os.stat(directory)
        passable = (mode.st_mode & 0o001 or (mode.st_uid == entry.pw_uid and mode.st_mode & 0o100)
                    or (mode.st_gid == entry.pw_gid and mode.st_mode & 0o010))
        if not passable:
            closed = directory
    return closed


def user_env(user: str, extra: dict | None = None) -> dict[str, str]:
    home = home_of(user)
    env = {"HOME": home, "USER": user, "LOGNAME": user, "LANG": "C.UTF-8", "TMPDIR": home,
           "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}
    env.update({k: v for k, v in os.environ.items() if k.startswith("SANDBOX_KERNEL_")})
    env.update(extra or {})
    return env


def _as_user(user: str, argv: list[str], ceiling, env: dict | None) -> tuple[list[str], dict]:
    """The command line and Popen keywords that run argv as user (see the module docstring)."""
    interpreter = os.path.realpath(sys.executable)
    outer = {"CLOSED": _closed_dir(interpreter, user), "INTERPRETER": interpreter,
             "RUN_USER": user, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    assignments = [f"{k}={v}" for k, v in user_env(user, env).items()]
    enter = (lambda: delegation.enter(ceiling, 0)) if ceiling is not None else None
    command = ["unshare", "--mount", "--propagation", "private", "bash", "-c", _INNER, "run-as",
               *assignments, *argv]
    return command, {"env": outer, "preexec_fn": enter, "cwd": "/", "text": True}


def run_as(user: str, argv: list[str], ceiling=None, env: dict | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess:
    """argv as user (inside ceiling's server leaf when given); output captured as text."""
    command, keywords = _as_user(user, argv, ceiling, env)
    return subprocess.run(command, capture_output=True, timeout=timeout, check=False, **keywords)


def start_as(user: str, argv: list[str], ceiling=None, env: dict | None = None) -> subprocess.Popen:
    """As run_as, but started and left running: the caller waits for it (or kills it)."""
    command, keywords = _as_user(user, argv, ceiling, env)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **keywords)
