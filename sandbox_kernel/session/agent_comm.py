"""Comms in the agent: a real comm manager behind the ``comm`` package's
hooks (the ones ipywidgets 8 uses), whose messages leave as frames, and the
host's comm requests (protocol.py has the frames)::

    comm.create_comm(...)        -> AgentComm: open, send, close as comm_open /
                                    comm_msg / comm_close frames of the current
                                    request, within the cell's output budget
    comm.get_comm_manager()      -> the agent's CommManager: the targets the
                                    cells register (ipywidgets: jupyter.widget,
                                    jupyter.widget.control) and the comms
    host: comm_open / comm_msg / comm_close requests
                                 -> the manager's handlers, run as a cell runs
                                    (SIGINT armed, a fresh output budget)
    get_ipython().kernel.get_parent()
                                 -> the frontend message the host is answering
                                    (ipywidgets' Output widget captures what is
                                    published for it)

Standard library, ``comm`` and nothing of the host's side.  Without the
``comm`` package (an image that lacks it) nothing is installed and the
requests answer CommError.
"""
from __future__ import annotations

import numbers

from . import protocol
from .agent_core import Channel, error, field
from .agent_output import OutputBudget
from .protocol import ProtocolError

JSON_DEPTH = 64               # nesting json_clean follows; deeper is refused


class CommFrames:
    """Comm messages as frames of the current request, each within the
    cell's output budget (one that does not fit is dropped and counted)."""

    def __init__(self, channel: Channel, budget: OutputBudget):
        self.channel = channel
        self.budget = budget

    def publish(self, msg_type: str, comm_id: str, data, metadata, buffers, **keys) -> None:
        if not self.channel.tagged:          # no request yet, or a forked child: no frontend
            return
        try:
            content = {"comm_id": comm_id, "data": json_clean(data or {}),
                       "metadata": json_clean(metadata or {}),
                       "buffers": protocol.encode_buffers(buffers), **json_clean(keys)}
            frame = self.channel.output_frame(msg_type, content)
        except (ProtocolError, TypeError, ValueError):   # over a bound, or not JSON
            self.budget.count_comm_dropped()
            return
        if self.budget.take(len(frame)):
            self.channel.send_frame(frame)
        else:
            self.budget.count_comm_dropped()


def json_clean(value, depth: int = 0):
    """``value`` as JSON can hold it, as ipykernel's json_clean makes comm
    data: tuples and sets as lists, numpy's numbers as Python's; TypeError
    for what has no JSON form (bytes travel as buffers, not in data)."""
    if depth > JSON_DEPTH:
        raise ValueError(f"comm data nests deeper than {JSON_DEPTH} levels")
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, dict):
        return {str(k): json_clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_clean(v, depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return value                         # protocol.encode makes it base64, as jupyter_client
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class ParentKernel:
    """What widget libraries ask of ``get_ipython().kernel``: the parent
    request (get_parent, as ipykernel's) and the comm manager."""

    def __init__(self, comm_manager):
        self.comm_manager = comm_manager
        self._parent: dict = {}

    def get_parent(self, channel=None) -> dict:
        return self._parent

    def set_parent(self, parent, channel=None) -> None:
        self._parent = parent or {}

    def follow(self, request: dict) -> None:
        """The parent the host named in ``request`` ({msg_id, msg_type}), as a
        Jupyter message whose header is that; nothing when none was named."""
        parent = request.get("parent")
        if not isinstance(parent, dict):
            return
        msg_id, msg_type = parent.get("msg_id"), parent.get("msg_type", "")
        if isinstance(msg_id, str) and isinstance(msg_type, str):
            header = {"msg_id": msg_id[:protocol.COMM_ID_LIMIT],
                      "msg_type": msg_type[:protocol.COMM_ID_LIMIT]}
            self._parent = {"header": header, "parent_header": {}, "metadata": {}, "content": {}}


def install_comms(shell, channel: Channel, budget: OutputBudget):
    """The ``comm`` package's hooks answer with the agent's manager and
    comms; ``shell.kernel`` is a ParentKernel.  None without ``comm``."""
    try:
        import comm
        from comm.base_comm import BaseComm, CommManager
    except ImportError:
        return None
    frames = CommFrames(channel, budget)

    class AgentComm(BaseComm):
        """A comm whose messages leave as frames (the host relays them)."""

        def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
            frames.publish(msg_type, self.comm_id, data, metadata, buffers, **keys)

        def __del__(self):
            # BaseComm closes on garbage collection, which may run while
            # this thread is writing a frame: no frame from here.
            pass

    manager = CommManager()
    comm.create_comm = AgentComm
    comm.get_comm_manager = lambda: manager
    shell.kernel = ParentKernel(manager)
    return manager


class CommRequests:
    """The host's comm requests (a mixin of agent.Agent): the frontend's
    comm_open, comm_msg and comm_close, handled as a cell is run."""

    comm_manager = None          # install_comms's, set by the agent
    shell = None

    def do_comm_open(self, request: dict) -> dict:
        target = field(request, "target_name", str)
        if self.comm_manager is None or target not in self.comm_manager.targets:
            return error("CommError", f"no comm target {target[:200]!r} in the container")
        return self._run_comm(request, "comm_open", {"target_name": target})

    def do_comm_msg(self, request: dict) -> dict:
        return self._known_comm(request) or self._run_comm(request, "comm_msg", {})

    def do_comm_close(self, request: dict) -> dict:
        return self._known_comm(request) or self._run_comm(request, "comm_close", {})

    def _known_comm(self, request: dict) -> dict | None:
        comm_id = field(request, "comm_id", str)
        if self.comm_manager is None or comm_id not in self.comm_manager.comms:
            return error("CommError", f"no comm {comm_id[:200]!r} in the container")
        return None

    def _run_comm(self, request: dict, kind: str, extra: dict) -> dict:
        try:
            msg = comm_message(request, extra)
        except ProtocolError as exc:
            return error("ProtocolError", str(exc))
        self.shell.kernel.follow(request)
        msg["header"] = dict(self.shell.kernel.get_parent().get("header") or {})
        self.begin_output()
        try:
            with self.channel.gate.cell():
                getattr(self.comm_manager, kind)(None, None, msg)
        except KeyboardInterrupt:
            self.shell.showtraceback()       # as in a cell: the error shows, the agent serves on
            return error("KeyboardInterrupt", "interrupted in a comm handler")
        finally:
            self.end_output()
        return {"status": "ok"}


def comm_message(request: dict, extra: dict) -> dict:
    """A host comm request as the Jupyter message the comm manager reads."""
    comm_id = field(request, "comm_id", str)
    data, metadata = request.get("data") or {}, request.get("metadata") or {}
    if not isinstance(data, dict) or not isinstance(metadata, dict):
        raise ProtocolError(f"{request['type']}: data and metadata must be objects")
    return {"content": {"comm_id": comm_id, "data": data, **extra}, "metadata": metadata,
            "buffers": protocol.decode_buffers(request.get("buffers")), "parent_header": {},
            "msg_type": request["type"]}
