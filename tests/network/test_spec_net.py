"""The parsers of --net bridge's options: one clear line for a bad value."""
from __future__ import annotations

import pytest

from sandbox_kernel.runtime.spec import ContainerSpec, SpecError, parse_allow, parse_network, parse_rate


def test_allow_parses_names_star_and_nothing():
    assert parse_allow("PyPI.org, files.pythonhosted.org.,pypi.org") == ("pypi.org", "files.pythonhosted.org")
    assert parse_allow(["example.com"]) == ("example.com",)
    assert parse_allow("*") == ("*",)
    assert parse_allow(None) == () and parse_allow("") == () and parse_allow(()) == ()


@pytest.mark.parametrize("bad", ["*,pypi.org", "pypi.org *", "localhost", "-x.com", "a..b",
                                 "x_y.com", "pypi.org;rm", "a" * 64 + ".com", "*.pypi.org",
                                 "pypi.org/", "10.0.0.1/8"])
def test_allow_refuses_what_is_not_a_list_of_names(bad):
    with pytest.raises(SpecError, match="^invalid allow .*domain names separated by commas"):
        parse_allow(bad)


def test_rate_parses_bits_per_second():
    assert parse_rate("10mbit") == 10_000_000 and parse_rate("2.5Mbit") == 2_500_000
    assert parse_rate("500kbit") == 500_000 and parse_rate("1gbit") == 10**9
    assert parse_rate("64000") == 64_000 and parse_rate(8000) == 8000
    assert parse_rate(None) is None and parse_rate("") is None


@pytest.mark.parametrize("bad", ["10mbps", "1kbit", "fast", "-1mbit", "10 MB", True, 0])
def test_rate_refuses_bytes_and_nonsense(bad):
    with pytest.raises(SpecError, match="^invalid rate .*such as 10mbit"):
        parse_rate(bad)


def test_bridge_is_a_network_and_allow_and_rate_need_it():
    assert parse_network("bridge") == "bridge"
    spec = ContainerSpec.from_strings(["true"], net="bridge", allow="pypi.org", rate="1mbit")
    assert spec.allow == ("pypi.org",) and spec.rate == 1_000_000
    for option in ({"allow": "pypi.org"}, {"rate": "1mbit"}):
        with pytest.raises(SpecError, match="--net bridge"):
            ContainerSpec.from_strings(["true"], net="none", **option)
