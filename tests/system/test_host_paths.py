"""What a container can read of the host's paths (issue 14, item 10).

/proc/1/cmdline is readable by every process inside, and init was forked
from the owner (or the zygote, or the launcher's interpreter): before, it
showed the owner's whole command line, e.g. a kernel's connection file.  A
workload run in-process from the zygote showed the zygote's command line as
its own.  /proc/self/mountinfo showed the state directory (overlay upper
and work dirs, the workspace's source) and the image store (lowerdirs).

Each container here is started by an owner process of its own, whose
command line carries a marker that must not be seen inside.  The host
image shows the interpreter's prefix and venv at their own paths (python
needs them there: README); a stored image shows nothing of them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from sandbox_kernel.runtime import images
import image_archives as archives   # tests/ is on pytest's pythonpath

pytestmark = pytest.mark.usefixtures("no_leftovers")

SEPARATOR = "@@\n"
SHELL_PROBE = ("cat /proc/1/cmdline; echo @@; cat /proc/self/cmdline; echo @@; "
               "cat /proc/self/mountinfo")
# the in-process agent of the zygote path: python -m MODULE with this
# interpreter; timeit runs a statement in-process (no exec), as the agent runs
PYTHON_PROBE = ("import sys; [sys.stdout.write(open(p, errors='replace').read() + '@@' + chr(10)) "
                "for p in ('/proc/1/cmdline', '/proc/self/cmdline', '/proc/self/mountinfo')]")

OWNER = r"""
import json, subprocess, sys, tempfile
from sandbox_kernel.runtime.container import Container
from sandbox_kernel.runtime.spec import ContainerSpec
spawn, image, shell_probe, python_probe = sys.argv[1:5]
if spawn == "agent":   # the zygote path's in-process workload
    spawn, command = "zygote", (sys.executable, "-m", "timeit", "-n1", "-r1", python_probe)
else:
    command = ("/bin/sh", "-c", shell_probe)
with tempfile.TemporaryFile() as out:
    with Container(ContainerSpec(command=command, image=image), spawn=spawn, stdout=out,
                   stdin=subprocess.DEVNULL) as box:
        box.start()
        state_dir = box._state_dir
        result = box.wait(60)
    out.seek(0)
    print(json.dumps({"state_dir": state_dir, "status": result.status,
                      "output": out.read().decode(errors="replace")}))
"""


def _seen_inside(spawn: str, image: str) -> tuple[dict, str]:
    """What the probe read inside (init's and its own cmdline, its
    mountinfo), the owner's state dir, and the owner's marker."""
    marker = f"--owner-marker-{uuid.uuid4().hex}"
    done = subprocess.run([sys.executable, "-c", OWNER, spawn, image, SHELL_PROBE, PYTHON_PROBE,
                           marker], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    init, own, mountinfo = report["output"].split(SEPARATOR)[:3]
    assert report["status"] == "ok", report["output"] + done.stderr
    return {"init": init.replace("\0", " "), "own": own.replace("\0", " "),
            "mountinfo": mountinfo, "state_dir": report["state_dir"]}, marker


def _leaks(seen: dict, forbidden: list[str]) -> list[str]:
    return [f"{what} shows {word!r}: {seen[what]!r}"
            for what in ("init", "own", "mountinfo") for word in forbidden if word in seen[what]]


def _host_side_paths(seen: dict, marker: str) -> list[str]:
    """The owner's marker, its state dir, and the image store."""
    return [marker, seen["state_dir"], os.path.basename(seen["state_dir"]),
            images.Store().root, "/var/lib/sandbox-kernel"]


@pytest.mark.parametrize("spawn", ["fork", "exec", "zygote", "agent"])
def test_the_host_image_shows_neither_the_owners_command_line_nor_the_state_dir(spawn):
    seen, marker = _seen_inside(spawn, images.HOST)
    assert not _leaks(seen, _host_side_paths(seen, marker))
    assert seen["init"].strip() == "sbk-init"


def test_the_in_process_agent_shows_its_own_command_line_not_the_zygotes():
    seen, _marker = _seen_inside("agent", images.HOST)
    assert " -m timeit " in seen["own"] and "zygote" not in seen["own"], seen["own"]


@pytest.fixture
def busybox(tmp_path, monkeypatch):
    if not os.path.exists("/bin/busybox"):
        pytest.skip("no /bin/busybox: apt-get install busybox-static (scripts/install does)")
    monkeypatch.setenv(images.STORE_ENV, str(tmp_path / "store"))   # the owner inherits it
    images.import_image(archives.busybox_rootfs(str(tmp_path / "busybox")), "busybox")
    return "busybox"


@pytest.mark.parametrize("spawn", ["fork", "exec", "zygote"])
def test_a_stored_image_shows_nothing_of_the_store_the_state_dir_or_the_hosts_python(
        busybox, spawn):
    seen, marker = _seen_inside(spawn, busybox)
    python = {sys.prefix, sys.base_prefix, os.path.realpath(sys.prefix),
              os.path.realpath(sys.base_prefix), sys.executable}
    assert not _leaks(seen, _host_side_paths(seen, marker) + sorted(python))
    assert seen["init"].strip() == "sbk-init"
