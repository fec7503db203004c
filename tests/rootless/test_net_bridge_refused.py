"""Rootless, --net bridge never gives a network silently: every form is refused in
one line before anything starts (an allowlist, no egress and a rate need root; the
open egress pasta could give cannot join a container's namespace yet), and nothing
of the container is left."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() == 0, reason="runs as a user who is not root: "
                                                          "scripts/test rootless")
CLI = [sys.executable, "-m", "sandbox_kernel.cli"]


@pytest.mark.parametrize("options", [["--allow", "pypi.org"], [], ["--allow", "*"],
                                     ["--allow", "*", "--rate", "1mbit"]])
def test_every_rootless_bridge_is_refused_in_one_line(options):
    state_parent = tempfile.gettempdir()   # where a rootless container's state would go
    before = {n for n in os.listdir(state_parent) if n.startswith("sbk-")}
    ran = subprocess.run([*CLI, "run", "--net", "bridge", *options, "--", "true"],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 2, (ran.returncode, ran.stderr)
    assert ran.stderr.count("\n") == 1 and "rootless --net bridge refused" in ran.stderr, ran.stderr
    assert "Traceback" not in ran.stderr
    assert {n for n in os.listdir(state_parent) if n.startswith("sbk-")} <= before
