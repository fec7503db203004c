"""Where a kernel's figures come from, for the stats endpoint.

Two sources, one shape (the side panel's message, panel/messages.py, whose
``sessions`` carry the stats contract of session/stats.py unchanged):

- a kernel the sandbox provisioner started: the whole kernel is one
  container, found in the provisioner's registry of this server process
  (provisioner/registry.py), with the deaths it recorded (out of memory...);
- the sandbox kernel, or an ipykernel that loaded the magics: its cells run
  in containers the kernel process owns; their cards (runtime/cards.py)
  name that owner's pid, which the server's kernel manager knows.

Anything else is not sandboxed: ``NoStats`` says why, in one line.
Everything here reads files (cgroups, cards, /proc) and nothing else; the
handlers call it off the event loop.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

from ..panel import messages
from ..provisioner import registry     # in-process: the provisioners of this server's kernels
from ..runtime import cards
from ..session import stats as stats_contract
from ..session.stats import SessionSnapshot

KIND_PROVISIONED = "provisioned"
SANDBOX_KERNEL_MODULE = "sandbox_kernel.kernel"
MAX_DEATHS = 20          # the last ones a message carries (a crash loop must not grow it)


class NoStats(LookupError):
    """No stats for this kernel; the message says why (the 404's reason)."""


@dataclass(frozen=True)
class KernelView:
    """What the endpoint knows of one kernel at one moment."""
    kernel_id: str
    kind: str                              # "provisioned", "sandbox" or "magics"
    snapshots: list[SessionSnapshot]
    language: str | None = None
    display_name: str | None = None
    deaths: list[dict] = field(default_factory=list)

    def message(self, event: str, reason: str | None = None) -> dict:
        """The panel's message (snapshot or tick) with the endpoint's keys:
        ``kernel_id``, ``language``, ``display_name``, ``deaths``
        (Death.as_dict() of each, oldest first) and ``per_cell`` (false:
        the figures are the whole kernel's, no cell is measured alone)."""
        data = messages.message(event, kind=self.kind, sessions=self.snapshots,
                                history=[], reason=reason)
        data.update(kernel_id=self.kernel_id, language=self.language,
                    display_name=self.display_name, deaths=self.deaths[-MAX_DEATHS:],
                    per_cell=self.kind != KIND_PROVISIONED)
        return data


def view_of(kernel_manager, kernel_id: str) -> KernelView:
    """The kernel's view, or NoStats with the reason."""
    if kernel_id not in kernel_manager:
        raise NoStats(f"no kernel {kernel_id} on this server")
    provisioned = registry.get(kernel_id)
    if provisioned is not None:
        return provisioned_view(provisioned)
    manager = kernel_manager.get_kernel(kernel_id)
    pid = kernel_pid(manager)
    # a session's spare (role "spare") is not a session: it waits for a restart
    owned = [c for c in cards.of_owner(pid) if c.labels.get("role") != "spare"] if pid is not None else []
    if owned or _is_sandbox_kernel(manager):
        kind = "magics" if owned and all(c.labels.get("kind") == "magics" for c in owned) else "sandbox"
        return KernelView(kernel_id, kind, [card_snapshot(card) for card in owned],
                          language="python", display_name=_display_name(manager))
    raise NoStats(f"kernel {kernel_id} ({_display_name(manager) or 'unknown kernelspec'}) is not "
                  "sandboxed: the sandbox provisioner did not start it and it runs no sandbox containers")


def on_death(callback) -> Callable[[], None]:
    """callback(kernel_id, death) at each death the provisioner records, from
    the thread that saw it; returns the unsubscribe function."""
    return registry.subscribe(callback)


def kernel_pid(manager) -> int | None:
    """The kernel process's pid (LocalProvisioner's process), None when
    the kernel has no local process."""
    process = getattr(getattr(manager, "provisioner", None), "process", None)
    pid = getattr(process, "pid", None)
    return pid if isinstance(pid, int) else None


def _is_sandbox_kernel(manager) -> bool:
    spec = getattr(manager, "kernel_spec", None)
    return SANDBOX_KERNEL_MODULE in (getattr(spec, "argv", None) or ())


def _display_name(manager) -> str | None:
    spec = getattr(manager, "kernel_spec", None)
    return getattr(spec, "display_name", None)


# -- a provisioned kernel ------------------------------------------------------

def provisioned_view(provisioned) -> KernelView:
    """One session: the kernel's container (state "restarting" between two)."""
    spec = provisioned.spec
    figures = provisioned.stats() if provisioned.container is not None else None
    counters = None if figures is None else {**figures.as_dict(), **_container_net(provisioned.container)}
    running = counters is not None
    snapshot = SessionSnapshot(
        name=provisioned.display_name or provisioned.kernel_id, image=spec.image,
        network=spec.network, limits=spec.limits,
        state="running" if running else "restarting",
        uptime=max(0.0, time.time() - provisioned.started) if running else None,
        execution_count=None, counters=counters, trust_output=False, warnings=())
    return KernelView(provisioned.kernel_id, KIND_PROVISIONED, [snapshot],
                      language=provisioned.language, display_name=provisioned.display_name,
                      deaths=[death.as_dict() for death in provisioned.deaths])


def _container_net(container) -> dict:
    """A bridged container of this process: its bytes and refusals (the
    runtime's NetStats); else what the host side of a veth says, or null."""
    net_stats = container.net_stats() if hasattr(container, "net_stats") else None
    if net_stats is not None:
        return stats_contract.net_counters(net_stats)
    return _net_counters(getattr(container, "net_host_ifname", None))


# -- the sandbox kernel's containers, from their cards ------------------------------

def card_snapshot(card: cards.Card) -> SessionSnapshot:
    """A session of the sandbox kernel (or the magics) as its card tells it."""
    figures = card.stats()
    counters = None if figures is None else figures.as_dict()
    if counters is not None:
        counters.update(_net_counters(card.net_host_ifname))
    return SessionSnapshot(
        name=card.labels.get("session") or card.name, image=card.image, network=card.network,
        limits=_limits_of(card.limits), state="running" if counters is not None else "stopped",
        uptime=card.uptime, execution_count=None, counters=counters, trust_output=False,
        warnings=())


def _limits_of(recorded: dict):
    """The card's limits as the contract's limits_dict reads them (attributes)."""
    return SimpleNamespace(**{name: recorded.get(name) for name in ("memory", "cpus", "pids", "timeout")})


def _net_counters(host_ifname: str | None) -> dict:
    """net_rx / net_tx of a bridged container, from the host side of its
    veth (what the host sends is what the container receives); null when
    there is no veth or it cannot be read (never 0)."""
    if not host_ifname or "/" in host_ifname or host_ifname.startswith("."):
        return {"net_rx": None, "net_tx": None}
    base = f"/sys/class/net/{host_ifname}/statistics"
    return {"net_rx": _read_int(f"{base}/tx_bytes"), "net_tx": _read_int(f"{base}/rx_bytes")}


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None
