"""The kernels this process's SandboxProvisioners started, for the stats
endpoint (sandbox_kernel/server/) and anyone else in the same process.

The provisioner runs inside the jupyter_server process (its kernel
manager owns it), so this is a plain in-process table, one entry per
kernel id, kept across restarts and dropped at shutdown::

    from sandbox_kernel.provisioner import registry
    kernel = registry.get(kernel_id)          # ProvisionedKernel | None
    kernel.stats()                            # runtime CgroupStats | None (no container now)
    kernel.deaths[-1].message                 # "the R kernel ran out of memory at the 1 GiB limit (peak 1 GiB)"
    unsubscribe = registry.subscribe(lambda kernel_id, death: ...)

A death is a container that ended without being asked to (not a
shutdown, restart or kill by the kernel manager): the provisioner
records it when it first sees the end (poll or wait), before
jupyter_client restarts the kernel.  Subscribers are called in the
thread that saw it; they must be quick (hand the news to their own loop).

Imports: the runtime's Container and spec (types only); nothing of Jupyter.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

MAX_DEATHS = 50     # a kernel that dies in a loop keeps its latest deaths only


@dataclass(frozen=True)
class Death:
    """How a provisioned kernel's container ended, in plain words."""
    reason: str                      # "oom" | "killed" | "signal" | "exit" | "timeout"
    message: str                     # "the R kernel ran out of memory at the 1 GiB limit (peak 1 GiB)"
    at: float                        # time.time() when it was seen
    exit_code: int | None = None
    signal: int | None = None
    memory_peak: int | None = None   # bytes; None: unknown (never 0 for unknown)
    memory_limit: int | None = None  # bytes; None: no limit

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class ProvisionedKernel:
    """One kernel id: its current (or last) container and what became of the earlier ones."""
    kernel_id: str
    language: str
    display_name: str
    spec: object = None              # runtime.spec.ContainerSpec of the current/last container
    container: object = None         # runtime.container.Container; None between restarts
    deaths: list[Death] = field(default_factory=list)
    restarts: int = 0
    started: float = 0.0             # time.time() of the current container's start

    def stats(self):
        """The current container's live figures (runtime CgroupStats), or None."""
        container = self.container
        if container is None or container.cgroup is None:
            return None
        try:
            return container.stats()
        except (OSError, RuntimeError):    # gone meanwhile (LifecycleError is a RuntimeError)
            return None

    def as_dict(self) -> dict:
        """Plain JSON (state: the container's, "running" or "stopped"; None: none now) of what is known without reading the cgroup."""
        limits = getattr(self.spec, "limits", None)
        return {"kernel_id": self.kernel_id, "language": self.language,
                "display_name": self.display_name,
                "state": getattr(getattr(self.container, "state", None), "value", None),
                "container": getattr(self.container, "name", None),
                "image": getattr(self.spec, "image", None),
                "limits": dataclasses.asdict(limits) if limits is not None else None,
                "restarts": self.restarts, "started": self.started,
                "deaths": [death.as_dict() for death in self.deaths]}


_lock = threading.Lock()
_kernels: dict[str, ProvisionedKernel] = {}
_subscribers: list[Callable[[str, Death], None]] = []


def get(kernel_id: str) -> ProvisionedKernel | None:
    with _lock:
        return _kernels.get(kernel_id)


def all() -> list[ProvisionedKernel]:   # noqa: A001 -- the contract's name (prov_contract.md)
    with _lock:
        return list(_kernels.values())


def enter(kernel_id: str, language: str, display_name: str) -> ProvisionedKernel:
    """The entry of ``kernel_id``, made on its first launch and kept across restarts."""
    with _lock:
        kernel = _kernels.get(kernel_id)
        if kernel is None:
            kernel = _kernels[kernel_id] = ProvisionedKernel(kernel_id, language, display_name)
        return kernel


def remove(kernel_id: str) -> None:
    with _lock:
        _kernels.pop(kernel_id, None)


def record_death(kernel_id: str, death: Death) -> None:
    """Keep ``death`` on the kernel's entry and tell the subscribers."""
    with _lock:
        kernel = _kernels.get(kernel_id)
        if kernel is not None:
            kernel.deaths.append(death)
            del kernel.deaths[:-MAX_DEATHS]
        listeners = list(_subscribers)
    for listener in listeners:
        try:
            listener(kernel_id, death)
        except Exception:     # noqa: BLE001 -- one broken listener must not hide the death from the others
            log.exception("registry: a death listener failed for kernel %s", kernel_id)


def subscribe(listener: Callable[[str, Death], None]) -> Callable[[], None]:
    """Call ``listener(kernel_id, death)`` on every death from now on; returns unsubscribe."""
    with _lock:
        _subscribers.append(listener)

    def unsubscribe() -> None:
        with _lock:
            if listener in _subscribers:
                _subscribers.remove(listener)
    return unsubscribe
