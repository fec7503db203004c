"""The names a container sees instead of host paths: overlayfs's options
(mountinfo shows them as given) and the argv area (/proc/PID/cmdline)."""
from __future__ import annotations

import subprocess
import sys

from sandbox_kernel.runtime import rootfs


def test_overlay_directories_are_given_as_short_relative_names():
    data = ("lowerdir=/var/lib/sandbox-kernel/layers/a/root:/var/lib/sandbox-kernel/layers/b/root,"
            "upperdir=/run/sbk-1-x/layer/upper,workdir=/run/sbk-1-x/layer/work,userxattr")
    given, names = rootfs.neutral_overlay_options(data)
    assert given == "lowerdir=layer0:layer1,upperdir=upper,workdir=work,userxattr"
    assert names == {"layer0": "/var/lib/sandbox-kernel/layers/a/root",
                     "layer1": "/var/lib/sandbox-kernel/layers/b/root",
                     "upper": "/run/sbk-1-x/layer/upper", "work": "/run/sbk-1-x/layer/work"}


def test_options_without_directories_are_kept_in_order():
    given, names = rootfs.neutral_overlay_options(
        "lowerdir=/usr,upperdir=/s/u/0,workdir=/s/w/0,index=off,metacopy=off,redirect_dir=off")
    assert given == "lowerdir=layer0,upperdir=upper,workdir=work,index=off,metacopy=off,redirect_dir=off"
    assert names["layer0"] == "/usr"


def test_every_overlay_of_both_plans_can_be_named_neutrally():
    from sandbox_kernel.runtime.spec import ContainerSpec
    plan = rootfs.host_image_plan(ContainerSpec(command=("sh",)), "/run/sbk-x", None)
    for op in (op for op in plan if op.fstype == "overlay"):
        given, names = rootfs.neutral_overlay_options(op.data)
        assert "/" not in given and "upper" in names and "work" in names, op


SHOW_ARGV = """
import os, sys
from sandbox_kernel.runtime.launcher import replace_command_line
replace_command_line(os.environ["TITLE"])
sys.stdout.buffer.write(open('/proc/self/cmdline', 'rb').read())
"""
SECRET = "--connection-file=/root/.local/share/jupyter/runtime/kernel-secret.json"


def _cmdline_after_replacing_with(title: str) -> bytes:
    return subprocess.run([sys.executable, "-c", SHOW_ARGV, SECRET], env={"TITLE": title},
                          capture_output=True, check=True).stdout


def test_the_command_line_shows_the_title_and_nothing_of_the_original():
    assert _cmdline_after_replacing_with("sbk-init") == b"sbk-init\0"


def test_a_title_longer_than_the_argv_area_is_cut_to_it():
    shown = _cmdline_after_replacing_with("x" * 5000)
    assert shown == b"x" * (len(shown) - 1) + b"\0"
    assert len(shown) < len(sys.executable) + len(SHOW_ARGV) + len(SECRET) + 8


def test_a_builds_fresh_workspace_is_a_tmpfs_of_its_own():
    """A build keeps its upper dir on the host and S/layer is a host
    directory: /workspace gets a tmpfs, so its root in mountinfo is '/'."""
    from sandbox_kernel.runtime.spec import ContainerSpec

    class Image:
        lower_dirs = ["/store/layers/sha256/a/root"]
    plan = rootfs.image_plan(ContainerSpec(command=("sh",), image="x"), "/run/sbk-x", None, Image(),
                             upper_dir="/store/tmp/build")
    assert any(op.kind == "mount" and op.fstype == "tmpfs" and op.target == "/run/sbk-x/layer/workspace"
               for op in plan)
    plain = rootfs.image_plan(ContainerSpec(command=("sh",), image="x"), "/run/sbk-x", None, Image())
    assert not any(op.target == "/run/sbk-x/layer/workspace" and op.kind == "mount" for op in plain)
