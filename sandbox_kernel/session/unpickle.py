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

The parts:
    unpickle_budget.py   limits, refusals, costs, the accounting (LoadBudget)
    unpickle_calls.py    what a pickle may name (SAFE_GLOBALS) and call (CALLS)
    unpickle_opcodes.py  RestrictedUnpickler, the opcode machine
    unpickle.py          the entry points: restricted_loads, unpickle_pulled
"""
from __future__ import annotations

import base64
import io

from ..runtime.spec import SpecError
from .errors import VariableError
from .unpickle_budget import (  # noqa: F401 -- moved; tests and client import them from here
    DEFAULT_PULL_LIMIT, MAX_DEPTH, PULL_LIMIT_ENV, PULL_TIME_LIMIT, PickleRefused, PickleTooBig,
    PickleTooDeep, PickleTooSlow, RefusedCall, RefusedGlobal, format_size, pull_limit)
from .unpickle_calls import CALLS, SAFE_GLOBALS  # noqa: F401 -- moved; client imports SAFE_GLOBALS here
from .unpickle_opcodes import RestrictedUnpickler  # noqa: F401 -- moved; tests and client import it here


def restricted_loads(data: bytes, *, limit: int | None = None, max_depth: int = MAX_DEPTH,
                     time_limit: float = PULL_TIME_LIMIT):
    """The value in pickle ``data``, loaded by RestrictedUnpickler."""
    return RestrictedUnpickler(io.BytesIO(data), limit=limit, max_depth=max_depth,
                               time_limit=time_limit).load()


_PLAIN_DATA = "builtins containers and scalars, datetime, Decimal, numpy arrays"


def unpickle_pulled(name: str, text: str, *, limit: int | None = None):
    """The value of variable ``name`` from a pull reply's ``values``; a
    VariableError of one line when the host will not load it."""
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
