"""PATH inside a container (issue 25, cause 6): the owner's PATH entries that
exist inside come through, in order, before the image's defaults; those that
do not exist there are dropped.  On the host image the interpreter's venv bin
comes first of all, as in an activated venv: python3 and pip are the kernel's.

Before, PATH inside was fixed (the venv's bin and the usual directories):
a host addition such as a tools directory was not there, so ``!cmd`` and
``%%script`` found other programs than on the host, or none.
"""
from __future__ import annotations

import os
import sys

import pytest

from sandbox_kernel.runtime.spec import Mount

pytestmark = pytest.mark.usefixtures("no_leftovers")
VENV_BIN = os.path.join(sys.prefix, "bin") if sys.prefix != sys.base_prefix else None


def _owners(path: str) -> list[str]:
    """PATH inside without the venv's bin, which must come first if there is one."""
    entries = path.split(":")
    if VENV_BIN:
        assert entries[0] == VENV_BIN, path
        entries = entries[1:]
    return entries


@pytest.fixture
def tools(tmp_path):
    """A host directory with a program, readable by the container's user."""
    tmp_path.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(mode=0o755)
    program = bin_dir / "sbk-hello"
    program.write_text("#!/bin/sh\necho hello from the host PATH\n")
    program.chmod(0o755)
    return tmp_path


def test_a_host_path_entry_that_exists_inside_comes_through_first(run, tools, monkeypatch):
    absent = tools / "not-mounted-bin"
    absent.mkdir()
    monkeypatch.setenv("PATH", f"{tools}/bin:/nonexistent-sbk/bin:{absent}:{os.environ['PATH']}")
    ran = run('echo "$PATH"; sbk-hello',
              mounts=(Mount(str(tools / "bin"), str(tools / "bin"), read_only=True),))
    assert ran.result.status == "ok", ran.stderr
    path, said = ran.stdout.splitlines()
    entries = _owners(path)
    assert entries[0] == f"{tools}/bin"
    assert said == "hello from the host PATH"
    assert "/nonexistent-sbk/bin" not in entries and str(absent) not in entries
    assert "/usr/bin" in entries and len(entries) == len(set(entries)) and VENV_BIN not in entries


def test_an_entry_of_the_host_image_keeps_its_place(run, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/usr/local/bin:/nonexistent-sbk")
    ran = run('echo "$PATH"')
    assert ran.result.status == "ok", ran.stderr
    assert _owners(ran.stdout.strip())[:2] == ["/usr/bin", "/usr/local/bin"]


def test_a_path_given_with_env_still_wins(run, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/local/bin:/usr/bin:/bin")
    ran = run('echo "$PATH"', env=(("PATH", "/bin"),))
    assert ran.stdout.strip() == "/bin"
