"""Pulled values: a restricted, bounded unpickler.

A pulled variable is a pickle that the container wrote, and the container is
hostile.  Plain ``pickle.loads`` would run whatever code the pickle names, so
only the plain data types in SAFE_GLOBALS may be named.  That is not enough:
the types that are admitted still do what their arguments say, and a pickle
of 70 bytes can say ``list(range(3 * 10**7))`` or ``bytearray(1 << 30)``.
Without a bound, the host (the Jupyter kernel, or root's CLI) pays for it,
outside the container's memory limit.

So the pickle is loaded by ``RestrictedUnpickler``, the pure-Python unpickler
with every opcode that allocates checked against a budget (``limit``,
DEFAULT_PULL_LIMIT unless PULL_LIMIT_ENV or a keyword says otherwise)
BEFORE it allocates:

- opcodes that read a payload (strings, bytes, big ints, frames) are charged
  by the length the pickle declares, before reading it;
- opcodes that build containers are charged by the number of items, at the
  worst growth of the container type, and settled at the real size after;
- calls (REDUCE, NEWOBJ, BUILD, ...) go through CALLS: each admitted callable
  has a check that computes, from the arguments, the most the call can
  allocate (``list(range(n))`` is n ints, ``bytearray(n)`` is n bytes, a numpy
  array is shape x itemsize), or refuses arguments that are not plain data
  (``str(a_list)`` would run repr over a shared structure).  A callable
  without a check may appear as data (``{"t": int}``) but is never called;
- the unpickler's own memo, marks and stack slots are charged too, so the
  total is an upper bound of what the load holds at any moment.

Nesting is bounded too (``max_depth``): CPython hashes nested tuples and frees
nested deques and numpy object arrays by plain C recursion, so a pickle of a
tuple nested 10**6 deep crashes the host's Python, and deep lists make every
later repr fail.  Every container's depth is computed when it is built.  A
deque may only receive items, and an object may only be BUILT, before it is
placed in anything else, so a depth computed once stays true for the types
whose C code recurses unguarded.

A load that runs past ``time_limit`` (hash collisions make dict and set
inserts quadratic) is refused too.  Each refusal is an UnpicklingError
subclass that says what was wrong; ``unpickle_pulled`` turns it into one line
for the user.
"""
from __future__ import annotations

import _compat_pickle
import base64
import codecs
import collections
import copyreg
import datetime
import decimal
import fractions
import io
import itertools
import math
import os
import pickle
import pickletools
import re
import struct
import sys
import time
import uuid

PULL_LIMIT_ENV = "SANDBOX_KERNEL_PULL_LIMIT"
DEFAULT_PULL_LIMIT = 256 << 20
MAX_DEPTH = 100
PULL_TIME_LIMIT = 60.0

SAFE_GLOBALS = {
    "builtins": {"dict", "list", "tuple", "set", "frozenset", "bytearray", "bytes", "str",
                 "int", "float", "complex", "bool", "slice", "range", "object", "NoneType"},
    "collections": {"OrderedDict", "defaultdict", "deque", "Counter"},
    "datetime": {"datetime", "date", "time", "timedelta", "timezone"},
    "decimal": {"Decimal"},
    "fractions": {"Fraction"},
    "uuid": {"UUID", "SafeUUID"},
    "copyreg": {"_reconstructor"},
    "_codecs": {"encode"},            # protocols 0-2 write bytes this way
    "numpy": {"ndarray", "dtype"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "numpy.core.numeric": {"_frombuffer"},
    "numpy._core.numeric": {"_frombuffer"},
}
"""What a pulled pickle may name.  Each is a type whose construction from
data runs no code of the pickle's choosing, or a reconstructor that only
calls such types: containers, scalars, dates, numpy arrays and dtypes.
(copyreg._reconstructor calls base.__new__(cls) with cls and base themselves
loaded through this table.)  Naming is not calling: see CALLS."""

# Worst bytes per item a container grows by while items go in, resizes
# included (the old and the new table are both alive during a resize).
_PER_LIST_ITEM = 16
_PER_HASHED_ITEM = 256
_PER_NEW_INT = 40          # list(range(n)) makes n int objects
_PER_NEW_CHAR = 80         # list("…") makes a str per character past latin-1
_NODE_COST = 128           # our own record of a container's depth
_MEMO_COST = 128
_MARK_COST = 120
_SLOT = 8
_CODEC_NAMES = {"latin1", "latin-1", "iso-8859-1", "utf-8", "utf8", "ascii"}
_PLAIN_RATIONAL = re.compile(r"\s*[-+]?(\d+(/\d+)?|\d*\.\d+|\d+\.?)\s*\Z")


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names something outside SAFE_GLOBALS."""

    def __init__(self, module: str, name: str):
        self.module, self.qualname = module, name
        super().__init__(f"{module}.{name}")


class PickleRefused(pickle.UnpicklingError):
    """The pickle is readable but would cost the host too much."""


class PickleTooBig(PickleRefused):
    def __init__(self, limit: int, what: str):
        self.limit, self.what = limit, what
        super().__init__(f"{what} would take the load past its limit of {format_size(limit)}")


class PickleTooDeep(PickleRefused):
    def __init__(self, max_depth: int):
        self.max_depth = max_depth
        super().__init__(f"data nested more than {max_depth} levels deep")


class PickleTooSlow(PickleRefused):
    def __init__(self, seconds: float):
        self.seconds = seconds
        super().__init__(f"the load ran past its time limit of {seconds:g} s")


class RefusedCall(PickleRefused):
    """A call the host will not make for a pulled value."""

    def __init__(self, what: str, why: str):
        self.what, self.why = what, why
        super().__init__(f"{what}: {why}")


def format_size(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} bytes"


def pull_limit() -> int:
    """The budget in bytes: PULL_LIMIT_ENV ('512M', '1G') or the default."""
    text = os.environ.get(PULL_LIMIT_ENV, "").strip()
    if not text:
        return DEFAULT_PULL_LIMIT
    from ..runtime.spec import parse_size    # the same sizes as --memory
    return parse_size(text, PULL_LIMIT_ENV)


def _numpy_scalar_type(module: str, name: str) -> bool:
    """numpy.float64 and friends, which a dtype may name (as data only)."""
    if module != "numpy":
        return False
    numpy = sys.modules.get("numpy")
    if numpy is None:
        try:
            import numpy
        except ImportError:
            return False
    value = getattr(numpy, name, None)
    return isinstance(value, type) and issubclass(value, numpy.generic)


def _name_of(func) -> str:
    module = getattr(func, "__module__", None) or "?"
    return f"{module}.{getattr(func, '__qualname__', type(func).__name__)}"


# ---------------------------------------------------------------------------
# What each admitted callable may be asked to do, and what that costs at most.
# A check gets the arguments and returns the most bytes the call allocates;
# it raises RefusedCall for arguments that are not plain data.


def _refuse(func, why: str):
    raise RefusedCall(f"{_name_of(func)}()", why)


def _no_kwargs(func, kwargs):
    if kwargs:
        _refuse(func, "keyword arguments are not accepted")


def _iterable_cost(func, arg, per_item: int) -> int:
    """What building a container of ``func`` from ``arg`` costs: ``arg`` must
    be materialised data whose length is known, never an iterator."""
    if isinstance(arg, range):
        try:
            n = len(arg)
        except OverflowError:
            _refuse(func, "a range longer than the host can hold")
        return n * (per_item + _PER_NEW_INT) + 64
    if isinstance(arg, (list, tuple, set, frozenset, dict, collections.deque, bytes, bytearray)):
        return len(arg) * per_item + 64
    if isinstance(arg, str):
        return len(arg) * (per_item + _PER_NEW_CHAR) + 64
    _refuse(func, f"built from a {type(arg).__name__}, not from a container or a range")


def _sequence(func, args, kwargs):
    _no_kwargs(func, kwargs)
    if len(args) > 1:
        _refuse(func, "more than one argument")
    return _iterable_cost(func, args[0], _PER_LIST_ITEM) if args else 64


def _hashed(func, args, kwargs):
    _no_kwargs(func, kwargs)
    if len(args) > 1:
        _refuse(func, "more than one argument")
    return _iterable_cost(func, args[0], _PER_HASHED_ITEM) if args else 256


def _mapping(func, args, kwargs):
    """dict, OrderedDict, Counter: empty, or from another mapping."""
    _no_kwargs(func, kwargs)
    if not args:
        return 256
    if len(args) > 1 or not isinstance(args[0], (dict, list, tuple, str)):
        _refuse(func, "built from something other than a dict, a list of pairs or a str")
    return _iterable_cost(func, args[0], _PER_HASHED_ITEM)


def _defaultdict(func, args, kwargs):
    _no_kwargs(func, kwargs)
    if args and args[0] is not None and not isinstance(args[0], type):
        _refuse(func, "a default factory that is not a type")
    return _mapping(func, args[1:], {}) + 64


def _deque(func, args, kwargs):
    args = args + tuple(kwargs.pop(k) for k in ("iterable", "maxlen") if k in kwargs)
    _no_kwargs(func, kwargs)
    if len(args) > 2 or (len(args) == 2 and not (args[1] is None or type(args[1]) is int)):
        _refuse(func, "arguments other than an iterable and a maxlen")
    return 700 + (_iterable_cost(func, args[0], _PER_LIST_ITEM) if args else 0)   # 700: a block


def _bytes_like(func, args, kwargs):
    """bytes and bytearray: empty, a length, a bytes-like, a list of ints, or
    text and a codec."""
    _no_kwargs(func, kwargs)
    if not args:
        return 64
    first = args[0]
    if len(args) == 1 and type(first) is int:
        if first < 0:
            _refuse(func, "a negative length")
        return first + 64
    if len(args) == 1 and isinstance(first, (bytes, bytearray, list, tuple, range)):
        return _iterable_cost(func, first, 1)
    if isinstance(first, str) and len(args) in (2, 3) and _codec(func, args[1]):
        return 4 * len(first) + 64
    _refuse(func, "arguments other than a length, bytes, a list of ints, or text and a codec")


def _codec(func, name) -> bool:
    if not (isinstance(name, str) and name.lower() in _CODEC_NAMES):
        _refuse(func, f"the codec {name!r:.40}, not one of {', '.join(sorted(_CODEC_NAMES))}")
    return True


def _str(func, args, kwargs):
    _no_kwargs(func, kwargs)
    if not args:
        return 64
    if len(args) == 1 and isinstance(args[0], str):
        return 4 * len(args[0]) + 64
    if isinstance(args[0], (bytes, bytearray)) and len(args) in (2, 3) and _codec(func, args[1]):
        return 4 * len(args[0]) + 64
    _refuse(func, "arguments other than text, or bytes and a codec (str() of an object runs its repr)")


def _encode(func, args, kwargs):
    _no_kwargs(func, kwargs)
    if not args or not isinstance(args[0], str) or len(args) > 3:
        _refuse(func, "arguments other than text and a codec")
    if len(args) > 1:
        _codec(func, args[1])
    return 4 * len(args[0]) + 64


_SCALARS = (bool, int, float, complex, str, bytes, decimal.Decimal, fractions.Fraction)


def _scalars(func, args, kwargs):
    """Types whose value is one number, date or string: the result is no
    bigger than its arguments, as long as the arguments are scalars."""
    for value in itertools.chain(args, kwargs.values()):
        if not (value is None or isinstance(value, _SCALARS + (datetime.tzinfo, datetime.timedelta))):
            _refuse(func, f"an argument of type {type(value).__name__}, not a number, text or date")
    return 64 + sum(len(v) for v in itertools.chain(args, kwargs.values()) if isinstance(v, (str, bytes)))


def _decimal(func, args, kwargs):
    _no_kwargs(func, kwargs)
    if len(args) == 1 and isinstance(args[0], tuple) and len(args[0]) == 3 \
            and isinstance(args[0][1], tuple):
        return 64 + len(args[0][1])
    if len(args) != 1 or not isinstance(args[0], (str, int, float, decimal.Decimal)):
        _refuse(func, "arguments other than one number or its text")
    return _scalars(func, args, {})


def _fraction(func, args, kwargs):
    """Fraction('1e999999999') and Fraction(Decimal('1E+999999999')) compute a
    power of ten as big as the exponent: only plain ratios are accepted."""
    _no_kwargs(func, kwargs)
    if len(args) > 2:
        _refuse(func, "more than two arguments")
    for value in args:
        if isinstance(value, str):
            if len(value) > 10000 or not _PLAIN_RATIONAL.match(value):
                _refuse(func, "text other than digits, a point and a slash (no exponent)")
        elif not (type(value) in (int, float, bool) or isinstance(value, fractions.Fraction)):
            _refuse(func, f"an argument of type {type(value).__name__}, not an int or a plain ratio")
    return 128 + sum(len(v) for v in args if isinstance(v, str))


def _slice(func, args, kwargs):
    _no_kwargs(func, kwargs)
    if len(args) > 3:
        _refuse(func, "more than three arguments")
    return 64


def _range(func, args, kwargs):
    _no_kwargs(func, kwargs)
    if not 1 <= len(args) <= 3 or not all(type(a) in (int, bool) for a in args):
        _refuse(func, "arguments other than one to three ints")
    return 64 + sum(a.bit_length() // 8 * 3 for a in args)


def _nothing(func, args, kwargs):
    if args or kwargs:
        _refuse(func, "arguments (it takes none)")
    return 64


def _reconstructor(func, args, kwargs):
    """copyreg._reconstructor(cls, base, state): base.__new__(cls, state) and
    base.__init__(obj, state), so the check of ``base`` applies to ``state``."""
    _no_kwargs(func, kwargs)
    if len(args) != 3:
        _refuse(func, "arguments other than (cls, base, state)")
    cls, base, state = args
    if not (isinstance(cls, type) and isinstance(base, type) and issubclass(cls, base)):
        _refuse(func, "a cls that is not a subclass of base")
    if base is object:
        if state is not None:
            _refuse(func, "a state for object")
        return 256
    check = CALLS.get(base)
    if check is None:
        _refuse(func, f"the base {_name_of(base)}, which is not called for pulled values")
    return check(base, (state,), {}) + 256


def _numpy():
    import numpy
    return numpy


def _shape_size(func, shape) -> int:
    if type(shape) is int:
        shape = (shape,)
    if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
        _refuse(func, "a shape that is not a tuple of non-negative ints")
    return math.prod(shape)


def _dtype_of(func, value):
    numpy = _numpy()
    if isinstance(value, numpy.dtype):
        return value
    if isinstance(value, (str, bytes)) and len(value) <= 64:
        try:
            return numpy.dtype(value.decode("ascii") if isinstance(value, bytes) else value)
        except (TypeError, ValueError, UnicodeDecodeError):
            pass
    _refuse(func, f"a dtype given as {type(value).__name__}")


def _array_reconstruct(func, args, kwargs):
    """numpy's _reconstruct(ndarray, shape, typecode) allocates the array at
    once (zeroed pointers for object arrays), before __setstate__."""
    _no_kwargs(func, kwargs)
    if len(args) != 3 or args[0] is not _numpy().ndarray:
        _refuse(func, "arguments other than (numpy.ndarray, shape, typecode)")
    return _shape_size(func, args[1]) * _dtype_of(func, args[2]).itemsize + 256


def _array_frombuffer(func, args, kwargs):
    _no_kwargs(func, kwargs)
    if len(args) != 4 or not isinstance(args[0], (bytes, bytearray, pickle.PickleBuffer)):
        _refuse(func, "arguments other than (buffer, dtype, shape, order)")
    if _dtype_of(func, args[1]).hasobject:
        _refuse(func, "an object dtype from a buffer")
    _shape_size(func, args[2])
    return len(memoryview(args[0]).cast("B")) + 256


def _array_scalar(func, args, kwargs):
    _no_kwargs(func, kwargs)
    if len(args) not in (1, 2):
        _refuse(func, "arguments other than (dtype, data)")
    return _dtype_of(func, args[0]).itemsize + 128


def _dtype(func, args, kwargs):
    """dtype(code, align, copy): pickles always ask for a copy; copy=False
    would hand back numpy's shared builtin dtype, which a BUILD could then
    change for the whole host process."""
    _no_kwargs(func, kwargs)
    if len(args) != 3 or args[2] is not True or not isinstance(args[0], str) or len(args[0]) > 64:
        _refuse(func, "arguments other than (code, align, True)")
    return 1024


CALLS: dict = {
    list: _sequence, tuple: _sequence, collections.deque: _deque,
    set: _hashed, frozenset: _hashed,
    dict: _mapping, collections.OrderedDict: _mapping, collections.Counter: _mapping,
    collections.defaultdict: _defaultdict,
    bytes: _bytes_like, bytearray: _bytes_like, str: _str,
    int: _scalars, float: _scalars, complex: _scalars, bool: _scalars,
    slice: _slice, range: _range, object: _nothing, type(None): _nothing,
    datetime.datetime: _scalars, datetime.date: _scalars, datetime.time: _scalars,
    datetime.timedelta: _scalars, datetime.timezone: _scalars,
    decimal.Decimal: _decimal, fractions.Fraction: _fraction,
    uuid.UUID: _scalars, uuid.SafeUUID: _scalars,
    copyreg._reconstructor: _reconstructor,
}
"""The callables a pulled pickle may call, each with its check.  The
_codecs and numpy entries are added when first needed (_calls())."""


def _calls() -> dict:
    if "encode" not in _calls_added:
        import _codecs
        CALLS[_codecs.encode] = _encode
        _calls_added.add("encode")
    numpy = sys.modules.get("numpy")
    if numpy is not None and "numpy" not in _calls_added:
        try:
            from numpy._core import multiarray, numeric
        except ImportError:               # numpy 1.x
            from numpy.core import multiarray, numeric
        CALLS.update({multiarray._reconstruct: _array_reconstruct, multiarray.scalar: _array_scalar,
                      numeric._frombuffer: _array_frombuffer, numpy.dtype: _dtype})
        _calls_added.add("numpy")
    return CALLS


_calls_added: set[str] = set()


def _children(obj):
    """What ``obj`` holds, for its depth; None for a scalar."""
    if isinstance(obj, dict):
        return itertools.chain(obj.keys(), obj.values())
    if isinstance(obj, (list, tuple, set, frozenset, collections.deque)):
        return obj
    if isinstance(obj, slice):
        return (obj.start, obj.stop, obj.step)
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(obj, numpy.ndarray) and obj.dtype.hasobject:
        if obj.dtype.fields is not None or obj.dtype.subdtype is not None:
            raise RefusedCall("numpy.ndarray", "records or subarrays holding Python objects")
        return obj.flat
    return None


# ---------------------------------------------------------------------------
# The unpickler


class RestrictedUnpickler(pickle._Unpickler):
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

    # -- the budget, the depth and the clock -------------------------------------

    def charge(self, n: int, what: str) -> None:
        self.used += n
        if self.used > self.peak:
            if self.used > self.limit:
                raise PickleTooBig(self.limit, what)
            self.peak = self.used

    def settle(self, charged: int, actual: int, what: str) -> None:
        """Replace a worst-case charge by what was really allocated."""
        self.charge(actual - charged, what)

    def _check_clock(self) -> None:
        if time.monotonic() > self._deadline:
            raise PickleTooSlow(self.time_limit)

    def _note(self, obj, depth: int) -> None:
        if depth > self.max_depth:
            raise PickleTooDeep(self.max_depth)
        node = self._nodes.get(id(obj))
        if node is None:
            self.charge(_NODE_COST, "the record of a container")
            self._nodes[id(obj)] = [depth, obj]
        elif depth > node[0]:
            node[0] = depth

    def _inside(self, items) -> int:
        """1 + the depth of the deepest of ``items``, which are now inside
        something: from here on, a deque of them takes no more items, and
        none of them can be BUILT (their depth stays what it is now)."""
        deepest, nodes, open_ = 0, self._nodes, self._open
        for item in items:
            node = nodes.get(id(item))
            if node is not None:
                if node[0] > deepest:
                    deepest = node[0]
                if open_:
                    open_.discard(id(item))
        return deepest + 1

    def _new_container(self, value, items) -> None:
        self._note(value, self._inside(items) if items else 1)
        self.append(value)

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
        self.charge(self._state_cost(inst, state), f"the state of a {type(inst).__name__}")
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

    def _state_cost(self, inst, state) -> int:
        """What applying ``state`` allocates: a numpy array's data (its
        __setstate__ allocates shape x itemsize whatever the data says)."""
        numpy = sys.modules.get("numpy")
        if numpy is None or type(inst) is not numpy.ndarray:
            return 256 + (_PER_HASHED_ITEM * len(state) if isinstance(state, dict) else 0)
        what = "numpy.ndarray.__setstate__"
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise RefusedCall(what, "a state other than (version, shape, dtype, is_fortran, data)")
        shape, dtype, data = state[-4], state[-3], state[-1]
        if not isinstance(dtype, numpy.dtype):
            raise RefusedCall(what, "a dtype that is not a numpy.dtype")
        if dtype.hasobject != isinstance(data, list):
            raise RefusedCall(what, "object data that is not a list, or a list for other data")
        return _shape_size(numpy.ndarray, shape) * dtype.itemsize + 256


def _length(file) -> int | None:
    """The pickle's length, when the file can say it without a copy
    (BytesIO.getbuffer would copy a buffer it shares)."""
    try:
        here = file.tell()
        end = file.seek(0, io.SEEK_END)
        file.seek(here)
    except (AttributeError, OSError, ValueError):
        return None
    return end - here


def _opcode_name(key: bytes) -> str:
    op = pickletools.code2op.get(key.decode("latin-1"))
    return op.name if op is not None else repr(key)


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


def _fixed_costs() -> list[int]:
    """Bytes charged before each opcode runs: the stack slot it pushes and the
    small object it makes.  Opcodes whose cost depends on their payload or
    their items charge more in their own handler."""
    costs = [0] * 256
    for ops, cost in ((b"N\x88\x89)", _SLOT),                        # None, True, False, ()
                      (b"JKMG", _SLOT + 32),                          # ints, float
                      (b"gh\x6a2", _SLOT),                            # GET, DUP
                      (b"pqr\x94", _MEMO_COST),                       # PUT, MEMOIZE
                      (b"(", _MARK_COST),
                      (b"]", _SLOT + 56), (b"}", _SLOT + 64), (b"\x8f", _SLOT + 216),
                      (b"\x85\x86\x87", _SLOT + 64),                  # TUPLE1-3
                      (b"c\x93\x82\x83\x84iRo\x81\x92", _SLOT)):      # globals, calls
        for op in ops:
            costs[op] = cost
    return costs


_FIXED_COSTS = _fixed_costs()


# ---------------------------------------------------------------------------
# Entry points


def restricted_loads(data: bytes, *, limit: int | None = None, max_depth: int = MAX_DEPTH,
                     time_limit: float = PULL_TIME_LIMIT):
    """The value in pickle ``data``, loaded by RestrictedUnpickler."""
    return RestrictedUnpickler(io.BytesIO(data), limit=limit, max_depth=max_depth,
                               time_limit=time_limit).load()


_PLAIN_DATA = "builtins containers and scalars, datetime, Decimal, numpy arrays"


def unpickle_pulled(name: str, text: str, *, limit: int | None = None):
    """The value of variable ``name`` from a pull reply's ``values``; a
    VariableError of one line when the host will not load it."""
    from .client import SpecError, VariableError    # client imports this module
    try:
        limit = pull_limit() if limit is None else limit
    except SpecError as exc:
        raise VariableError(name, f"cannot pull {name!r}: {exc}") from None
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
        values = restricted_loads(data, limit=_room_for_objects(limit, text, data))
    except RefusedGlobal as refused:
        raise VariableError(name, (
            f"cannot pull {name!r}: its pickle needs {refused.module}.{refused.qualname}, which the "
            f"host will not load (a pickle from the container could run code on the host). Pull "
            f"plain data: {_PLAIN_DATA}")) from None
    except PickleRefused as refused:
        raise VariableError(name, f"cannot pull {name!r}: {_why_refused(refused, limit)}") from None
    except Exception as exc:      # anything a malformed pickle raises: the host stays up
        raise VariableError(name, f"cannot pull {name!r}: its pickle is unreadable "
                                  f"({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(values, dict) or set(values) != {name}:
        raise VariableError(name, f"cannot pull {name!r}: the agent answered with other names")
    return values[name]


def _room_for_objects(limit: int, text: str, data: bytes) -> int:
    """What the unpickler may charge for ``limit`` bytes on the host: less the
    pickle itself (its base64 text and its bytes stay alive during the load),
    less 1/8 for the allocator's own overhead (block headers, pools, a deque's
    block), which the charges, in sys.getsizeof terms, leave out."""
    return max(0, (limit - len(text) - len(data)) * 7 // 8)


def _why_refused(refused: PickleRefused, limit: int) -> str:
    if isinstance(refused, PickleTooBig):
        return (f"its pickle would need more than {format_size(limit)} on the host (the limit for "
                f"pulled variables; {PULL_LIMIT_ENV} in the kernel's environment changes it)")
    if isinstance(refused, PickleTooDeep):
        return (f"it is nested more than {refused.max_depth} levels deep (the limit for pulled "
                f"variables: deeper data can crash the host's Python)")
    if isinstance(refused, PickleTooSlow):
        return f"its pickle took more than {refused.seconds:g} s to load on the host"
    return (f"its pickle asks the host for {refused.what}: {refused.why}; the host does not do "
            f"that for a pulled variable. Pull plain data: {_PLAIN_DATA}")
