"""What a pulled pickle may name (SAFE_GLOBALS) and call (CALLS), and what each
call may allocate at most, computed from its arguments before it is made.

Part of the bounded unpickler (unpickle.py says how it works, and lists its
parts).  Imports the stdlib and unpickle_budget; numpy only when the pickle
names it.
"""
from __future__ import annotations

import collections
import copyreg
import datetime
import decimal
import fractions
import itertools
import math
import pickle
import re
import sys
import uuid

from .unpickle_budget import _PER_HASHED_ITEM, _PER_LIST_ITEM, _PER_NEW_CHAR, _PER_NEW_INT, RefusedCall

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

_CODEC_NAMES = {"latin1", "latin-1", "iso-8859-1", "utf-8", "utf8", "ascii"}
_PLAIN_RATIONAL = re.compile(r"\s*[-+]?(\d+(/\d+)?|\d*\.\d+|\d+\.?)\s*\Z")


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


def _state_cost(inst, state) -> int:
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

