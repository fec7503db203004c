"""The launcher's typed config (issue 16): what container.py builds survives
the JSON of the exec and zygote paths unchanged, and a field of the wrong
type, a missing one or an unknown one is refused with one line naming it."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from sandbox_kernel.runtime import rootfs, spawn, userns, zygote
from sandbox_kernel.runtime.launch_config import LauncherConfig, LauncherConfigError
from sandbox_kernel.runtime.spec import ContainerSpec


def config(**changes) -> LauncherConfig:
    spec = ContainerSpec(command=("python3", "-c", "1"))
    fields = dict(
        command=list(spec.command), env={"PATH": "/usr/bin", "HOME": "/home/sandbox"},
        workdir="/workspace", hostname="box", uid=65532, gid=65532, network="none",
        join_files=["/sys/fs/cgroup/sbk-1-x/cgroup.procs"], rlimits=[[9, 1 << 30]],
        cpus=[0, 1], plan=rootfs.host_image_plan(spec, "/run/sbk-1-x", None),
        new_root="/run/sbk-1-x/root", host_mnt_ns=4026531841, pass_fds=[7],
        cgroup_dirs=["/sys/fs/cgroup/sbk-1-x"], state_dir="/run/sbk-1-x",
        userns=userns.IdMap(((0, 1000, 1), (1, 100000, 65536)), ((0, 1000, 1),), True, 65532, 65532),
        status_fd=3, result_fd=4, lifeline_fd=5)
    fields.update(changes)
    return LauncherConfig(**fields)


def test_the_config_survives_json_unchanged():
    original = config(run_module="sandbox_kernel.session.agent", module_args=["--x"])
    again = LauncherConfig.from_dict(json.loads(json.dumps(original.to_dict())))
    assert again == original
    assert isinstance(again.plan[0], rootfs.Op) and isinstance(again.userns, userns.IdMap)
    assert again.userns.uid_lines == ((0, 1000, 1), (1, 100000, 65536))


def test_defaults_and_no_user_namespace_survive_too():
    original = config(userns=None, cpus=None)
    assert LauncherConfig.from_dict(json.loads(json.dumps(original.to_dict()))) == original


@pytest.mark.parametrize("field, value, says", [
    ("uid", "65532", "launcher config.uid must be an int, not str"),
    ("uid", True, "launcher config.uid must be an int, not bool"),
    ("keep_groups", 1, "launcher config.keep_groups must be a bool, not int"),
    ("command", "python3", "launcher config.command must be a list, not str"),
    ("env", {"PATH": 1}, "launcher config.env['PATH'] must be a str, not int"),
    ("pass_fds", [7, "8"], "launcher config.pass_fds[1] must be an int, not str"),
    ("cpus", [0, 1.5], "launcher config.cpus[1] must be an int, not float"),
])
def test_a_field_of_the_wrong_type_is_named(field, value, says):
    data = config().to_dict()
    data[field] = value
    with pytest.raises(LauncherConfigError) as raised:
        LauncherConfig.from_dict(data)
    assert str(raised.value).startswith(says)


def test_nested_records_are_checked_too():
    data = config().to_dict()
    data["plan"][2]["flags"] = "0"
    with pytest.raises(LauncherConfigError, match=r"config\.plan\[2\]\.flags must be an int"):
        LauncherConfig.from_dict(data)
    data = config().to_dict()
    data["userns"]["uid_lines"] = [[0, 1000]]
    with pytest.raises(LauncherConfigError, match=r"userns\.uid_lines\[0\] must have 3 items"):
        LauncherConfig.from_dict(data)
    data = config().to_dict()
    data["plan"][0]["bogus"] = 1
    with pytest.raises(LauncherConfigError, match=r"plan\[0\]: unknown field\(s\) bogus"):
        LauncherConfig.from_dict(data)


def test_a_missing_or_unknown_field_is_refused():
    data = config().to_dict()
    del data["plan"]
    with pytest.raises(LauncherConfigError, match="missing field.*plan"):
        LauncherConfig.from_dict(data)
    data = config().to_dict()
    data["cleanup"] = {}
    with pytest.raises(LauncherConfigError, match="unknown field.*cleanup"):
        LauncherConfig.from_dict(data)
    with pytest.raises(LauncherConfigError, match="must be a dict, not list"):
        LauncherConfig.from_dict([])


def test_check_refuses_what_the_fork_path_would_hand_over():
    config().check()
    wrong = config()
    wrong.pass_fds = (7,)
    with pytest.raises(LauncherConfigError, match="pass_fds must be a list, not tuple"):
        wrong.check()
    wrong = config()
    wrong.plan = [*wrong.plan, {"kind": "mkdir", "target": "/x"}]
    with pytest.raises(LauncherConfigError, match=r"plan\[\d+\] must be an Op, not dict"):
        wrong.check()


@pytest.fixture
def own_zygote():
    server = zygote.Zygote()
    yield server
    server.close()


@pytest.mark.parametrize("path", ["zygote", "exec"])
def test_a_launcher_checks_the_config_it_parses_and_says_what_is_wrong(path, own_zygote):
    """The owner's check() is not the only one: what crosses as JSON is
    checked where it is parsed, and the start fails with that one line."""
    status_r, status_w = os.pipe()
    result_r, result_w = os.pipe()
    lifeline_r, lifeline_w = os.pipe()
    wrong = config(uid="0", pass_fds=[], status_fd=status_w, result_fd=result_w,
                   lifeline_fd=lifeline_r)
    handle = None
    try:
        if path == "zygote":
            own_zygote.spawn(wrong, [0, 1, 2])
        else:
            handle = spawn.SPAWNERS["exec"](wrong, (subprocess.DEVNULL,) * 3, result_r)
    finally:
        for fd in (status_w, result_w, lifeline_r):
            os.close(fd)
    try:
        with pytest.raises(spawn.ContainerStartError, match="launcher config.uid must be an int, "
                                                           "not str"):
            spawn.await_setup(status_r)
    finally:
        os.close(lifeline_w)
        if handle is not None:
            assert handle.reap() == 125
        else:
            os.close(result_r)
