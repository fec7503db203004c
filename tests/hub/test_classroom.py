"""A classroom on a real JupyterHub: three students log in through the REST
API (PAM), each server starts inside its user's ceiling, and every notebook
runs on the sandbox kernel.  The tests run in order on one hub; the last one
stops every server and checks that nothing of the students is left."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import shutil
import sys
from pathlib import Path

from sandbox_kernel.runtime import cards
from sandbox_kernel.runtime.cgroups import delegation

from hub.hubprocess import pids_of_uid

DOCS = Path(__file__).resolve().parents[2] / "docs"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def _server_pid(hub, student) -> int:
    """The single-user server's pid, from /proc: the user's jupyterhub-singleuser."""
    for pid in pids_of_uid(student.uid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if b"jupyterhub-singleuser" in handle.read():
                    return pid
        except FileNotFoundError:
            continue
    raise AssertionError(f"no server process of {student.name}: {hub.log_tail()}")


def test_each_student_runs_a_notebook_on_the_sandbox_kernel(hub, classroom, classroom_users):
    students, _ = classroom_users
    for student in students:
        notebook = classroom[student.name]
        assert notebook.kernel["name"] == "sandbox"
        ran = notebook.run("import os, socket\nprint(socket.gethostname(), os.getpid())")
        assert ran.status == "ok", ran.text
        hostname, pid = ran.stdout.split()
        assert hostname == "sandbox" and int(pid) < 10, ran.stdout     # a container's PID namespace
        specs = hub.api("GET", f"/user/{student.name}/api/kernelspecs", hub.tokens[student.name])
        assert set(specs["kernelspecs"]) == {"sandbox"} and specs["default"] == "sandbox"


def test_each_server_runs_as_its_user_inside_its_ceiling(hub, classroom, classroom_users):
    students, _ = classroom_users
    for student in students:
        pid = _server_pid(hub, student)
        assert os.stat(f"/proc/{pid}").st_uid == student.uid
        ceiling = delegation.ceiling_of(student.uid)
        assert ceiling is not None and ceiling.memory == 384 << 20 and ceiling.pids == 512
        with open(f"/proc/{pid}/cgroup") as handle:
            groups = handle.read()
        leaf = next(iter(ceiling.server().values()))
        assert f"/{delegation.BASE}/{student.name}/{delegation.DELEGATED}/" in groups, groups
        assert os.path.isdir(leaf)
        assert os.stat(student.home).st_mode & 0o077 == 0      # private_home closed it


def test_top_json_lists_each_students_session_with_their_ceiling(hub, classroom, classroom_users):
    students, _ = classroom_users
    done = subprocess.run([str(Path(sys.executable).parent / "sandbox-kernel"), "top", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    snap = json.loads(done.stdout)
    ceilings = {c["user"]: c for c in snap["ceilings"]}
    for student in students:
        assert ceilings[student.name]["memory"] == 384 << 20 and ceilings[student.name]["pids"] == 512
        mine = [c for c in snap["containers"] if c["user"] == student.name]
        assert mine and all(c["kind"] == "kernel" and c["session"] == "default" for c in mine), mine
        assert mine[0]["ceiling"]["memory"] == 384 << 20
        assert mine[0]["kernel_id"] == classroom[student.name].kernel["id"]


def _in_b_container(a, a_home: str, connection_file: str, port: int) -> str:
    """What a student's cell tries against another student: their home and
    files, their kernel's connection file and ports, their processes."""
    return f'''
import json, os, socket
found = {{"home": os.path.exists({a_home!r}), "connection_file": os.path.exists({connection_file!r})}}
try:
    open({a_home!r} + "/secret.txt").read()
    found["secret"] = "read"
except OSError as error:
    found["secret"] = type(error).__name__
processes = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        processes.append(open(f"/proc/{{pid}}/cmdline", "rb").read().replace(b"\\0", b" ").decode())
    except OSError:
        pass
found["processes"] = processes
probe = socket.socket()
probe.settimeout(3)
try:
    probe.connect(("127.0.0.1", {port}))
    found["connect"] = "connected"
except OSError as error:
    found["connect"] = type(error).__name__
print(json.dumps(found))
'''


def _as_user(user, *argv) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={user.uid}", f"--regid={user.uid}", "--init-groups",
                           *argv], capture_output=True, text=True, timeout=30)


def test_a_student_cannot_reach_another_students_processes_files_or_kernels(
        hub, classroom, classroom_users):
    (ann, bob, _), _ = classroom_users
    hub.api("PUT", f"/user/{ann.name}/api/contents/secret.txt", hub.tokens[ann.name],
            body={"type": "file", "format": "text", "content": "ann's answers"})
    kernel = classroom[ann.name].kernel["id"]
    connection_file = f"{ann.home}/.local/share/jupyter/runtime/kernel-{kernel}.json"
    with open(connection_file) as handle:                 # root reads it; bob may not
        port = json.load(handle)["shell_port"]
    ran = classroom[bob.name].run(_in_b_container(ann, ann.home, connection_file, port))
    assert ran.status == "ok", ran.text
    found = json.loads(ran.stdout)
    assert not found["home"] and not found["connection_file"] and found["secret"] != "read"
    assert found["connect"] != "connected"          # no network: not even the host's loopback
    assert found["processes"] and len(found["processes"]) < 10
    assert not any(ann.name in p or "singleuser" in p or "jupyter" in p for p in found["processes"])
    # on the host, as bob: ann's home, files, connection file and cgroups are closed
    for path in (f"{ann.home}/secret.txt", connection_file):
        assert _as_user(bob, "cat", path).returncode != 0
    leaf = next(iter(delegation.ceiling_of(ann.uid).server().values()))
    moved = _as_user(bob, "sh", "-c", f"echo $$ > {leaf}/cgroup.procs")
    assert moved.returncode != 0 and "Permission denied" in moved.stderr
    # through the hub: bob's token opens neither ann's server nor ann's model
    assert hub.status("GET", f"/user/{ann.name}/api/kernels", hub.tokens[bob.name]) in (302, 403, 404)
    assert hub.status("GET", f"/hub/api/users/{ann.name}", hub.tokens[bob.name]) in (403, 404)


BOMB = """blocks = []
for step in range(32):
    blocks.append(b"x" * (32 << 20))      # 1 GiB: under the kernel's own 2 GiB limit
print("survived", len(blocks))
"""
STEADY = """import time
total = 0
for step in range(40):
    time.sleep(0.25)
    total += step
print("steady", total)
"""


def test_a_memory_bomb_stops_at_its_students_ceiling_while_the_others_run(
        hub, classroom, classroom_users):
    (ann, bob, cat), _ = classroom_users
    steady = classroom[bob.name].send(STEADY)
    bomb = classroom[ann.name].run(BOMB)
    assert bomb.status == "error" and "survived" not in bomb.stdout, bomb.text
    assert "384 MiB ceiling" in bomb.text, bomb.text   # the limit hit, not the kernel's 2 GiB
    assert classroom[bob.name].wait(steady).stdout == "steady 780\n"
    assert classroom[cat.name].run("print(6 * 7)").stdout == "42\n"
    assert classroom[ann.name].run("print('still here')").stdout == "still here\n"
    usage = delegation.ceiling_of(ann.uid).usage()
    assert usage.memory_peak is None or usage.memory_peak <= 384 << 20
    # the others' ceilings never came near theirs
    for other in (bob, cat):
        assert delegation.ceiling_of(other.uid).usage().memory_peak < 384 << 20


def _log_in(page, hub, user, then: str) -> None:
    page.goto(f"{hub.base}/hub/login?next={then}")
    page.fill("#username_input", user.name)
    page.fill("#password_input", user.password)
    page.click("#login_submit")


def test_the_admin_page_shows_every_student_to_the_teacher_only(
        hub, classroom, classroom_users, browser):
    students, teacher = classroom_users
    for student in students:        # a running cell each: every student has a container
        assert classroom[student.name].run("x = 1").status == "ok"
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        try:
            _log_in(page, hub, teacher, "/services/sandbox-top/")
            page.wait_for_selector("body[data-loaded=yes]", state="attached")
            for student in students:
                page.wait_for_selector(f"#ceilings tr[data-user='{student.name}']")
                page.wait_for_selector(f"#containers tr[data-user='{student.name}']")
            # a second snapshot gives the cpu percentages (the difference to the first)
            page.wait_for_selector(f"#ceilings tr[data-user='{students[0].name}'] td:has-text('%')")
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "admin-page-failed.png"))
            (ARTIFACTS / "admin-page-failed.html").write_text(f"{page.url}\n{page.content()}")
            raise
        row = page.locator(f"#ceilings tr[data-user='{students[0].name}']").inner_text()
        assert "384.0 MiB" in row and "512" in row, row
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "hub-admin.png"), full_page=True)
        if os.environ.get("SANDBOX_KERNEL_UPDATE_SCREENSHOT") == "1":   # the README's picture
            shutil.copy(ARTIFACTS / "hub-admin.png", DOCS / "hub-admin.png")
    finally:
        context.close()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        _log_in(page, hub, students[1], "/services/sandbox-top/")
        page.wait_for_load_state("networkidle")
        assert page.locator("#containers").count() == 0
        assert "403" in page.content()
    finally:
        context.close()
    for student in students:          # nor with a student's API token
        assert hub.status("GET", "/services/sandbox-top/api/snapshot", hub.tokens[student.name]) == 403


def _owned_files(uid: int) -> list[str]:
    found = []
    for place in ("/tmp", "/var/tmp", "/run", "/dev/shm"):
        for entry in os.scandir(place):
            try:
                if entry.stat(follow_symlinks=False).st_uid == uid:
                    found.append(entry.path)
            except FileNotFoundError:
                continue
    return found


def test_zz_nothing_of_a_student_is_left_after_the_servers_stop(hub, classroom, classroom_users):
    students, _ = classroom_users
    for student in students:
        ran = classroom[student.name].run("print('before')")
        assert ran.stdout == "before\n", (student.name, ran.status, ran.text, ran.data)
    for student in students:
        hub.stop_server(student)
    for student in students:
        assert pids_of_uid(student.uid) == [], f"{student.name} still runs processes"
        assert delegation.ceiling_of(student.uid) is None
        assert glob.glob(f"/sys/fs/cgroup/{delegation.BASE}/{student.name}") == []      # v2
        assert glob.glob(f"/sys/fs/cgroup/*/{delegation.BASE}/{student.name}") == []
        assert [c.name for c in cards.scan() if c.uid == student.uid] == []
        assert _owned_files(student.uid) == []
