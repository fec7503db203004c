"""Fixtures of test_any_kernel.py: an "ir" kernel wrapped by the sandbox
provisioner (256M) in the browser tier's temporary Jupyter dirs, the stats
endpoint enabled there as the package enables it, and the side panel tests'
helpers (one copy of them: test_side_panel.py, loaded by path because the
browser tier's modules are not importable by name).
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WRAPPED_IR = "ir-sandbox-256m"
WRAPPED_IR_DISPLAY = "R (sandbox, 256M)"


def load_sibling(name: str):
    """A module of this directory by its path (it skips as it would alone)."""
    spec = importlib.util.spec_from_file_location(f"sbk_browser_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def why_no_r() -> str | None:
    if shutil.which("R") is None:
        return "no R: apt-get install r-cran-irkernel (scripts/install does)"
    done = subprocess.run([sys.executable, "-m", "jupyter", "kernelspec", "list", "--json"],
                          capture_output=True, text=True, timeout=60)
    if "ir" not in json.loads(done.stdout or "{}").get("kernelspecs", {}):
        return "no kernelspec 'ir' (Debian's r-cran-irkernel installs it)"
    return None


@pytest.fixture
def wrapped_ir(jupyter_home) -> str:
    """`sandbox-kernel install --wrap ir` at 256M into the tier's kernel
    prefix; the stats endpoint enabled in the tier's config dir by the file
    the package installs."""
    config = Path(jupyter_home["JUPYTER_CONFIG_DIR"]) / "jupyter_server_config.d"
    config.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "jupyter-config" / "jupyter_server_config.d" / "sandbox_kernel.json", config)
    prefix = Path(jupyter_home["JUPYTER_PATH"]).parents[1]
    done = subprocess.run(
        [str(Path(sys.executable).parent / "sandbox-kernel"), "install", "--wrap", "ir",
         "--prefix", str(prefix), "--name", WRAPPED_IR, "--display-name", WRAPPED_IR_DISPLAY,
         "--memory", "256M"], capture_output=True, text=True, timeout=60, env=jupyter_home)
    assert done.returncode == 0, done.stderr
    return WRAPPED_IR
