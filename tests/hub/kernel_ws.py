"""A notebook run through a user's single-user server, as a browser does:
the contents API saves it, the sessions API starts its kernel (the server's
default, the sandbox kernel), and cells go over the kernel's websocket.
Every wait is bounded."""
from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

CELL_TIMEOUT = 240.0


@dataclass
class CellRun:
    status: str = ""
    stdout: str = ""
    stderr: str = ""
    errors: list = field(default_factory=list)     # (ename, evalue)
    data: list = field(default_factory=list)        # display_data/execute_result bundles
    metadata: dict = field(default_factory=dict)     # execute_reply's metadata
    idle: bool = False                                # iopub's idle status for this request

    @property
    def text(self) -> str:
        return self.stdout + self.stderr + "".join(f"{n}: {v}\n" for n, v in self.errors)


class Notebook:
    """One notebook of one user, open on its kernel."""

    def __init__(self, hub, user, path: str, loop: asyncio.AbstractEventLoop):
        self.hub, self.user, self.path, self.loop = hub, user, path, loop
        self.token = hub.tokens[user.name]
        self.prefix = f"/user/{user.name}"
        self.session = uuid.uuid4().hex
        self.kernel: dict = {}
        self.socket = None
        self.pending: dict[str, CellRun] = {}
        self.done: dict[str, asyncio.Future] = {}

    def open(self, cells: list[str]) -> "Notebook":
        notebook = {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                    "cells": [{"cell_type": "code", "source": c, "metadata": {}, "outputs": [],
                               "execution_count": None, "id": uuid.uuid4().hex[:8]} for c in cells]}
        self.hub.api("PUT", f"{self.prefix}/api/contents/{self.path}", self.token,
                     body={"type": "notebook", "format": "json", "content": notebook})
        reply = self.hub.api("POST", f"{self.prefix}/api/sessions", self.token, timeout=180,
                             body={"path": self.path, "type": "notebook", "name": self.path,
                                   "kernel": {}})
        self.kernel = reply["kernel"]
        self._call(self._connect(), 120)
        return self

    def _call(self, coroutine, timeout: float):
        """Run on the websocket's loop, which runs in a thread of its own
        (Playwright's sync API holds a running loop in the test's thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _connect(self) -> None:
        url = (f"ws://127.0.0.1:{self.hub.port}{self.prefix}/api/kernels/{self.kernel['id']}"
               f"/channels?session_id={self.session}")
        request = HTTPRequest(url, headers={"Authorization": f"token {self.token}"},
                              connect_timeout=60, request_timeout=60)
        self.socket = await websocket_connect(request)
        self.reader = self.loop.create_task(self._read())

    async def _read(self) -> None:
        while True:
            raw = await self.socket.read_message()
            if raw is None:
                for future in self.done.values():
                    if not future.done():
                        future.set_exception(ConnectionError("the kernel's websocket closed"))
                return
            if isinstance(raw, bytes):
                continue
            self._take(json.loads(raw))

    def _take(self, message: dict) -> None:
        parent = message.get("parent_header", {}).get("msg_id")
        run = self.pending.get(parent)
        if run is None:
            return
        kind, content = message["header"]["msg_type"], message["content"]
        if kind == "stream":
            setattr(run, content["name"], getattr(run, content["name"]) + content["text"])
        elif kind == "error":
            run.errors.append((content["ename"], content["evalue"]))
        elif kind in ("display_data", "execute_result"):
            run.data.append(content["data"])
        elif kind == "execute_reply":
            run.status, run.metadata = content["status"], message.get("metadata", {})
            if content["status"] == "error" and not run.errors:
                run.errors.append((content.get("ename"), content.get("evalue")))
        elif kind == "status" and content.get("execution_state") == "idle":
            run.idle = True
        # the reply (shell) may overtake the outputs (iopub): done when both have come
        if run.status and run.idle and not self.done[parent].done():
            self.done[parent].set_result(run)

    def send(self, code: str) -> str:
        msg_id = uuid.uuid4().hex
        message = {"header": {"msg_id": msg_id, "msg_type": "execute_request", "session": self.session,
                              "username": self.user.name, "version": "5.3", "date": ""},
                   "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                   "content": {"code": code, "silent": False, "store_history": True,
                               "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}
        self._call(self._write(msg_id, json.dumps(message)), 60)
        return msg_id

    async def _write(self, msg_id: str, text: str) -> None:
        self.pending[msg_id] = CellRun()
        self.done[msg_id] = self.loop.create_future()
        await self.socket.write_message(text)

    def wait(self, msg_id: str, timeout: float = CELL_TIMEOUT) -> CellRun:
        return self._call(self._wait(msg_id, timeout), timeout + 10)

    async def _wait(self, msg_id: str, timeout: float) -> CellRun:
        return await asyncio.wait_for(asyncio.shield(self.done[msg_id]), timeout)

    def run(self, code: str, timeout: float = CELL_TIMEOUT) -> CellRun:
        return self.wait(self.send(code), timeout)

    def close(self) -> None:
        if self.socket is not None:
            self._call(self._close(), 30)
            self.socket = None

    async def _close(self) -> None:
        self.socket.close()
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)
