"""What users type becomes a spec, or an error naming field, value and what is accepted."""
from __future__ import annotations

import pytest

from sandbox_kernel.runtime.spec import (ContainerSpec, Mount, SpecError, parse_cpus,
                                         parse_duration, parse_mount, parse_network,
                                         parse_pids, parse_size)


@pytest.mark.parametrize("text, expected", [
    ("512M", 512 << 20), ("1.5G", 3 << 29), ("64MiB", 64 << 20), ("1g", 1 << 30),
    ("100k", 100 << 10), ("1048576", 1 << 20), (None, None), ("", None),
])
def test_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["12X", "-5M", "M", "1.2.3G", "10", "lots"])
def test_bad_sizes_name_field_value_and_accepted(text):
    with pytest.raises(SpecError) as caught:
        parse_size(text, "memory")
    message = str(caught.value)
    assert "memory" in message and repr(text) in message and "512M" in message


@pytest.mark.parametrize("text, expected", [("0.5", 0.5), ("2", 2.0), (None, None)])
def test_cpus(text, expected):
    assert parse_cpus(text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "abc", "0.001", "nan"])
def test_bad_cpus(text):
    with pytest.raises(SpecError, match="cpus"):
        parse_cpus(text)


def test_pids():
    assert parse_pids("256") == 256
    for bad in ("0", "-3", "1.5", "many"):
        with pytest.raises(SpecError, match="pids"):
            parse_pids(bad)


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("2m", 120), ("1h", 3600),
                                           ("500ms", 0.5), ("1.5", 1.5)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0s", "-1s", "soon", "5 days"])
def test_bad_durations(text):
    with pytest.raises(SpecError, match="timeout.*30s"):
        parse_duration(text)


def test_network():
    assert parse_network("none") == "none" and parse_network("HOST") == "host"
    with pytest.raises(SpecError, match="none .*or host"):
        parse_network("bridge0")


def test_mounts(tmp_path):
    assert parse_mount(f"{tmp_path}:/data:ro") == Mount(str(tmp_path), "/data", True)
    assert parse_mount(f"{tmp_path}:/data") == Mount(str(tmp_path), "/data", False)
    for bad in ("relative:/data", f"{tmp_path}:data", f"{tmp_path}:/data:rx",
                f"{tmp_path}:/", f"{tmp_path}:/a/../etc", "/no/such/dir:/data", "/tmp"):
        with pytest.raises(SpecError, match="mount"):
            parse_mount(bad)


def test_from_strings_builds_a_frozen_spec():
    spec = ContainerSpec.from_strings(["python3"], memory="256M", cpus="0.5", pids="64",
                                      timeout="30s", disk="1G", env=["A=1"], workdir="/w")
    assert spec.limits.memory == 256 << 20 and spec.limits.cpus == 0.5
    assert spec.env == (("A", "1"),) and spec.workdir == "/w"
    with pytest.raises(AttributeError):
        spec.network = "host"


def test_from_strings_needs_a_command():
    with pytest.raises(SpecError, match="command"):
        ContainerSpec.from_strings([])


@pytest.mark.parametrize("field, value", [("env", "NOEQUALS"), ("env", "1A=b"),
                                          ("workdir", "relative"), ("workdir", "/a/../b")])
def test_bad_env_and_workdir(field, value):
    kwargs = {"env": [value]} if field == "env" else {"workdir": value}
    with pytest.raises(SpecError, match=field):
        ContainerSpec.from_strings(["sh"], **kwargs)
