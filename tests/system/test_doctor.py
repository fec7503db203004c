"""doctor on the real host: natively (cgroup v1 hybrid on the development machines) and in
the cgroup v2 guest (shared/tools/run-in-v2).  The expected cgroup version is worked out
here from /proc/self/mountinfo on its own, not written down per host."""
from __future__ import annotations

import json
import os

import pytest

from sandbox_kernel.runtime import doctor

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0, reason="the system tier runs as root"),
]


def cgroup_mounts_in_mountinfo() -> list[tuple[str, set[str]]]:
    """(type, super options) of each cgroup/cgroup2 mount, read without doctor's parser."""
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fstype, _source, options = line.split(" - ", 1)[1].split()[:3]
            if fstype.startswith("cgroup"):
                mounts.append((fstype, set(options.split(","))))
    return mounts


def expected_version() -> str:
    """hybrid: v1 hierarchies with controllers (names from /proc/cgroups) beside a cgroup2."""
    with open("/proc/cgroups") as f:
        controllers = {line.split()[0] for line in f if not line.startswith("#")}
    mounts = cgroup_mounts_in_mountinfo()
    v1 = any(t == "cgroup" and opts & controllers for t, opts in mounts)
    v2 = any(t == "cgroup2" for t, _ in mounts)
    return {(True, True): "hybrid", (True, False): "v1", (False, True): "v2"}.get((v1, v2), "none")


def checks_by_name() -> dict[str, doctor.Check]:
    return {c.name: c for c in doctor.diagnose()}


def test_cgroup_version_is_what_mountinfo_shows():
    version = expected_version()
    assert doctor.cgroup_layout().version == version
    assert checks_by_name()["cgroups"].detail.startswith(version)


def test_a_host_with_only_cgroup2_is_v2():
    types = {t for t, _ in cgroup_mounts_in_mountinfo()}
    if types != {"cgroup2"}:
        pytest.skip(f"this host mounts {sorted(types)}, not cgroup2 alone")
    checks = checks_by_name()
    assert checks["cgroups"].detail.startswith("v2 at ")
    assert {"memory", "cpu", "pids"} <= set(checks["cgroup controllers"].detail.split())
    assert checks["cgroup writable"].ok, checks["cgroup writable"].detail


def test_root_host_can_run_containers():
    checks = doctor.diagnose()
    assert doctor.can_run_containers(checks), doctor.render(checks)
    names = {c.name: c for c in checks}
    assert names["root"].ok and names["namespaces"].ok and names["overlayfs"].ok
    assert names["cgroup controllers"].ok, names["cgroup controllers"].detail


def test_this_process_cgroup_directories_exist():
    layout = doctor.cgroup_layout()
    for controller in doctor.LIMIT_CONTROLLERS:
        assert os.path.isdir(layout.dirs[controller]), (controller, layout.dirs[controller])


def test_main_prints_json_and_exits_0(capsys):
    assert doctor.main(["--json"]) == 0
    names = [c["name"] for c in json.loads(capsys.readouterr().out)]
    assert names[:4] == ["root", "user namespaces", "namespaces", "cgroups"]
