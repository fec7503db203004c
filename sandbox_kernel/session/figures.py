"""The running container's figures for the stats contract (stats.py): the
cgroup's counters (CgroupStats.as_dict()) plus the bytes through its own
network namespace, read from an fd of /proc/PID/net/dev kept open; with
--net bridge, the veth's counters and the allowlist's refusals instead
(Container.net_stats, the figures `top` shows too).

``SessionFigures`` is the part of Session (client.py) that reads them:
status(), stats() and snapshot(), under the session's state lock
(``_state``, which also guards ``_container`` and ``_net_dev``), so two
threads never read the same fd at once.  Imports runtime.container (State,
LifecycleError) and stats.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time

from ..runtime.container import LifecycleError, State
from . import stats as stats_contract

UNKNOWN_NET = {"net_rx": None, "net_tx": None}


def parse_net_dev(text: str) -> dict:
    """/proc/PID/net/dev -> {"net_rx", "net_tx"} bytes, loopback left out."""
    rx = tx = 0
    for line in text.splitlines()[2:]:
        name, _, fields = line.partition(":")
        numbers = fields.split()
        if name.strip() == "lo" or len(numbers) < 9:
            continue
        rx += int(numbers[0])
        tx += int(numbers[8])
    return {"net_rx": rx, "net_tx": tx}


def open_net_dev(container) -> int:
    """An fd of /proc/PID/net/dev of a process of the container, opened once
    per container: the open file holds the container's network namespace,
    so pread reads its counters without finding a process (six cgroup.procs
    files on cgroup v1) and opening a file at every cell.  The process is
    checked to be in the container's cgroup after the open: a pid reused by
    a host process between the two would read the host's counters."""
    pid = container.cgroup.pids()[0]
    fd = os.open(f"/proc/{pid}/net/dev", os.O_RDONLY | os.O_CLOEXEC)
    if pid not in container.cgroup.pids():
        os.close(fd)
        raise ProcessLookupError(f"process {pid} left the container")
    return fd


class NetDev:
    """The container's /proc/PID/net/dev, opened on first read and kept."""

    def __init__(self):
        self.fd: int | None = None

    def counters(self, container, network: str) -> dict:
        """Bytes through the container's own network namespace (loopback
        excluded); null on the host's network, where they are the host's."""
        if network == "host":
            return dict(UNKNOWN_NET)
        try:
            if self.fd is None:
                self.fd = open_net_dev(container)
            return parse_net_dev(os.pread(self.fd, 1 << 16, 0).decode("ascii"))
        except (OSError, IndexError, ValueError):
            return dict(UNKNOWN_NET)

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


def shallow_dict(stats) -> dict:
    """CgroupStats.as_dict() without its deep copy (dataclasses.asdict): its
    fields are numbers or None, and it is read twice per cell."""
    return {name: getattr(stats, name) for name in _field_names(type(stats))}


@functools.cache
def _field_names(cls) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(cls))


def container_counters(container, network: str, net_dev: NetDev) -> dict | None:
    """CgroupStats of the container plus net_rx/net_tx; None if none runs."""
    if container is None or container.cgroup is None:
        return None
    try:
        figures = shallow_dict(container.stats())
    except (LifecycleError, OSError):
        return None
    net = bridge_counters(container) if network == "bridge" else None
    figures.update(net if net is not None else net_dev.counters(container, network))
    return figures


def bridge_counters(container) -> dict | None:
    """rx/tx of the bridge's veth and the allowlist's refusals (cumulative);
    None where the runtime keeps none (a rootless bridge through pasta)."""
    try:
        net = container.net_stats()
    except OSError:
        return dict(UNKNOWN_NET)
    return None if net is None else stats_contract.net_counters(net)


class SessionFigures:
    """Session's figures (a part of Session, client.py): reads its name,
    image, network, limits, _state, _container, _net_dev, _started_at,
    _execution_count, _closed, _warming, cell_history and trust_output.
    ``allow`` and ``rate``: --net bridge's egress (runtime.spec.parse_allow's
    names, bits/s), set by Sessions (registry.py) and %container limits."""

    allow: tuple[str, ...] = ()
    rate: int | None = None

    def snapshot(self) -> stats_contract.SessionSnapshot:
        """The session as the panel shows it, every field read at once under
        the state lock."""
        with self._state:
            container = self._container
            running = container is not None and container.state is State.RUNNING
            return stats_contract.SessionSnapshot(
                name=self.name, image=self.image, network=self.network, limits=self.limits,
                state=self._state_word(container), uptime=self._uptime(),
                execution_count=self._execution_count,
                counters=self._read_counters() if running else None,
                trust_output=self.trust_output,
                warnings=tuple(container.warnings) if running else ())

    def status(self) -> dict:
        """Name, image, limits, state, pid, uptime and the current figures."""
        container = self._container
        return {
            "name": self.name, "image": self.image, "network": self.network,
            "allow": list(self.allow), "rate": self.rate,
            "network_words": stats_contract.network_words(self.network, self.allow, self.rate),
            "limits": stats_contract.limits_dict(self.limits), "state": self._state_word(container),
            "container": container.name if container is not None else None,
            "pid": container.pid if container is not None else None,
            "uptime": self._uptime(),
            "cells": len(self.cell_history), "execution_count": self._execution_count,
            "stats": self._counters() if self.running else None,
        }

    def _network_spec(self) -> dict:
        """The spec's network, and its allow and rate on a bridge only (the
        runtime refuses them on another network; a session moved off a
        bridge keeps them for its way back)."""
        if self.network != "bridge":
            return {"network": self.network}
        return {"network": self.network, "allow": self.allow, "rate": self.rate}

    def _network_dict(self) -> dict | None:
        """The contract's ``network`` of a bridged session, else None."""
        if self.network != "bridge":
            return None
        return stats_contract.network_dict("bridge", self.allow, self.rate)

    def _state_word(self, container) -> str:
        state = container.state.value if container is not None else ("stopped" if self._closed else "not started")
        if self._warming is not None and self._warming.is_alive():
            state = "starting"
        return state

    def _uptime(self) -> float | None:
        started = self._started_at
        return time.monotonic() - started if started else None

    def stats(self) -> dict:
        """The stats contract for the whole container so far (not one cell):
        cpu and io since it started; status null while it is idle."""
        figures = stats_contract.cell_figures(None, self._counters() if self.running else None,
                                              peaks_reset=True)
        return stats_contract.build_stats(
            session=self.name, image=self.image, limits=self.limits,
            execution_count=self._execution_count, wall=self._uptime(), figures=figures, status=None,
            warnings=self._container.warnings if self.running else None,
            trusted_output=self.trust_output, network=self._network_dict())

    def _counters(self) -> dict | None:
        """CgroupStats of the container plus net_rx/net_tx; None if none runs."""
        with self._state:
            return self._read_counters()

    def _read_counters(self) -> dict | None:       # the caller holds _state
        return container_counters(self._container, self.network, self._net_dev)
