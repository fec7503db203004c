"""Frames over a socketpair: round trips, and every way a frame can be bad."""
import json
import socket
import struct
import threading

import pytest

from sandbox_kernel.session import protocol
from sandbox_kernel.session.protocol import ConnectionClosed, FrameReader, ProtocolError


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.settimeout(10)        # a bug here fails the test instead of hanging it
    b.settimeout(10)
    yield a, b
    a.close()
    b.close()


def raw_frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


MESSAGES = [
    {"type": "execute", "id": 1, "code": "print('héllo ☃')\n", "silent": False,
     "store_history": True, "user_expressions": {}, "allow_stdin": False},
    {"type": "stream", "id": "a-b", "name": "stdout", "text": "x" * 100_000},
    {"type": "reply", "id": 3, "content": {"status": "ok", "execution_count": 2,
                                           "user_expressions": {}, "payload": []}},
    {"type": "error", "id": 4, "ename": "ValueError", "evalue": "\udcff lone surrogate",
     "traceback": ["\x1b[31mline\x1b[39m"]},
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: m["type"])
def test_send_recv_round_trip(pair, msg):
    a, b = pair
    protocol.send(a, msg)
    assert protocol.recv(b) == msg


def test_frame_is_big_endian_length_and_json(pair):
    a, b = pair
    protocol.send(a, {"type": "shutdown", "id": 9})
    header = b.recv(4)
    (length,) = struct.unpack(">I", header)
    body = b.recv(length)
    assert json.loads(body) == {"type": "shutdown", "id": 9}


def test_bytes_are_sent_as_base64():
    frame = protocol.encode({"type": "display_data", "data": {"image/png": b"\x89PNG"}})
    assert protocol.decode(frame[4:])["data"]["image/png"] == "iVBORw=="


def test_many_messages_in_order(pair):
    a, b = pair

    def sender():       # a socketpair buffers little: send while the test reads
        for i in range(2000):
            protocol.send(a, {"type": "stream", "id": 1, "name": "stdout", "text": f"{i}\n"})

    thread = threading.Thread(target=sender)
    thread.start()
    assert [protocol.recv(b)["text"] for _ in range(2000)] == [f"{i}\n" for i in range(2000)]
    thread.join(10)


def test_eof_at_a_boundary_is_connection_closed(pair):
    a, b = pair
    a.close()
    with pytest.raises(ConnectionClosed):
        protocol.recv(b)


def test_eof_mid_frame_is_connection_closed(pair):
    a, b = pair
    a.sendall(raw_frame(b'{"type": "x"}')[:7])
    a.close()
    with pytest.raises(ConnectionClosed, match="mid-frame"):
        protocol.recv(b)


@pytest.mark.parametrize("body, match", [
    (b"not json", "not UTF-8 JSON"),
    (b"\xff\xfe", "not UTF-8 JSON"),
    (b"[1, 2]", "not an object"),
    (b'{"id": 1}', "not an object with a str 'type'"),
    (b'{"type": 5}', "not an object with a str 'type'"),
])
def test_bad_body_raises(pair, body, match):
    a, b = pair
    a.sendall(raw_frame(body))
    with pytest.raises(ProtocolError, match=match):
        protocol.recv(b)


def test_empty_frame_raises(pair):
    a, b = pair
    a.sendall(struct.pack(">I", 0))
    with pytest.raises(ProtocolError, match="empty"):
        protocol.recv(b)


def test_oversized_length_raises_before_the_body_arrives(pair):
    a, b = pair
    a.sendall(struct.pack(">I", 2000))      # and no body at all: recv must not wait for it
    with pytest.raises(ProtocolError, match="over the 1000-byte limit"):
        protocol.recv(b, max_frame=1000)


def test_send_refuses_an_oversized_message_and_writes_nothing(pair):
    a, b = pair
    with pytest.raises(ProtocolError, match="frame limit"):
        protocol.send(a, {"type": "stream", "text": "x" * 2000}, max_frame=1000)
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv(1)


def test_send_refuses_what_json_cannot_hold_and_writes_nothing(pair):
    a, b = pair
    with pytest.raises(TypeError, match="object is not JSON serializable"):
        protocol.send(a, {"type": "display_data", "data": object()})
    with pytest.raises(ProtocolError):
        protocol.send(a, {"no": "type"})
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv(1)


def test_frame_reader_byte_by_byte():
    frames = b"".join(protocol.encode(m) for m in MESSAGES)
    reader = FrameReader()
    got = []
    for i in range(len(frames)):
        got += reader.feed(frames[i:i + 1])
    assert got == MESSAGES
    assert reader.feed(b"") == []             # nothing held back at a frame boundary


def test_frame_reader_several_frames_in_one_chunk_and_a_partial_one():
    frames = b"".join(protocol.encode(m) for m in MESSAGES)
    extra = protocol.encode({"type": "reply", "id": 5, "content": {}})
    reader = FrameReader()
    assert reader.feed(frames + extra[:6]) == MESSAGES
    assert reader.feed(extra[6:]) == [{"type": "reply", "id": 5, "content": {}}]


def test_frame_reader_refuses_an_oversized_header_at_once():
    reader = FrameReader(max_frame=100)
    with pytest.raises(ProtocolError, match="over the 100-byte limit"):
        reader.feed(struct.pack(">I", 101))


def test_frame_reader_stays_broken_after_a_bad_frame():
    reader = FrameReader()
    with pytest.raises(ProtocolError):
        reader.feed(raw_frame(b"{oops"))
    with pytest.raises(ProtocolError, match="earlier bad frame"):
        reader.feed(protocol.encode({"type": "reply"}))


def test_values_round_trip():
    values = {"a": [1, 2.5, "x"], "b": {"nested": (1, 2)}, "c": b"\x00\xff"}
    assert protocol.unpack_values(protocol.pack_values(values)) == values


def test_values_must_be_a_dict():
    import base64
    import pickle
    with pytest.raises(ProtocolError, match="must unpickle to a dict"):
        protocol.unpack_values(base64.b64encode(pickle.dumps([1])).decode())


def test_request_and_output_types_are_disjoint():
    assert not set(protocol.REQUEST_TYPES) & set(protocol.OUTPUT_TYPES)
    assert protocol.REPLY not in protocol.REQUEST_TYPES + protocol.OUTPUT_TYPES


# ---------------------------------------------------------------------------
# Hostile JSON in a well-framed body: decode() raises ProtocolError and nothing
# else, before json.loads allocates or recurses.


def _typed(inner: bytes) -> bytes:
    return b'{"type": "display_data", "id": 1, "data": ' + inner + b"}"


@pytest.mark.parametrize("body, match", [
    (_typed(b"[" * 100_000 + b"]" * 100_000), "more than 100 levels deep"),      # RecursionError before
    (_typed(b'{"a":' * 50_000 + b"0" + b"}" * 50_000), "more than 100 levels deep"),
    (_typed(b"[" * 200_000), "levels deep"),                                   # unbalanced, deep
    (_typed(b"[" + b"[]," * 2_000_000 + b"0]"), "more than 4000000 JSON values"),
    (_typed(b"[" + b'"",' * 5_000_000 + b"0]"), "more than 4000000 JSON values"),
    (_typed(b"1" * 5000), "not UTF-8 JSON"),                                    # past int's digit limit
    (_typed(b'"\xed\xa0\x80"'), "not UTF-8 JSON"),                              # a UTF-8 surrogate
], ids=["deep-lists", "deep-objects", "unbalanced", "many-lists", "many-strings", "huge-int",
        "surrogate"])
def test_hostile_json_is_a_protocol_error_and_nothing_else(body, match):
    with pytest.raises(ProtocolError, match=match):
        protocol.decode(body)


def test_nesting_is_bounded_at_exactly_max_depth():
    def nested(levels: int) -> bytes:       # the frame's own object is level 1
        lists, objects = (levels - 1) // 2, (levels - 1) - (levels - 1) // 2
        inner = b'[{"a": ' * lists + b'{"a": ' * (objects - lists) + b"0"
        inner += b"}" * (objects - lists) + b"}]" * lists
        return b'{"type": "x", "d": ' + inner + b"}"
    assert protocol.decode(nested(protocol.MAX_DEPTH))["type"] == "x"
    with pytest.raises(ProtocolError, match="levels deep"):
        protocol.decode(nested(protocol.MAX_DEPTH + 1))


def test_brackets_quotes_and_escapes_inside_strings_are_text():
    text = '[{"\\" ]]]] \\\\' * 50_000 + '\\'
    msg = protocol.decode(json.dumps({"type": "stream", "name": "stdout", "text": text,
                                      "csv": ",:," * 3_000_000}).encode())
    assert msg["text"] == text


def test_the_frame_reader_turns_a_deep_frame_into_a_protocol_error_and_stays_broken():
    reader = FrameReader()
    with pytest.raises(ProtocolError, match="levels deep"):
        reader.feed(raw_frame(_typed(b"[" * 50_000 + b"]" * 50_000)) + raw_frame(b'{"type": "x"}'))
    with pytest.raises(ProtocolError, match="earlier bad frame"):
        reader.feed(raw_frame(b'{"type": "x"}'))


# -- issue 25: input() ------------------------------------------------------------------


def test_input_frames_are_neither_requests_nor_outputs():
    """The agent drops a stray input_reply instead of answering it as a request,
    and the host handles input_request apart from the outputs it passes on."""
    assert protocol.INPUT_REPLY not in protocol.REQUEST_TYPES
    assert protocol.INPUT_REQUEST not in protocol.OUTPUT_TYPES


def test_the_largest_input_frames_fit_their_limits():
    prompt = "\u2028" * protocol.INPUT_PROMPT_LIMIT          # the worst JSON escape: 6 bytes
    request = {"type": protocol.INPUT_REQUEST, "id": 1, "n": 1, "password": False, "prompt": prompt}
    assert len(protocol.encode(request)) < protocol.cell_frame_limit(1 << 10)
    reply = {"type": protocol.INPUT_REPLY, "id": 1, "n": 1,
             "value": "\u2028" * protocol.INPUT_VALUE_LIMIT}
    assert len(protocol.encode(reply)) < protocol.DEFAULT_MAX_FRAME


# The host's answers to input_request frames: tests/unit/test_exchange.py


def test_update_environ_unsets_with_null_and_refuses_bad_changes():
    environ = {"OMP_NUM_THREADS": "2", "KEEP": "x"}
    assert protocol.update_environ(environ, {"OMP_NUM_THREADS": ["2", None],
                                             "KEEP": ["y", "z"]}) == ["OMP_NUM_THREADS"]
    assert environ == {"KEEP": "x"}
    for bad in ([], {"A": ["1"]}, {"A": [1, "2"]}, {"A=B": ["1", "2"]}, {"": [None, "1"]}):
        with pytest.raises(ProtocolError):
            protocol.update_environ(environ, bad)
