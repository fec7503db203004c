"""The stats endpoint of a real `jupyter server` (sandbox_kernel/server, from
the provisioner's registry) says in plain words that a wrapped R kernel ran
out of memory: the death the provisioner recorded before the server's
restarter started the kernel again."""
from __future__ import annotations

import os
import shutil
import tempfile

from jupyter_client import BlockingKernelClient
from jupyter_core.paths import jupyter_runtime_dir
from provisioner.prov_helpers import MEMORY, WRAPPED, Server, leftovers, until

from sandbox_kernel.runtime import cleanup
from sandbox_kernel.runtime.cgroups import detect_driver

R_BOMB = "x <- list(); for (i in 1:100) x[[i]] <- numeric(5e7)"


def test_the_endpoint_reports_an_R_kernels_out_of_memory_death(jupyter_path):
    root = tempfile.mkdtemp(prefix="sbk-prov-endpoint-")
    server = Server(root)
    try:
        assert until(server.up, timeout=90), server.output()
        kernel_id = server.api("kernels", {"name": WRAPPED["ir"]})["id"]
        stats = f"kernels/{kernel_id}/stats"
        first = server.api(stats, prefix="sandbox-kernel/api")
        assert first["kernel"] == "provisioned" and first["deaths"] == []
        client = BlockingKernelClient(connection_file=os.path.join(jupyter_runtime_dir(),
                                                                   f"kernel-{kernel_id}.json"))
        client.load_connection_file()
        assert client.transport == "ipc"
        client.start_channels()
        try:
            client.wait_for_ready(timeout=60)
            client.execute(R_BOMB)
            answer = until(lambda: server.api(stats, prefix="sandbox-kernel/api")["deaths"], timeout=90)
            assert answer, server.output()
            death = answer[-1]
            assert death["reason"] == "oom"
            assert death["message"].startswith(f"the R kernel ran out of memory at the {MEMORY[:-1]} MiB limit")
            # the server's restarter starts it again, on the same sockets and key
            assert until(lambda: _answers(client), timeout=120), server.output()
        finally:
            client.stop_channels()
        server.api(f"kernels/{kernel_id}", method="DELETE")
    finally:
        server.stop()
        cleanup.reap_stale(detect_driver())
        shutil.rmtree(root, ignore_errors=True)
    assert leftovers(server.process.pid) == []


def _answers(client) -> bool:
    """The kernel replies to a cell (after its restart); False while it does not."""
    try:
        reply = client.execute_interactive("cat(1 + 1)", timeout=5)
    except TimeoutError:
        return False
    return reply["content"]["status"] == "ok"
