"""Frames and messages between the host and the agent inside the container.

The channel is one stream socket (a socketpair made on the host; the agent
inherits its end as a file descriptor).  A frame is a 4-byte big-endian length
followed by that many bytes of UTF-8 JSON; the JSON is always an object with a
``"type"``.  Every request carries an ``"id"`` chosen by the host; everything
the agent sends about that request carries the same id, and exactly one
``reply`` closes it::

    host (client.py)                                 agent (agent.py, in the container)
      |                                                |
      |-- execute {id:7, code, silent, ...} ---------->|  shell.run_cell(code)
      |<-------------- stream {id:7, name, text} ------|  as the cell prints (flush,
      |<-------------- stream {id:7, name, text} ------|  newline, time or size)
      |<-------- display_data {id:7, data, ...} -------|  display(), figures
      |<------ execute_result {id:7, data, ...} -------|  the cell's last value
      |<------------- error {id:7, ename, ...} --------|  the traceback
      |<------- reply {id:7, content: execute_reply} --|  always last for id 7
      |                                                |
      |== SIGINT (a signal, not a frame) =============>|  KeyboardInterrupt in the
      |                                                |  running cell; ignored idle
      |<------- input_request {id:7, n, prompt, ...} --|  input() / getpass() in the cell
      |-- input_reply {id:7, n, value} --------------->|  (the frontend's answer)
      |-- complete / inspect / is_complete / history ->|
      |<------------------------- reply {id, content} -|
      |-- push {id, values} / pull {id, names} ------->|
      |<------------------------- reply {id, content} -|
      |<-- comm_open / comm_msg {id:7, comm_id, ...} --|  a widget (ipywidgets) and its state
      |-- comm_msg {id:9, comm_id, data, parent} ----->|  the frontend moved a slider
      |<-------------- stream {id:9, name, text} ------|  its callback printed
      |<----------------- reply {id:9, content} -------|
      |-- command {id:8, argv} ----------------------->|  a program, its own process group
      |<-------------- stream {id:8, name, text} ------|  its stdout and stderr
      |<------ reply {id:8, content: {exit_code}} -----|
      |-- shutdown {id} ------------------------------>|
      |<------------------------- reply {id, content} -|  then the agent exits 0
      |-- (close) ------------------------------------>|  EOF: the agent exits 0

One request at a time: the agent reads the next request only after it has
sent the reply to the last one.  The agent may send output frames between
requests (a thread of the user's still printing); they carry the id of the last
execute request.  A cell that calls ``exit`` gets its reply (with an
``ask_exit`` payload) and then the agent exits 0.

The agent runs the user's code in its own process, and that code can reach
the socket: a host must treat every frame from the agent as untrusted input.

Host -> agent (requests), with the fields each carries:

    execute      id, code, silent, store_history, user_expressions, allow_stdin (false),
                 count_from (optional): the agent's execution_count goes up to
                 at least this (a fresh container counts on from the old one)
    complete     id, code, cursor_pos
    inspect      id, code, cursor_pos, detail_level
    is_complete  id, code
    history      id, hist_access_type, output, raw, session, start, stop, n,
                 pattern, unique (as Jupyter's history_request)
    push         id, values: base64 of a pickle of a dict {name: value}
    pull         id, names: a list of variable names
    shutdown     id, restart (optional, default false)
    command      id, argv: a non-empty list of str.  The agent runs argv in its
                 own process group, stdin /dev/null, its stdout and stderr
                 sent as stream frames with this id (within a cell's output
                 budget); SIGINT to the agent: SIGINT to the group, SIGKILL
                 2 s later.  Not a cell: no execution_count, no history.
    update_environ  id, changes: {name: [expected, new]}: os.environ[name]
                 becomes new (a str; null unsets it) only where it is still
                 expected (null: unset now).  After a live cpus change: the
                 thread variables that still hold the old automatic count.
    comm_open    id, comm_id, target_name, data, metadata, buffers, parent: a
                 comm the frontend opened to a target the container's comm
                 manager registered (ipywidgets' jupyter.widget.control, on a
                 page reload)
    comm_msg     id, comm_id, data, metadata, buffers, parent: a frontend's
                 message to a container's comm (a slider moved)
    comm_close   id, comm_id, data, metadata, buffers, parent
                 The three run like a cell without a count: the comm
                 manager's handler (a widget's callbacks) runs with SIGINT
                 armed, within a fresh output budget, its outputs streamed
                 with this id; reply {status: "ok"}, or {status: "error",
                 ename: "CommError", evalue} for a comm or target the
                 container does not have.  ``parent`` (also on execute):
                 {msg_id, msg_type} of the frontend's message the host is
                 answering; the agent's kernel.get_parent() returns it, so
                 an Output widget captures what is published for it.

Host -> agent, not a request (the answer to an input_request; the agent
drops one that comes when it is not waiting for that n):

    input_reply  id, n, and one of: value (str, at most INPUT_VALUE_LIMIT
                 characters), or error (the exception's name) and message:
                 "EOFError", "KeyboardInterrupt", "StdinNotImplementedError"
                 are raised as they are in the cell, any other name as a
                 RuntimeError that says it

Agent -> host (the content of Jupyter's iopub messages, plus the id):

    stream               id, name ("stdout" | "stderr"), text
    display_data         id, data, metadata, transient
    update_display_data  id, data, metadata, transient
    execute_result       id, execution_count, data, metadata
    error                id, ename, evalue, traceback
    clear_output         id, wait
    comm_open            id, comm_id, target_name, target_module, data, metadata,
                         buffers: a comm the container opened (ipywidgets: a
                         widget's model and its state)
    comm_msg             id, comm_id, data, metadata, buffers (a state update)
    comm_close           id, comm_id, data, metadata, buffers
                         Comm frames are outputs of the request they are
                         tagged with: within the cell's output budget (a
                         frame that does not fit is dropped and counted in
                         the cell's last notice), the host's cap per request,
                         its frame limit.  ``buffers``: a list of base64
                         texts, at most COMM_BUFFERS_LIMIT bytes decoded in
                         all (host -> agent as well).  The host relays them
                         as the kernel's own comms (comm_relay.py), their
                         widget state sanitised unless output is trusted.
    input_request        id, n (counts the cell's requests), prompt (at most
                         INPUT_PROMPT_LIMIT characters), password (bool):
                         the cell waits in input() or getpass() for the
                         input_reply with the same n.  Only when the execute
                         request said allow_stdin (else the agent raises
                         StdinNotImplementedError, as ipykernel does); an
                         interrupt ends the wait (KeyboardInterrupt).
    reply                id, content: exactly the content of Jupyter's
                         execute_reply, complete_reply, inspect_reply,
                         is_complete_reply, history_reply or shutdown_reply;
                         push: {status: "ok", values: [the names set]}
                         pull: {status: "ok", values: base64 of a pickle of
                               {name: value}}
                         command: {status: "ok", exit_code: the exit status,
                               128+N for signal N, 127 when argv[0] was not
                               found, 126 when it could not start}; a bad
                               argv: {status: "error", ename: "ValueError", ...}
                         either: {status: "error", ename, evalue, name} where
                               name is the variable to blame (absent when the
                               whole pushed pickle cannot be read)
                         a request the agent cannot serve (unknown type, a
                         field missing): {status: "error", ename:
                         "ProtocolError", evalue}; one whose handler failed:
                         {status: "error", ename, evalue, traceback}

When a cell's output passes the agent's output limit, the rest of its text
is dropped, a display or result is sent as the head of its text/plain and a
line saying so, and the cell's last stream message (before its reply) is, on
stderr, "[output cut: the cell printed more than 1.0 MiB; N bytes dropped]"
(only text was cut) or "[output cut: this cell's output went past the 1.0
MiB limit (SANDBOX_KERNEL_OUTPUT_LIMIT): ...]" saying what was cut.

Frames are bounded (``max_frame``, 64 MiB unless told otherwise): a reader
refuses a larger length before it reads the body, and a sender refuses to
send one, so neither side can be made to buffer without bound.  While a cell
runs the bound is much smaller, ``cell_frame_limit(output limit)`` (3 MiB by
default): the agent cuts outputs to fit, and the host refuses a larger frame.  A frame that
cannot be read (bad length, not JSON, no type) is a ``ProtocolError``; after
one, the stream is out of step and the connection must be closed.  The JSON
in a frame is bounded too: at most MAX_DEPTH levels of nesting and MAX_VALUES
values, checked before it is parsed; decode() raises nothing but
ProtocolError, whatever the body holds.

Pickles only go host -> agent safely.  Unpickling what ``pull`` returns runs
whatever code the pickle names, with the host's privileges: only do it for
code you trust as much as the host.
"""
from __future__ import annotations

import base64
import datetime
import json
import pickle
import re
import socket
import struct

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 64 << 20
CELL_FRAME_ROOM = 2 << 20      # a cell's frames: its output limit and this much (below)
MAX_DEPTH = 100                # nesting of a frame's JSON: objects and lists
MAX_VALUES = 4_000_000         # values in a frame's JSON, lists and objects counting 4

COMM_TYPES = ("comm_open", "comm_msg", "comm_close")   # both ways: requests and outputs
REQUEST_TYPES = (
    "execute", "complete", "inspect", "is_complete", "history", "push", "pull", "shutdown",
    "update_environ", "command", *COMM_TYPES,
)
CELL_REQUESTS = ("execute", "command", *COMM_TYPES)   # their outputs are cut to a cell's frame limit
OUTPUT_TYPES = (
    "stream", "display_data", "update_display_data", "execute_result", "error", "clear_output",
)
REPLY = "reply"
INPUT_REQUEST = "input_request"   # agent -> host, while a cell runs
INPUT_REPLY = "input_reply"       # host -> agent, the answer
INPUT_PROMPT_LIMIT = 4096         # characters of a prompt shown in the frontend's input box
INPUT_VALUE_LIMIT = 1 << 20       # characters of an answer
COMM_BUFFERS_LIMIT = 16 << 20   # bytes of a comm message's binary buffers, decoded, in all
COMM_ID_LIMIT = 200               # characters of a comm_id, a target name, a parent's msg_id
NO_STDIN = "raw_input was called, but this frontend does not support input requests."


class ProtocolError(Exception):
    """A frame that breaks the framing rules; the stream cannot be trusted after it."""


class ConnectionClosed(ConnectionError):
    """The peer closed the socket (at a frame boundary, or in the middle of one)."""


def encode(msg: dict, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """One frame: header and body.  Raises before anything is sent.

    bytes values become base64 text, as jupyter_client does for image data;
    datetimes become ISO 8601 text; anything else JSON cannot hold is a
    TypeError.
    """
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError(f"a message must be a dict with a str 'type', got {msg!r:.200}")
    body = json.dumps(msg, default=_json_default, ensure_ascii=True).encode("ascii")
    if len(body) > max_frame:
        raise ProtocolError(
            f"{msg['type']} message of {len(body)} bytes is over the {max_frame}-byte frame limit"
        )
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict:
    """The message in one frame's body.

    Whatever the body holds, the only exception is ProtocolError: nesting
    past MAX_DEPTH (json.loads would raise RecursionError, and every later
    walk of the message would recurse as deep) and more than MAX_VALUES
    values (a 64 MiB frame of ``[[],[],...`` would be 2 GiB of lists) are
    refused before json.loads allocates anything."""
    _check_shape(body)
    try:
        msg = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError, MemoryError, TypeError, OverflowError) as exc:
        # ValueError covers UnicodeDecodeError and ints past Python's digit limit
        raise ProtocolError(f"frame of {len(body)} bytes is not UTF-8 JSON: "
                            f"{type(exc).__name__}: {str(exc)[:200]}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError(f"frame is not an object with a str 'type': {body[:200]!r}")
    return msg


_JSON_STRING = re.compile(rb'"[^"]*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKETS_AS_LISTS = bytes.maketrans(b"{}", b"[]")   # one kind: one level per pass
_CONTAINER_WEIGHT = 4     # a list or dict costs the host about 4 numbers or short strings


def _check_shape(body: bytes) -> None:
    """ProtocolError when the JSON in ``body`` nests deeper than MAX_DEPTH or
    holds more than MAX_VALUES values (a list or dict counts as
    _CONTAINER_WEIGHT).  At C speed: counts first, over the whole body,
    which only overestimates; the strings are cut out only when a count is
    too high, to count again without them."""
    containers, values = _count(body)
    if containers <= MAX_DEPTH and values + _CONTAINER_WEIGHT * containers <= MAX_VALUES:
        return                                   # most frames: a few objects, long strings
    # Escapes first: after every \\ pair is gone, \" is an escaped quote, and
    # what is left between two quotes is one string (in JSON that is valid).
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    strings = unescaped.count(b'"') // 2
    if strings > MAX_VALUES:
        raise _too_many(body)
    structure = _JSON_STRING.sub(b"0", unescaped)
    containers, values = _count(structure)
    if values + _CONTAINER_WEIGHT * containers > MAX_VALUES:
        raise _too_many(body)
    brackets = structure.translate(_BRACKETS_AS_LISTS, _NOT_BRACKETS)
    for _ in range(MAX_DEPTH):                   # each pass takes off the innermost level
        if not brackets:
            return
        brackets = brackets.replace(b"[]", b"")
    if brackets:
        raise ProtocolError(f"frame of {len(body)} bytes nests JSON more than {MAX_DEPTH} levels "
                            "deep (or its brackets do not match)")


def _count(text: bytes) -> tuple[int, int]:
    """Containers, and an upper bound of values and keys: each but the first
    follows a [, a { (keys), a comma or a colon."""
    containers = text.count(b"[") + text.count(b"{")
    return containers, 1 + containers + text.count(b",") + text.count(b":")


def _too_many(body: bytes) -> ProtocolError:
    return ProtocolError(f"frame of {len(body)} bytes holds more than {MAX_VALUES} JSON values "
                         f"(a list or an object counts as {_CONTAINER_WEIGHT})")


def cell_frame_limit(output_limit: int) -> int:
    """The largest frame of a cell: what an agent sends while a cell runs
    (outputs, and the execute reply) and what the host reads then.

    The agent cuts a cell's outputs at ``output_limit`` bytes in all (stream
    text, display data and the result: agent.py), so no output frame is
    larger; CELL_FRAME_ROOM on top holds the reply, an error's traceback (cut
    at ERROR_TEXT characters) and JSON's escapes of a stream chunk.  Far
    below DEFAULT_MAX_FRAME: reading a frame costs the host about four times
    its size (buffer, body, text, objects), so a cell's frames stay a few MB.
    Only push and pull, whose values are the point, use DEFAULT_MAX_FRAME."""
    return min(output_limit, DEFAULT_MAX_FRAME - CELL_FRAME_ROOM) + CELL_FRAME_ROOM


def update_environ(environ, changes) -> list[str]:
    """An update_environ request's changes applied to ``environ`` (the
    agent's os.environ); the names changed.  A name whose value is no
    longer the expected one was set by the user: it stays."""
    if not isinstance(changes, dict):
        raise ProtocolError("update_environ: 'changes' must be an object {name: [expected, new]}")
    changed = []
    for name, pair in changes.items():
        if not (isinstance(pair, list) and len(pair) == 2
                and all(v is None or isinstance(v, str) for v in pair) and name and "=" not in name):
            raise ProtocolError(f"update_environ: {name!r:.60} needs [expected, new], str or null")
        expected, new = pair
        if environ.get(name) != expected:
            continue
        if new is None:
            environ.pop(name, None)
        else:
            environ[name] = new
        changed.append(name)
    return changed


def encode_buffers(buffers) -> list[str]:
    """A comm message's binary buffers as the ``buffers`` field: base64 texts;
    ProtocolError past COMM_BUFFERS_LIMIT bytes."""
    buffers = [bytes(b) for b in (buffers or [])]
    total = sum(len(b) for b in buffers)
    if total > COMM_BUFFERS_LIMIT:
        raise ProtocolError(f"comm buffers of {total} bytes are over the {COMM_BUFFERS_LIMIT}-byte limit")
    return [base64.b64encode(b).decode("ascii") for b in buffers]


def decode_buffers(texts) -> list[bytes]:
    """The bytes of a ``buffers`` field; ProtocolError for anything but a list
    of base64 texts of at most COMM_BUFFERS_LIMIT bytes in all (checked
    before decoding)."""
    if texts is None:
        return []
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ProtocolError("comm buffers must be a list of base64 str")
    if sum(len(t) for t in texts) * 3 // 4 > COMM_BUFFERS_LIMIT:
        raise ProtocolError(f"comm buffers are over the {COMM_BUFFERS_LIMIT}-byte limit")
    try:
        return [base64.b64decode(t.encode("ascii"), validate=True) for t in texts]
    except (ValueError, UnicodeEncodeError) as exc:
        raise ProtocolError(f"comm buffers are not base64: {exc}") from None


def send(sock: socket.socket, msg: dict, max_frame: int = DEFAULT_MAX_FRAME) -> None:
    """Send one message on a blocking socket."""
    sock.sendall(encode(msg, max_frame))


def recv(sock: socket.socket, max_frame: int = DEFAULT_MAX_FRAME) -> dict:
    """Read one message from a blocking socket.

    Raises ConnectionClosed at EOF and ProtocolError on a bad or oversized
    frame.  Not for sockets with a timeout: a timeout in the middle of a frame
    loses its first part.  Use FrameReader for non-blocking sockets.
    """
    header = _recv_exactly(sock, HEADER.size, "header")
    (length,) = HEADER.unpack(header)
    _check_length(length, max_frame)
    return decode(_recv_exactly(sock, length, "body"))


def _recv_exactly(sock: socket.socket, size: int, part: str) -> bytes:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            if part == "header" and got == 0:
                raise ConnectionClosed("the peer closed the connection")
            raise ConnectionClosed(f"the peer closed the connection mid-frame ({part}: {got} of {size} bytes)")
        got += n
    return bytes(buf)


def _check_length(length: int, max_frame: int) -> None:
    if length == 0:
        raise ProtocolError("empty frame (length 0)")
    if length > max_frame:
        raise ProtocolError(f"frame of {length} bytes is over the {max_frame}-byte limit")


class FrameReader:
    """Frames out of bytes as they arrive, for selectors and asyncio.

        reader = FrameReader()
        data = sock.recv(65536)          # non-blocking, when readable
        if not data: ...                 # EOF
        for msg in reader.feed(data): ...

    A bad frame raises ProtocolError from feed(); the reader then refuses
    everything after it, since the stream is out of step.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME):
        self.max_frame = max_frame
        self._buf = bytearray()
        self._length: int | None = None
        self._broken: ProtocolError | None = None

    def feed(self, data: bytes) -> list[dict]:
        if self._broken is not None:
            raise ProtocolError(f"reader stopped after an earlier bad frame: {self._broken}")
        self._buf += data
        messages = []
        try:
            while True:
                if self._length is None:
                    if len(self._buf) < HEADER.size:
                        break
                    (length,) = HEADER.unpack_from(self._buf)
                    _check_length(length, self.max_frame)
                    self._length = length
                end = HEADER.size + self._length
                if len(self._buf) < end:
                    break
                body = bytes(memoryview(self._buf)[HEADER.size:end])   # one copy, not two
                del self._buf[:end]
                self._length = None
                messages.append(decode(body))
        except ProtocolError as exc:
            self._broken = exc
            raise
        return messages


def pack_values(values: dict) -> str:
    """The ``values`` field of a push request: base64 of a pickle of the dict."""
    return base64.b64encode(pickle.dumps(values, protocol=pickle.DEFAULT_PROTOCOL)).decode("ascii")


def unpack_values(text: str) -> dict:
    """The dict in a push request's or a pull reply's ``values``.

    This unpickles: it runs code the pickle names.  See the module docstring
    before calling it on what an agent sent.
    """
    values = pickle.loads(base64.b64decode(text.encode("ascii"), validate=True))
    if not isinstance(values, dict):
        raise ProtocolError(f"values must unpickle to a dict, got {type(values).__name__}")
    return values


def _json_default(obj):
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if isinstance(obj, (datetime.datetime, datetime.date)):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")
