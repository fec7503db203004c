"""Bad input to the CLI: one line on stderr, exit status 2."""
from __future__ import annotations

import subprocess
import sys

import pytest


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "sandbox_kernel.cli", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, words", [
    (["run", "--memory", "12X", "--", "true"], ["memory", "12X", "512M"]),
    (["run", "--cpus", "zero", "--", "true"], ["cpus", "zero"]),
    (["run", "--pids", "-1", "--", "true"], ["pids", "-1"]),
    (["run", "--timeout", "soon", "--", "true"], ["timeout", "soon", "30s"]),
    (["run", "--disk", "big", "--", "true"], ["disk", "big"]),
    (["run", "--net", "wifi", "--", "true"], ["net", "wifi", "bridge", "host"]),
    (["run", "--mount", "/nope:/x", "--", "true"], ["mount", "/nope"]),
    (["run", "--env", "NOEQ", "--", "true"], ["env", "NOEQ"]),
    (["run", "--workdir", "rel", "--", "true"], ["workdir", "rel"]),
    (["run"], ["missing command"]),
    (["run", "--"], ["missing command"]),
    (["run", "--bogus", "--", "true"], ["unrecognized", "--bogus"]),
    (["frobnicate"], ["invalid choice", "frobnicate"]),
])
def test_bad_input_is_one_line_and_exit_2(args, words):
    done = _cli(*args)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0]


def _subcommands() -> list[str]:
    from sandbox_kernel.cli import build_parser
    parser = build_parser()
    return sorted(next(a for a in parser._actions if a.dest == "action").choices)


@pytest.mark.parametrize("command", _subcommands())
def test_every_subcommands_help_is_shown(command):
    """Help texts are shared with the magics and speak of %container, which
    argparse would read as a format: each --help must print, not crash."""
    done = _cli(command, "--help")
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "Traceback" not in done.stderr
