"""The stats endpoint's handlers: REST and websocket, authenticated and
authorized as jupyter_server's own kernel handlers are.

    GET /sandbox-kernel/api/kernels/<id>/stats       one snapshot (200), or
                                                     404 {"message": why not}
    WS  /sandbox-kernel/api/kernels/<id>/stats/ws    a snapshot, then a tick
                                                     every second; {"request":
                                                     "stats"} asks for a snapshot

Both answer the side panel's message (panel/messages.py) with the
endpoint's keys (sources.KernelView.message).  Reading the figures touches
files only, but a loaded machine's cgroupfs can be slow: it runs in a
thread, never on the server's event loop.
"""
from __future__ import annotations

import asyncio
import json

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web
from tornado.ioloop import PeriodicCallback
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from . import sources

AUTH_RESOURCE = "kernels"     # the same permission as reading the kernel's model
TICK_SECONDS = 1.0
_KERNEL_ID = r"(?P<kernel_id>[\w-]+)"


class StatsHandler(APIHandler):
    """GET: one snapshot of the kernel's stats."""

    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        try:
            view = await asyncio.to_thread(sources.view_of, self.kernel_manager, kernel_id)
        except sources.NoStats as why:
            raise web.HTTPError(404, str(why), reason=str(why)) from None
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(view.message("snapshot", reason="request")))


class StatsSocket(WebSocketMixin, WebSocketHandler, JupyterHandler):
    """The kernel's stats as they change: a snapshot at the open and on
    request, a tick every TICK_SECONDS.  Closed when the kernel goes."""

    auth_resource = AUTH_RESOURCE

    def set_default_headers(self) -> None:
        """No JupyterHandler headers (CSP and the like) on a websocket's upgrade."""

    @ws_authenticated
    async def get(self, kernel_id: str) -> None:
        allowed = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, "read", AUTH_RESOURCE))
        if not allowed:
            raise web.HTTPError(403, f"not allowed to read the stats of kernel {kernel_id}")
        self.kernel_id = kernel_id
        try:   # refuse before the upgrade, with the reason, as the REST handler does
            await asyncio.to_thread(sources.view_of, self.kernel_manager, kernel_id)
        except sources.NoStats as why:
            raise web.HTTPError(404, str(why), reason=str(why)) from None
        await super().get(kernel_id=kernel_id)

    async def open(self, kernel_id: str) -> None:   # type: ignore[override]
        super().open()
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = sources.on_death(self._death_seen)
        self._ticker = PeriodicCallback(self._tick, TICK_SECONDS * 1000)
        await self._send("snapshot", "open")
        self._ticker.start()

    def _death_seen(self, kernel_id: str, death) -> None:
        """The provisioner's thread saw a death: tell the panel now, not at
        the next tick (the notification comes with JupyterLab's own dialog)."""
        if kernel_id != self.kernel_id or self.ws_connection is None:
            return
        try:
            self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._send("tick")))
        except RuntimeError:        # the server's loop is closed: it is going away
            self.log.debug("sandbox-kernel stats ws: a death of %s after the loop closed", kernel_id)

    def on_message(self, message) -> None:
        try:
            request = json.loads(message)
        except ValueError:
            request = None
        if isinstance(request, dict) and request.get("request") == "stats":
            asyncio.ensure_future(self._send("snapshot", "request"))
        else:
            self.log.warning("sandbox-kernel stats ws: unknown request %.200r "
                             "(accepted: {\"request\": \"stats\"})", message)

    def on_close(self) -> None:
        ticker = getattr(self, "_ticker", None)
        if ticker is not None:
            ticker.stop()
        unsubscribe, self._unsubscribe = getattr(self, "_unsubscribe", None), None
        if unsubscribe is not None:
            unsubscribe()

    async def _tick(self) -> None:
        await self._send("tick")

    async def _send(self, event: str, reason: str | None = None) -> None:
        try:
            view = await asyncio.to_thread(sources.view_of, self.kernel_manager, self.kernel_id)
        except sources.NoStats as why:
            self.close(1000, str(why)[:120])     # the kernel was shut down
            return
        try:
            await self.write_message(json.dumps(view.message(event, reason=reason)))
        except WebSocketClosedError:
            self.on_close()


def handlers(base_url: str) -> list[tuple[str, type]]:
    from jupyter_server.utils import url_path_join
    prefix = url_path_join(base_url, "sandbox-kernel", "api", "kernels", _KERNEL_ID, "stats")
    return [(prefix, StatsHandler), (prefix + "/ws", StatsSocket)]
