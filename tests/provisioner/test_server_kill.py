"""kill -9 of a real `jupyter server` running wrapped kernels (IRkernel and
bash_kernel): their containers go by the runtime's lifeline (each launcher
reads EOF on a pipe only the server held, kills the container, removes its
cgroup and state directory); the connection directories go with the next
reap of dead owners' leftovers, which any container start runs."""
from __future__ import annotations

import os
import shutil
import signal
import tempfile

from provisioner.prov_helpers import WRAPPED, Server, leftovers, until

from sandbox_kernel.runtime import cards, cleanup
from sandbox_kernel.runtime.cgroups import detect_driver


def test_kill_9_of_the_server_leaves_no_container(jupyter_path):
    root = tempfile.mkdtemp(prefix="sbk-prov-server-")
    server = Server(root)
    try:
        assert until(server.up, timeout=90), server.output()
        kernel_ids = [server.api("kernels", {"name": WRAPPED[name]})["id"] for name in ("ir", "bash")]
        mine = {kid: until(lambda kid=kid: cards.labelled("kernel_id", kid), timeout=60) for kid in kernel_ids}
        assert all(mine.values()), server.output()
        boxes = [card for found in mine.values() for card in found]
        assert {card.owner_pid for card in boxes} == {server.process.pid}
        assert {card.labels["kind"] for card in boxes} == {"provisioner"}
        assert leftovers(server.process.pid)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(30)
        assert until(lambda: not any(_still_there(card) for card in boxes), timeout=60), \
            [card.name for card in boxes if _still_there(card)]
        cleanup.reap_stale(detect_driver())          # what the next container start of anyone does
        assert leftovers(server.process.pid) == []
    finally:
        server.stop()
        cleanup.reap_stale(detect_driver())
        shutil.rmtree(root, ignore_errors=True)


def _still_there(card) -> bool:
    """The container's launcher, cgroup or state directory is still there."""
    launcher_alive = card.init_pid is not None and os.path.exists(f"/proc/{card.init_pid}")
    group = card.cgroup.get("path") or next(iter(card.cgroup.get("paths", {}).values()), None)
    return launcher_alive or (group is not None and os.path.isdir(group)) or os.path.isdir(card.state_dir)
