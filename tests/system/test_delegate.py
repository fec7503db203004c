"""Per-user ceilings (issue 19) with real users, on this host's cgroups (v1
here, v2 in the guest): ``sandbox-kernel delegate USER`` makes a tree the
kernel's delegation rules allow the user to use and not to lift; the user's
rootless containers are made inside it and cannot exceed it, whatever their
own limits say (a trusted policy asks for none); doctor, run as the user,
shows it; other users cannot see it; ``--remove`` leaves nothing.

Each test makes its user with useradd (tests/system_users.py) and removes it,
its ceiling and every process in it afterwards, also when the test fails.
"""
from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import tempfile
import time

import pytest

from sandbox_kernel.runtime.cgroups import delegation
from system_users import CLI, NEEDS_ROOT, SANDBOX_KERNEL, run_as, start_as, system_user

pytestmark = [pytest.mark.system, NEEDS_ROOT]
MiB = 1 << 20
# a memory bomb that says how far it got; its own container asks no memory limit
BOMB = ("import os\nchunks = []\nfor i in range(int(os.environ['MB']) // 16):\n"
        "    chunks.append(b'x' * (16 << 20))\nprint('survived', flush=True)\n")


def _hierarchy_paths(ceiling: delegation.Ceiling) -> list[str]:
    return list(dict.fromkeys(ceiling.groups.values()))


@pytest.fixture
def user():
    with system_user() as name:
        yield name


@pytest.fixture
def ceiling(user):
    return delegation.delegate(user, memory=160 * MiB, cpus=1, pids=200)


def test_the_tree_follows_the_delegation_rules(user, ceiling):
    assert (ceiling.memory, ceiling.cpus, ceiling.pids) == (160 * MiB, 1, 200)
    mine = {"v2": ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control"),
            "v1": ("cgroup.procs", "tasks")}[ceiling.version]
    limit_file = {"v2": "memory.max", "v1": "memory.limit_in_bytes"}[ceiling.version]
    for group, delegated in zip(ceiling.groups.values(), ceiling.delegated.values()):
        assert os.stat(group).st_uid == 0                    # the ceiling: root's
        assert os.stat(delegated).st_uid == ceiling.uid      # below it: the user's
        for name in mine:
            assert os.stat(os.path.join(delegated, name)).st_uid == ceiling.uid, name
    memory_dir = ceiling.groups.get("memory") or ceiling.groups["unified"]
    assert os.stat(os.path.join(memory_dir, limit_file)).st_uid == 0
    delegated_memory = ceiling.delegated.get("memory") or ceiling.delegated["unified"]
    assert os.stat(os.path.join(delegated_memory, limit_file)).st_uid == 0   # never handed over
    assert delegation.ceiling_of(ceiling.uid) == ceiling


def test_the_user_cannot_lift_the_ceiling(user, ceiling):
    memory_dir = ceiling.groups.get("memory") or ceiling.groups["unified"]
    limit_file = {"v2": "memory.max", "v1": "memory.limit_in_bytes"}[ceiling.version]
    targets = [os.path.join(memory_dir, limit_file),
               os.path.join(ceiling.delegated.get("memory") or ceiling.delegated["unified"],
                            limit_file)]
    script = "; ".join(f"echo -1 > {t} 2>/dev/null && echo WROTE {t}" for t in targets)
    # nor leave it: move itself out to the base, the hierarchy's root or another's group
    base = os.path.dirname(memory_dir)
    escapes = [os.path.join(base, "cgroup.procs"), os.path.join(os.path.dirname(base), "cgroup.procs")]
    script += "; " + "; ".join(f"echo $$ > {t} 2>/dev/null && echo MOVED {t}" for t in escapes)
    ran = run_as(user, ["/bin/sh", "-c", script + "; cat /proc/self/cgroup; true"], ceiling=ceiling)
    assert "WROTE" not in ran.stdout and "MOVED" not in ran.stdout, ran.stdout
    assert delegation.ceiling_of(ceiling.uid).memory == 160 * MiB


def _bomb(user, ceiling, megabytes, *limits) -> subprocess.CompletedProcess:
    return run_as(user, [SANDBOX_KERNEL, "run", "--report", *limits, "--env", f"MB={megabytes}",
                         "--", "python3", "-c", BOMB], ceiling=ceiling)


def test_a_rootless_container_is_made_inside_and_held_by_the_ceiling(user, ceiling):
    # no memory limit of its own (what --policy trusted allows): the ceiling holds it
    ran = _bomb(user, ceiling, 400, "--pids", "none")
    assert "survived" not in ran.stdout, (ran.stdout, ran.stderr)
    assert "status: oom" in ran.stderr, ran.stderr
    # a small one under the same ceiling runs: it was the ceiling, not the host
    small = _bomb(user, ceiling, 32, "--memory", "1G")
    assert "survived" in small.stdout, (small.stdout, small.stderr)


def test_a_container_made_inside_lives_in_the_users_server_leaf(user, ceiling):
    probe = ("import os, subprocess, sys; "
             "print(open('/proc/self/cgroup').read(), flush=True); "
             f"subprocess.run([{SANDBOX_KERNEL!r}, 'run', '--', 'sleep', '0'], check=True)")
    server = ceiling.server()
    memory_leaf = server.get("memory") or server["unified"]
    # twice: on v2 the first container moved the server's processes to server/leaf
    # (no internal processes), and a second server must still be able to enter
    for _ in range(2):
        ran = run_as(user, [sys.executable, "-c", probe], ceiling=ceiling)
        assert ran.returncode == 0, ran.stderr
        assert memory_leaf.split("/sandbox-kernel-users/")[1] in ran.stdout


def test_a_cpu_limit_above_the_ceiling_starts_and_is_capped(user, ceiling):
    # v1 refuses a child quota above an ancestor's (EINVAL): the start used to fail
    ran = run_as(user, [SANDBOX_KERNEL, "run", "--cpus", "2", "--", "true"], ceiling=ceiling)
    assert ran.returncode == 0, ran.stderr


def test_doctor_run_as_the_user_shows_the_ceiling(user, ceiling):
    ran = run_as(user, [SANDBOX_KERNEL, "doctor", "--json"], ceiling=ceiling)
    rows = {row["name"]: row for row in json.loads(ran.stdout)}
    assert rows["ceiling"]["ok"], rows["ceiling"]
    assert rows["ceiling"]["detail"].startswith(f"{user}: memory 160 MiB"), rows["ceiling"]
    assert "cpus 1," in rows["ceiling"]["detail"] and "pids 200 " in rows["ceiling"]["detail"]


def test_another_user_cannot_see_the_ceiling(user, ceiling):
    with system_user() as other:
        ls = " ".join(_hierarchy_paths(ceiling)[:1] + [os.path.dirname(_hierarchy_paths(ceiling)[0])])
        ran = run_as(other, ["/bin/sh", "-c", f"ls {ls}"])
        assert ran.returncode != 0
        assert user not in ran.stdout
        assert "Permission denied" in ran.stderr


def test_remove_kills_what_runs_inside_and_leaves_nothing(user, ceiling):
    sleeper = subprocess.Popen(["sleep", "600"], preexec_fn=lambda: delegation.enter(ceiling, 0))
    try:
        assert delegation.ceiling_of(ceiling.uid).usage().pids >= 1
        ran = subprocess.run([*CLI, "delegate", user, "--remove"], capture_output=True, text=True,
                             timeout=120)
        assert ran.returncode == 0, ran.stderr
        assert sleeper.wait(timeout=30) == -9
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not any(os.path.exists(p) for p in _hierarchy_paths(ceiling))
    assert delegation.ceiling_of(ceiling.uid) is None
    again = subprocess.run([*CLI, "delegate", user, "--remove"], capture_output=True, text=True)
    assert again.returncode == 0 and "had no ceiling" in again.stdout


def _state_dirs_of(uid: int) -> list[str]:
    parent = tempfile.gettempdir()   # root's: /tmp, or /run/tmp in the v2 guest (repo under /tmp)
    return [n for n in os.listdir(parent)
            if n.startswith("sbk-") and os.lstat(os.path.join(parent, n)).st_uid == uid]


def test_remove_also_removes_what_the_killed_containers_left(user, ceiling):
    """A container killed with the ceiling cannot remove its state directory; the
    user cannot either (they are gone from the class): --remove does."""
    uid = pwd.getpwnam(user).pw_uid
    box = start_as(user, [SANDBOX_KERNEL, "run", "--", "sleep", "600"], ceiling=ceiling,
                   env={"TMPDIR": tempfile.gettempdir()})
    try:
        deadline = time.monotonic() + 60
        while not _state_dirs_of(uid) and time.monotonic() < deadline and box.poll() is None:
            time.sleep(0.1)
        assert _state_dirs_of(uid), box.stderr.read() if box.poll() is not None else "no state dir"
        ran = subprocess.run([*CLI, "delegate", user, "--remove"], capture_output=True, text=True,
                             timeout=120)
        assert ran.returncode == 0, ran.stderr
    finally:
        box.kill()
        box.wait()
    assert _state_dirs_of(uid) == []


def test_the_cli_makes_and_changes_a_ceiling(user):
    ran = subprocess.run([*CLI, "delegate", user, "--memory", "96M", "--cpus", "0.5",
                          "--pids", "64"], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert "memory 96 MiB, cpus 0.5, pids 64" in ran.stdout
    changed = subprocess.run([*CLI, "delegate", user, "--memory", "128M"], capture_output=True,
                             text=True, timeout=120)
    assert "memory 128 MiB, cpus no limit, pids no limit" in changed.stdout, changed.stdout


@pytest.mark.parametrize("argv, words", [
    (["nosuch-user-x"], "no such user"),
    (["root"], "root needs no ceiling"),
    (["{user}", "--memory", "lots"], "invalid memory 'lots'"),
    (["{user}", "--remove", "--cpus", "1"], "--remove takes no"),
])
def test_bad_input_gets_one_line(user, argv, words):
    ran = subprocess.run([*CLI, "delegate", *(a.format(user=user) for a in argv)],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 2
    assert ran.stderr.count("\n") == 1 and words in ran.stderr, ran.stderr
    assert delegation.ceiling_of(os.getuid()) is None


def test_a_user_cannot_delegate(user):
    ran = run_as(user, [SANDBOX_KERNEL, "delegate", user, "--memory", "1G"])
    assert ran.returncode == 1
    assert "needs root" in ran.stderr and ran.stderr.count("\n") == 1, ran.stderr


# Run as the user, inside the ceiling: the sandbox kernel installed with the trusted
# policy and no memory limit of its own, driven by nbclient as CI would.
KERNEL_RUN = r"""
import json, subprocess, sys
import nbformat
from nbclient import NotebookClient
subprocess.run([sys.argv[1], "install", "--user", "--name", "sbk-trusted", "--policy", "trusted",
                "--memory", "none", "--pids", "none"], check=True, capture_output=True)
cells = ["x = 41", "chunks = [b'x' * (16 << 20) for _ in range(40)]\nprint('survived')",
         "print(x + 1 if 'x' in dir() else 'restarted')"]
notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
NotebookClient(notebook, timeout=300, kernel_name="sbk-trusted", allow_errors=True).execute()
print(json.dumps([cell.outputs for cell in notebook.cells]))
"""


def test_a_trusted_sandbox_kernel_cannot_exceed_the_ceiling(user):
    ceiling = delegation.delegate(user, memory=384 * MiB, pids=400)
    ran = run_as(user, [sys.executable, "-c", KERNEL_RUN, SANDBOX_KERNEL], ceiling=ceiling,
                 timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    outputs = json.loads(ran.stdout.splitlines()[-1])
    texts = ["".join(o.get("text", "") for o in cell) + json.dumps(cell) for cell in outputs]
    assert "survived" not in texts[1], texts[1][-2000:]
    assert "memory" in texts[1].lower(), texts[1][-2000:]        # the verdict names the memory
    assert "42" in texts[2] or "restarted" in texts[2], texts[2]   # the kernel itself stays up
    usage = delegation.ceiling_of(ceiling.uid).usage()
    assert usage.memory_peak >= 0.9 * ceiling.memory          # it was the ceiling that held
    assert usage.oom_kills is None or usage.oom_kills >= 1    # v1 counts kills per group only
