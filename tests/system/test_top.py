"""``sandbox-kernel top`` and top.snapshot() (issue 19's admin view): every
container of the machine with its user, session, kernel, image, figures
against its limits and its user's ceiling, and uptime; root sees everyone,
a user only their own.

Real users (tests/system_users.py), removed after with their ceilings and
every process in them, also when a test fails.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import pytest

from sandbox_kernel import top
from sandbox_kernel.runtime.cgroups import delegation
from sandbox_kernel.runtime.container import Container
from sandbox_kernel.runtime.spec import ContainerSpec, Limits
from system_users import CLI, NEEDS_ROOT, SANDBOX_KERNEL, run_as, start_as, system_user

pytestmark = [pytest.mark.system, NEEDS_ROOT]
MiB = 1 << 20
WAIT_SECONDS = 120
LABELS = (("kind", "kernel"), ("session", "top-test"), ("kernel_id", "k-123"),
          ("language", "python"))


def _wait_for(find, what: str):
    """Poll (bounded) until find() returns something."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        found = find()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what} did not appear in {WAIT_SECONDS} s")


def _row(snap: dict, name: str) -> dict | None:
    return next((r for r in snap["containers"] if r["name"] == name), None)


@pytest.fixture
def root_container():
    """A labelled container of root's, busy on the CPU, with limits."""
    spec = ContainerSpec(command=("/bin/sh", "-c", "while :; do :; done"), labels=LABELS,
                         limits=Limits(memory=256 * MiB, cpus=0.5, pids=64))
    with Container(spec, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   stdin=subprocess.DEVNULL) as box:
        box.start()
        yield box


def test_json_lists_a_container_with_its_labels_limits_and_figures(root_container):
    ran = subprocess.run([*CLI, "top", "--json"], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    snap = json.loads(ran.stdout)
    assert snap["version"] == 1 and snap["cgroup"] in ("v1", "v2", "null")
    row = _row(snap, root_container.name)
    assert row is not None, [r["name"] for r in snap["containers"]]
    assert (row["user"], row["uid"], row["owner_pid"]) == ("root", 0, os.getpid())
    assert (row["kind"], row["session"], row["kernel_id"], row["language"]) == \
        ("kernel", "top-test", "k-123", "python")
    assert row["limits"] == {"memory": 256 * MiB, "cpus": 0.5, "pids": 64}
    assert row["ceiling"] is None and row["net"] is None and row["network"] == "none"
    assert row["uptime"] >= 0 and row["usage"]["cpu_percent"] is None   # one snapshot: no rate
    if snap["cgroup"] != "null":
        assert row["usage"]["memory"] > 0 and row["usage"]["pids"] >= 1


def test_a_second_snapshot_gives_the_cpu_rate(root_container):
    first = top.snapshot()
    time.sleep(0.5)
    second = top.snapshot(first)
    row = _row(second, root_container.name)
    if second["cgroup"] == "null":
        pytest.skip("no cgroup here: no cpu figures")
    assert row["usage"]["cpu_percent"] is not None and row["usage"]["cpu_percent"] >= 0


def test_the_screen_shows_the_row_and_stops_after_n(root_container):
    ran = subprocess.run([*CLI, "top", "-n", "2", "-d", "0.2"], capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.count("sandbox-kernel top") == 2
    assert "top-test" in ran.stdout and "root" in ran.stdout


def test_bad_delay_gets_one_line():
    ran = subprocess.run([*CLI, "top", "--delay", "0"], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 2 and ran.stderr.count("\n") == 1 and "--delay" in ran.stderr


@pytest.fixture
def user_container():
    """A delegated user's rootless container, started inside the user's ceiling."""
    with system_user() as user:
        ceiling = delegation.delegate(user, memory=192 * MiB, cpus=1, pids=300)
        # root's temp dir: where root's top looks for cards (a private TMPDIR would hide
        # them); /tmp, or /run/tmp in the v2 guest when the checkout lies under /tmp
        process = start_as(user, [SANDBOX_KERNEL, "run", "--memory", "64M", "--", "sleep", "600"],
                           ceiling=ceiling, env={"TMPDIR": tempfile.gettempdir()})
        try:
            yield user, ceiling
        finally:
            process.kill()
            process.communicate(timeout=60)


def test_root_sees_a_users_container_against_the_users_ceiling(user_container):
    user, ceiling = user_container
    row = _wait_for(lambda: next((r for r in top.snapshot()["containers"] if r["user"] == user),
                                 None), f"{user}'s container")
    assert row["uid"] == ceiling.uid and row["limits"]["memory"] == 64 * MiB
    assert row["ceiling"] == {"memory": 192 * MiB, "cpus": 1.0, "pids": 300}
    listed = {c["user"]: c for c in top.snapshot()["ceilings"]}
    assert listed[user]["memory"] == 192 * MiB
    assert listed[user]["usage"]["pids"] >= 2   # the run command and its container


def test_a_user_sees_only_their_own(user_container, root_container):
    user, ceiling = user_container
    _wait_for(lambda: any(r["user"] == user for r in top.snapshot()["containers"]),
              f"{user}'s container")
    ran = run_as(user, [SANDBOX_KERNEL, "top", "--json"], env={"TMPDIR": tempfile.gettempdir()})
    assert ran.returncode == 0, ran.stderr
    snap = json.loads(ran.stdout)
    assert {r["user"] for r in snap["containers"]} == {user}
    assert [c["user"] for c in snap["ceilings"]] == [user]
    assert _row(snap, root_container.name) is None
