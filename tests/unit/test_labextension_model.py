"""The side panel's TypeScript unit tests (labextension/test: the stats
contract parsed, nulls kept null, the history ring bounded, the footer's
formats, the panel drawn), run by `npm test` with the JupyterLab extension
template's jest setup.

They need labextension/node_modules, which scripts/install makes (npm ci).
Without it this test is skipped, saying so; under CI=true it fails instead,
since scripts/install ran there.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

LABEXTENSION = Path(__file__).resolve().parents[2] / "labextension"
NPM_TEST_TIMEOUT = 240


def _missing() -> str | None:
    if shutil.which("npm") is None:
        return "npm is not installed (Node.js >= 18 is needed to test the side panel)"
    if not (LABEXTENSION / "node_modules" / ".bin" / "jest").exists():
        return f"{LABEXTENSION}/node_modules has no jest: run scripts/install (or npm ci there)"
    return None


def test_labextension_unit_tests_pass():
    missing = _missing()
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true, so scripts/install built the labextension, yet {missing}")
        pytest.skip(missing)
    env = {**os.environ, "CI": "true", "FORCE_COLOR": "0"}   # jest: no watch mode, no colours
    try:
        done = subprocess.run(["npm", "test", "--", "--ci"], cwd=LABEXTENSION, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=NPM_TEST_TIMEOUT)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"npm test did not finish within {NPM_TEST_TIMEOUT} s:\n{expired.stdout or ''}"
                    f"{expired.stderr or ''}")
    report = done.stdout + done.stderr
    assert done.returncode == 0, f"npm test failed (exit {done.returncode}):\n{report[-6000:]}"
    assert "Tests:" in report and " failed" not in report.split("Tests:")[-1].split("\n")[0], report
