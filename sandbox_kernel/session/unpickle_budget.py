"""The bounded unpickler's budget: its limits, its refusals, and the
accounting every opcode goes through before it allocates (bytes charged and
settled, the depth of each container, the clock).

Part of the bounded unpickler (unpickle.py says how it works, and lists its parts).

Imports the stdlib, and runtime.spec's size parser when PULL_LIMIT_ENV is set.
"""
from __future__ import annotations

import io
import os
import pickle
import pickletools
import time

PULL_LIMIT_ENV = "SANDBOX_KERNEL_PULL_LIMIT"
DEFAULT_PULL_LIMIT = 256 << 20
MAX_DEPTH = 100
PULL_TIME_LIMIT = 60.0

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


class LoadBudget:
    """The budget, the depth and the clock of one load, for RestrictedUnpickler:
    ``limit``, ``used`` and ``peak`` bytes, ``max_depth``, ``time_limit`` and
    its ``_deadline``, ``_nodes`` (id -> [depth, obj]) and ``_open`` (new
    objects not yet inside anything), all set by the unpickler's __init__."""

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
