"""`sandbox-kernel install --wrap KERNELSPEC`: a kernelspec that reuses the
wrapped one's argv and names the sandbox-provisioner in its metadata, for
python3, ir and bash; `jupyter kernelspec list` shows it; what the
provisioner does not take is refused in one line, never ignored."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

BIN = os.path.dirname(sys.executable)


def cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(BIN, "sandbox-kernel"), *args], capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.mark.parametrize("wrapped, display", [("python3", "Python 3 (ipykernel) (sandbox)"),
                                              ("ir", "R (sandbox)"), ("bash", "Bash (sandbox)")])
def test_wrap_writes_a_kernelspec_jupyter_lists(tmp_path, wrapped, display):
    done = cli("install", "--wrap", wrapped, "--prefix", str(tmp_path), "--memory", "512M", "--cpus", "0.5")
    assert done.returncode == 0, done.stderr
    name = f"{wrapped}-sandboxed"
    assert done.stdout.strip().startswith(f"installed kernelspec {name} in ")
    kernels = tmp_path / "share" / "jupyter"
    listed = subprocess.run([os.path.join(BIN, "jupyter"), "kernelspec", "list", "--json"], check=True,
                            capture_output=True, text=True, env={**os.environ, "JUPYTER_PATH": str(kernels)})
    specs = json.loads(listed.stdout)["kernelspecs"]
    ours, theirs = specs[name]["spec"], specs[wrapped]["spec"]
    assert ours["argv"] == theirs["argv"] and ours["language"] == theirs["language"]
    assert ours["display_name"] == display
    assert ours["metadata"]["kernel_provisioner"] == {
        "provisioner_name": "sandbox-provisioner", "config": {"memory": "512M", "cpus": "0.5"}}
    assert any(f.startswith("logo-") for f in os.listdir(specs[name]["resource_dir"])) or wrapped == "bash"


@pytest.mark.parametrize("args, words", [
    (("--wrap", "nope"), "no kernelspec named 'nope' to wrap"),
    (("--wrap", "bash", "--timeout", "30s"), "--timeout is the sandbox kernel's, not a wrapped kernel's"),
    (("--wrap", "bash", "--import-dir", "/tmp"), "--import-dir is the sandbox kernel's"),
    (("--wrap", "bash", "--no-footer"), "--no-footer is the sandbox kernel's"),
    (("--wrap", "bash", "--memory", "12X"), "invalid memory '12X'"),
    (("--wrap", "bash", "--memory", "2G", "--max-memory", "1G"), "memory 2 GiB is above the cap of 1 GiB"),
    (("--wrap", "bash", "--name", "python3-sandbox"), "--name python3-sandbox is the sandbox kernel's"),
    (("--wrap", "python3-sandbox"), "is the sandbox kernel"),
])
def test_a_bad_wrap_is_one_line_and_exit_2(tmp_path, args, words):
    done = cli("install", "--prefix", str(tmp_path), *args)
    assert done.returncode == 2
    assert words in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "share" / "jupyter" / "kernels").exists() or \
        not os.listdir(tmp_path / "share" / "jupyter" / "kernels")


def test_a_wrapped_kernelspec_is_not_wrapped_again(tmp_path):
    assert cli("install", "--wrap", "bash", "--prefix", str(tmp_path)).returncode == 0
    env = {**os.environ, "JUPYTER_PATH": str(tmp_path / "share" / "jupyter")}
    done = cli("install", "--wrap", "bash-sandboxed", "--prefix", str(tmp_path), env=env)
    assert done.returncode == 2 and "has a kernel provisioner already" in done.stderr
