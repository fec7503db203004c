"""Pure parsers of cgroup files into ``CgroupStats``.

Every parser takes the text of one file and returns numbers; nothing here
touches the file system, so the parsers are tested against recorded cgroupfs
files in tests/fixtures without root.  A figure the host cannot give is None,
never 0.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class CgroupStats:
    memory_current: int | None = None    # bytes
    memory_peak: int | None = None       # bytes
    memory_limit: int | None = None      # bytes; None = unlimited
    pids_current: int | None = None
    pids_peak: int | None = None
    pids_limit: int | None = None
    cpu_user: float | None = None        # seconds
    cpu_system: float | None = None      # seconds
    cpu_usage: float | None = None       # seconds, user + system as the cgroup counts it
    cpu_limit: float | None = None       # cores
    throttled_time: float | None = None  # seconds
    nr_throttled: int | None = None
    io_read: int | None = None           # bytes
    io_write: int | None = None          # bytes
    oom_kills: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)
