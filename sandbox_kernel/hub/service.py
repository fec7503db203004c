"""The admin page: a JupyterHub service that shows ``sandbox-kernel top`` in
the browser, for the hub's admins only.

The hub starts it (``sandbox_kernel.hub.admin_service()`` gives the entry of
``c.JupyterHub.services``), as root, so that it reads every user's container
cards and ceilings.  Visitors log in through the hub (OAuth): the hub lets in
only users with ``access:services!service=<name>``, which JupyterHub 5 gives
the admin role and not students; this page also refuses any user who is not
an admin.

    python -m sandbox_kernel.hub.service     # what the hub runs; it reads the
                                             # JUPYTERHUB_SERVICE_* environment
"""
from __future__ import annotations

import html
import json
import os
import sys
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import ioloop, web

from . import SERVICE_NAME, page

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


class AdminOnly(HubOAuthenticated, web.RequestHandler):
    """Logged in through the hub, with the service's access scope, and an admin."""

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")

    def admin(self) -> dict:
        user = self.current_user
        if not user.get("admin"):
            raise web.HTTPError(403, f"{user.get('name')} is not an admin of this hub: "
                                     "the classroom's admin page is for admins only")
        return user


class PageHandler(AdminOnly):
    @web.authenticated
    def get(self) -> None:
        self.admin()
        prefix = self.settings["service_prefix"]
        self.set_header("Content-Type", "text/html; charset=utf-8")
        xsrf = self.xsrf_token
        self.write(page.HTML.format(prefix=prefix, xsrf=html.escape(
            xsrf.decode() if isinstance(xsrf, bytes) else xsrf)))


class AssetHandler(AdminOnly):
    ASSETS = {"page.js": ("text/javascript", page.SCRIPT), "page.css": ("text/css", page.CSS)}

    @web.authenticated
    def get(self, name: str) -> None:
        self.admin()
        kind, text = self.ASSETS[name]
        self.set_header("Content-Type", f"{kind}; charset=utf-8")
        self.write(text)


class SnapshotHandler(AdminOnly):
    """``top.snapshot()``; the previous one gives the cpu percentages."""

    @web.authenticated
    def get(self) -> None:
        self.admin()
        from .. import top
        snap = top.snapshot(self.settings.get("previous"))
        self.settings["previous"] = snap
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(snap))


def make_app(prefix: str) -> web.Application:
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    return web.Application([
        (prefix, PageHandler),
        (url_path_join(prefix, r"(page\.js|page\.css)"), AssetHandler),
        (url_path_join(prefix, "api/snapshot"), SnapshotHandler),
        (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
    ], cookie_secret=os.urandom(32), service_prefix=prefix, previous=None)


def main() -> int:
    if os.geteuid() != 0:
        print("sandbox_kernel.hub.service: needs root to read every user's containers "
              "(the hub starts it as root)", file=sys.stderr)
        return 2
    url = os.environ.get("JUPYTERHUB_SERVICE_URL")
    if not url:
        print("sandbox_kernel.hub.service: JUPYTERHUB_SERVICE_URL is not set: the hub starts "
              "this service (c.JupyterHub.services, see sandbox_kernel.hub)", file=sys.stderr)
        return 2
    where = urlparse(url)
    app = make_app(os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{SERVICE_NAME}/"))
    app.listen(where.port, where.hostname)
    ioloop.IOLoop.current().start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
