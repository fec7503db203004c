"""`sandbox-kernel run`'s defaults protect the host: a pids limit unless the
user lifts it (no container gets all of kernel.pid_max)."""
from __future__ import annotations

from sandbox_kernel import cli


def _run_args(*options):
    return cli.build_parser().parse_args(["run", *options, "--", "true"])


def test_run_has_a_pids_limit_by_default():
    assert _run_args().pids == "256"


def test_run_help_shows_the_pids_default_and_how_to_lift_it(capsys):
    parser = cli.build_parser()
    run = parser._subparsers._group_actions[0].choices["run"]
    text = " ".join(run.format_help().split())
    assert "default 256" in text and "none: no limit" in text
