"""The resolver's log is what the container asked, written by dnsmasq: the host reads
only its tail and keeps a bounded number of names, whatever its size."""
from sandbox_kernel.runtime import net_resolver


def _query(index: int) -> str:
    return f"Dec  5 01:00:00 dnsmasq[7]: query[A] n{index}.example.com from 10.231.0.2\n"


def test_a_flood_of_names_is_read_in_bounded_time_and_space(tmp_path):
    log = tmp_path / "c.dns.log"
    with open(log, "w") as handle:           # ~8 MB: far more than the host reads
        for index in range(120_000):
            handle.write(_query(index))
            handle.write(f"Dec  5 01:00:00 dnsmasq[7]: reply n{index}.example.com is 198.18.{index // 250 % 250}.{index % 250}\n")
    names = net_resolver.lookups(str(log), ("example.com",))
    assert 0 < len(names) <= net_resolver.NAMES_KEPT
    assert names[0][0].startswith("n1") and all(allowed for _, allowed in names)   # from the tail
    assert len(net_resolver.answers(str(log))) <= net_resolver.NAMES_KEPT


def test_a_small_log_is_read_whole(tmp_path):
    log = tmp_path / "c.dns.log"
    log.write_text(_query(1) + _query(2) + _query(1)
                   + "Dec  5 01:00:00 dnsmasq[7]: reply n2.example.com is 198.18.1.10\n")
    assert net_resolver.lookups(str(log), ("pypi.org",)) == [("n1.example.com", False),
                                                              ("n2.example.com", False)]
    assert net_resolver.answers(str(log)) == {"198.18.1.10": ["n2.example.com"]}


def test_a_missing_log_is_no_lookups(tmp_path):
    assert net_resolver.lookups(str(tmp_path / "gone"), ("*",)) == []
    assert net_resolver.answers(str(tmp_path / "gone")) == {}


def test_a_log_grown_past_its_bound_is_cut_to_its_tail_when_read(tmp_path):
    log = tmp_path / "c.dns.log"
    with open(log, "w") as handle:
        for index in range(80_000):          # ~6 MB, past LOG_KEPT
            handle.write(_query(index))
    before = net_resolver.lookups(str(log), ("*",))
    assert log.stat().st_size <= net_resolver.LOG_READ           # the host's pages given back
    assert net_resolver.lookups(str(log), ("*",)) == before      # the tail it read is what stays
