"""The disk limit holds for /workspace too: the fresh default workspace is on
the container's size-limited writable layer, never in a host directory
(issue 14, item 7: 100 MiB went into the state dir on the host's disk while
/tmp stopped at --disk 16M).  A --workspace the caller names stays that
host directory, outside the limit: the caller chose it."""
from __future__ import annotations

import os
import subprocess

import pytest

from sandbox_kernel.runtime.container import Container
from sandbox_kernel.runtime.spec import ContainerSpec, Limits

pytestmark = pytest.mark.usefixtures("no_leftovers")
MiB = 1 << 20

# 8 MiB fits in 16 MiB and is kept; 40 MiB then does not fit; the workload
# says so and waits on stdin until the host has looked at its state dir
FILL = r"""
import errno, os, sys
def write(path, mib):
    try:
        with open(path, "wb") as out:
            for _ in range(mib):
                out.write(b"x" * (1 << 20))
                out.flush()
                os.fsync(out.fileno())
        return "ok"
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error.errno))
print("small", write("/workspace/small", 8), os.path.getsize("/workspace/small"), flush=True)
print("big", write("/workspace/big", 40), flush=True)
sys.stdin.read()
"""


def _bytes_on_disk(top: str) -> int:
    """What the files under ``top`` take on the host (as the host sees it:
    the container's mounts are in its own mount namespace)."""
    total = 0
    for directory, _dirs, files in os.walk(top):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
            except FileNotFoundError:
                continue
    return total


def test_the_default_workspace_counts_against_the_disk_limit_not_the_hosts_disk():
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    spec = ContainerSpec(command=("python3", "-c", FILL), limits=Limits(disk=16 * MiB))
    try:
        with Container(spec, stdin=stdin_r, stdout=stdout_w, stderr=subprocess.DEVNULL) as box:
            box.start()
            os.close(stdout_w)
            stdout_w = None
            with os.fdopen(os.dup(stdout_r)) as lines:
                small, big = lines.readline().split(), lines.readline().split()
                on_host = _bytes_on_disk(box._state_dir)
            os.close(stdin_w)
            stdin_w = None
            box.wait(30)
    finally:
        for fd in (stdin_r, stdin_w, stdout_r, stdout_w):
            if fd is not None:
                os.close(fd)
    assert small == ["small", "ok", str(8 * MiB)]
    assert big == ["big", "ENOSPC"], "40 MiB fit in /workspace under --disk 16M"
    assert on_host < MiB, f"the workspace's files took {on_host} bytes in the state dir on the host"


def test_a_workspace_the_caller_names_stays_that_host_directory(run, tmp_path):
    if os.geteuid() == 0:
        os.chown(tmp_path, 65532, 65532)
    else:   # rootless: uid 65532 inside is one of the user's subordinate ids
        os.chmod(tmp_path, 0o777)
    try:
        ran = run("dd if=/dev/zero of=/workspace/big bs=1M count=24 2>&1; echo rc=$?",
                  workspace=str(tmp_path), limits=Limits(disk=16 * MiB))
        assert "rc=0" in ran.stdout, ran.stdout
        assert (tmp_path / "big").stat().st_size == 24 * MiB
    finally:
        (tmp_path / "big").unlink(missing_ok=True)
