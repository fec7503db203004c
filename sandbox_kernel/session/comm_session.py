"""A Session's side of the comm relay (a mixin of client.Session): its
``comm_handler`` and the frontend's comm requests to its container.

The handler (comm_relay.SessionComms, set by the face's setup code) gets
the agent's comm frames from every exchange and names the frontend's
message being answered; ``comm_request`` carries the frontend's comm_open,
comm_msg and comm_close to the container, run like a cell.  Imports the
exchange's Ending only.
"""
from __future__ import annotations

from .exchange import Ending


class CommSession:
    """``comm_handler`` None: the container's comm frames are dropped."""

    comm_handler = None

    def comm_request(self, kind: str, fields: dict, *, on_output=None) -> dict:
        """A frontend's comm_open, comm_msg or comm_close to the running
        container, run like a cell (time limit, interrupts; outputs to
        on_output): the reply content.  Never starts a container: the comms
        died with the last one."""
        with self._busy():
            if not self.running:
                return {"status": "error", "ename": "CommError",
                        "evalue": f"the container of session {self.name!r} is gone"}
            outcome = self._exchange({"type": kind, **fields}, self.limits.timeout, cell=True,
                                     on_output=on_output)
            return outcome.reply if outcome.ending is Ending.REPLY else self._died(outcome)

    def _with_parent(self, request: dict) -> dict:
        """The request, naming the frontend's message the kernel answers (the
        agent's Output widgets capture by it)."""
        parent = self.comm_handler.parent() if self.comm_handler is not None else None
        return request if parent is None else {**request, "parent": parent}

    def _comms_gone(self) -> None:
        if self.comm_handler is not None:
            self.comm_handler.container_gone()     # its comms died with the container
