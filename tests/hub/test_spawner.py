"""SandboxSpawner's own rules, without a hub: the classroom policy unless the
admin chose one, one clear line for a bad ceiling, the server's arguments
and environment, and the sweep of state directories a killed kernel left."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from sandbox_kernel.hub.spawner import SandboxSpawner, sweep_state_dirs


def test_the_classroom_policy_is_the_default_and_an_admins_choice_stays():
    assert SandboxSpawner(kernel_args=["--memory", "1G"]).install_args() == [
        "--policy", "classroom", "--memory", "1G"]
    chosen = ["--policy", "trusted", "--memory", "1G"]
    assert SandboxSpawner(kernel_args=chosen).install_args() == chosen
    assert SandboxSpawner(kernel_args=["--policy=trusted"]).install_args() == ["--policy=trusted"]


def test_the_kernelspec_carries_the_policy_and_limits(tmp_path):
    spawner = SandboxSpawner(kernel_args=["--memory", "1G", "--cpus", "1"],
                             kernel_prefix=str(tmp_path), kernel_name="classroom")
    where = spawner.ensure_kernelspec()
    argv = json.loads((tmp_path / "share/jupyter/kernels/classroom/kernel.json").read_text())["argv"]
    assert os.path.samefile(where, tmp_path / "share/jupyter/kernels/classroom")
    assert "--SandboxPolicy.name=classroom" in argv and "--SandboxKernel.memory=1G" in argv


def test_a_bad_kernel_option_is_one_line(tmp_path):
    spawner = SandboxSpawner(kernel_args=["--memory", "lots"], kernel_prefix=str(tmp_path))
    with pytest.raises(ValueError) as caught:
        spawner.ensure_kernelspec()
    assert "lots" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="unknown --memroy 1G: they are sandbox-kernel install's"):
        SandboxSpawner(kernel_args=["--memroy", "1G"], kernel_prefix=str(tmp_path)).ensure_kernelspec()


def test_a_bad_ceiling_is_one_line_naming_what_is_accepted():
    with pytest.raises(ValueError) as caught:
        SandboxSpawner(ceiling_memory="a lot").ceiling_figures()
    message = str(caught.value)
    assert "a lot" in message and "512M" in message and "\n" not in message
    assert SandboxSpawner(ceiling_memory="none", ceiling_cpus="0.5", ceiling_pids="none") \
        .ceiling_figures() == {"memory": None, "cpus": 0.5, "pids": None}


def test_only_the_sandbox_kernel_no_terminal_and_roots_config(tmp_path):
    spawner = SandboxSpawner(kernel_prefix=str(tmp_path), kernel_name="classroom")
    assert {"--MappingKernelManager.default_kernel_name=classroom",
            "--KernelSpecManager.allowed_kernelspecs=classroom",
            "--ServerApp.terminals_enabled=False"} <= set(spawner.get_args())
    assert "--KernelSpecManager.allowed_kernelspecs=classroom" not in \
        SandboxSpawner(kernel_name="classroom", only_sandbox_kernel=False).get_args()
    assert spawner.config_dir() == str(tmp_path / "etc" / "jupyter")
    assert os.stat(spawner.config_dir()).st_uid == 0


def test_the_servers_temp_dir_is_the_hubs_where_top_looks(tmp_path, monkeypatch):
    """A student's containers keep their cards where root's top and the admin page look:
    the hub's temp dir, not a fallback in the student's home (a /tmp they cannot write)."""
    import tempfile
    from jupyterhub.spawner import LocalProcessSpawner
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(LocalProcessSpawner, "get_env", lambda self: {})   # the hub's own part
    env = SandboxSpawner(kernel_prefix=str(tmp_path)).get_env()
    assert env["TMPDIR"] == str(tmp_path)


def _dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def test_the_sweep_removes_only_the_users_orphaned_state_dirs(tmp_path):
    uid, other = 64000, 64001           # ids no account uses: only ownership matters
    dead = _dead_pid()
    orphan = tmp_path / f"sbk-{dead}-aa11"
    (orphan / "root" / "deep").mkdir(parents=True)
    live = tmp_path / f"sbk-{os.getpid()}-bb22"
    others = tmp_path / f"sbk-{dead}-cc33"
    link = tmp_path / f"sbk-{dead}-dd44"
    target = tmp_path / "not-a-state-dir"
    for directory in (live, others, target):
        directory.mkdir()
    link.symlink_to(target)
    for path in (orphan, orphan / "root", orphan / "root" / "deep", live, target):
        os.lchown(path, uid, uid)
    os.lchown(others, other, other)
    os.lchown(link, uid, uid)
    assert sweep_state_dirs(uid, parents=[str(tmp_path)]) == [str(orphan)]
    assert not orphan.exists()
    assert live.is_dir() and others.is_dir() and link.is_symlink() and target.is_dir()


class _Other:
    def __init__(self, active: bool):
        self.active = active


class _User:
    name = "ann"

    def __init__(self):
        self.spawners = {}


def test_named_servers_share_the_ceiling_until_the_last_stops():
    user = _User()
    spawner = SandboxSpawner(user=user)
    user.spawners = {"": spawner, "project": _Other(active=True)}
    assert spawner.other_servers_running()
    user.spawners["project"] = _Other(active=False)
    assert not spawner.other_servers_running()
