"""The editor's requests of the sandbox kernel (complete, inspect,
is_complete, history): answered by the agent in the container, or with an
empty answer when no container can run (the next cell says why).

May import: nothing of the project: the kernel's own methods (``_ready``,
``container_session``, ``log``) are reached through ``self``.  Never the
magics, nor kernel.py.
"""
from __future__ import annotations


class EditorRequests:
    """A mixin of SandboxKernel: the requests an editor sends as the user types."""

    async def do_complete(self, code, cursor_pos):
        cursor_pos = len(code) if cursor_pos is None else cursor_pos
        empty = {"status": "ok", "matches": [], "cursor_start": cursor_pos,
                 "cursor_end": cursor_pos, "metadata": {}}
        return self._ask(lambda s: s.complete(code, cursor_pos), empty)

    async def do_inspect(self, code, cursor_pos, detail_level=0, omit_sections=()):
        empty = {"status": "ok", "found": False, "data": {}, "metadata": {}}
        return self._ask(lambda s: s.inspect(code, cursor_pos, detail_level), empty)

    async def do_is_complete(self, code):
        return self._ask(lambda s: s.is_complete(code), {"status": "unknown"})

    async def do_history(self, hist_access_type, output, raw, session=None, start=None, stop=None,
                         n=None, pattern=None, unique=False):
        given = {"hist_access_type": hist_access_type, "output": output, "raw": raw,
                 "session": session, "start": start, "stop": stop, "n": n, "pattern": pattern,
                 "unique": unique}
        request = {k: v for k, v in given.items() if v is not None}
        return self._ask(lambda s: s.history(**request), {"status": "ok", "history": []})

    def _ask(self, ask, answer_when_unavailable: dict) -> dict:
        """A request answered by the agent; ``answer_when_unavailable`` when
        the container cannot run (the next cell says why)."""
        if self._ready(consume=False) is not None:
            return answer_when_unavailable
        try:
            reply = ask(self.container_session())
        except Exception as error:       # the frontend waits for a reply: it must get one
            self.log.warning("sandbox kernel: a request failed: %s", error, exc_info=True)
            reply = {"status": "error", "ename": type(error).__name__, "evalue": str(error)}
        if reply.get("status") == "error":
            reply = {**answer_when_unavailable, **reply, "traceback": reply.get("traceback", [])}
        return reply
