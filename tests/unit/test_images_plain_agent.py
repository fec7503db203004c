"""The stdlib-only agent of foreign images, without a container: what it
imports, how it runs a cell's source, and finds the host's dynamic loader
(to borrow the host's python3 in an image without one)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox_kernel.session import image_agent, plain_agent

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
