"""The containers' comms as the kernel's own: the host side of widgets.

One ``CommRelay`` per kernel process (the sandbox kernel's, or the
ipykernel the magics are loaded in); each Session gets a ``SessionComms``
as its ``comm_handler`` (``relay.attach``, from the face's setup code)::

    agent: comm_open / comm_msg / comm_close frames (exchange.py, in any request)
        -> SessionComms.from_agent: checked, widget state made inert
           (comm_state.py) unless the session trusts its output
        -> a HostComm with the same comm_id and target_name, registered in
           the kernel's comm manager, publishing on iopub with the kernel's
           current parent (a cell's execute_request, a frontend's comm_msg)
    frontend: comm_msg / comm_close to a HostComm, comm_open to a target the
              container's widgets answer (jupyter.widget.control: the widget
              states, on a page reload)
        -> Session.comm_request: a request run like a cell (SIGINT reaches
           it, its outputs published here, with that message as parent)

The comm frames never go through a face's output path (contract 1).  A
comm id the kernel already has (the side panel's) is never taken, a comm
is only reached by the session whose container opened it, and when a
container ends its comms are closed in the frontend.  The relay only needs
of the kernel what ipykernel's Kernel has: ``comm_manager``,
``send_response``, ``iopub_socket``, ``get_parent``.
"""
from __future__ import annotations

import sys
import threading

from comm.base_comm import BaseComm

from . import comm_state, protocol
from .errors import SessionBusy, SessionError
from .protocol import ProtocolError

FORWARDED_TARGETS = ("jupyter.widget.control", "jupyter.widget")   # the frontend may open these


class HostComm(BaseComm):
    """The kernel's side of one container comm: publishes what the container
    sends, forwards what the frontend sends."""

    def __init__(self, route: "SessionComms", comm_id: str, target_name: str,
                 target_module: str | None = None):
        self.route = route
        self.facts = comm_state.WidgetFacts()
        super().__init__(comm_id=comm_id, target_name=target_name, target_module=target_module,
                         primary=False)

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        content = {"data": data or {}, "comm_id": self.comm_id, **keys}
        self.route.relay.publish(msg_type, content, metadata or {}, buffers, self.topic)

    def handle_msg(self, msg) -> None:
        self.route.forward("comm_msg", self, msg)

    def handle_close(self, msg) -> None:
        self.route.forget(self)
        self.route.forward("comm_close", self, msg)

    def close_here(self, data=None) -> None:
        """comm_close to the frontend, and out of the kernel's manager (the
        package's close() would look for the process's global manager)."""
        if self._closed:
            return
        self._closed = True
        self.publish_msg("comm_close", data=data)
        self.route.forget(self)

    def __del__(self):
        pass                          # closed by the relay, never by the garbage collector


class CommRelay:
    """The kernel's end: its comm manager, iopub, and the sessions' routes."""

    def __init__(self, kernel, comm_manager=None):
        self.kernel = kernel
        self.manager = comm_manager if comm_manager is not None else kernel.comm_manager
        self.lock = threading.RLock()
        self.latest: SessionComms | None = None    # where a frontend's comm_open goes

    def attach(self, session) -> None:
        """``session``'s comms go through this relay."""
        if not isinstance(getattr(session, "comm_handler", None), SessionComms):
            session.comm_handler = SessionComms(self, session)

    def attaching(self, factory):
        """A Sessions factory (registry.py) whose sessions are attached."""
        if getattr(factory, "comm_relay", None) is self:
            return factory

        def make(*args, **kwargs):
            session = factory(*args, **kwargs)
            self.attach(session)
            return session
        make.comm_relay = self
        return make

    def register_targets(self) -> None:
        """The targets a container's widgets answer, unless the kernel has its
        own (ipywidgets imported on the magics' host)."""
        for target in FORWARDED_TARGETS:
            if target not in self.manager.targets:
                self.manager.register_target(target, self.frontend_opened)

    def frontend_opened(self, comm, msg) -> None:
        """A comm the frontend opened to a forwarded target: to the session
        whose container last opened a widget."""
        route = self.latest
        if route is None or not route.session.running:
            self.close_unanswered(comm)
            return
        route.opened_by_frontend(comm, msg)

    def close_unanswered(self, comm) -> None:
        """comm_close for a comm no container answers (the package's close()
        would look for the process's global manager, not the kernel's)."""
        with self.lock:
            if self.manager.comms.get(comm.comm_id) is comm:
                del self.manager.comms[comm.comm_id]
        self.publish("comm_close", {"data": {}, "comm_id": comm.comm_id}, {}, None, comm.topic)

    # -- iopub -------------------------------------------------------------------

    def parent(self) -> dict | None:
        """{msg_id, msg_type} of the frontend message the kernel answers now."""
        header = (self.kernel.get_parent() or {}).get("header") or {}
        msg_id = header.get("msg_id")
        if not isinstance(msg_id, str):
            return None
        return {"msg_id": msg_id, "msg_type": str(header.get("msg_type", ""))}

    def publish(self, msg_type: str, content: dict, metadata: dict, buffers, ident) -> None:
        _flush_host_streams()         # what the face printed first comes first
        self.kernel.send_response(self.kernel.iopub_socket, msg_type, content, ident=ident,
                                  buffers=buffers or None, metadata=metadata)

    def publish_output(self, kind: str, content: dict) -> None:
        """An output of a comm request (a widget's callback printed)."""
        self.kernel.send_response(self.kernel.iopub_socket, kind, content)

    def note(self, text: str) -> None:
        self.publish_output("stream", {"name": "stderr", "text": f"[sandbox] {text}\n"})


def _flush_host_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):    # closed: nothing waits in it
            pass


class SessionComms:
    """One session's comms: its ``comm_handler`` (client.Session)."""

    def __init__(self, relay: CommRelay, session):
        self.relay = relay
        self.session = session
        self.comms: dict[str, HostComm] = {}
        self.noted: set[str] = set()

    def parent(self) -> dict | None:
        return self.relay.parent()

    # -- from the container --------------------------------------------------------

    def from_agent(self, kind: str, content: dict) -> None:
        """One comm frame of the agent's (fields checked by the exchange)."""
        buffers = protocol.decode_buffers(content.get("buffers"))
        trusted = self.session.trust_output
        with self.relay.lock:
            if kind == "comm_open":
                self._open(content, buffers, trusted)
                return
            comm = self.comms.get(content["comm_id"])
        if comm is None:
            return                    # closed, refused, or never opened: as ipykernel, dropped
        data = content["data"]
        if not trusted:
            data, buffers = comm_state.clean_data(data, buffers, self._facts_for(comm))
        if kind == "comm_msg":
            comm.publish_msg("comm_msg", data=data, metadata=content["metadata"], buffers=buffers)
        else:
            comm.close_here(data)

    def _open(self, content: dict, buffers: list, trusted: bool) -> None:
        comm_id, target = content["comm_id"], content["target_name"]
        data = content["data"]
        why = comm_state.refusal(target, data.get("state"), trusted)
        if comm_id in self.relay.manager.comms:
            why = f"comm id {comm_id[:80]!r} is taken"
        if why is not None:
            self._note_once(why, f"a comm from the container was refused: {why} "
                                 f"(trust_output / --trust-output allows other widgets)")
            return
        comm = HostComm(self, comm_id, target, content.get("target_module"))
        state = data.get("state")
        if isinstance(state, dict) and isinstance(state.get("_model_name"), str):
            comm.facts.model = state["_model_name"]
        if not trusted:
            data, buffers = comm_state.clean_data(data, buffers, self._facts_for(comm), opening=True)
        self._adopt(comm)
        comm.publish_msg("comm_open", data=data, metadata=content["metadata"], buffers=buffers,
                         target_name=target, target_module=content.get("target_module"))

    def _facts_for(self, comm: HostComm):
        def facts_of(model_id):
            if model_id is None:
                return comm.facts
            other = self.comms.get(model_id)
            return other.facts if other is not None else None
        return facts_of

    def _adopt(self, comm: HostComm) -> None:
        self.comms[comm.comm_id] = comm
        self.relay.manager.comms[comm.comm_id] = comm
        self.relay.latest = self

    def forget(self, comm: HostComm) -> None:
        with self.relay.lock:
            self.comms.pop(comm.comm_id, None)
            if self.relay.manager.comms.get(comm.comm_id) is comm:
                del self.relay.manager.comms[comm.comm_id]

    def container_gone(self) -> None:
        """The container ended: its comms are closed in the frontend."""
        with self.relay.lock:
            comms = list(self.comms.values())
        for comm in comms:
            comm.close_here()

    def _note_once(self, key: str, text: str) -> None:
        if key not in self.noted:
            self.noted.add(key)
            self.relay.note(text)

    # -- from the frontend -----------------------------------------------------------

    def opened_by_frontend(self, comm, msg) -> None:
        """ipykernel's manager made ``comm`` for the frontend's comm_open: a
        HostComm takes its place, and the container is asked to open it."""
        ours = HostComm(self, comm.comm_id, comm.target_name)
        with self.relay.lock:
            self._adopt(ours)
        extra = {"target_name": comm.target_name}
        self.forward("comm_open", ours, msg, extra)

    def forward(self, kind: str, comm: HostComm, msg: dict, extra: dict | None = None) -> None:
        """The frontend's message to the container, run there like a cell."""
        content = msg.get("content") or {}
        try:
            fields = {"comm_id": comm.comm_id, "data": content.get("data") or {},
                      "metadata": msg.get("metadata") or {},
                      "buffers": protocol.encode_buffers(msg.get("buffers")), **(extra or {})}
            reply = self.session.comm_request(kind, fields, on_output=self.relay.publish_output)
        except (SessionBusy, SessionError, ProtocolError) as error:
            self.relay.note(f"a widget's message did not reach the container: {error}")
            return
        if reply.get("status") != "ok" and kind != "comm_close" \
                and reply.get("ename") in ("CommError", "ContainerDied", "ProtocolError"):
            comm.close_here()             # the container has no such comm (any more)
            if reply.get("ename") == "ContainerDied":
                self.relay.note(str(reply.get("evalue", "")))
