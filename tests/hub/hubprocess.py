"""A real JupyterHub for the hub tier: system users made for the test, the
hub started as root on 127.0.0.1 in a private mount namespace, and its REST
API as each user sees it.

The mount namespace: the users' servers run the venv's Python, which may
live where only root can enter (pyenv under /root, mode 0700), as may the
checkout (CI clones anywhere).  Then the hub (and everything it starts)
runs in a mount namespace in which each such directory is a tmpfs holding
only the way to what is needed, bound back: as tests/rootless/as-user does
for one user.  Nothing on the host changes.
"""
from __future__ import annotations

import json
import os
import pwd
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from jupyterhub.utils import random_port as free_port

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ROLES = ("ann", "bob", "cat", "teach")
HUB_START_TIMEOUT = 120.0
SPAWN_TIMEOUT = 240.0
STOP_TIMEOUT = 60.0


# -- system users ---------------------------------------------------------------

@dataclass
class SystemUser:
    name: str
    password: str
    uid: int = 0
    home: str = ""


def make_user(name: str, homes: str) -> SystemUser:
    """useradd + chpasswd: a real login for PAM.  The home is below ``homes``,
    a local directory (in the v2 guest /home is the host's, where ownership
    does not hold)."""
    subprocess.run(["useradd", "--create-home", "--home-dir", os.path.join(homes, name),
                    "--shell", "/bin/sh", "--user-group", name],
                   check=True, capture_output=True, timeout=60)
    password = secrets.token_urlsafe(12)
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True,
                   capture_output=True, timeout=60)
    entry = pwd.getpwnam(name)
    return SystemUser(name, password, entry.pw_uid, entry.pw_dir)


def pids_of_uid(uid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    found.append(int(entry))
            except FileNotFoundError:
                continue
    return found


def remove_user(user: SystemUser) -> list[str]:
    """Kill what the test user still runs (by pid: only the user's), remove
    its ceiling and the account.  Returns what went wrong, for the report."""
    from sandbox_kernel.runtime.cgroups import delegation
    problems = []
    for _ in range(5):
        pids = pids_of_uid(user.uid)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    try:
        delegation.remove(user.name)
    except OSError as error:
        problems.append(f"ceiling of {user.name}: {error}")
    done = subprocess.run(["userdel", "--remove", user.name], capture_output=True, text=True,
                          timeout=60)
    if done.returncode not in (0, 12):      # 12: the home could not be removed (reported)
        problems.append(f"userdel {user.name}: {done.stderr.strip()}")
    return problems


USER_PREFIX = "sbkh"      # + 4 hex digits + a role: the accounts this tier makes


def remove_stale_users() -> list[str]:
    """Accounts of an earlier run whose machine died before its clean-up (the v2
    guest writes the host's /etc/passwd; its /run, with their homes, went with
    it): ours by name, no home left, no process.  Returns their names."""
    removed = []
    for entry in pwd.getpwall():
        name = entry.pw_name
        if (name.startswith(USER_PREFIX) and len(name) > 8 and name[8:] in ROLES
                and not os.path.exists(entry.pw_dir) and not pids_of_uid(entry.pw_uid)):
            subprocess.run(["userdel", name], capture_output=True, timeout=60)
            removed.append(name)
    return removed


# -- the hub's mount namespace ----------------------------------------------------

def closed_ancestor(path: str) -> str | None:
    """The topmost directory on the way to path that other users cannot enter;
    path itself must be open to them (a tmpfs can show it, not open it)."""
    closed, directory = None, os.path.realpath(path)
    if os.path.isdir(directory) and not os.stat(directory).st_mode & 0o001:
        raise RuntimeError(f"{directory} is mode {os.stat(directory).st_mode & 0o777:o}: the "
                           "students' servers run from it; make it enterable (chmod o+rx)")
    while directory != "/":
        directory = os.path.dirname(directory)
        if not os.stat(directory).st_mode & 0o001:
            closed = directory
    return closed


def exposing_script(paths: list[str]) -> str:
    """Shell lines that, in a private mount namespace, cover each closed
    directory with a tmpfs holding only the children on the way to paths."""
    plan: dict[str, set[str]] = {}
    for path in paths:
        closed = closed_ancestor(path)
        if closed is not None:
            child = os.path.relpath(os.path.realpath(path), closed).split(os.sep)[0]
            plan.setdefault(closed, set()).add(child)
    lines = ["set -e"]
    for closed, children in sorted(plan.items()):
        lines.append("keep=$(mktemp -d /run/sbk-hub-keep.XXXXXX)")
        for child in sorted(children):
            lines += [f"mkdir -p \"$keep/{child}\"", f"mount --bind '{closed}/{child}' \"$keep/{child}\""]
        lines.append(f"mount -t tmpfs -o mode=0755,size=64k tmpfs '{closed}'")
        for child in sorted(children):
            lines += [f"mkdir '{closed}/{child}'", f"mount --move \"$keep/{child}\" '{closed}/{child}'"]
        # rmdir, never rm -r: a bind mount left there would be the real directory
        lines += [f"rmdir \"$keep/{child}\"" for child in sorted(children)] + ["rmdir \"$keep\""]
    # the v2 guest's module mounts below /usr (see tests/rootless/as-user)
    lines.append("while read -r _ _ _ _ point _; do case $point in /usr/*) "
                 "umount -l \"$point\" 2>/dev/null || true ;; esac; done < /proc/self/mountinfo")
    lines.append('exec "$@"')
    return "\n".join(lines)


# -- the hub ------------------------------------------------------------------------

@dataclass
class Hub:
    directory: Path           # root's, 0700: config, database, secrets, log
    shared: Path              # 0755: the kernelspec the users read
    students: list[SystemUser]
    teacher: SystemUser
    ceiling: dict
    kernel_args: list[str]
    port: int = 0
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    tokens: dict = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        names = [s.name for s in self.students]
        return "\n".join([
            "from sandbox_kernel.hub import SandboxSpawner, admin_service",
            "c.JupyterHub.ip = '127.0.0.1'",
            f"c.JupyterHub.port = {self.port}",
            "c.JupyterHub.hub_ip = '127.0.0.1'",
            f"c.JupyterHub.hub_port = {free_port()}",
            f"c.JupyterHub.db_url = 'sqlite:///{self.directory}/jupyterhub.sqlite'",
            f"c.JupyterHub.cookie_secret_file = '{self.directory}/cookie_secret'",
            f"c.ConfigurableHTTPProxy.pid_file = '{self.directory}/proxy.pid'",
            f"c.ConfigurableHTTPProxy.command = ['{VENV_BIN}/configurable-http-proxy']",
            f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{free_port()}'",
            f"c.Authenticator.allowed_users = {set(names)!r}",
            f"c.Authenticator.admin_users = {{{self.teacher.name!r}}}",
            "c.JupyterHub.spawner_class = SandboxSpawner",
            f"c.SandboxSpawner.ceiling_memory = {self.ceiling['memory']!r}",
            f"c.SandboxSpawner.ceiling_cpus = {self.ceiling['cpus']!r}",
            f"c.SandboxSpawner.ceiling_pids = {self.ceiling['pids']!r}",
            f"c.SandboxSpawner.kernel_args = {self.kernel_args!r}",
            f"c.SandboxSpawner.kernel_prefix = '{self.shared}/kernels'",
            "c.Spawner.start_timeout = 180",
            "c.Spawner.http_timeout = 180",
            f"c.JupyterHub.services = [admin_service(port={free_port()})]",
        ]) + "\n"

    def start(self) -> "Hub":
        self.port = free_port()
        (self.directory / "jupyterhub_config.py").write_text(self.config())
        self.log_path = self.directory / "hub.log"
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                exposing_script([sys.executable, sys.prefix, str(REPO)]), "hub",
                sys.executable, "-m", "jupyterhub", "-f", str(self.directory / "jupyterhub_config.py")]
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
        env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(argv, cwd=self.directory, env=env, stdin=subprocess.DEVNULL,
                                        stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self._wait_up()
        return self

    def _wait_up(self) -> None:
        deadline = time.monotonic() + HUB_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyterhub exited with {self.process.returncode}: {self.log_tail()}")
            try:
                self.api("GET", "/hub/api/")
                return
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        raise RuntimeError(f"jupyterhub did not answer within {HUB_START_TIMEOUT:g} s: {self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text()[-chars:] if self.log_path else ""

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)      # the hub stops its servers and proxy
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()

    # -- REST --------------------------------------------------------------------

    def api(self, method: str, path: str, token: str | None = None, body=None,
            timeout: float = 30.0):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if token:
            request.add_header("Authorization", f"token {token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read()
        return json.loads(text) if text else None

    def status(self, method: str, path: str, token: str | None, body=None) -> int:
        """The HTTP status of a request that is expected to be refused."""
        opener = urllib.request.build_opener(NoRedirect)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if token:
            request.add_header("Authorization", f"token {token}")
        try:
            with opener.open(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    def login(self, user: SystemUser) -> str:
        """A token through the REST API, authenticated by PAM with the password."""
        reply = self.api("POST", f"/hub/api/users/{user.name}/tokens",
                         body={"auth": {"username": user.name, "password": user.password},
                               "note": "hub tier"})
        self.tokens[user.name] = reply["token"]
        return reply["token"]

    def spawn(self, user: SystemUser) -> None:
        token = self.tokens[user.name]
        try:
            self.api("POST", f"/hub/api/users/{user.name}/server", token, timeout=SPAWN_TIMEOUT)
        except urllib.error.HTTPError as error:
            if error.code != 400:         # 400: already running
                raise
        self._wait_for(user, ready=True, timeout=SPAWN_TIMEOUT)

    def stop_server(self, user: SystemUser) -> None:
        token = self.tokens[user.name]
        try:
            self.api("DELETE", f"/hub/api/users/{user.name}/server", token, timeout=STOP_TIMEOUT)
        except urllib.error.HTTPError as error:
            if error.code not in (202, 204, 400):
                raise
        self._wait_for(user, ready=False, timeout=STOP_TIMEOUT)

    def _wait_for(self, user: SystemUser, ready: bool, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.api("GET", f"/hub/api/users/{user.name}", self.tokens[user.name])
            server = model.get("servers", {}).get("")
            if (server is not None and server.get("ready") and not server.get("pending")) == ready \
                    and (ready or server is None):
                return
            time.sleep(1.0)
        raise RuntimeError(f"the server of {user.name} is not {'up' if ready else 'gone'} "
                           f"after {timeout:g} s: {self.log_tail()}")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None
