"""sandbox_kernel.server: a jupyter_server extension serving the stats
contract of each kernel, for kernels that have no stats comm (issue 18).

    GET /sandbox-kernel/api/kernels/<id>/stats      REST: one snapshot
    WS  /sandbox-kernel/api/kernels/<id>/stats/ws   a snapshot, then ticks

Authenticated and authorized like jupyter_server's kernel handlers (the
"kernels" resource, "read").  Answers for kernels the sandbox provisioner
started (provisioner/registry.py: the kernel's container and its deaths)
and for the sandbox kernel (its containers' cards, runtime/cards.py); 404
with the reason for any other kernel.  The side panel (labextension/
src/endpoint.ts) uses it when the kernel has no ``sandbox_kernel.stats``
comm, e.g. an R kernel the provisioner wrapped.

Enabled by jupyter-config/jupyter_server_config.d/sandbox_kernel.json
(installed as etc/jupyter/jupyter_server_config.d/sandbox_kernel.json),
or ``jupyter server extension enable sandbox_kernel.server``.

Imports: runtime (cards), session (the stats contract), panel (its
messages), provisioner (its in-process registry).
"""
from __future__ import annotations

EXTENSION = "sandbox_kernel.server"


def _jupyter_server_extension_points() -> list[dict]:
    return [{"module": EXTENSION}]


def _load_jupyter_server_extension(serverapp) -> None:
    from .handlers import handlers
    serverapp.web_app.add_handlers(".*$", handlers(serverapp.web_app.settings["base_url"]))
    serverapp.log.info("sandbox-kernel: stats endpoint at %ssandbox-kernel/api/kernels/<id>/stats",
                       serverapp.web_app.settings["base_url"])
