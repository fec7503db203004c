"""Hub tier: a real JupyterHub 5 (the venv's, with configurable-http-proxy)
on 127.0.0.1, PAM logins of system users made here (useradd + chpasswd,
removed after, also when a test fails), SandboxSpawner with a per-user
ceiling, and notebooks run on the sandbox kernel through each user's server.

One hub per module: starting it and three servers takes long on a loaded
machine.  Needs root; under CI=true a missing piece fails instead of skipping.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from hub.hubprocess import ROLES, USER_PREFIX, VENV_BIN, Hub, make_user, remove_stale_users, remove_user

CEILING = {"memory": "384M", "cpus": "1", "pids": "512"}
# trusted, 2G: the kernel would allow far more than the ceiling; the ceiling holds anyway
KERNEL_ARGS = ["--policy", "trusted", "--memory", "2G", "--cpus", "1", "--pids", "256"]


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "the hub tier makes system users and runs the hub as root"
    for tool in ("useradd", "chpasswd", "userdel", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not (VENV_BIN / "configurable-http-proxy").exists():
        return f"configurable-http-proxy is not in {VENV_BIN}"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _missing()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        raise pytest.UsageError(f"hub tier: {reason}")
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here + os.sep):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="module")
def classroom_users():
    """Three students and a teacher (the hub's admin), real system users."""
    stale = remove_stale_users()
    if stale:
        print(f"removed accounts an earlier run left: {stale}", file=sys.stderr)
    tag = secrets.token_hex(2)
    homes = tempfile.mkdtemp(prefix="sbk-hub-homes-", dir="/run")
    os.chmod(homes, 0o755)
    made, problems = [], []
    try:
        for role in ROLES:
            made.append(make_user(f"{USER_PREFIX}{tag}{role}", homes))
        yield made[:3], made[3]
    finally:
        for user in made:
            problems += remove_user(user)
        shutil.rmtree(homes, ignore_errors=True)
    assert not problems, problems


@pytest.fixture(scope="module")
def hub(classroom_users):
    students, teacher = classroom_users
    directory = Path(tempfile.mkdtemp(prefix="sbk-hub-"))          # 0700, root's
    shared = Path(tempfile.mkdtemp(prefix="sbk-hub-shared-"))      # the users read the kernelspec
    shared.chmod(0o755)
    running = Hub(directory, shared, students, teacher, CEILING, KERNEL_ARGS)
    try:
        yield running.start()
    finally:
        running.stop()
        log = running.log_tail(20000)
        keep = Path(__file__).resolve().parent / "artifacts"
        keep.mkdir(exist_ok=True)
        (keep / "hub.log").write_text(log)
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(shared, ignore_errors=True)


@pytest.fixture(scope="module")
def loop():
    """The kernels' websockets' event loop, in a thread of its own."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="kernel-websockets", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)
    loop.close()


@pytest.fixture(scope="module")
def classroom(hub, classroom_users, loop):
    """Each student logged in through the REST API (PAM), its server spawned,
    one notebook open on the default kernel."""
    from hub.kernel_ws import Notebook
    students, _ = classroom_users
    notebooks = {}
    try:
        for student in students:
            hub.login(student)
            hub.spawn(student)
        for student in students:
            notebooks[student.name] = Notebook(hub, student, "work.ipynb", loop).open(
                ["print('hello')"])
        yield notebooks
    finally:
        for notebook in notebooks.values():
            notebook.close()
        for student in students:
            if student.name in hub.tokens:
                try:
                    hub.stop_server(student)
                except (OSError, RuntimeError) as error:
                    print(f"stopping the server of {student.name}: {error}", file=sys.stderr)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--disable-dev-shm-usage"]     # as tests/browser/conftest.py launches it


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright; nothing is downloaded."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing (apt package chromium)")
        pytest.skip(f"{CHROMIUM} is missing (apt package chromium)")
    if _user_mode_linux():
        pytest.skip("chromium brings the cgroup v2 guest's User-Mode Linux kernel down; "
                    "the admin page is shown natively")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=CHROMIUM_ARGS, timeout=60_000)
        yield chromium
        chromium.close()


def _user_mode_linux() -> bool:
    try:
        with open("/proc/cpuinfo") as handle:
            return "User Mode Linux" in handle.read(4096)
    except OSError:
        return False
