"""The bounded unpickler (session/unpickle.py): plain data loads as before;
pickles that ask the host for more memory, depth or calls than plain data
needs are refused with one line, before the host allocates.

Every bomb here is small (at most a few MB of pickle); the loads that the old
unpickler would have let through run in a subprocess with RLIMIT_DATA, so a
regression fails the test instead of the machine."""
from __future__ import annotations

import base64
import collections
import copyreg
import datetime
import decimal
import fractions
import io
import pickle
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import uuid

import pytest

from sandbox_kernel.session import client, unpickle
from sandbox_kernel.session.unpickle import (PickleTooBig, PickleTooDeep, PickleTooSlow, RefusedCall,
                                             RefusedGlobal, restricted_loads)

np = pytest.importorskip("numpy")
MiB = 1 << 20


class Reduce:
    """Pickles as func(*args), whatever func and args are."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def dumps(value, protocol=4) -> bytes:
    return pickle.dumps(value, protocol=protocol)


def in_dict(value_ops: bytes, name: bytes = b"x") -> bytes:
    """A protocol-4 pickle of {name: <what value_ops push>}."""
    return b"\x80\x04}" + b"\x8c" + bytes([len(name)]) + name + value_ops + b"s."


def deep_tuple_in_a_set(depth: int) -> bytes:
    # hashing a tuple recurses in C with no guard: 10**6 levels crash CPython
    return in_dict(b"\x8f(" + b")" + b"\x85" * depth + b"\x90")


def deque_chain(depth: int) -> bytes:
    # freeing nested deques recurses in C with no guard, as hashing tuples does
    levels = b"h\x00)\x85R" * depth              # deque(()) each, from the memoised global
    return in_dict(b"ccollections\ndeque\n\x940" + levels + b"a" * (depth - 1))


BOMBS = {
    "list-of-range": dumps(Reduce(list, range(3 * 10**7))),
    "bytearray": dumps(Reduce(bytearray, 1 << 30)),
    "bytes-newobj": b"\x80\x04cbuiltins\nbytes\n\x8a\x05" + (10**10).to_bytes(5, "little") + b"\x85\x81.",
    "set-of-range": dumps(Reduce(set, range(10**8))),
    "tuple-of-range": dumps(Reduce(tuple, range(10**8))),
    "deque-of-range": dumps(Reduce(collections.deque, range(10**8))),
    "reconstructor": dumps(Reduce(copyreg._reconstructor, list, list, range(10**9))),
    "numpy-reconstruct": dumps(Reduce(np.ndarray.__reduce__(np.zeros(1))[0], np.ndarray, (10**9,), b"O")),
    "bytearray8-length": b"\x80\x05\x96" + struct.pack("<Q", 1 << 40) + b".",
    "empty-sets": b"\x80\x04(" + b"\x8f" * 2_000_000 + b"l.",
}


@pytest.mark.parametrize("name", BOMBS)
def test_a_bomb_is_refused_before_the_host_allocates(name):
    tracemalloc.start()
    try:
        with pytest.raises((PickleTooBig, pickle.UnpicklingError)):
            restricted_loads(BOMBS[name], limit=64 * MiB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 80 * MiB


@pytest.mark.parametrize("data, refusal", [
    (deep_tuple_in_a_set(10**5), PickleTooDeep),
    (deque_chain(10**4), PickleTooDeep),
    (in_dict(b"]" * 10**4 + b"a" * (10**4 - 1)), PickleTooDeep),
    (dumps(Reduce(collections.Counter, range(10**8))), RefusedCall),
    (dumps(Reduce(str, [1, 2])), RefusedCall),                       # repr of a shared structure
    (dumps(Reduce(fractions.Fraction, "1e999999")), RefusedCall),    # 10**999999
    (dumps(Reduce(fractions.Fraction, decimal.Decimal("1E+999999"))), RefusedCall),
    (dumps(Reduce(np.void, 10**9)), RefusedCall),                     # admitted as data, not called
    (dumps(Reduce(np.dtype, "f8", False, False)), RefusedCall),       # numpy's shared dtype
    (b"\x80\x04\x8c\x08builtins\x8c\rdict.fromkeys\x93.", RefusedGlobal),
], ids=["deep-tuple-in-a-set", "deque-chain", "deep-lists", "counter-of-range", "str-of-list",
        "fraction-exponent", "fraction-of-decimal", "numpy-void", "shared-dtype", "dict.fromkeys"])
def test_depth_and_calls_that_plain_data_does_not_need_are_refused(data, refusal):
    with pytest.raises(refusal):
        restricted_loads(data)


def test_a_deque_takes_no_items_once_it_is_inside_something():
    # d0.append(d1) while d1 is empty, then d1.append(d2): depth computed at
    # the first append would be stale; the second is refused
    deques = b"ccollections\ndeque\n)\x85R\x94" + b"h\x00)\x85R\x94" * 2
    data = b"\x80\x04" + deques + b"00" + b"h\x01h\x02a0" + b"h\x02h\x03a."
    with pytest.raises(RefusedCall, match="deque"):
        restricted_loads(data)


def test_an_array_gets_its_state_once():
    data = dumps(np.arange(3), protocol=2)
    state = data[data.index(b"(K\x01"):data.rindex(b"b.")]         # the BUILD's state
    with pytest.raises(RefusedCall, match="state"):
        restricted_loads(data[:-1] + state + b"b.")


def test_a_load_past_its_time_limit_is_refused():
    colliding = {(2**61 - 1) * i: 0 for i in range(1, 3000)}    # equal hashes: quadratic inserts
    with pytest.raises(PickleTooSlow):
        restricted_loads(dumps(colliding), time_limit=0.0)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_what_plain_data_costs_is_charged_and_loads(protocol):
    a = []
    a.append(a)
    value = {"ints": list(range(20_000)), "strs": [f"s{i}\U0001F600" for i in range(5000)],
             "set": set(range(5000)), "frozen": frozenset(range(100)), "t": [(i, str(i)) for i in range(5000)],
             "od": collections.OrderedDict((i, [i]) for i in range(2000)), "c": collections.Counter("hello"),
             "dd": collections.defaultdict(list, a=[1]), "dq": collections.deque(range(1000), maxlen=2000),
             "arr": np.arange(100_000.0), "obj": np.array([[1], "x", None], dtype=object),
             "rec": np.zeros(3, dtype=[("x", "i4"), ("y", "f8")]), "dt": np.dtype("M8[s]"),
             "u": uuid.UUID(int=7), "safe": uuid.SafeUUID.safe, "f": fractions.Fraction(1, 3),
             "dec": decimal.Decimal("-1.10"), "c2": complex(1, 2), "sl": slice(1, None, 2),
             "r": range(10**12), "b": bytes(range(256)), "ba": bytearray(b"xy"), "big": 7**500,
             "when": datetime.datetime(2024, 1, 2, 3, 4, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
             "cycle": a}
    data = dumps(value, protocol)
    tracemalloc.start()
    try:
        unpickler = unpickle.RestrictedUnpickler(io.BytesIO(data), limit=1 << 40)
        back = unpickler.load()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= unpickler.peak * 1.05          # the charge is an upper bound (and some slack)
    assert back["cycle"][0] is back["cycle"]
    del back["cycle"], value["cycle"]
    for key in ("arr", "obj", "rec"):
        assert np.array_equal(back.pop(key), value.pop(key)) or key == "obj"
    assert back == value


def test_a_limit_that_a_load_needs_is_enough_and_one_below_is_not():
    data = dumps([list(range(100)) for _ in range(1000)])
    unpickler = unpickle.RestrictedUnpickler(io.BytesIO(data), limit=1 << 40)
    unpickler.load()
    assert restricted_loads(data, limit=unpickler.peak)[999][99] == 99
    with pytest.raises(PickleTooBig):
        restricted_loads(data, limit=unpickler.peak - 1)


def _pulled(text_value, **kwargs):
    return unpickle.unpickle_pulled("x", base64.b64encode(text_value).decode(), **kwargs)


def test_the_user_gets_one_line_naming_the_variable_the_limit_and_how_to_change_it(monkeypatch):
    with pytest.raises(client.VariableError) as caught:
        _pulled(dumps({"x": Reduce(bytearray, 1 << 30)}))
    message = str(caught.value)
    assert caught.value.name == "x" and "\n" not in message
    assert "cannot pull 'x'" in message and "256 MiB" in message
    assert unpickle.PULL_LIMIT_ENV in message
    monkeypatch.setenv(unpickle.PULL_LIMIT_ENV, "64M")
    assert len(_pulled(dumps({"x": Reduce(bytearray, 32 * MiB)}))) == 32 * MiB
    monkeypatch.setenv(unpickle.PULL_LIMIT_ENV, "1M")
    with pytest.raises(client.VariableError, match="more than 1 MiB"):
        _pulled(dumps({"x": bytes(2 * MiB)}))


@pytest.mark.parametrize("data, words", [
    (in_dict(b"]" * 200 + b"a" * 199), "nested more than 100 levels deep"),
    (dumps({"x": Reduce(str, [1])}), "builtins.str()"),
    (b"\x80\x04\xff.", "unreadable"),
    (b"\x80\x04" + b"(" * 10, "unreadable"),
])
def test_each_refusal_is_one_line(data, words):
    with pytest.raises(client.VariableError) as caught:
        _pulled(data)
    assert words in str(caught.value) and "\n" not in str(caught.value)


OLD_OR_NEW = textwrap.dedent('''
    import base64, resource, sys
    resource.setrlimit(resource.RLIMIT_DATA, (1 << 30, 1 << 30))
    from sandbox_kernel.session import client, unpickle
    try:
        value = unpickle.unpickle_pulled("x", sys.stdin.read())
    except client.VariableError as exc:
        print("refused:", exc)
    else:
        del value
        print("loaded")
''')


@pytest.mark.parametrize("data", [deep_tuple_in_a_set(10**6), deque_chain(10**6)],
                         ids=["deep-tuple-in-a-set", "deque-chain"])
def test_data_that_crashed_the_host_is_refused_and_the_process_lives(data):
    ran = subprocess.run([sys.executable, "-c", OLD_OR_NEW], input=base64.b64encode(data).decode(),
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]          # -11 before: a C stack overflow
    assert ran.stdout.startswith("refused:"), ran.stdout       # too deep, or too big first
    assert "levels deep" in ran.stdout or "MiB" in ran.stdout
