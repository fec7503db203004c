"""The sandbox kernel's policy (session/policy.py) and how %container asks it:
caps, networks, sessions, import, pull, build, rm and image names; each
refusal one line, made before anything happens on the host.  Stand-in
sessions and a stand-in store: no container, nothing written."""
from __future__ import annotations

import os
import socket

import pytest

from sandbox_kernel.kernel import install, settings
from sandbox_kernel.runtime import image_sources, images, registry
from sandbox_kernel.runtime.spec import Limits, SpecError
from sandbox_kernel.session import commands, policy as policies
from sandbox_kernel.session.commands import Sessions, UsageError
from sandbox_kernel.session.policy import PolicyRefused

GIB = 1 << 30
KERNEL_LIMITS = {"memory": GIB, "cpus": 1.0, "pids": 256, "timeout": None}


class FakeSession:
    """What commands.run needs of a Session, recorded."""

    def __init__(self, name, image="host", limits=Limits(), network="none"):
        self.name, self.image, self.limits, self.network = name, image, limits, network
        self.cell_history, self.calls, self.running = [], [], True

    def status(self):
        return {"name": self.name, "image": self.image, "network": self.network, "state": "running",
                "container": "sbk-1-ab", "pid": 7, "uptime": 1.5, "cells": 0, "execution_count": 0,
                "limits": {}, "stats": None}

    def set_limits(self, **strings):
        self.calls.append(("set_limits", strings))
        return {"changed": sorted(k for k, v in strings.items() if v is not None), "restart_needed": []}

    def exec_command(self, argv, on_output=None):
        self.calls.append(("exec", argv))
        return 0, ""


class Made(list):
    def __call__(self, *args, **kwargs):
        session = FakeSession(*args, **kwargs)
        self.append(session)
        return session


@pytest.fixture
def no_host(monkeypatch):
    """Every store, registry and build entry point fails the test if it is
    reached: a refusal comes before them."""
    touched = []

    def forbidden(what):
        def call(*args, **kwargs):
            touched.append((what, args))
            raise AssertionError(f"{what} was reached: {args}")
        return call
    for module, name in ((image_sources, "open_source"), (images, "add_image"), (images, "pull"),
                         (images, "import_image"), (images, "build"), (images, "remove"),
                         (registry, "source"), (registry, "Client")):
        monkeypatch.setattr(module, name, forbidden(f"{module.__name__}.{name}"))
    return touched


def classroom_sessions(net="none", timeout=None, **overrides) -> tuple[Sessions, Made]:
    made = Made()
    policy = policies.with_overrides(policies.classroom(KERNEL_LIMITS, net), overrides)
    defaults = {"memory": "1G", "cpus": "1", "pids": "256", "timeout": timeout}
    sessions = Sessions(made, policy=policy, defaults=defaults)
    sessions.open("default", net=net, **defaults)
    return sessions, made


def refused(line: str, sessions: Sessions) -> str:
    with pytest.raises(PolicyRefused) as caught:
        commands.run(line, sessions)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"refused by the {sessions.policy.name} policy: ")
    return message


# ---------------------------------------------------------------------------
# limits


@pytest.mark.parametrize("line, words", [
    ("limits --memory 100G", "memory 100 GiB is above the cap of 1 GiB"),
    ("limits --cpus 64", "cpus 64 is above the cap of 1"),
    ("limits --pids 100000", "pids 100000 is above the cap of 256"),
    ("limits --disk 100G", "disk 100 GiB is above the cap of 1 GiB"),
    ("limits --memory ''", "no memory limit is above the cap"),
    ("limits --memory 512M --cpus 64", "cpus 64"),
])
def test_limits_past_the_caps_are_refused_and_nothing_changes(line, words):
    sessions, made = classroom_sessions()
    message = refused(line, sessions)
    assert words in message
    assert "sandbox-kernel install --max-" in message and "installer" in message
    assert made[0].calls == []                       # the session was not touched


def test_limits_within_the_caps_are_set():
    sessions, made = classroom_sessions()
    commands.run("limits --memory 512M --cpus 0.5 --pids 64", sessions)
    commands.run("limits --memory 1G", sessions)       # back up to the cap
    assert [c[1].get("memory") for c in made[0].calls] == ["512M", "1G"]


def test_a_max_cap_lets_the_notebook_raise_its_limits_up_to_it():
    sessions, made = classroom_sessions(max_memory="4G", max_timeout="1m", timeout="10s")
    commands.run("limits --memory 3G --timeout 30s", sessions)
    assert refused("limits --memory 5G", sessions).endswith(
        "above the cap of 4 GiB; the kernel's installer sets the caps: "
        "sandbox-kernel install --max-memory 5G")
    assert "timeout" in refused("limits --timeout 2m", sessions)


def test_the_session_network_is_the_kernels_or_none():
    sessions, made = classroom_sessions()
    assert "network may be none, not host" in refused("limits --net host", sessions)
    sessions, made = classroom_sessions(net="host")
    commands.run("limits --net none", sessions)
    commands.run("limits --net host", sessions)
    assert [c[1]["net"] for c in made[0].calls] == ["none", "host"]


def test_a_new_session_is_refused_past_the_sessions_cap():
    """exec --name makes a session: without the cap every new one is another container."""
    sessions, made = classroom_sessions()
    assert "above the cap of 1" in refused("exec --name other -- true", sessions)
    assert len(made) == 1 and "other" not in sessions.sessions


def test_a_new_session_gets_the_kernels_limits_not_none():
    sessions, made = classroom_sessions(max_sessions="2")
    commands.run("exec --name second -- true", sessions)
    assert made[1].limits.memory == GIB and made[1].limits.pids == 256 and made[1].limits.cpus == 1


def test_session_images_follow_the_policys_list():
    sessions, _ = classroom_sessions(images=["host"])
    assert "may run the images host, not 'other'" in refused("limits --image other", sessions)


# ---------------------------------------------------------------------------
# import, pull


def test_import_of_a_host_directory_is_refused_before_anything_reads_it(no_host, tmp_path):
    sessions, _ = classroom_sessions()
    for path in ("/etc", "/", str(tmp_path), "relative/dir"):
        message = refused(f"image import {path} --name stolen", sessions)
        assert "import reads only below listed directories (none is)" in message
        assert "--import-dir" in message
    assert no_host == []


def test_import_reads_only_below_the_listed_dirs_with_no_dotdot_or_symlink_out(no_host, tmp_path,
                                                                                   monkeypatch):
    allowed = tmp_path / "images"
    (allowed / "ok").mkdir(parents=True)
    (allowed / "out").symlink_to("/etc")
    (allowed / "loop").symlink_to(allowed / "ok")
    sessions, _ = classroom_sessions(import_dirs=[str(allowed)])
    assert "'..'" in refused(f"image import {allowed}/ok/../../x --name a", sessions)
    assert f"not /etc (where '{allowed}/out' leads)" in refused(f"image import {allowed}/out --name a",
                                                              sessions)
    assert f"not {tmp_path}" in refused(f"image import {tmp_path} --name a", sessions)
    assert no_host == []
    opened = []
    monkeypatch.setattr(image_sources, "open_source", lambda p: opened.append(p) or _Source("ok"))
    monkeypatch.setattr(images, "add_image", lambda s, n, **k: images.Image(name=n, id="sha256:1",
                                                                            layers=()))
    commands.run(f"image import {allowed}/loop --name mine", sessions)
    assert opened == [str(allowed / "ok")]           # the real path it approved
    assert "mine" in sessions.made


class _Source:
    def __init__(self, name):
        self.name = name


def test_a_pull_from_a_loopback_listener_opens_no_socket(no_host):
    sessions, _ = classroom_sessions()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        message = refused(f"image pull 127.0.0.1:{port}/a/b:1 --name x", sessions)
        assert f"pull contacts only listed registries (none is), not 127.0.0.1:{port}" in message
        assert "--pull-registry" in message
        with pytest.raises(BlockingIOError):           # nobody knocked
            listener.accept()
    assert no_host == []


def test_a_pull_goes_only_to_a_listed_registry(no_host, monkeypatch):
    sessions, _ = classroom_sessions(pull_registries=["127.0.0.1:5000"])
    assert "not 127.0.0.1:5001" in refused("image pull 127.0.0.1:5001/a:1 --name x", sessions)
    assert "not registry-1.docker.io" in refused("image pull busybox --name x", sessions)
    # the default name would carry the registry's '/': a new name has none
    assert "no '/'" in refused("image pull 127.0.0.1:5000/a:1", sessions)
    pulled = []
    monkeypatch.setattr(images, "pull", lambda ref, name, **k: pulled.append((ref, name)) or
                        images.Image(name=name, id="sha256:1", layers=()))
    commands.run("image pull 127.0.0.1:5000/a:1 --name a:1", sessions)
    assert pulled == [("127.0.0.1:5000/a:1", "a:1")] and "a:1" in sessions.made


def test_a_pull_may_not_replace_an_image_this_kernel_did_not_make(no_host, monkeypatch):
    sessions, _ = classroom_sessions(pull_registries=["127.0.0.1:5000"])
    monkeypatch.setattr(images, "load", lambda name, store=None: images.Image(name=name, id="x",
                                                                             layers=()))
    assert "rm removes only images this kernel made" in refused(
        "image pull 127.0.0.1:5000/a:1 --name theirs", sessions)


# ---------------------------------------------------------------------------
# build, rm, names


def test_a_build_gets_no_network_and_the_caps_as_limits(monkeypatch):
    sessions, _ = classroom_sessions()
    built = []
    monkeypatch.setattr(policies, "on_host", lambda name: name == "host")
    monkeypatch.setattr(images, "build", lambda name, base, script, **kw: built.append(kw) or
                        images.Image(name=name, id="sha256:1", layers=()))
    commands.run("image build tools --from busybox --run 'cat /proc/net/dev'", sessions)
    assert built[0]["network"] == "none"
    assert built[0]["limits"] == Limits(memory=GIB, cpus=1.0, pids=256, disk=GIB, timeout=None)
    assert "tools" in sessions.made


def test_a_build_with_the_hosts_network_or_on_the_hosts_files_is_refused(no_host, monkeypatch):
    monkeypatch.setattr(policies, "on_host", lambda name: name in ("host", "on-host"))
    sessions, _ = classroom_sessions()
    assert "build's network may be none, not host" in refused(
        "image build x --from busybox --net host --run 'ip a'", sessions)
    assert "the host image" in refused("image build x --from host --run 'cat /proc/net/dev'", sessions)
    assert "built on the host" in refused("image build x --from on-host --run true", sessions)
    assert no_host == []


def test_build_network_host_when_the_installer_allows_it(monkeypatch):
    sessions, _ = classroom_sessions(build_network="host")
    built = []
    monkeypatch.setattr(policies, "on_host", lambda name: False)
    monkeypatch.setattr(images, "build", lambda name, base, script, **kw: built.append(kw) or
                        images.Image(name=name, id="sha256:1", layers=()))
    commands.run("image build x --from busybox --run true", sessions)
    commands.run("image build y --from busybox --net none --run true", sessions)
    assert [b["network"] for b in built] == ["host", "none"]


def test_rm_removes_only_what_this_kernel_made(no_host, monkeypatch):
    sessions, _ = classroom_sessions()
    message = refused("image rm busybox", sessions)
    assert "rm removes only images this kernel made (none yet), not 'busybox'" in message
    removed = []
    monkeypatch.setattr(images, "remove", lambda name: removed.append(name) or [])
    sessions.made.add("mine")
    commands.run("image rm mine", sessions)
    assert removed == ["mine"] and "mine" not in sessions.made


@pytest.mark.parametrize("line", [
    "image build ../x --from busybox --run true",
    "image build ../../etc/passwd --from busybox --run true",
    "image build a/b --from busybox --run true",
    "image build /abs --from busybox --run true",
    "image build 'a b' --from busybox --run true",
    "image build x --from ../busybox --run true",
    "image import /srv/images/x --name ../x",
    "image import /srv/images/x --name a/b",
    "image rm ../x",
    "image inspect ../../etc",
    "limits --image ../x",
])
def test_image_names_with_dotdot_or_slash_are_one_line(line, no_host, monkeypatch, tmp_path):
    monkeypatch.setattr(policies, "on_host", lambda name: False)
    sessions, made = classroom_sessions(import_dirs=[str(tmp_path)])
    line = line.replace("/srv/images", str(tmp_path))
    with pytest.raises((PolicyRefused, UsageError)) as caught:
        commands.run(line, sessions)
    assert "\n" not in str(caught.value) and "name" in str(caught.value)
    assert no_host == [] and made[0].calls == []


# ---------------------------------------------------------------------------
# trusted: today's behaviour


def test_trusted_allows_what_classroom_refuses(monkeypatch, tmp_path):
    made = Made()
    sessions = Sessions(made)                          # the magics' Sessions: trusted
    assert sessions.policy.name == "trusted"
    sessions.open("default")
    commands.run("limits --memory 100G --cpus 64 --pids 100000 --net host", sessions)
    commands.run("exec --name other -- true", sessions)
    built, imported, pulled, removed = [], [], [], []
    monkeypatch.setattr(images, "build", lambda name, base, script, **kw: built.append(kw) or
                        images.Image(name=name, id="sha256:1", layers=()))
    monkeypatch.setattr(image_sources, "open_source", lambda p: imported.append(p) or _Source("x"))
    monkeypatch.setattr(images, "add_image", lambda s, n, **k: images.Image(name=n, id="1", layers=()))
    monkeypatch.setattr(images, "pull", lambda ref, name, **k: pulled.append(ref) or
                        images.Image(name=name, id="1", layers=()))
    monkeypatch.setattr(images, "remove", lambda name: removed.append(name) or [])
    commands.run("image build a/b --from host --run true", sessions)
    commands.run(f"image import {tmp_path}", sessions)
    commands.run("image pull 127.0.0.1:9/a/b:1", sessions)
    commands.run("image rm busybox", sessions)
    assert built[0]["network"] == "host" and built[0]["limits"] == Limits()
    assert imported == [str(tmp_path)] and pulled == ["127.0.0.1:9/a/b:1"] and removed == ["busybox"]


def test_trusted_still_refuses_dotdot_in_names():
    with pytest.raises(images.ImageError):
        policies.trusted().check_new_name("../x")


# ---------------------------------------------------------------------------
# status, the panel, trust_output


def test_status_and_limits_show_the_policy_and_its_caps():
    sessions, _ = classroom_sessions()
    text = commands.run("status", sessions).text
    policy_row = [line for line in text.splitlines() if line.startswith("policy ")]
    assert policy_row and policy_row[0].split(None, 1)[1].startswith(
        "classroom (caps: memory 1 GiB, cpus 1, pids 256, timeout no cap, disk 1 GiB, sessions 1;")
    assert "import from no directory" in text and "pull from no registry" in text
    assert "policy: classroom (caps: memory 1 GiB" in commands.run("limits", sessions).text


def test_the_panels_snapshot_carries_the_policy():
    from sandbox_kernel.panel import messages
    sessions, _ = classroom_sessions()
    data = messages.message("snapshot", kind="sandbox", sessions=[], history=[], reason="open",
                            policy=sessions.policy.as_dict())
    assert data["policy"]["name"] == "classroom"
    assert data["policy"]["caps"] == {"memory": GIB, "cpus": 1.0, "pids": 256, "timeout": None,
                                      "disk": GIB, "sessions": 1}
    assert data["policy"]["import_dirs"] == [] and data["policy"]["build_networks"] == ["none"]


def test_trust_output_is_set_on_every_session_the_kernel_makes():
    made = Made()
    sessions = Sessions(made, trust_output=True)
    sessions.open("a")
    sessions.warm_up(1)
    assert all(getattr(s, "trust_output", False) for s in made)
    plain = Made()
    Sessions(plain).open("b")
    assert not hasattr(plain[0], "trust_output")


# ---------------------------------------------------------------------------
# the Policy class itself


def test_presets():
    room = policies.classroom(KERNEL_LIMITS)
    assert (room.max_memory, room.max_cpus, room.max_pids, room.max_timeout, room.max_disk,
            room.max_sessions) == (GIB, 1.0, 256, None, GIB, 1)
    assert room.networks == ("none",) and room.import_dirs == () and room.pull_registries == ()
    assert room.build_networks == ("none",) and not room.remove_any and not room.host_builds
    assert policies.classroom(KERNEL_LIMITS, "host").networks == ("none", "host")
    free = policies.trusted()
    assert free.max_memory is None and free.import_dirs is None and free.build_networks[0] == "host"
    with pytest.raises(SpecError):
        policies.preset("open", KERNEL_LIMITS)


def test_the_policy_is_frozen():
    room = policies.classroom(KERNEL_LIMITS)
    with pytest.raises(AttributeError):
        room.max_memory = None


def test_overrides_parse_what_the_installer_typed(tmp_path):
    room = policies.with_overrides(policies.classroom(KERNEL_LIMITS), {
        "max_memory": "4G", "max_cpus": "none", "max_sessions": "3", "import_dirs": [str(tmp_path)],
        "pull_registries": ["Docker.io", "127.0.0.1:5000"], "build_network": "host"})
    assert room.max_memory == 4 * GIB and room.max_cpus is None and room.max_sessions == 3
    assert room.import_dirs == (os.path.realpath(tmp_path),)
    assert room.pull_registries == ("registry-1.docker.io", "127.0.0.1:5000")
    assert room.build_networks == ("host", "none")
    for bad in ({"max_memory": "lots"}, {"import_dirs": ["relative"]}, {"import_dirs": ["/nonexistent-x"]},
                {"pull_registries": ["a/b"]}, {"build_network": "bridge"}, {"max_sessions": "0"}):
        with pytest.raises(SpecError):
            policies.with_overrides(room, bad)


# ---------------------------------------------------------------------------
# settings: where the policy comes from


def _policy(settings_given=None, policy_given=None, environ=None):
    given = settings_given or {}
    resolved = settings.resolve(given, environ=environ or {})
    return settings.resolve_policy(resolved, given, policy_given or {})


def test_by_default_the_kernels_limits_are_the_classroom_caps():
    policy, errors = _policy()
    assert errors == [] and policy.name == "classroom"
    assert (policy.max_memory, policy.max_cpus, policy.max_pids) == (GIB, 1.0, 256)


def test_config_and_kernelspec_limits_are_the_caps_and_max_raises_them():
    policy, _ = _policy({"memory": "2G", "net": "host"})
    assert policy.max_memory == 2 * GIB and policy.networks == ("none", "host")
    policy, _ = _policy({"memory": "2G"}, {"max_memory": "8G", "name": "classroom"})
    assert policy.max_memory == 8 * GIB
    policy, _ = _policy({}, {"name": "trusted"})
    assert policy.max_memory is None and policy.import_dirs is None


def test_the_environment_sets_a_launchs_limits_within_the_caps_never_above():
    policy, errors = _policy({}, {}, {"SANDBOX_KERNEL_MEMORY": "512M"})
    assert errors == [] and policy.max_memory == GIB
    policy, errors = _policy({}, {}, {"SANDBOX_KERNEL_MEMORY": "8G"})
    assert policy is None and "memory 8 GiB is above the cap of 1 GiB" in errors[0]
    policy, errors = _policy({}, {}, {"SANDBOX_KERNEL_NET": "host"})
    assert policy is None and "network may be none, not host" in errors[0]
    # no environment variable names the policy
    policy, errors = _policy({}, {}, {"SANDBOX_KERNEL_POLICY": "trusted",
                                      "SANDBOX_KERNEL_MAX_MEMORY": "100G"})
    assert policy.name == "classroom" and policy.max_memory == GIB


def test_a_bad_policy_value_is_an_error_not_a_looser_policy():
    for given in ({"name": "open"}, {"max_memory": "12X"}, {"import_dirs": ["rel"]}):
        policy, errors = _policy({}, given)
        assert policy is None and len(errors) == 1 and "\n" not in errors[0]
    policy, errors = _policy({"memory": "2G"}, {"max_memory": "1G"})
    assert policy is None and "memory 2 GiB is above the cap of 1 GiB" in errors[0]


def test_a_built_in_default_above_a_max_cap_comes_down_to_the_cap():
    """--max-timeout 1m without --timeout: the kernel's timeout is the cap, not none."""
    given = {}
    resolved = settings.resolve(given, environ={})
    policy, errors = settings.resolve_policy(resolved, given, {"max_timeout": "1m",
                                                               "max_memory": "512M"})
    assert errors == [] and policy.max_timeout == 60 and policy.max_memory == 512 << 20
    assert policies.parse_limit("timeout", resolved.values["timeout"]) == 60
    assert policies.parse_limit("memory", resolved.values["memory"]) == 512 << 20


# ---------------------------------------------------------------------------
# install: the options and their argv


def test_install_writes_the_policy_options_as_traitlets(tmp_path):
    options = install.checked_policy({}, {"name": "classroom", "max_memory": "4G",
                                          "import_dirs": [str(tmp_path)],
                                          "pull_registries": ["127.0.0.1:5000"],
                                          "build_network": "host"})
    argv = install.kernel_argv({}, executable="py", policy=options, trust_output=True)
    assert argv[5:] == ["--SandboxKernel.trust_output=True", "--SandboxPolicy.name=classroom",
                        "--SandboxPolicy.max_memory=4G",
                        f"--SandboxPolicy.import_dirs={os.path.realpath(tmp_path)}",
                        "--SandboxPolicy.pull_registries=127.0.0.1:5000",
                        "--SandboxPolicy.build_network=host"]


@pytest.mark.parametrize("settings_given, policy_given, words", [
    ({"memory": "2G"}, {"max_memory": "1G"}, "above the cap"),
    ({}, {"import_dirs": ["/nonexistent-sbk"]}, "an existing directory"),
    ({}, {"pull_registries": ["a/b"]}, "HOST or HOST:PORT"),
    ({}, {"max_pids": "-3"}, "invalid pids"),
])
def test_install_refuses_a_policy_it_cannot_keep(settings_given, policy_given, words):
    with pytest.raises(install.InstallError) as caught:
        install.checked_policy(install.checked_settings(settings_given), policy_given)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_install_parses_the_policy_options(monkeypatch, tmp_path):
    import argparse
    seen = {}
    monkeypatch.setattr(install, "install", lambda given, **kw: seen.update(kw) or "there")
    parser = argparse.ArgumentParser()
    install.add_arguments(parser)
    install.run(parser.parse_args(["--policy", "trusted", "--max-memory", "2G", "--import-dir",
                                   str(tmp_path), "--import-dir", "/tmp", "--pull-registry", "h:1",
                                   "--build-network", "host", "--trust-output", "--max-sessions", "2"]))
    assert seen["trust_output"] is True
    assert seen["policy"]["name"] == "trusted" and seen["policy"]["max_memory"] == "2G"
    assert seen["policy"]["import_dirs"] == [str(tmp_path), "/tmp"]
    assert seen["policy"]["pull_registries"] == ["h:1"] and seen["policy"]["max_sessions"] == "2"


def test_the_kernel_reads_the_policy_only_from_its_configuration():
    """The SandboxPolicy traits are config; no %container subcommand names
    the policy or the configuration."""
    from sandbox_kernel.kernel.kernel import SandboxPolicy
    assert set(SandboxPolicy.class_own_traits(config=True)) == set(settings.POLICY_OPTIONS)
    parser = commands.build_parser()
    words = parser.format_help() + "".join(
        action.choices[name].format_help() for action in parser._actions
        if hasattr(action, "choices") and isinstance(action.choices, dict) for name in action.choices)
    assert "policy" not in words.lower() and "config" not in words.lower()


# ---------------------------------------------------------------------------
# pull: every connection, not only the first (issue 13)


def test_a_pull_asks_the_policy_before_every_connection_it_opens(no_host, monkeypatch):
    """%container image pull hands the pull the policy's check_contact, which
    the registry client calls for the registry, each redirect and the realm."""
    sessions, _ = classroom_sessions(pull_registries=["127.0.0.1:5000"])
    asked = []
    monkeypatch.setattr(images, "pull", lambda ref, name, **k: asked.append(k.get("may_contact")) or
                        images.Image(name=name, id="sha256:1", layers=()))
    commands.run("image pull 127.0.0.1:5000/a:1 --name a:1", sessions)
    assert asked == [sessions.policy.check_contact]


@pytest.mark.parametrize("listed, host, port, allowed", [
    ("127.0.0.1:5000", "127.0.0.1", 5000, True),
    ("127.0.0.1:5000", "127.0.0.1", 5001, False),          # another port of a listed host
    ("127.0.0.1:5000", "127.0.0.2", 5000, False),
    ("registry.example", "registry.example", 443, True),   # HOST alone: https and http
    ("registry.example", "REGISTRY.example", 80, True),
    ("registry.example", "registry.example", 8443, False),
    ("registry.example", "cdn.registry.example", 443, False),   # a CDN must be listed too
    ("docker.io", "registry-1.docker.io", 443, True),
    ("[::1]:5000", "::1", 5000, True),
    ("[::1]:5000", "::1", 5001, False),
])
def test_the_contact_check_allows_only_listed_hosts_and_ports(listed, host, port, allowed):
    policy = policies.with_overrides(policies.classroom(KERNEL_LIMITS), {"pull_registries": [listed]})
    if allowed:
        policy.check_contact(host, port)
        return
    with pytest.raises(PolicyRefused) as caught:
        policy.check_contact(host, port)
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and "--pull-registry" in message
    assert "where the registry sent it" in message and "CDN" in message


def test_trusted_contacts_any_host_and_classroom_none_by_default():
    policies.trusted().check_contact("10.1.2.3", 80)
    with pytest.raises(PolicyRefused, match=r"only listed registries \(none is\), not 127.0.0.1:9"):
        policies.classroom(KERNEL_LIMITS).check_contact("127.0.0.1", 9)
