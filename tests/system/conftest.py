"""System tier: real namespaces and cgroups, as root."""
from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass

import pytest

from sandbox_kernel.runtime.cleanup import owner_alive, owner_of
from sandbox_kernel.runtime.container import Container, ExitResult
from sandbox_kernel.runtime.spec import ContainerSpec, Limits

ROOTLESS = os.geteuid() != 0


def _user_namespaces_refused() -> str | None:
    """Why this user cannot make a user namespace, or None (rootless runs)."""
    for name, bad in (("user/max_user_namespaces", "0"), ("kernel/unprivileged_userns_clone", "0"),
                      ("kernel/apparmor_restrict_unprivileged_userns", "1")):
        try:
            with open(f"/proc/sys/{name}") as handle:
                if handle.read().strip() == bad:
                    return f"{name.replace('/', '.')} = {bad}"
        except OSError:
            continue
    return None


if ROOTLESS and _user_namespaces_refused():
    pytest.skip(f"the system tier needs root or unprivileged user namespaces "
                f"({_user_namespaces_refused()})", allow_module_level=True)


@dataclass
class Ran:
    result: ExitResult
    stdout: str
    stderr: str


def run_in_container(command, *, spawn=None, **spec_fields) -> Ran:
    """Run a command in a fresh container; capture its output."""
    limits = spec_fields.pop("limits", Limits())
    if isinstance(command, str):
        command = ("/bin/sh", "-c", command)
    spec = ContainerSpec(command=tuple(command), limits=limits, **spec_fields)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        with Container(spec, stdout=out, stderr=err, stdin=subprocess.DEVNULL, spawn=spawn) as box:
            box.start()
            result = box.wait()
        out.seek(0)
        err.seek(0)
        return Ran(result, out.read(), err.read())


def python_in_container(code: str, **spec_fields) -> Ran:
    return run_in_container(("python3", "-c", code), **spec_fields)


@pytest.fixture
def run():
    return run_in_container


@pytest.fixture
def pyrun():
    return python_in_container


def leftovers() -> dict:
    """Everything a container of this test run could leave on the host, by
    kind.  Containers whose owner is another live process (a notebook open on
    this machine, another test run) are not ours and are not counted."""
    from sandbox_kernel.runtime.cgroups import detect_driver
    mounts = [line.split()[4] for line in open("/proc/self/mountinfo") if "sbk-" in line]
    state_dirs = [name for parent in sorted({"/run", "/tmp", "/var/tmp", tempfile.gettempdir()})
                  if os.path.isdir(parent)
                  for name in os.listdir(parent) if name.startswith("sbk-") and _ours(name)]
    cgroups = [path for path in detect_driver().leftovers() if _ours(os.path.basename(path))]
    links = subprocess.run(["ip", "-o", "link", "show", "type", "veth"],
                           capture_output=True, text=True).stdout
    netns = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    return {"cgroups": sorted(cgroups), "mounts": mounts, "state_dirs": sorted(state_dirs),
            "processes": _our_sandbox_processes(),
            "veths": [l for l in links.splitlines() if "sbk-" in l],
            "netns": [n for n in netns if n.startswith("sbk-")]}


def _ours(name: str) -> bool:
    """Made by this process, or by one that is dead now (an orphan)."""
    owner = owner_of(name)
    return owner is not None and (owner == os.getpid() or not owner_alive(owner))


def _our_sandbox_processes() -> list[int]:
    """Live sbk- processes whose parent is this process, or that lost their parent."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                comm, rest = handle.read().split(") ", 1)
        except OSError:
            continue
        state, parent = rest.split()[0], int(rest.split()[1])
        if state == "Z":
            continue  # exited; only its new parent's reaping is left
        if comm.endswith("(sbk-launcher") and (parent in (1, os.getpid()) or not owner_alive(parent)):
            found.append(int(pid))
        elif comm.endswith("(sbk-init") and parent == 1:
            found.append(int(pid))
    return found


@pytest.fixture
def count_leftovers():
    return leftovers


@pytest.fixture
def no_leftovers():
    """Fail the test if it leaves anything of a container behind."""
    before = leftovers()
    yield
    deadline = time.monotonic() + 5  # an owner's launcher may still be cleaning up
    while (new := _new_since(before, leftovers())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not new, f"left behind: {new}"


def _new_since(before: dict, after: dict) -> dict:
    """What is there now and was not before, by kind.  Something of before that
    went meanwhile (an orphan another run's owner cleaned up) is no failure."""
    return {kind: sorted(set(found) - set(before[kind]))
            for kind, found in after.items() if set(found) - set(before[kind])}


# Tests whose subject needs root for reasons outside the runtime's rootless
# mode: overlay whiteouts are char devices 0/0 (mknod) and opaque directories
# trusted.* xattrs, which an image import or build writes on the host.
NEEDS_ROOT_OUTSIDE_THE_RUNTIME = {
    "test_a_whiteout_and_an_opaque_directory_hide_lower_files_inside":
        "layers with whiteouts need root to import (mknod, trusted.* xattrs)",
    "test_build_adds_a_layer_visible_in_the_new_image_and_not_in_the_base":
        "image builds need root (the layer's whiteouts: trusted.* xattrs)",
    "test_a_failed_build_keeps_nothing": "image builds need root (trusted.* xattrs)",
    "test_both_wrappings_import_to_one_shared_layer":
        "the Debian image is made by mmdebstrap as root, cached in /var/cache/sandbox-kernel",
    "test_a_cell_sees_debian_and_runs_on_the_images_own_python":
        "the Debian image is made by mmdebstrap as root, cached in /var/cache/sandbox-kernel",
}


NEEDS_ROOT_MODULES = {"test_images_build_host.py": "image builds need root (trusted.* xattrs)"}


def pytest_collection_modifyitems(config, items):
    if not ROOTLESS:
        return
    for item in items:
        reason = (NEEDS_ROOT_OUTSIDE_THE_RUNTIME.get(item.originalname)
                  or NEEDS_ROOT_MODULES.get(item.path.name))
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"rootless: {reason}; not built"))


@pytest.fixture(scope="session")
def cgroup_driver():
    """The driver containers get here: v2, v1, or null (rootless without delegation)."""
    from sandbox_kernel.runtime.container import _host_driver
    return _host_driver()


@pytest.fixture
def needs_cgroup(cgroup_driver):
    """needs_cgroup("memory"): skip with the reason when no cgroup here enforces it."""
    return lambda controller: _needs_cgroup(cgroup_driver, controller)


def _needs_cgroup(driver, controller: str) -> None:
    if driver.version == "null":
        pytest.skip(f"no cgroups here (the null driver: {driver.reason}); "
                    f"the rootless null-driver behaviour is tested in test_rootless.py")
    if controller not in driver.controllers:
        pytest.skip(f"no {controller} controller here ({driver.version}: "
                    f"{' '.join(driver.controllers)})")
