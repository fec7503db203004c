"""RestrictedUnpickler: the pure-Python unpickler, every opcode that allocates
overridden to charge the load's budget (LoadBudget) first, every global
checked against SAFE_GLOBALS and every call against its check in CALLS.

Part of the bounded unpickler (unpickle.py says how it works, and lists its
parts).  Imports the stdlib, unpickle_budget and
unpickle_calls.
"""
from __future__ import annotations

import _compat_pickle
import codecs
import collections
import itertools
import pickle
import struct
import sys
import time

from .unpickle_budget import (_FIXED_COSTS, _PER_HASHED_ITEM, _PER_LIST_ITEM, _SLOT, MAX_DEPTH,
                              PULL_TIME_LIMIT, LoadBudget, PickleTooBig, RefusedCall, RefusedGlobal,
                              _length, _opcode_name, pull_limit)
from .unpickle_calls import SAFE_GLOBALS, _calls, _children, _name_of, _numpy_scalar_type, _state_cost


class RestrictedUnpickler(LoadBudget, pickle._Unpickler):
    """The pure-Python unpickler, restricted to SAFE_GLOBALS and CALLS, and
    bounded: ``limit`` bytes (PickleTooBig), ``max_depth`` levels of
    nesting (PickleTooDeep), ``time_limit`` seconds (PickleTooSlow).

    The C unpickler cannot be bounded: it calls what REDUCE names with no
    hook in between.  This one is slower (about 1 s per million items) and
    every opcode that allocates is overridden below to charge first."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, *, limit: int | None = None, max_depth: int = MAX_DEPTH,
                 time_limit: float = PULL_TIME_LIMIT):
        super().__init__(file)
        self.limit = pull_limit() if limit is None else limit
        self.max_depth = max_depth
        self.time_limit = time_limit
        self.used = 0             # bytes the load holds now, at worst
        self.peak = 0             # the most it held
        self._nodes: dict[int, list] = {}      # id -> [depth, obj]; obj keeps the id unique
        self._open: set[int] = set()           # new objects not yet inside anything
        self._size = _length(file)
        self._deadline = 0.0

    def find_class(self, module: str, name: str):
        # protocols 0-2 name Python 2 modules (__builtin__.set); map them first
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        if name in SAFE_GLOBALS.get(module, ()) or _numpy_scalar_type(module, name):
            if module == "builtins" and name == "NoneType":
                return type(None)
            return super().find_class(module, name)
        raise RefusedGlobal(module, name)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not accepted in a pulled value")

    # -- the loop ------------------------------------------------------------------

    def load(self):
        self._unframer = pickle._Unframer(self._file_read, self._file_readline)
        self.read = self._unframer.read
        self.readinto = self._unframer.readinto
        self.readline = self._unframer.readline
        self.metastack = []
        self.stack = []
        self.append = self.stack.append
        self.proto = 0
        self._deadline = time.monotonic() + self.time_limit
        read, dispatch = self.read, self.dispatch
        try:
            for count in itertools.count(1):
                key = read(1)
                if not key:
                    raise EOFError("the pickle ends before its STOP")
                handler = dispatch.get(key[0])
                if handler is None:
                    raise pickle.UnpicklingError(f"opcode {key!r} is not accepted in a pulled value")
                self.used += _FIXED_COSTS[key[0]]
                if self.used > self.peak:
                    if self.used > self.limit:
                        raise PickleTooBig(self.limit, f"its {_opcode_name(key)} opcodes")
                    self.peak = self.used
                handler(self)
                if count & 0x3FF == 0:
                    self._check_clock()
        except pickle._Stop as stop:
            return stop.value

    # -- payloads: charged by their declared length before they are read ----------

    def _payload(self, n: int, per_byte: int, what: str) -> int:
        if n < 0:
            raise pickle.UnpicklingError(f"{what} of negative length {n}")
        if self._size is not None and n > self._size:
            raise pickle.UnpicklingError(f"{what} of {n} bytes in a pickle of {self._size}")
        charged = n * per_byte + 64
        self.charge(charged, what)
        return charged

    def _read_exactly(self, n: int) -> bytes:
        data = self.read(n)
        if len(data) != n:
            raise pickle.UnpicklingError("pickle data was truncated")
        return data

    def _push_payload(self, charged: int, value, what: str) -> None:
        self.settle(charged, sys.getsizeof(value) + _SLOT, what)
        self.append(value)

    def load_frame(self):
        (n,) = struct.unpack("<Q", self.read(8))
        self._payload(n, 1, "a frame")
        self._unframer.load_frame(n)
    dispatch[pickle.FRAME[0]] = load_frame

    def load_string(self):
        data = self.readline()[:-1]
        charged = self._payload(len(data), 5, "a string")
        if len(data) < 2 or data[0] != data[-1] or data[0] not in b"\"'":
            raise pickle.UnpicklingError("the STRING opcode argument must be quoted")
        self._push_payload(charged, self._decode_string(codecs.escape_decode(data[1:-1])[0]),
                           "a string")
    dispatch[pickle.STRING[0]] = load_string

    def load_unicode(self):
        data = self.readline()[:-1]
        charged = self._payload(len(data), 5, "a string")
        self._push_payload(charged, str(data, "raw-unicode-escape"), "a string")
    dispatch[pickle.UNICODE[0]] = load_unicode

    def load_int(self):
        data = self.readline()
        charged = self._payload(len(data), 1, "an int")
        value = {b"00\n": False, b"01\n": True}.get(data)
        self._push_payload(charged, int(data, 0) if value is None else value, "an int")
    dispatch[pickle.INT[0]] = load_int

    def load_long(self):
        data = self.readline()[:-1]
        charged = self._payload(len(data), 1, "an int")
        self._push_payload(charged, int(data[:-1] if data.endswith(b"L") else data, 0), "an int")
    dispatch[pickle.LONG[0]] = load_long

    def load_float(self):
        data = self.readline()[:-1]
        charged = self._payload(len(data), 1, "a float")
        self._push_payload(charged, float(data), "a float")
    dispatch[pickle.FLOAT[0]] = load_float

    # -- containers: charged by their number of items --------------------------------

    def load_empty_list(self):
        self._new_container([], ())
    dispatch[pickle.EMPTY_LIST[0]] = load_empty_list

    def load_empty_dict(self):
        self._new_container({}, ())
    dispatch[pickle.EMPTY_DICT[0]] = load_empty_dict

    def load_empty_set(self):
        self._new_container(set(), ())
    dispatch[pickle.EMPTY_SET[0]] = load_empty_set

    def load_list(self):
        items = self.pop_mark()                # the mark's list becomes the list
        self._new_container(items, items)
    dispatch[pickle.LIST[0]] = load_list

    def load_tuple(self):
        items = self.pop_mark()
        self.charge(_SLOT * len(items) + 64, "a tuple")
        self._new_container(tuple(items), items)
    dispatch[pickle.TUPLE[0]] = load_tuple

    def _load_small_tuple(self, n: int):
        if len(self.stack) < n:
            raise pickle.UnpicklingError("a tuple of more items than the stack holds")
        items = self.stack[-n:]
        del self.stack[-n:]
        self._new_container(tuple(items), items)
    dispatch[pickle.TUPLE1[0]] = lambda self: self._load_small_tuple(1)
    dispatch[pickle.TUPLE2[0]] = lambda self: self._load_small_tuple(2)
    dispatch[pickle.TUPLE3[0]] = lambda self: self._load_small_tuple(3)

    def load_dict(self):
        items = self.pop_mark()
        value = {}
        self._fill(value, items, pairs=True)
        self._new_container(value, items)
    dispatch[pickle.DICT[0]] = load_dict

    def load_frozenset(self):
        items = self.pop_mark()
        charged = _PER_HASHED_ITEM * len(items) + 256
        self.charge(charged, "a frozenset")
        value = frozenset(self._set_of(items))
        self.settle(charged, sys.getsizeof(value), "a frozenset")
        self._new_container(value, items)

    def _set_of(self, items) -> set:
        """set(items), one item at a time with the clock checked: ints made
        to share a hash make each insert as slow as the set is long, and one
        C call could not be stopped.  (Copying the set into a frozenset after
        is no slower than this was.)"""
        value = set()
        for i, item in enumerate(items):
            value.add(item)
            if i & 0x3FF == 0:
                self._check_clock()
        return value
    dispatch[pickle.FROZENSET[0]] = load_frozenset

    def _fill(self, target, items, *, pairs: bool = False) -> None:
        """Put ``items`` into ``target``, charged at the worst growth first and
        settled at the real one; item by item, so the clock is checked while
        colliding hashes make each insert slow."""
        kind = type(target).__name__
        per_item = _PER_HASHED_ITEM if isinstance(target, (dict, set)) else _PER_LIST_ITEM
        charged = per_item * len(items) + 64
        self.charge(charged, f"items of a {kind}")
        before = sys.getsizeof(target)
        if pairs:
            if len(items) % 2:
                raise pickle.UnpicklingError(f"an odd number of items for a {kind}")
            put = target.__setitem__
            for i in range(0, len(items), 2):
                put(items[i], items[i + 1])
                if i & 0x3FF == 0:
                    self._check_clock()
        elif isinstance(target, set):
            for i, item in enumerate(items):
                target.add(item)
                if i & 0x3FF == 0:
                    self._check_clock()
        else:
            target.extend(items)
        self.settle(charged, max(sys.getsizeof(target) - before, 0), f"items of a {kind}")

    def _grow(self, items, kinds: tuple, *, pairs: bool = False) -> None:
        """APPEND(S), SETITEM(S), ADDITEMS: ``items`` into the object on top
        of the stack, which must be of one of ``kinds``."""
        target = self.stack[-1] if self.stack else None
        if not isinstance(target, kinds):
            raise RefusedCall(f"adding items to a {type(target).__name__}",
                              f"only a {' or '.join(k.__name__ for k in kinds)} takes items")
        if isinstance(target, collections.deque) and id(target) not in self._open:
            raise RefusedCall("adding items to a deque",
                              "only a new deque, before it is inside anything, takes items")
        self._fill(target, items, pairs=pairs)
        self._note(target, self._inside(items))

    def load_append(self):
        self._grow([self.stack.pop()], (list, collections.deque))
    dispatch[pickle.APPEND[0]] = load_append

    def load_appends(self):
        self._grow(self.pop_mark(), (list, collections.deque))
    dispatch[pickle.APPENDS[0]] = load_appends

    def load_setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        self._grow([key, value], (dict,), pairs=True)
    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self):
        self._grow(self.pop_mark(), (dict,), pairs=True)
    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_additems(self):
        self._grow(self.pop_mark(), (set,))
    dispatch[pickle.ADDITEMS[0]] = load_additems

    # -- calls: each through its check in CALLS --------------------------------------

    def _call(self, func, args, kwargs, *, new: bool):
        """func(*args, **kwargs), or func.__new__(func, ...) for NEWOBJ, after
        its check has bounded what it allocates."""
        if type(args) is not tuple or type(kwargs) is not dict:
            raise pickle.UnpicklingError("call arguments that are not a tuple and a dict")
        try:
            check = _calls().get(func)
        except TypeError:                      # an unhashable "callable"
            check = None
        if check is None or (new and not isinstance(func, type)):
            raise RefusedCall(_name_of(func), "it may be data in a pulled value, but it is not called")
        self._inside(itertools.chain(args, kwargs.values()))
        what = f"{_name_of(func)}()"
        charged = check(func, args, dict(kwargs))
        self.charge(charged, what)
        if func in (set, frozenset) and args and not new:
            result = func(self._set_of(args[0]))
        else:
            result = func.__new__(func, *args, **kwargs) if new else func(*args, **kwargs)
        if not any(isinstance(a, (range, str)) for a in args):   # those make new items
            self.settle(charged, sys.getsizeof(result), what)
        fresh = id(result) not in self._nodes
        children = _children(result)
        self._note(result, 0 if children is None else self._inside(children))
        if fresh:
            self._open.add(id(result))
        return result

    def load_reduce(self):
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args, {}, new=False)
    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self):
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args, {}, new=True)
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args, kwargs, new=True)
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def _instantiate(self, klass, args):
        # protocols 0 and 1: klass(*args), or klass.__new__(klass) with no args
        new = not args and isinstance(klass, type) and not hasattr(klass, "__getinitargs__")
        self.append(self._call(klass, tuple(args), {}, new=new))

    # -- BUILD: the state of a new object ---------------------------------------------

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1] if self.stack else None
        if id(inst) not in self._open:
            raise RefusedCall(f"setting the state of a {type(inst).__name__}",
                              "only a new object, before it is inside anything, gets a state")
        self._open.discard(id(inst))
        depth = self._inside((state,)) - 1
        self.charge(_state_cost(inst, state), f"the state of a {type(inst).__name__}")
        setstate = getattr(inst, "__setstate__", None)
        if setstate is not None:
            setstate(state)
        elif isinstance(state, dict) and hasattr(inst, "__dict__"):
            inst.__dict__.update({sys.intern(k) if type(k) is str else k: v for k, v in state.items()})
        elif state is not None:
            raise RefusedCall(f"setting the state of a {type(inst).__name__}",
                              "a state other than a dict of attributes")
        children = _children(inst)
        if children is not None:               # a numpy object array: its items
            depth = self._inside(children)
        self._note(inst, depth)
    dispatch[pickle.BUILD[0]] = load_build


def _sized_payload(length_format: str, per_byte: int, what: str, make):
    """An opcode whose payload follows its length: charged before it is read."""
    width = struct.calcsize(length_format)

    def load(self):
        (n,) = struct.unpack(length_format, self._read_exactly(width))
        charged = self._payload(n, per_byte, what)
        self._push_payload(charged, make(self, self._read_exactly(n)), what)
    return load


def _text(self, data):
    return str(data, "utf-8", "surrogatepass")


for _op, _format, _per_byte, _what, _make in (
        (pickle.BINUNICODE, "<I", 5, "a string", _text),
        (pickle.BINUNICODE8, "<Q", 5, "a string", _text),
        (pickle.SHORT_BINUNICODE, "<B", 5, "a string", _text),
        (pickle.BINBYTES, "<I", 1, "bytes", lambda self, data: data),
        (pickle.BINBYTES8, "<Q", 1, "bytes", lambda self, data: data),
        (pickle.SHORT_BINBYTES, "<B", 1, "bytes", lambda self, data: data),
        (pickle.BYTEARRAY8, "<Q", 2, "a bytearray", lambda self, data: bytearray(data)),
        (pickle.BINSTRING, "<i", 5, "a string", lambda self, data: self._decode_string(data)),
        (pickle.SHORT_BINSTRING, "<B", 5, "a string", lambda self, data: self._decode_string(data)),
        (pickle.LONG1, "<B", 1, "an int", lambda self, data: pickle.decode_long(data)),
        (pickle.LONG4, "<i", 1, "an int", lambda self, data: pickle.decode_long(data))):
    RestrictedUnpickler.dispatch[_op[0]] = _sized_payload(_format, _per_byte, _what, _make)

# Out-of-band buffers: a pulled value has none, and a memoryview is no plain data.
for _op in (pickle.NEXT_BUFFER, pickle.READONLY_BUFFER):
    del RestrictedUnpickler.dispatch[_op[0]]

