"""``sandbox-kernel install`` and the kernel's settings: what kernel.json holds,
that ``jupyter kernelspec list`` shows it, one-line errors, and the order of
precedence (defaults < config file < kernelspec < environment), the last
through a real kernel.
"""
from __future__ import annotations

import json
import os
import argparse
import pathlib
import subprocess
import sys

import pytest

from sandbox_kernel.kernel import install, settings
from sandbox_kernel.kernel.kernel import CellError, split_cell


import kernel_fixtures as kf  # tests/jupyter is on pytest's pythonpath (pyproject)
BIN = pathlib.Path(sys.executable).parent


def cli(*args, env=None, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "sandbox-kernel"), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


# ---------------------------------------------------------------------------
# the kernelspec


def test_install_writes_a_kernelspec_with_the_defaults(tmp_path):
    done = cli("install", "--prefix", str(tmp_path))
    assert done.returncode == 0, done.stderr
    where = tmp_path / "share" / "jupyter" / "kernels" / "python3-sandbox"
    assert str(where) in done.stdout
    spec = json.loads((where / "kernel.json").read_text())
    assert spec["argv"][1:] == ["-m", "sandbox_kernel.kernel", "-f", "{connection_file}"]
    assert os.path.dirname(spec["argv"][0]) == str(BIN)      # this venv's python
    assert spec["display_name"] == "Python 3 (sandbox)"
    assert spec["language"] == "python" and spec["interrupt_mode"] == "message"
    assert spec["metadata"]["sandbox_kernel"]["settings"] == settings.DEFAULTS
    assert (where / "logo-64x64.png").exists()


def test_install_options_go_into_argv_and_jupyter_lists_the_kernel(tmp_path):
    done = cli("install", "--prefix", str(tmp_path), "--name", "grader", "--display-name",
               "Grader (512M)", "--memory", "512M", "--cpus", "0.5", "--pids", "64",
               "--timeout", "30s", "--net", "none", "--image", "host", "--no-footer")
    assert done.returncode == 0, done.stderr
    data = tmp_path / "share" / "jupyter"
    spec = json.loads((data / "kernels" / "grader" / "kernel.json").read_text())
    assert spec["argv"][5:] == ["--SandboxKernel.memory=512M", "--SandboxKernel.cpus=0.5",
                                "--SandboxKernel.pids=64", "--SandboxKernel.timeout=30s",
                                "--SandboxKernel.net=none", "--SandboxKernel.image=host",
                                "--SandboxKernel.footer=False"]
    assert spec["display_name"] == "Grader (512M)"
    listed = subprocess.run([str(BIN / "jupyter"), "kernelspec", "list", "--json"],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "JUPYTER_PATH": str(data)})
    kernelspecs = json.loads(listed.stdout)["kernelspecs"]
    assert kernelspecs["grader"]["resource_dir"] == str(data / "kernels" / "grader")
    assert kernelspecs["grader"]["spec"]["display_name"] == "Grader (512M)"


def test_user_installs_in_the_users_data_dir(tmp_path):
    done = cli("install", "--user", env={"HOME": str(tmp_path), "JUPYTER_DATA_DIR": ""})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / ".local/share/jupyter/kernels/python3-sandbox/kernel.json").exists()


def test_sys_prefix_is_the_default_place(monkeypatch):
    seen = {}
    monkeypatch.setattr(install, "install", lambda given, **kw: seen.update(kw) or "there")
    parser = argparse.ArgumentParser()
    install.add_arguments(parser)        # the CLI's own options, so none is missing
    install.run(parser.parse_args(["--name", "n", "--display-name", "d"]))
    assert seen["prefix"] == sys.prefix and seen["user"] is False


@pytest.mark.parametrize("args, words", [
    (("--memory", "12X"), "invalid memory '12X'"),
    (("--cpus", "0"), "invalid cpus '0'"),
    (("--pids", "-1"), "invalid pids '-1'"),
    (("--timeout", "soon"), "invalid timeout 'soon'"),
    (("--net", "wifi"), "invalid net 'wifi'"),
    (("--image", "nope"), "no image named 'nope'"),
    (("--name", "bad name!"), "invalid name 'bad name!'"),
    (("--user", "--prefix", "/tmp/x"), "not allowed with argument"),
])
def test_a_bad_value_is_one_line_and_exit_2(tmp_path, args, words):
    done = cli("install", "--prefix", str(tmp_path), *args) if "--user" not in args else \
        cli("install", *args)
    assert done.returncode == 2
    assert words in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "share").exists()


def test_none_lifts_a_limit():
    assert settings.check("memory", "none") is None
    assert settings.check("timeout", "") is None
    assert install.kernel_argv({"memory": None}, executable="py")[-1] == "--SandboxKernel.memory=none"


# ---------------------------------------------------------------------------
# the order of precedence


def test_precedence_in_order_defaults_config_kernelspec_environment():
    resolved = settings.resolve(
        {"memory": "512M", "cpus": "0.5", "pids": "50", "timeout": None},
        from_command_line={"memory", "pids"},
        environ={"SANDBOX_KERNEL_PIDS": "77", "SANDBOX_KERNEL_FOOTER": "off"})
    assert resolved.values == {"memory": "512M", "cpus": "0.5", "pids": "77", "timeout": None,
                               "net": "none", "allow": None, "rate": None, "image": "host",
                               "idle_pause": None}
    assert resolved.sources == {"memory": "kernelspec", "cpus": "config",
                                "pids": "SANDBOX_KERNEL_PIDS", "timeout": "default",
                                "net": "default", "allow": "default", "rate": "default",
                                "image": "default", "idle_pause": "default"}
    assert resolved.footer is False and resolved.errors == []


def test_a_bad_setting_names_where_it_came_from():
    resolved = settings.resolve({"cpus": "lots"}, environ={"SANDBOX_KERNEL_MEMORY": "12X"})
    assert len(resolved.errors) == 2
    assert "SANDBOX_KERNEL_MEMORY" in resolved.errors[0]
    assert "c.SandboxKernel.cpus in a config file" in resolved.errors[1]


def test_precedence_through_a_real_kernel(tmp_path):
    """kernelspec memory 512M and pids 50 (capped at 100: the environment may
    raise a launch's limit up to its cap, not past); config file memory 256M,
    cpus 0.5, pids 60, timeout 20s; environment pids 77."""
    data = tmp_path / "data"
    done = cli("install", "--prefix", str(tmp_path / "prefix"), "--name", "sbk-precedence",
               "--memory", "512M", "--pids", "50", "--max-pids", "100")
    assert done.returncode == 0, done.stderr
    (data / "kernels").mkdir(parents=True)
    (tmp_path / "prefix/share/jupyter/kernels/sbk-precedence").rename(data / "kernels/sbk-precedence")
    profile = tmp_path / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_kernel_config.py").write_text(
        'c.SandboxKernel.memory = "256M"\nc.SandboxKernel.cpus = "0.5"\n'
        'c.SandboxKernel.pids = 60\nc.SandboxKernel.timeout = "20s"\n')
    with kf.jupyter_path(str(data)):
        k = kf.SandboxKernel("sbk-precedence", env={"IPYTHONDIR": str(tmp_path / "ipython"),
                                                    "SANDBOX_KERNEL_PIDS": "77"})
    try:
        limits = k.control("usage_request")["content"]["limits"]
        assert limits == {"memory": 512 << 20, "cpus": 0.5, "pids": 77, "timeout": 20.0}
        ran = k.run("%container limits")
        assert "memory 512 MiB, cpus 0.5, pids 77, timeout 20.00 s, net none" in ran.of(
            "display_data")[0]["data"]["text/plain"]
    finally:
        k.shutdown()


# ---------------------------------------------------------------------------
# which lines of a cell run on the host


def test_leading_container_lines_run_on_the_host_and_stay_as_comments():
    plan = split_cell("# setup\n%container limits --memory 1G\n\n%container status\nx = 1\n")
    assert plan.commands == ["%container limits --memory 1G", "%container status"]
    assert plan.code.splitlines() == ["# setup", "# %container limits --memory 1G   (ran on the host)",
                                      "", "# %container status   (ran on the host)", "x = 1"]
    assert split_cell("%container status\n\n").code == ""
    assert split_cell("x = 1").commands == [] and split_cell("x = 1").code == "x = 1"
    assert split_cell("containers = 1\n%containerish").commands == []


@pytest.mark.parametrize("cell", ["x = 1\n%container status", "%%container\nx = 1",
                                  "%container status\nx = 1\n%container stats"])
def test_misplaced_container_lines_are_refused(cell):
    with pytest.raises(CellError):
        split_cell(cell)


def test_the_wheels_kernelspec_is_the_installers_with_the_defaults():
    """sandbox_kernel/kernel/kernelspec goes into the wheel's shared data
    (share/jupyter/kernels/python3-sandbox); "python" in argv is the
    launching jupyter's own Python (jupyter_client replaces it)."""
    shipped = pathlib.Path(install.__file__).with_name("kernelspec") / "kernel.json"
    assert json.loads(shipped.read_text()) == install.kernel_json({}, executable="python")
