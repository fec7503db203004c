"""Fixtures of the network tests: the fake internet (fakenet.py) and the
environment that points the runtime's bridge at it.

    fake_internet  (module)   one at a time on the machine (fakenet.taking_turns); FakeInternet: .netns .uplink .dns .addresses .raw_ip .index_url
                              .package .blob_url(host, size) .env
    net_env        (function) fake_internet's env set in os.environ; after the test, nothing of
                              the runtime's bridge network may be left (cleaned, then failed, if so)

Root only; skipped where the kernel lacks what a bridge needs (nf_tables for IPv4).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))   # fakenet, for this directory's tests too
import fakenet  # noqa: E402

pytestmark = pytest.mark.timeout(600)


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "the bridge network needs root"
    for tool in ("ip", "nft", "dnsmasq"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"{tool} is not installed"
    probe = subprocess.run(["unshare", "--net", "nft", "add", "table", "ip", "probe"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"this kernel has no nf_tables for IPv4 ({probe.stderr.strip()})"
    return None


@pytest.fixture(scope="module")
def fake_internet(tmp_path_factory):
    missing = _missing()
    if missing:
        pytest.skip(missing)
    with fakenet.taking_turns():
        internet = fakenet.start(str(tmp_path_factory.mktemp("fakenet")))
        try:
            yield internet
        finally:
            fakenet.stop(internet)


@pytest.fixture
def net_env(fake_internet, monkeypatch):
    for name, value in fake_internet.env.items():
        monkeypatch.setenv(name, value)
    forwarding = f"/proc/sys/net/ipv4/conf/{fake_internet.uplink}/forwarding"
    with open(forwarding) as handle:
        before = handle.read()
    yield fake_internet
    left = fakenet.leftovers()
    if left:
        _clean(left)
    with open(forwarding) as handle:
        after = handle.read()
    assert not left, f"left behind: {left}"
    assert after == before, f"{forwarding} was {before.strip()}, is {after.strip()}"


def _clean(left: list[str]) -> None:
    """What a failed test left: removed so the next tests start clean."""
    from sandbox_kernel.runtime import net_records
    for item in left:
        kind, _, what = item.partition(" ")
        if kind == "link":
            subprocess.run(["ip", "link", "del", what], capture_output=True)
        elif kind == "dnsmasq":
            subprocess.run(["kill", "-9", what.split()[-1]], capture_output=True)
    for family in ("ip", "bridge"):
        subprocess.run(["nft", "delete", "table", family, "sandbox_kernel"], capture_output=True)
    shutil.rmtree(net_records.RUN_DIR, ignore_errors=True)
