"""`sandbox-kernel run` limits pids by default, as the kernel does (256):
RLIMIT_NPROC is above kernel.pid_max on most hosts, so without a limit one
container could use up every pid of the host."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.usefixtures("no_leftovers")


def _pids_limit(tmp_path, *options) -> int | None:
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "sandbox_kernel.cli", "run", *options,
                           "--report-json", str(report), "--", "/bin/true"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(report.read_text())["stats"]["pids_limit"]


def test_run_limits_pids_to_256_by_default(tmp_path, needs_cgroup):
    needs_cgroup("pids")
    assert _pids_limit(tmp_path) == 256


@pytest.mark.parametrize("given, limit", [("64", 64), ("none", None), ("unlimited", None)])
def test_run_pids_option_sets_or_lifts_the_limit(tmp_path, needs_cgroup, given, limit):
    needs_cgroup("pids")
    assert _pids_limit(tmp_path, "--pids", given) == limit
