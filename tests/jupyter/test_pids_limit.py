"""The pids limit through the sandbox kernel and jupyter_client (issue 15):
a fork bomb under ``--pids 64`` is reported in plain words, the zombies it
leaves do not hold the limit once the cell has ended, and a Popen the user
still holds keeps its real exit code.

Needs root (conftest.py skips the tier otherwise).  Every wait is bounded:
each bomb forks at most 500 times, and its children exit after 0.2 s.
"""
from __future__ import annotations

import pytest

import kernel_fixtures as kf  # tests/jupyter is on pytest's pythonpath (pyproject)

NAME = "sbk-test-pids"
BOMBS = 15

# Forks until the limit refuses one; the children exit without being waited
# for, so each one is a zombie of the agent when the cell ends.
BOMB = """\
import os, time
made, refused = 0, None
try:
    for _ in range(500):
        if os.fork() == 0:
            time.sleep(0.2)
            os._exit(0)
        made += 1
except BlockingIOError as exc:
    refused = exc
time.sleep(0.5)
print(made, refused.errno if refused else None)
"""
WORDS = "the cell hit the 64-process limit (--pids 64)"


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("jupyter-data"))
    kf.install_kernelspec(data, NAME, footer=False)
    with kf.jupyter_path(data):
        k = kf.SandboxKernel(NAME)
        try:
            yield k
        finally:
            k.shutdown()


def test_fifteen_fork_bombs_are_each_named_and_subprocess_works_after_them(kernel):
    kf.ok(kernel.run("%container limits --pids 64"))
    for bomb in range(BOMBS):
        ran = kf.ok(kernel.run(BOMB, timeout=120))
        made, errno = ran.stdout.split()
        assert errno == "11", f"bomb {bomb}: {ran.stdout!r}"
        # the zombies of the bombs before were reaped: this one forked again
        assert int(made) > 32, f"bomb {bomb} forked only {made} times: zombies hold the limit"
        assert WORDS in ran.stderr, f"bomb {bomb}: {ran.stderr!r}"
        assert "%container limits --pids N" in ran.stderr
    ran = kf.ok(kernel.run("import subprocess\nprint(subprocess.run(['true']).returncode)"))
    assert ran.stdout == "0\n" and WORDS not in ran.stderr


def test_a_popen_waited_in_a_later_cell_keeps_its_exit_code(kernel):
    kf.ok(kernel.run("import subprocess, time\n"
                     "held = subprocess.Popen(['sh', '-c', 'exit 3'])\n"
                     "time.sleep(0.5)"))         # it has exited: a zombie when the cell ends
    kf.ok(kernel.run("x = 1"))                    # another cell end, another reaping
    assert kf.ok(kernel.run("print(held.wait())")).stdout == "3\n"
