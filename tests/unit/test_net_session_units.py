"""Issue 21, the session's side: --net bridge, --allow and --rate declared
once (options.py), the policy's cap on what a notebook may allow, and the
stats contract's network figures (rx/tx, refusals with the names looked up)
in the footer.  Pure: nothing here starts a container or touches the network."""
from __future__ import annotations

import pytest

from sandbox_kernel import cli
from sandbox_kernel.runtime.net_stats import Lookup, NetStats, Refusal
from sandbox_kernel.runtime.spec import Limits, SpecError
from sandbox_kernel.session import commands, options, policy as policies, stats
from sandbox_kernel.session.policy import PolicyRefused

KERNEL_LIMITS = {"memory": 1 << 30, "cpus": 1.0, "pids": 256, "timeout": None}


# -- options: declared once, in every face -------------------------------------------


@pytest.mark.parametrize("face", options.FACES)
def test_allow_and_rate_are_options_of_every_face(face):
    assert {"net", "allow", "rate"} <= set(options.names(face))
    assert "bridge" in options.help_for("net", face)


def test_the_faces_parsers_take_them():
    run = cli.build_parser().parse_args(["run", "--net", "bridge", "--allow", "pypi.org",
                                         "--rate", "10mbit", "--", "true"])
    assert (run.net, run.allow, run.rate) == ("bridge", "pypi.org", "10mbit")
    limits = commands.parse("limits --net bridge --allow pypi.org,files.pythonhosted.org --rate 1mbit")
    assert (limits.allow, limits.rate) == ("pypi.org,files.pythonhosted.org", "1mbit")
    installed = cli.build_parser().parse_args(["install", "--allow", "*", "--rate", "none"])
    assert (installed.allow, installed.rate) == ("*", "none")


@pytest.mark.parametrize("text, value", [
    ("pypi.org,files.pythonhosted.org", ("pypi.org", "files.pythonhosted.org")),
    ("PyPI.org., pypi.org", ("pypi.org",)),
    ("*", ("*",)),
    ("none", ()),
    ("", ()),
])
@pytest.mark.parametrize("face", options.FACES)
def test_allow_is_parsed_by_the_one_function(face, text, value):
    assert options.parse("allow", text, face) == value


@pytest.mark.parametrize("face", options.FACES)
def test_rate_none_is_no_limit_in_every_face(face):
    assert options.parse("rate", "10mbit", face) == 10_000_000
    assert options.parse("rate", "none", face) is None


@pytest.mark.parametrize("name, text", [("allow", "*,pypi.org"), ("allow", "localhost"),
                                        ("allow", "pypi.org;rm -rf /"), ("rate", "10mbps"),
                                        ("rate", "fast"), ("rate", "1bit")])
def test_a_bad_value_is_one_line_naming_what_is_accepted(name, text):
    with pytest.raises(SpecError) as caught:
        options.parse(name, text, options.CELL)
    message = str(caught.value)
    assert "\n" not in message and name in message
    assert "pypi.org" in message if name == "allow" else "10mbit" in message


# -- the policy caps what a notebook may allow ------------------------------------------


def room(net="bridge", allow="pypi.org,files.pythonhosted.org", rate=None, **overrides):
    return policies.with_overrides(policies.classroom(KERNEL_LIMITS, net, allow, rate), overrides)


def refusal(policy, *args) -> str:
    with pytest.raises(PolicyRefused) as caught:
        policy.check_egress(*args)
    return str(caught.value)


def test_the_classroom_caps_the_allowlist_at_the_kernels_own():
    policy = room()
    policy.check_egress("bridge", ("pypi.org",))
    policy.check_egress("bridge", ("files.pythonhosted.org", "pypi.org"))
    policy.check_egress("bridge", ())                       # nothing leaves: always allowed
    policy.check_egress("bridge", ("mirror.pypi.org",))     # a subdomain, as the resolver matches
    message = refusal(policy, "bridge", ("pypi.org", "example.com"))
    assert "not example.com" in message and "pypi.org, files.pythonhosted.org" in message
    assert "--may-allow pypi.org,files.pythonhosted.org,example.com" in message
    assert "\n" not in message


@pytest.mark.parametrize("asked", [("evilpypi.org",), ("pypi.org.evil.com",), ("python.org",), ("*",),
                                   ("files.pythonhosted.org.example.com",)])
def test_a_name_that_only_looks_like_an_allowed_one_is_refused(asked):
    with pytest.raises(PolicyRefused):
        room().check_egress("bridge", asked)


def test_open_egress_only_where_the_kernel_has_it():
    assert "any destination" not in refusal(room(allow=""), "bridge", ("*",))
    room(allow="*").check_egress("bridge", ("*",))
    room(allow="*").check_egress("bridge", ("example.com",))
    policies.trusted().check_egress("bridge", ("*",))     # the magics: the host user's own


def test_the_classroom_with_no_allow_lets_nothing_leave():
    policy = room(allow=None)
    assert policy.may_allow == ()
    assert "may --allow no name, not pypi.org" in refusal(policy, "bridge", ("pypi.org",))


def test_the_names_are_normalised_before_they_are_compared():
    room().check_egress("bridge", "PyPI.org.")
    with pytest.raises(SpecError):
        room().check_egress("bridge", "*,pypi.org")


def test_the_rate_is_capped_at_the_kernels_own():
    policy = room(rate="10mbit")
    policy.check_egress("bridge", (), 1_000_000)
    policy.check_egress("bridge", (), 10_000_000)
    assert "--rate 20 Mbit/s is above the cap of 10 Mbit/s" in refusal(policy, "bridge", (), 20_000_000)
    assert "--max-rate 20mbit" in refusal(policy, "bridge", (), 20_000_000)
    assert "no rate limit is above the cap" in refusal(policy, "bridge", (), None)
    room().check_egress("bridge", (), None)                 # the kernel has no rate: no cap


def test_the_egress_of_other_networks_is_not_the_allowlists():
    room().check_egress("none", ())
    room().check_egress("host", ())


def test_the_installer_overrides_the_cap():
    policy = room(allow="", may_allow=["pypi.org", "example.com"], max_rate="5mbit")
    assert policy.may_allow == ("pypi.org", "example.com") and policy.max_rate == 5_000_000
    policy.check_egress("bridge", ("example.com",), 5_000_000)
    with pytest.raises(SpecError):
        room(may_allow="bad name")


def test_the_policy_says_its_egress_rules():
    policy = room(rate="1mbit")
    text = policy.describe()
    assert "allow pypi.org, files.pythonhosted.org" in text and "rate 1 Mbit/s" in text
    shown = policy.as_dict()
    assert shown["may_allow"] == ["pypi.org", "files.pythonhosted.org"] and shown["max_rate"] == 1_000_000
    assert policies.trusted().as_dict()["may_allow"] is None


def test_a_build_runs_on_none_or_host_never_a_bridge():
    with pytest.raises(SpecError, match="build network 'bridge'"):
        policies.with_overrides(policies.trusted(), {"build_network": "bridge"})
    with pytest.raises(SpecError):
        policies.trusted().build_network("bridge")


# -- the stats contract's network ------------------------------------------------------------


Refused = Refusal      # the runtime's records (runtime/net_stats.py), read by attribute


def net_stats(rx=0, tx=0, refused=(), lookups=()):
    return NetStats(rx, tx, list(refused), list(lookups))


def test_net_counters_name_the_refusals():
    counters = stats.net_counters(net_stats(
        5000, 700,
        refused=[Refused("198.18.1.13", "tcp", 80, 3), Refused("198.18.1.12", "tcp", 443, 1,
                                                                ("example.com",))],
        lookups=[Lookup("pypi.org", True), Lookup("example.com", False), Lookup("example.com", False)]))
    assert (counters["net_rx"], counters["net_tx"], counters["net_refused"]) == (5000, 700, 5)
    assert counters["net_refusals"] == [
        {"destination": "198.18.1.13", "names": [], "protocol": "tcp", "port": 80, "count": 3},
        {"destination": "198.18.1.12", "names": ["example.com"], "protocol": "tcp", "port": 443,
         "count": 1},
        {"destination": "example.com", "names": ["example.com"], "protocol": "dns", "port": 53,
         "count": 1}]


def test_a_cell_counts_only_its_own_refusals():
    before = stats.net_counters(net_stats(100, 10, [Refused("198.18.1.13", "tcp", 80, 2)]))
    after = stats.net_counters(net_stats(
        1100, 60, [Refused("198.18.1.13", "tcp", 80, 5), Refused("198.18.1.12", "udp", 53, 1)],
        [Lookup("example.com", False)]))
    cell = stats.cell_figures(before, after, peaks_reset=True)
    assert (cell["net_rx"], cell["net_tx"], cell["net_refused"]) == (1000, 50, 5)
    assert [(e["destination"], e["count"]) for e in cell["net_refusals"]] == [
        ("198.18.1.13", 3), ("198.18.1.12", 1), ("example.com", 1)]
    quiet = stats.cell_figures(after, after, peaks_reset=True)
    assert quiet["net_refused"] == 0 and quiet["net_refusals"] == []


def test_refusals_are_null_where_nothing_filters():
    cell = stats.cell_figures({"net_rx": 1}, {"net_rx": 2}, peaks_reset=True)
    assert cell["net_refused"] is None and cell["net_refusals"] is None
    result = stats.build_stats(session="s", image="host", limits=Limits(), execution_count=1,
                               wall=0.1, figures=cell, status="ok")
    assert "refused" not in stats.footer_text(result) and "network" not in result


def contract_with_refusals() -> dict:
    after = stats.net_counters(net_stats(
        2 << 20, 3 << 10, [Refused("198.18.1.13", "tcp", 80, 2),
                           Refused("198.18.1.12", "tcp", 443, 1, ("example.com",))],
        [Lookup("pypi.org", True), Lookup("example.com", False)]))
    figures = stats.cell_figures(None, after, peaks_reset=True)
    return stats.build_stats(session="s", image="host", limits=Limits(), execution_count=2,
                             wall=0.5, figures=figures, status="ok",
                             network=stats.network_dict("bridge", ("pypi.org",), 10_000_000))


def test_the_footer_names_the_refusals():
    text = stats.footer_text(contract_with_refusals())
    assert "net rx 2 MiB tx 3 KiB at 10 Mbit/s" in text
    assert ("refused 4: 198.18.1.13 tcp/80 x2, 198.18.1.12 (example.com) tcp/443, "
            "example.com (name not allowed)") in text
    html = stats.footer_html(contract_with_refusals())
    assert "<b>refused</b> 4: 198.18.1.13 tcp/80 x2" in html


def test_the_footer_keeps_a_long_list_short():
    entries = [stats.refusal(f"198.18.1.{n}", "tcp", 80, 1) for n in range(10)]
    assert stats.refusals_text(10, entries).endswith("198.18.1.3 tcp/80, 6 more")


def test_a_refused_name_is_escaped_in_the_html_footer():
    entry = stats.refusal("<img src=x onerror=alert(1)>", stats.DNS, 53, 1)
    result = stats.build_stats(session="s", image="host", limits=Limits(), execution_count=1,
                               wall=0.1, figures={"net_refused": 1, "net_refusals": [entry]},
                               status="ok")
    assert "<img" not in stats.footer_html(result)


def test_the_contracts_json_carries_the_network():
    bundle = stats.footer_bundle(contract_with_refusals())[stats.MIME_TYPE]
    assert bundle["network"] == {"mode": "bridge", "allow": ["pypi.org"], "rate": 10_000_000}
    assert bundle["cell"]["net_refused"] == 4 and len(bundle["cell"]["net_refusals"]) == 3
    assert set(bundle["cell"]) == set(stats.CELL_FIELDS)


# -- rootless: pasta, or one line ----------------------------------------------------------------


def refused_rootless(*args, **kwargs) -> str:
    from sandbox_kernel.runtime import net_pasta
    with pytest.raises(net_pasta.RootlessNetRefused) as caught:
        net_pasta.check(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("rootless --net bridge refused: ")
    return message


def test_rootless_an_allowlist_or_no_egress_is_refused_never_opened(tmp_path):
    tun = tmp_path / "tun"
    tun.write_text("")
    assert "--allow pypi.org cannot be enforced without root" in refused_rootless(
        ("pypi.org",), None, path="/bin/true", tun=str(tun))
    assert "no --allow (nothing may leave)" in refused_rootless((), None, path="/bin/true", tun=str(tun))
    assert "--net none for no egress" in refused_rootless((), None, path="/bin/true", tun=str(tun))


def test_rootless_a_rate_is_refused(tmp_path):
    assert "--rate needs a host veth" in refused_rootless(("*",), 1_000_000, path="/bin/true")


def test_rootless_open_egress_needs_pasta_and_its_device(tmp_path, monkeypatch):
    from sandbox_kernel.runtime import net_pasta
    monkeypatch.setattr(net_pasta.shutil, "which", lambda name: None)
    assert "pasta is not installed" in refused_rootless(("*",), None)
    assert "cannot open" in refused_rootless(("*",), None, path="/bin/true",
                                             tun=str(tmp_path / "missing"))
    tun = tmp_path / "tun"
    tun.write_text("")
    assert net_pasta.check(("*",), None, path="/bin/true", tun=str(tun)) == "/bin/true"


def test_pasta_gets_no_way_to_the_hosts_loopback():
    from sandbox_kernel.runtime import net_pasta
    argv = net_pasta.pasta_argv("/usr/bin/pasta", 1234, "/tmp/x/pid")
    joined = " ".join(argv)
    for words in ("-T none", "-U none", "-t none", "-u none", "--no-map-gw", "--config-net"):
        assert words in joined
    assert argv[-1] == "1234"


def test_status_says_what_a_bridged_session_may_reach():
    assert stats.network_words("none") == "none"
    assert stats.network_words("bridge", ("pypi.org", "files.pythonhosted.org"), 10_000_000) == (
        "bridge (allow pypi.org, files.pythonhosted.org; rate 10 Mbit/s)")
    assert stats.network_words("bridge", ()) == "bridge (allow nothing; rate no limit)"
    assert stats.network_words("bridge", ("*",)) == "bridge (allow any destination; rate no limit)"
