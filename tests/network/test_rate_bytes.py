"""--rate and the byte counters of --net bridge: tc on the host side of the
veth holds the bandwidth, and the veth's counters are the bytes the
container moved (Ethernet frames: the headers are in them, a few percent)."""
from __future__ import annotations

from fakenet import FETCH, UPLOAD, run_python

MB = 1 << 20


def _seconds(output: str, word: str) -> float:
    line = next(line for line in output.splitlines() if line.startswith(word))
    return float(line.split()[2])


def test_rate_1mbit_holds_within_20_percent_on_a_5_mb_download(net_env):
    size, rate = 5 * MB, 1_000_000
    code, output, _ = run_python(FETCH, net_env.blob_url("example.com", size), "120",
                                 allow=("example.com",), rate=rate, timeout=300)
    assert code == 0 and f"FETCHED {size}" in output, output
    achieved = size * 8 / _seconds(output, "FETCHED")
    assert 0.8 * rate <= achieved <= 1.2 * rate, f"{achieved:.0f} bit/s against a rate of {rate}"


def test_rate_caps_what_the_container_sends(net_env):
    size, rate = MB, 1_000_000
    code, output, _ = run_python(UPLOAD, "http://example.com/sink", str(size),
                                 allow=("example.com",), rate=rate, timeout=300)
    assert code == 0 and f"received {size}" in output, output
    achieved = size * 8 / _seconds(output, "SENT")
    assert achieved <= 1.2 * rate, f"{achieved:.0f} bit/s sent against a rate of {rate}"


def test_received_bytes_match_the_download_within_5_percent(net_env):
    size = 5 * MB
    code, output, stats = run_python(FETCH, net_env.blob_url(net_env.raw_ip, size), allow=("*",))
    assert code == 0 and f"FETCHED {size}" in output, output
    assert size <= stats.rx_bytes <= 1.05 * size, stats
    assert stats.tx_bytes < 0.05 * size, stats   # requests and acks only


def test_sent_bytes_match_the_upload_within_5_percent(net_env):
    size = 5 * MB
    code, output, stats = run_python(UPLOAD, f"http://{net_env.raw_ip}/sink", str(size), allow=("*",))
    assert code == 0 and f"received {size}" in output, output
    assert size <= stats.tx_bytes <= 1.05 * size, stats


def test_the_workload_cannot_lift_its_rate(net_env):
    code, output, _ = run_python(
        "import subprocess; done = subprocess.run(['tc', 'qdisc', 'del', 'dev', 'eth0', 'root'], "
        "capture_output=True, text=True); print('RC', done.returncode, done.stderr)", rate=1_000_000)
    assert "RC 0" not in output, output
    assert "RC 2" in output and "Operation not permitted" in output, output
