"""`sandbox-kernel run` imports only what a start needs (issue 22: the run
path's imports were most of its 125 ms), and skips the work that finds
nothing (the --net bridge sweep with no bridge recorded).

Each import test runs in a fresh interpreter: the modules a run path loads
are read from its sys.modules, never timed."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sandbox_kernel.runtime import cleanup

# What the run path (the parser, the image's name resolved, the container
# module) must not load: each was a few ms of every `run -- true`, and none
# is used by a start from the host image with --net none.
# (hashlib itself is not listed: the zygote's fork server keys its socket by a
# hash; hmac and secrets stand for the container names' old way to it.)
NOT_ON_THE_RUN_PATH = (
    "hmac", "secrets", "platform", "datetime", "urllib.parse", "logging", "hashlib",
    "sandbox_kernel.runtime.zygote", "sandbox_kernel.runtime.forkserver",
    "sandbox_kernel.runtime.net_bridge", "sandbox_kernel.runtime.net_filter", "pyroute2",
    "sandbox_kernel.runtime.image_build", "sandbox_kernel.runtime.registry",
    "sandbox_kernel.runtime.layers", "sandbox_kernel.runtime.image_sources",
    "sandbox_kernel.kernel.install", "sandbox_kernel.grade", "sandbox_kernel.images_cli",
    "sandbox_kernel.admin_cli", "IPython", "ipykernel",
)

RUN_PATH_IMPORTS = """
import json, sys
from sandbox_kernel import cli
parser = cli._run_only_parser()
args = parser.parse_args(["run", "--", "true"])
from sandbox_kernel.runtime import images
from sandbox_kernel.runtime.container import Container
from sandbox_kernel.runtime.spec import ContainerSpec
images.resolve(args.image)
Container(ContainerSpec(command=("true",)))   # built, never started
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after(code: str) -> set[str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONSTARTUP"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_the_run_path_imports_nothing_a_host_start_does_not_use():
    loaded = _modules_after(RUN_PATH_IMPORTS)
    assert sorted(loaded.intersection(NOT_ON_THE_RUN_PATH)) == []


def test_the_image_basics_still_give_what_the_writers_need():
    # the lazy imports inside them (hashlib, datetime, os.uname for platform)
    from sandbox_kernel.runtime import image_basics
    assert image_basics.config_digest({}) == (
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")
    assert image_basics.now().endswith("+00:00")
    import platform
    if platform.machine() == "x86_64":
        assert image_basics.host_architecture() == "amd64"
    else:
        assert image_basics.host_architecture()


def test_container_names_keep_their_shape():
    from sandbox_kernel.runtime.container import Container
    from sandbox_kernel.runtime.spec import ContainerSpec
    names = {Container(ContainerSpec(command=("true",))).name for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert cleanup.owner_of(name) == os.getpid()
        assert len(name.rsplit("-", 1)[1]) == 8


# -- the --net bridge sweep: skipped only when it could find nothing -----------------

@pytest.fixture
def net_run_dir(tmp_path, monkeypatch):
    run_dir = tmp_path / "sandbox-kernel-net"
    monkeypatch.setattr(cleanup, "NET_RUN_DIR", str(run_dir))
    monkeypatch.setattr(cleanup, "NET_BRIDGE", "sbk-test-no-such-link")
    return run_dir


def test_no_network_directory_means_no_sweep(net_run_dir):
    assert not cleanup._networks_recorded()


def test_a_lock_file_alone_means_no_sweep(net_run_dir):
    net_run_dir.mkdir()
    (net_run_dir / "lock").write_text("")
    (net_run_dir / "sbk-1-00aa.dns.log").write_text("")   # a log is not a record
    assert not cleanup._networks_recorded()


@pytest.mark.parametrize("record", ["sbk-123-0a1b2c3d.json", "bridge.json"])
def test_a_record_means_a_sweep(net_run_dir, record):
    net_run_dir.mkdir()
    (net_run_dir / "lock").write_text("")
    (net_run_dir / record).write_text("{}")
    assert cleanup._networks_recorded()


def test_a_bridge_without_its_record_means_a_sweep(net_run_dir, monkeypatch):
    # the bridge is made before its record is written: a crash between them
    net_run_dir.mkdir()
    monkeypatch.setattr(cleanup, "NET_BRIDGE", "lo")   # a link every host has
    assert cleanup._networks_recorded()


def test_an_unreadable_directory_means_a_sweep(net_run_dir, monkeypatch):
    def refused(path):
        raise PermissionError(13, "Permission denied", path)
    monkeypatch.setattr(cleanup.os, "listdir", refused)
    assert cleanup._networks_recorded()


def test_no_record_means_net_bridge_is_never_imported(net_run_dir, monkeypatch):
    net_run_dir.mkdir()
    (net_run_dir / "lock").write_text("")
    monkeypatch.setattr(cleanup.os, "geteuid", lambda: 0)
    monkeypatch.delitem(sys.modules, "sandbox_kernel.runtime.net_bridge", raising=False)
    assert cleanup._reap_networks() == []
    assert "sandbox_kernel.runtime.net_bridge" not in sys.modules


@pytest.mark.parametrize("collecting", [True, False])
def test_the_runtime_imports_leave_the_collector_as_they_found_it(collecting):
    # they run with it off (issue 22); a forked launcher inherits its state
    import gc
    from sandbox_kernel import cli
    was = gc.isenabled()
    try:
        (gc.enable if collecting else gc.disable)()
        images, container, spec = cli._runtime_modules()
        assert gc.isenabled() is collecting
        assert images.__name__.endswith("runtime.images")
        assert container.Container and spec.ContainerSpec
    finally:
        (gc.enable if was else gc.disable)()
