"""The import-linter contracts of pyproject.toml (docs/architecture.md) catch
each kind of bad import: a copy of the package with one import added must
fail the contract it breaks, and the same copy without it must pass.  The
boundaries tier of scripts/test runs them on the tree itself."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(),
                                reason="import-linter is not installed (scripts/install installs it)")

# (module file to change, the import added to it, the contract that must catch it)
BAD_IMPORTS = {
    "the runtime imports the session": (
        "runtime/spec.py", "from ..session import client", "runtime-alone"),
    "the runtime imports IPython": (
        "runtime/stats.py", "import IPython", "runtime-alone"),
    "the sandbox kernel imports the magics": (
        "kernel/settings.py", "from ..magics import magics", "faces-apart"),
    "the magics import the sandbox kernel": (
        "magics/magics.py", "from ..kernel import settings", "faces-apart"),
    "the panel imports the session client": (
        "panel/messages.py", "from ..session import client", "panel-reads-the-contract"),
    "the panel imports the runtime": (
        "panel/channel.py", "from ..runtime import spec", "panel-reads-the-contract"),
    "the agent imports the runtime": (
        "session/plain_agent.py", "from ..runtime import spec", "agents-apart"),
    "the runtime imports the provisioner": (
        "runtime/cards.py", "from .. import provisioner", "runtime-alone"),
    "the session imports the stats endpoint": (
        "session/labels.py", "from ..server import sources", "server-side-leaves"),
    "the provisioner imports the hub": (
        "provisioner/registry.py", "from ..hub import spawner", "server-side-leaves"),
    "a cycle inside the runtime": (
        "runtime/syscalls.py", "from . import safe_fs", "no-cycles"),   # safe_fs imports syscalls
}


def _copy(tmp_path: Path) -> Path:
    """The package's sources and the contracts, alone in tmp_path."""
    shutil.copytree(REPO / "sandbox_kernel", tmp_path / "sandbox_kernel",
                    ignore=shutil.ignore_patterns("__pycache__", "labextension", "*.so"))
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    (tmp_path / ".importlinter").write_text(_as_ini(config))
    return tmp_path


def _as_ini(config: dict) -> str:
    """The pyproject table in import-linter's INI form (the copy has no pyproject)."""
    lines = ["[importlinter]", f"root_package = {config['root_package']}",
             f"include_external_packages = {config.get('include_external_packages', False)}"]
    for contract in config["contracts"]:
        lines += ["", f"[importlinter:contract:{contract['id']}]"]
        for key, value in contract.items():
            if key == "id":
                continue
            if isinstance(value, list):
                lines.append(f"{key} =" + "".join(f"\n    {item}" for item in value))
            else:
                lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def _lint(root: Path, contract: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}   # the copy, ahead of the editable install
    argv = [str(LINT_IMPORTS), "--no-cache"] + (["--contract", contract] if contract else [])
    return subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def _add_import(module: Path, line: str) -> None:
    text = module.read_text()
    head, sep, rest = text.partition("from __future__ import annotations\n")
    module.write_text(head + sep + line + "\n" + rest if sep else line + "\n" + text)


@pytest.mark.parametrize("what", sorted(BAD_IMPORTS))
def test_a_bad_import_breaks_its_contract(tmp_path, what):
    path, line, contract = BAD_IMPORTS[what]
    root = _copy(tmp_path)
    assert _lint(root, contract).returncode == 0, "the copy breaks the contract already"
    _add_import(root / "sandbox_kernel" / path, line)
    linted = _lint(root, contract)
    assert linted.returncode == 1, linted.stdout + linted.stderr
    assert "BROKEN" in linted.stdout and "Contracts: 0 kept, 1 broken" in linted.stdout, linted.stdout
