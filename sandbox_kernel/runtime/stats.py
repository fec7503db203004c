"""Pure parsers of cgroup files into ``CgroupStats``.

Every parser takes the text of one file and returns numbers; nothing here
touches the file system, so the parsers are tested against recorded cgroupfs
files in tests/fixtures without root.  A figure the host cannot give is None,
never 0.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class CgroupStats:
    memory_current: int | None = None    # bytes
    memory_peak: int | None = None       # bytes
    memory_limit: int | None = None      # bytes; None = unlimited
    pids_current: int | None = None
    pids_peak: int | None = None
    pids_limit: int | None = None
    pids_refused: int | None = None      # forks refused at the pids limit (pids.events "max")
    cpu_user: float | None = None        # seconds
    cpu_system: float | None = None      # seconds
    cpu_usage: float | None = None       # seconds, user + system as the cgroup counts it
    cpu_limit: float | None = None       # cores
    throttled_time: float | None = None  # seconds
    nr_throttled: int | None = None
    io_read: int | None = None           # bytes
    io_write: int | None = None          # bytes
    oom_kills: int | None = None
    memory_shmem: int | None = None      # bytes of tmpfs and shared memory charged to the group
    disk_used: int | None = None         # bytes in the writable layer (Container fills it in)
    disk_limit: int | None = None        # bytes: the writable layer's size

    def as_dict(self) -> dict:
        return asdict(self)


# -- single values ------------------------------------------------------------

V1_UNLIMITED = 1 << 62
"""v1 memory files say "no limit" as PAGE_COUNTER_MAX pages (9223372036854771712)."""


def parse_int(text: str) -> int:
    """'1486848\\n' -> 1486848."""
    return int(text.strip())


def parse_max(text: str) -> int | None:
    """A v2 limit: 'max' -> None (no limit), '536870912' -> 536870912."""
    value = text.strip()
    return None if value == "max" else int(value)


def parse_v1_limit(text: str) -> int | None:
    """A v1 limit: '-1' or the page-counter maximum -> None (no limit)."""
    value = int(text.strip())
    return None if value < 0 or value >= V1_UNLIMITED else value


def parse_cpu_max(text: str) -> float | None:
    """v2 cpu.max 'quota period' -> cores; 'max 100000' -> None."""
    quota, _, period = text.strip().partition(" ")
    if quota == "max":
        return None
    return int(quota) / int(period or 100_000)


def parse_cfs_quota(quota_text: str, period_text: str) -> float | None:
    """v1 cpu.cfs_quota_us / cpu.cfs_period_us -> cores; quota -1 -> None."""
    quota = int(quota_text.strip())
    return None if quota < 0 else quota / int(period_text.strip())


def parse_pid_list(text: str) -> list[int]:
    """cgroup.procs: one pid a line."""
    return [int(line) for line in text.split()]


# -- keyed files ----------------------------------------------------------------

def parse_flat_keyed(text: str) -> dict[str, int]:
    """'key value' lines (cpu.stat, memory.events, memory.oom_control,
    cpuacct.stat) -> {key: value}; lines that are not 'word integer' are skipped,
    so a kernel that adds a field of another shape breaks nothing."""
    values = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].lstrip("-").isdigit():
            values[fields[0]] = int(fields[1])
    return values


def parse_shmem(text: str, v1: bool = False) -> int | None:
    """memory.stat -> bytes of shmem: tmpfs files (the writable layer, /dev/shm)
    and shared anonymous memory charged to the group.  v2 says ``shmem``;
    v1 says ``shmem`` for the group's own pages and ``total_shmem`` with its
    children's (ours have none, but the total is what was charged).  None when
    the kernel gives neither (v1 before Linux 4.x)."""
    total = flat_keyed_value(text, "total_shmem") if v1 else None
    return total if total is not None else flat_keyed_value(text, "shmem")


def flat_keyed_value(text: str, key: str) -> int | None:
    """The value of ``key`` in a flat-keyed text (as parse_flat_keyed gives
    it), found without parsing the other lines: memory.stat has 40-70 of
    them, and a cell reads it twice."""
    needle = key + " "
    if text.startswith(needle):
        start = 0
    else:
        start = text.find("\n" + needle)
        if start < 0:
            return None
        start += 1
    end = text.find("\n", start)
    fields = text[start:end if end >= 0 else len(text)].split()
    if len(fields) == 2 and fields[1].lstrip("-").isdigit():
        return int(fields[1])
    return None


def parse_nested_keyed(text: str) -> dict[str, dict[str, int]]:
    """'8:0 rbytes=1 wbytes=2' lines (io.stat) -> {'8:0': {'rbytes': 1, ...}}."""
    values = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        device, *pairs = line.split()
        values[device] = {}
        for pair in pairs:
            key, _, number = pair.partition("=")
            if number.isdigit():
                values[device][key] = int(number)
    return values


def parse_io_stat_v2(text: str) -> tuple[int, int]:
    """io.stat -> (bytes read, bytes written), summed over devices."""
    devices = parse_nested_keyed(text).values()
    return (sum(d.get("rbytes", 0) for d in devices),
            sum(d.get("wbytes", 0) for d in devices))


def parse_blkio_v1(text: str) -> tuple[int, int]:
    """blkio.throttle.io_service_bytes -> (bytes read, bytes written).

    Lines are 'MAJ:MIN Op bytes' per device and operation; the last line,
    'Total N', has no device and is left out so that nothing counts twice.
    (Six lines per disk: a regex finds the two of each a cell needs.)"""
    read = write = 0
    for operation, number in _blkio_line().findall(text):
        if operation == "Read":
            read += int(number)
        else:
            write += int(number)
    return read, write


@functools.cache
def _blkio_line():
    import re   # at first use: `sandbox-kernel run` imports this module and may read no stats
    return re.compile(r"^\S+ (Read|Write) (\d+)$", re.MULTILINE)


# -- whole groups -----------------------------------------------------------------

def _parsed(parser, text: str | None):
    return None if text is None else parser(text)


def _seconds(value: int | None, per_second: float) -> float | None:
    return None if value is None else value / per_second


def v2_stats(texts: Mapping[str, str | None]) -> CgroupStats:
    """CgroupStats from the texts of a v2 group's files (missing or None -> None).

    Keys: memory.current, memory.peak, memory.max, memory.events, memory.stat, cpu.stat,
    cpu.max, pids.current, pids.peak, pids.max, pids.events, io.stat."""
    cpu = _parsed(parse_flat_keyed, texts.get("cpu.stat")) or {}
    events = _parsed(parse_flat_keyed, texts.get("memory.events")) or {}
    pids_events = _parsed(parse_flat_keyed, texts.get("pids.events")) or {}
    io = _parsed(parse_io_stat_v2, texts.get("io.stat")) or (None, None)
    return CgroupStats(
        memory_current=_parsed(parse_int, texts.get("memory.current")),
        memory_peak=_parsed(parse_int, texts.get("memory.peak")),
        memory_limit=_parsed(parse_max, texts.get("memory.max")),
        pids_current=_parsed(parse_int, texts.get("pids.current")),
        pids_peak=_parsed(parse_int, texts.get("pids.peak")),
        pids_limit=_parsed(parse_max, texts.get("pids.max")),
        pids_refused=pids_events.get("max"),
        cpu_user=_seconds(cpu.get("user_usec"), 1e6),
        cpu_system=_seconds(cpu.get("system_usec"), 1e6),
        cpu_usage=_seconds(cpu.get("usage_usec"), 1e6),
        cpu_limit=_parsed(parse_cpu_max, texts.get("cpu.max")),
        throttled_time=_seconds(cpu.get("throttled_usec"), 1e6),
        nr_throttled=cpu.get("nr_throttled"),
        io_read=io[0],
        io_write=io[1],
        oom_kills=events.get("oom_kill"),
        memory_shmem=_parsed(parse_shmem, texts.get("memory.stat")),
    )


def v1_stats(texts: Mapping[str, str | None], clock_ticks: int = 100) -> CgroupStats:
    """CgroupStats from the texts of a v1 group's files (missing or None -> None).

    Keys: memory.usage_in_bytes, memory.max_usage_in_bytes,
    memory.limit_in_bytes, memory.oom_control, memory.stat, cpuacct.usage, cpuacct.stat,
    cpu.stat, cpu.cfs_quota_us, cpu.cfs_period_us, pids.current, pids.peak,
    pids.max, pids.events, blkio.throttle.io_service_bytes.  ``clock_ticks`` is USER_HZ,
    the unit of cpuacct.stat (os.sysconf("SC_CLK_TCK"))."""
    cpu = _parsed(parse_flat_keyed, texts.get("cpu.stat")) or {}
    ticks = _parsed(parse_flat_keyed, texts.get("cpuacct.stat")) or {}
    oom = _parsed(parse_flat_keyed, texts.get("memory.oom_control")) or {}
    pids_events = _parsed(parse_flat_keyed, texts.get("pids.events")) or {}
    io = _parsed(parse_blkio_v1, texts.get("blkio.throttle.io_service_bytes")) or (None, None)
    quota, period = texts.get("cpu.cfs_quota_us"), texts.get("cpu.cfs_period_us")
    return CgroupStats(
        memory_current=_parsed(parse_int, texts.get("memory.usage_in_bytes")),
        memory_peak=_parsed(parse_int, texts.get("memory.max_usage_in_bytes")),
        memory_limit=_parsed(parse_v1_limit, texts.get("memory.limit_in_bytes")),
        pids_current=_parsed(parse_int, texts.get("pids.current")),
        pids_peak=_parsed(parse_int, texts.get("pids.peak")),
        pids_limit=_parsed(parse_max, texts.get("pids.max")),
        pids_refused=pids_events.get("max"),   # this group's own fork failures on v1
        cpu_user=_seconds(ticks.get("user"), clock_ticks),
        cpu_system=_seconds(ticks.get("system"), clock_ticks),
        cpu_usage=_seconds(_parsed(parse_int, texts.get("cpuacct.usage")), 1e9),
        cpu_limit=None if quota is None or period is None else parse_cfs_quota(quota, period),
        throttled_time=_seconds(cpu.get("throttled_time"), 1e9),
        nr_throttled=cpu.get("nr_throttled"),
        io_read=io[0],
        io_write=io[1],
        oom_kills=oom.get("oom_kill"),  # the line exists since Linux 4.13
        memory_shmem=_parsed(lambda text: parse_shmem(text, v1=True), texts.get("memory.stat")),
    )
