"""Variables to and from the container: push pickles them into a push
request, pull loads each through the bounded unpickler (unpickle.py, which
loads only plain data within a memory budget: plain ``pickle`` would let
the container run code on the host, or fill its memory).

The functions get the session's ``request`` (a request dict -> its reply
content) and nothing else of it.  Imports protocol, errors and unpickle.
"""
from __future__ import annotations

import pickle
from collections.abc import Callable

from . import protocol
from .errors import VariableError
from .unpickle import unpickle_pulled

Request = Callable[[dict], dict]


def push(request: Request, values: dict) -> list[str]:
    """Set variables in the container (pickled).  VariableError names the
    variable that cannot be pickled."""
    for name in values:
        if not (isinstance(name, str) and name.isidentifier()):
            raise VariableError(str(name), f"cannot push {name!r}: not a variable name")
    try:
        text = protocol.pack_values(values)
    except Exception:
        raise _unpicklable(values) from None
    reply = request({"type": "push", "values": text})
    if reply.get("status") != "ok":
        raise VariableError(reply.get("name"), f"push failed: {reply.get('evalue') or reply}")
    return list(reply.get("values") or values)


def pull(request: Request, names) -> dict:
    """Variables from the container, through the restricted unpickler.
    One request per name, so that a refusal names its variable."""
    values = {}
    for name in names:
        reply = request({"type": "pull", "names": [name]})
        if reply.get("status") != "ok":
            raise VariableError(name, reply.get("evalue") or f"cannot pull {name!r}")
        if not isinstance(reply.get("values"), str):
            raise VariableError(name, f"cannot pull {name!r}: the agent sent no values")
        values[name] = unpickle_pulled(name, reply["values"])
    return values


def _unpicklable(values: dict) -> VariableError:
    """The error naming the first variable that does not pickle."""
    for name, value in values.items():
        try:
            pickle.dumps(value, protocol=pickle.DEFAULT_PROTOCOL)
        except Exception as exc:
            return VariableError(name, f"cannot push {name!r}: a {type(value).__name__} "
                                       f"cannot be pickled: {exc}")
    return VariableError(None, "the variables pickle one by one but not together")
