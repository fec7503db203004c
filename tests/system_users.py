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
import subprocess
import sys
import tempfile

from sandbox_kernel.runtime.cgroups import delegation

PREFIX = "sbk-t-"

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
    home = tempfile.mkdtemp(prefix=f"{name}-home.", dir="/run")
    try:
        entry = pwd.getpwnam(name)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        yield name
    finally:
        try:
            delegation.remove(name)   # kills what is left in the ceiling
        finally:
            shutil.rmtree(home, ignore_errors=True)
            subprocess.run(["userdel", name], check=False, capture_output=True)


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


def run_as(user: str, argv: list[str], ceiling=None, env: dict | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess:
    """argv as user (inside ceiling's server leaf when given); output captured as text."""
    interpreter = os.path.realpath(sys.executable)
    outer = {"CLOSED": _closed_dir(interpreter, user), "INTERPRETER": interpreter,
             "RUN_USER": user, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    assignments = [f"{k}={v}" for k, v in user_env(user, env).items()]
    enter = (lambda: delegation.enter(ceiling, 0)) if ceiling is not None else None
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", _INNER, "run-as",
         *assignments, *argv],
        env=outer, preexec_fn=enter, capture_output=True, text=True, timeout=timeout,
        cwd="/", check=False)
