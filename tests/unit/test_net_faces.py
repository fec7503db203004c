"""--net bridge, --allow and --rate through every face (issue 21): the
sessions (registry.py) ask the policy and keep them, %container limits
changes them for a restart, the session's spec carries them on a bridge
only, the kernel's settings cap a notebook, and `run` passes them to the
runtime.  Stand-in sessions: no container starts."""
from __future__ import annotations

import pytest

from sandbox_kernel import cli
from sandbox_kernel.kernel import settings
from sandbox_kernel.runtime.spec import Limits
from sandbox_kernel.session import commands, figures, policy as policies
from sandbox_kernel.session.commands import Sessions, UsageError
from sandbox_kernel.session.policy import PolicyRefused

KERNEL_LIMITS = {"memory": 1 << 30, "cpus": 1.0, "pids": 256, "timeout": None}


class FakeSession(figures.SessionFigures):
    """What Sessions and %container limits need of a Session, recorded."""

    def __init__(self, name, image="host", limits=Limits(), network="none"):
        self.name, self.image, self.limits, self.network = name, image, limits, network
        self.calls, self.cell_history, self.running = [], [], True

    def set_limits(self, **strings):
        self.calls.append(strings)
        return {"changed": [], "restart_needed": [k for k in ("allow", "rate") if strings.get(k)]}


def room(allow="pypi.org,files.pythonhosted.org", rate="10mbit") -> Sessions:
    policy = policies.classroom(KERNEL_LIMITS, "bridge", allow, rate)
    return Sessions(FakeSession, policy=policy, defaults={"memory": "1G", "cpus": "1", "pids": "256"})


def test_a_new_bridged_session_keeps_what_the_policy_allowed():
    session, _ = room().open("default", net="bridge", allow="pypi.org", rate="1mbit")
    assert (session.network, session.allow, session.rate) == ("bridge", ("pypi.org",), 1_000_000)
    assert session._network_spec() == {"network": "bridge", "allow": ("pypi.org",), "rate": 1_000_000}
    assert session._network_dict() == {"mode": "bridge", "allow": ["pypi.org"], "rate": 1_000_000}


def test_a_notebook_cannot_allow_beyond_the_kernels_names():
    sessions = room()
    with pytest.raises(PolicyRefused, match="not example.com"):
        sessions.open("default", net="bridge", allow="pypi.org,example.com", rate="1mbit")
    with pytest.raises(PolicyRefused, match="above the cap"):
        sessions.open("default", net="bridge", allow="pypi.org")           # no --rate: no limit
    assert not sessions.sessions


def test_allow_without_a_bridge_is_one_line_not_ignored():
    with pytest.raises(UsageError, match="--allow and --rate need --net bridge"):
        Sessions(FakeSession).open("default", net="none", allow="pypi.org")
    session, _ = Sessions(FakeSession).open("default", net="none", allow="none")
    assert session.allow == () and session._network_spec() == {"network": "none"}


def test_limits_change_the_allowlist_for_the_next_container():
    sessions = room()
    session, _ = sessions.open("default", net="bridge", rate="1mbit")
    output = commands.run("limits --allow files.pythonhosted.org", sessions)
    assert "restart" in output.text
    assert session.calls[-1]["allow"] == "files.pythonhosted.org"
    with pytest.raises(PolicyRefused):
        commands.run("limits --allow '*'", sessions)
    with pytest.raises(PolicyRefused):
        commands.run("limits --rate 100mbit", sessions)


def test_a_session_moved_off_the_bridge_gives_the_runtime_no_allowlist():
    session = FakeSession("s", network="bridge")
    session.allow, session.rate = ("pypi.org",), 1_000_000
    session.network = "none"
    assert session._network_spec() == {"network": "none"} and session._network_dict() is None


def test_the_kernels_own_allowlist_is_the_notebooks_cap():
    resolved = settings.resolve({"net": "bridge", "allow": "pypi.org", "rate": "10mbit"}, environ={})
    policy, errors = settings.resolve_policy(resolved, {"net": "bridge", "allow": "pypi.org",
                                                        "rate": "10mbit"}, {})
    assert not errors and policy.may_allow == ("pypi.org",) and policy.max_rate == 10_000_000
    widened, errors = settings.resolve_policy(resolved, {"net": "bridge", "allow": "pypi.org"},
                                              {"may_allow": "pypi.org,example.com", "max_rate": "20mbit"})
    assert not errors and widened.may_allow == ("pypi.org", "example.com")


def test_run_takes_them(monkeypatch):
    seen = {}

    class Stop(Exception):
        pass

    def fake_container(spec):
        seen["spec"] = spec
        raise Stop
    monkeypatch.setattr("sandbox_kernel.runtime.container.Container", fake_container)
    parser = cli.build_parser()
    args = parser.parse_args(["run", "--net", "bridge", "--allow", "pypi.org", "--rate", "1mbit",
                              "--", "true"])
    with pytest.raises(Stop):
        cli.cmd_run(args, parser)
    assert (seen["spec"].allow, seen["spec"].rate) == (("pypi.org",), 1_000_000)
    args = parser.parse_args(["run", "--allow", "pypi.org", "--", "true"])
    with pytest.raises(SystemExit):
        cli.cmd_run(args, parser)


def test_the_provisioner_takes_them_and_its_policy_caps_them():
    from sandbox_kernel.provisioner import settings as provisioner
    plan = provisioner.plan({"net": "bridge", "allow": "pypi.org", "rate": "10mbit"})
    spec = provisioner.container_spec(plan, ["R"], cwd=None, env={}, kernel_dir="/tmp", labels={})
    assert (spec.network, spec.allow, spec.rate) == ("bridge", ("pypi.org",), 10_000_000)
    assert plan.policy.may_allow == ("pypi.org",) and plan.policy.max_rate == 10_000_000
    with pytest.raises(provisioner.SettingsError, match="--net bridge"):
        provisioner.plan({"net": "none", "allow": "pypi.org"})
    none = provisioner.plan({})
    assert provisioner.container_spec(none, ["R"], cwd=None, env={}, kernel_dir="/tmp",
                                      labels={}).allow == ()
