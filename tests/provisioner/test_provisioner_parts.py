"""The provisioner's parts without a kernel: its settings (checked by the
session's parsers and policy, one line each), the words of a death, the
registry, the private connection directory, the kernel's environment."""
from __future__ import annotations

import os
import signal
import stat

import pytest
from jupyter_client.kernelspec import KernelSpec

from sandbox_kernel.provisioner import deaths, registry, settings
from sandbox_kernel.provisioner.connection import ConnectionDir
from sandbox_kernel.provisioner.provisioner import SandboxProvisioner
from sandbox_kernel.runtime.container import ExitResult
from sandbox_kernel.runtime.spec import Limits
from sandbox_kernel.runtime.stats import CgroupStats

GiB = 1 << 30


def _ended(status, code, signum, *, peak=GiB, limit=GiB) -> ExitResult:
    return ExitResult(status, code, signum, 1.0, CgroupStats(memory_peak=peak, memory_limit=limit))


@pytest.mark.parametrize("language, result, limits, reason, words", [
    ("R", _ended("oom", 137, signal.SIGKILL), Limits(memory=GiB), "oom",
     "the R kernel ran out of memory at the 1 GiB limit (peak 1 GiB)"),
    ("python", _ended("oom", 137, signal.SIGKILL, limit=None), Limits(), "oom",
     "the Python kernel ran out of memory (no memory limit was set: the host's memory ran out) (peak 1 GiB)"),
    ("bash", _ended("signal", 137, signal.SIGKILL), Limits(), "killed", "the bash kernel was killed (SIGKILL)"),
    ("R", _ended("signal", 139, signal.SIGSEGV), Limits(), "signal", "the R kernel died of SIGSEGV (11)"),
    ("R", _ended("exit", 1, None), Limits(), "exit", "the R kernel exited with code 1"),
    # a cell's child was OOM-killed earlier: the kernel's own later exit is not an OOM
    ("R", _ended("oom", 1, None), Limits(memory=GiB), "exit", "the R kernel exited with code 1"),
    ("", None, Limits(), "killed", "the kernel stopped (how it ended could not be read)"),
])
def test_a_death_in_plain_words(language, result, limits, reason, words):
    death = deaths.death_of(language, result, limits)
    assert (death.reason, death.message) == (reason, words)


def test_the_defaults_are_the_sandbox_kernels_and_the_classroom_policy():
    plan = settings.plan({})
    assert plan.limits == Limits(memory=GiB, cpus=1.0, pids=256)
    assert (plan.network, plan.image, plan.policy.name, plan.policy.notebook_dir) == \
        ("none", "host", "classroom", "overlay")


@pytest.mark.parametrize("config, words", [
    ({"memory": "12X"}, "invalid memory '12X'"),
    ({"cpus": "0"}, "invalid cpus '0'"),
    ({"image": "nope"}, "nope"),
    ({"policy": "open"}, "invalid policy 'open'"),
    ({"memory": "2G", "max_memory": "1G"}, "memory 2 GiB is above the cap of 1 GiB"),
    ({"notebook_dir": "everything"}, "everything"),
    ({"timeout": "30s"}, "unknown sandbox-provisioner setting 'timeout'"),
])
def test_a_bad_setting_is_one_line(config, words):
    with pytest.raises(settings.SettingsError) as error:
        settings.plan(config)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_the_spec_binds_the_connection_directory_and_labels_the_container(tmp_path):
    spec = settings.container_spec(settings.plan({"policy": "trusted", "notebook_dir": "none"}),
                                   ["R", "-f", "/run/jupyter-kernel/kernel.json"], cwd=str(tmp_path),
                                   env={"A": "1"}, kernel_dir=str(tmp_path),
                                   labels={"kind": "provisioner", "kernel_id": "k1", "language": ""})
    assert [(m.source, m.target, m.read_only) for m in spec.mounts] == \
        [(str(tmp_path), settings.KERNEL_DIR, False)]
    assert spec.env == (("A", "1"),) and spec.workdir == "/workspace" and spec.network == "none"
    assert dict(spec.labels) == {"kind": "provisioner", "kernel_id": "k1"}


def test_the_registry_keeps_deaths_and_tells_every_listener():
    heard, kernel = [], registry.enter("k-parts", "R", "R (sandbox)")
    try:
        def broken(_kernel_id, _death):
            raise RuntimeError("a broken listener")
        stops = [registry.subscribe(broken), registry.subscribe(lambda k, d: heard.append((k, d.reason)))]
        for _ in range(registry.MAX_DEATHS + 3):
            registry.record_death("k-parts", registry.Death("oom", "words", 0.0))
        for stop in stops:
            stop()
        registry.record_death("k-parts", registry.Death("exit", "words", 0.0))
        assert heard == [("k-parts", "oom")] * (registry.MAX_DEATHS + 3)
        assert len(kernel.deaths) == registry.MAX_DEATHS and kernel.stats() is None
        assert registry.get("k-parts").as_dict()["state"] is None
    finally:
        registry.remove("k-parts")
    assert registry.get("k-parts") is None


def test_the_connection_directory_is_private_and_never_follows_a_link(tmp_path):
    directory = ConnectionDir((65532, 65532))
    try:
        assert stat.S_IMODE(os.stat(directory.outer).st_mode) == 0o700
        assert os.path.basename(directory.outer).startswith(f"sbk-{os.getpid()}-")  # the reaper's name
        info = os.stat(directory.host_dir)
        assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, 65532)
        target = tmp_path / "host-file"
        target.write_text("kept")
        os.symlink(target, os.path.join(directory.host_dir, "kernel.json.new"))   # what a kernel could leave
        inside = directory.write({"key": b"secret", "ip": "/host/path", "transport": "tcp", "shell_port": 1})
        assert inside == f"{settings.KERNEL_DIR}/kernel.json" and target.read_text() == "kept"
        written = os.path.join(directory.host_dir, "kernel.json")
        info = os.lstat(written)
        assert (stat.S_IMODE(info.st_mode), info.st_uid, stat.S_ISREG(info.st_mode)) == (0o600, 65532, True)
        assert '"ip": "/run/jupyter-kernel/kernel"' in open(written).read()
    finally:
        directory.remove()
    assert not os.path.exists(directory.outer)


def test_the_kernel_gets_its_kernelspecs_variables_and_nothing_of_the_servers():
    spec = KernelSpec(argv=["x"], display_name="X", language="R", env={"R_LIBS": "/lib"})
    provisioner = SandboxProvisioner(kernel_id="k", kernel_spec=spec, parent=None)
    env = {"R_LIBS": "/lib", "JPY_SESSION_NAME": "n.ipynb", "JUPYTERHUB_API_TOKEN": "t", "PATH": "/x"}
    assert provisioner._kernel_env(env) == {"R_LIBS": "/lib", "JPY_SESSION_NAME": "n.ipynb"}


def test_a_start_that_fails_leaves_no_connection_directory(jupyter_path):
    from jupyter_client.manager import KernelManager
    from provisioner.prov_helpers import leftovers
    km = KernelManager(kernel_name="bash-sandboxed")
    km.kernel_spec.argv = ["/nonexistent/kernel", "-f", "{connection_file}"]
    with pytest.raises(Exception, match="nonexistent"):
        km.start_kernel()
    assert leftovers() == [] and registry.get(km.kernel_id or "") is None


def test_a_bad_setting_in_the_kernelspec_stops_the_start_in_one_line(jupyter_path):
    from jupyter_client.manager import KernelManager
    from provisioner.prov_helpers import leftovers
    km = KernelManager(kernel_name="bash-sandboxed")
    km.kernel_spec.metadata["kernel_provisioner"]["config"] = {"memory": "12X"}
    with pytest.raises(settings.SettingsError, match="^sandbox-provisioner: invalid memory '12X': expected"):
        km.start_kernel()
    assert leftovers() == []
