"""A container's network beyond ``none`` and ``host``: what Container does
around its start and its end for ``--net bridge``.

As root, the bridge (net_bridge.py): the owner prepares the network namespace
(veth, address, route, resolver, filter) before the spawn, and init joins it
by fd, so the workload never runs before its network is ready.

Rootless, it is refused in one line before anything starts: an allowlist, no
egress or a rate cannot be kept without root (net_pasta.check says which),
and the open egress pasta could give cannot reach a container yet: pasta
joins a namespace through /proc/PID/ns, and a container's init makes itself
undumpable before the workload exists (so that the workload cannot reach
it), which closes those files to its owner too.  ``--net host`` is the
user's own open egress.

pyroute2 is imported only by net_bridge, only when a bridge is used.
Imports: userns, network, net_bridge and net_pasta (lazily).
"""
from __future__ import annotations

from . import userns


class ContainerNetwork:
    def __init__(self, name: str, spec):
        self.name, self.spec = name, spec
        self.attachment = None        # root: net_bridge.Attachment
        self.host_ifname: str | None = None
        self.address: str | None = None

    def prepare(self, orphaned) -> None:
        """Before the spawn: the bridge's namespace, or pasta's check."""
        if self.spec.network != "bridge":
            return
        if userns.rootless():
            from . import net_pasta
            net_pasta.check(self.spec.allow, self.spec.rate)   # the refusal that says most
            raise net_pasta.RootlessNetRefused(
                "pasta cannot join a container's network namespace yet (its init is kept out of "
                "the owner's reach)", "use --net host for open egress, or run as root")
        from . import net_bridge
        self.attachment = net_bridge.attach(self.name, self.spec.allow, self.spec.rate, orphaned)
        self.host_ifname, self.address = self.attachment.host_ifname, self.attachment.address

    def mounts(self, state_dir: str) -> tuple:
        """/etc/resolv.conf naming the bridge: its resolver answers there (a
        host's 127.0.0.53 would be the container's own loopback)."""
        if self.attachment is None:
            return ()
        from . import net_bridge
        return (net_bridge.resolv_conf_mount(self.attachment, state_dir),)

    def launch_policy(self) -> str:
        """What the launcher is told (network.setup_child)."""
        if self.attachment is None:
            return self.spec.network
        from .network import bridge_policy
        return bridge_policy(self.attachment.netns_fd)

    def fds(self) -> list[int]:
        return [self.attachment.netns_fd] if self.attachment is not None else []

    def stats(self):
        """The bridge's bytes, refusals and lookups (net_bridge.NetStats); None otherwise."""
        if self.attachment is None:
            return None
        from . import net_bridge
        return net_bridge.stats(self.attachment)

    def detach(self) -> None:
        """After the container's processes are gone; idempotent."""
        if self.attachment is not None:
            from . import net_bridge
            net_bridge.detach(self.attachment)
