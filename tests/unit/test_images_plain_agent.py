"""The stdlib-only agent of foreign images, without a container: what it
imports, how it runs a cell's source, and finds the host's dynamic loader
(to borrow the host's python3 in an image without one)."""
from __future__ import annotations

import glob
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox_kernel.session import image_agent, plain_agent, protocol

REPO = Path(__file__).resolve().parents[2]


def test_the_plain_agent_and_the_agent_core_import_only_the_standard_library():
    """They run on an image's own python3, which has nothing installed."""
    code = ("import sys; sys.modules['IPython'] = None\n"
            "import sandbox_kernel.session.plain_agent\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] not in sys.stdlib_module_names\n"
            "             and m not in ('__main__', '_distutils_hack', 'IPython')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         check=True, cwd=REPO).stdout
    project = {"sandbox_kernel", "sandbox_kernel.version", "sandbox_kernel.session"}
    allowed = project | {f"sandbox_kernel.session.{name}" for name in (
        "plain_agent", "agent_core", "agent_output", "agent_stdin", "agent_command", "protocol",
        "reaping")}
    assert set(eval(out)) <= allowed, out


def test_run_source_returns_the_last_expression_and_keeps_names():
    namespace = {}
    assert plain_agent.run_source("x = 2\nx * 21", namespace) == 42
    assert plain_agent.run_source("y = x", namespace) is None and namespace["y"] == 2


def test_the_budget_cuts_stream_text_and_says_how_much():
    budget = plain_agent.Budget(5)
    assert budget.admit("abc") == "abc" and budget.admit("defgh") == "de"
    assert "3 bytes dropped" in budget.notice()


def test_the_elf_interpreter_of_this_python_is_its_dynamic_loader():
    loader = image_agent.elf_interpreter(os.path.realpath(sys.executable))
    if loader is None:
        pytest.skip("this python is statically linked or not a 64-bit ELF")
    assert os.path.basename(loader).startswith("ld-") and os.path.exists(loader)
    assert image_agent.elf_interpreter(__file__) is None


# -- on an image's own older python3 ---------------------------------------------------


def _older_python(minor: int) -> str | None:
    """A python3.<minor> of this machine (pyenv's or the system's), or None."""
    found = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/3.{minor}.*/bin/python3.{minor}")))
    found += [f"/usr/bin/python3.{minor}"]
    return next((path for path in found if os.access(path, os.X_OK)), None)


def _ask(sock, request: dict) -> tuple[list, dict]:
    protocol.send(sock, request)
    outputs = []
    while True:
        msg = protocol.recv(sock)             # the socket's timeout bounds the wait
        if msg["type"] == "reply":
            return outputs, msg["content"]
        outputs.append(msg)


@pytest.mark.parametrize("minor", [7, 8, 9, 10])
def test_the_plain_agent_serves_cells_and_commands_on_older_pythons(minor):
    """Images ship older pythons: the plain agent keeps to Python 3.7 (it read
    sys.flags.safe_path, which 3.10 and older lack, and died at start)."""
    python = _older_python(minor)
    if python is None:
        pytest.skip(f"no python3.{minor} on this machine")
    mine, theirs = socket.socketpair()
    mine.settimeout(30)
    proc = subprocess.Popen([python, "-m", "sandbox_kernel.session.plain_agent", "--fd",
                             str(theirs.fileno()), "--image", "old"],
                            pass_fds=[theirs.fileno()], cwd=REPO, env={"PATH": os.environ["PATH"]})
    theirs.close()
    try:
        outputs, reply = _ask(mine, {"type": "execute", "id": 1, "code": "import sys\nsys.version_info[:2]",
                                     "silent": False, "store_history": True,
                                     "user_expressions": {}, "allow_stdin": False})
        assert reply["status"] == "ok", reply
        assert [m["data"]["text/plain"] for m in outputs if m["type"] == "execute_result"] == [
            f"(3, {minor})"]
        outputs, reply = _ask(mine, {"type": "command", "id": 2, "argv": ["sh", "-c", "echo hi; exit 3"]})
        assert reply == {"status": "ok", "exit_code": 3}
        assert [m["text"] for m in outputs] == ["hi\n"]
        assert _ask(mine, {"type": "shutdown", "id": 3})[1]["status"] == "ok"
        assert proc.wait(10) == 0
    finally:
        mine.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
