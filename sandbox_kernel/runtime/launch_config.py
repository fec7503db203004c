"""What the owner tells a launcher: one typed record, ``LauncherConfig``.

container.py builds it; the launcher (launcher.py) reads nothing else.  It
crosses a process boundary on two of the three start paths (spawn.py): as
JSON through a pipe (exec) or the zygote's socket (zygote.py), where
``from_dict`` rebuilds it and checks the type of every field, nested ones
(the mount plan's ``Op``, the user namespace's ``IdMap``) too.  Before any
path container.py runs the same check on the object (``check``), which the
fork path then hands to the forked launcher as it is.  A wrong value is one ``LauncherConfigError`` naming the field,
what it was and what it must be.

Imports: mount_apply (Op) and userns (IdMap) only.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field

from .mount_apply import Op
from .userns import IdMap


class LauncherConfigError(ValueError):
    """A launcher config with a field of the wrong type, or missing, or unknown."""


@dataclass
class LauncherConfig:
    """Everything a launcher, its init and the workload need to know."""
    command: list[str]             # argv of the workload (exec'd, or run in-process)
    env: dict[str, str]            # the workload's whole environment
    workdir: str
    hostname: str
    uid: int                       # who the workload is (inside its user namespace, rootless)
    gid: int
    network: str                   # network.py's policy name
    join_files: list[str]          # cgroup files init joins through (the launcher writes its pid)
    rlimits: list[list[int]]       # [resource, limit]: the null driver's limits
    cpus: list[int] | None         # init's affinity where no cpuset pins it (cgroups/cpus.py)
    plan: list[Op]                 # the mount plan (rootfs.py), applied by init
    new_root: str                  # where the plan builds the root; pivot_root goes there
    host_mnt_ns: int               # inode of the host's mount namespace: the plan refuses it
    pass_fds: list[int]            # the owner's fds the workload gets, at the same numbers
    cgroup_dirs: list[str]         # what the launcher removes when released
    state_dir: str                 # the container's state directory, removed likewise
    userns: IdMap | None = None    # rootless: the user namespace's id map (userns.py)
    keep_groups: bool = False      # rootless with a single id: setgroups is denied
    join_self: bool = False        # init writes "0" to join_files itself (v1's tasks: no global lock)
    run_module: str | None = None  # zygote: run ``python -m MODULE`` in-process, no exec
    module_args: list[str] = field(default_factory=list)
    status_fd: int = -1            # the channels (launcher.py's docstring): Container._spawn
    result_fd: int = -1
    lifeline_fd: int = -1

    def to_dict(self) -> dict:
        """Plain data for JSON: nested records as dicts, tuples as lists."""
        return _plain(self)

    @classmethod
    def from_dict(cls, data) -> "LauncherConfig":
        """The config ``data`` (as JSON gave it) describes, every field checked."""
        return _run(_converter(cls, False), data)

    def check(self) -> None:
        """Raise LauncherConfigError unless every field, nested ones too, has
        its declared type as it is (records as records, tuples as tuples)."""
        _run(_converter(type(self), True), self)


def _plain(value):
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list or kind is tuple:
        return [_plain(item) for item in value]
    if kind is dict:
        return {key: _plain(item) for key, item in value.items()}
    if dataclasses.is_dataclass(kind):   # its fields are its __dict__ (no slots here)
        return {name: _plain(item) for name, item in vars(value).items()}
    return value   # not JSON: json.dumps says what it is


_SCALARS = frozenset((str, int, bool, float, type(None)))


# -- the check ------------------------------------------------------------------
# One converter per declared type, made once (a start checks some hundred
# values: the plan's ops are most of them).  From JSON (``typed`` False) a
# record comes as its dict and a tuple as a list, and the converter builds
# them; ``typed``, each must already be what it is declared.  Only the shapes
# a LauncherConfig uses: str, int, bool, None, X | None, list, tuple, dict
# and dataclasses of those.

class _Wrong(Exception):
    """A value that is not what it should be, and where it is (innermost last)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message, self.path = message, []


def _run(convert, value):
    try:
        return convert(value)
    except _Wrong as wrong:
        where = "launcher config" + "".join(reversed(wrong.path))
        raise LauncherConfigError(f"{where}{wrong.message}") from None


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


@functools.cache
def _converter(hint, typed: bool):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return _optional([arg for arg in args if arg is not type(None)][0], typed)
    if dataclasses.is_dataclass(hint):
        return _record(hint, typed)
    if origin is list:
        return _sequence(list, [_converter(args[0], typed)], list)
    if origin is tuple:
        items = [_converter(arg, typed) for arg in args if arg is not Ellipsis]
        return _sequence(tuple if typed else list, items, tuple, any_length=args[-1] is Ellipsis)
    if origin is dict:
        return _mapping(_converter(args[0], typed), _converter(args[1], typed))
    return _exactly(hint)


def _exactly(kind: type):
    def convert(value):
        # exact types: JSON's true is not an int here, nor 1 a bool
        if type(value) is not kind:
            raise _Wrong(f" must be {_name(kind)}, not {type(value).__name__} ({value!r:.60})")
        return value
    return convert


def _optional(inner, typed: bool):
    inner = _converter(inner, typed)
    return lambda value: None if value is None else inner(value)


def _sequence(kind: type, items: list, build: type, any_length: bool = True):
    expect = _exactly(kind)

    def convert(value):
        expect(value)
        if not any_length and len(value) != len(items):
            raise _Wrong(f" must have {len(items)} items, not {len(value)}")
        converted = []
        for index, item in enumerate(value):
            try:
                converted.append(items[0 if any_length else index](item))
            except _Wrong as wrong:
                wrong.path.append(f"[{index}]")
                raise
        return build(converted)
    return convert


def _mapping(key_converter, value_converter):
    expect = _exactly(dict)

    def convert(value):
        expect(value)
        converted = {}
        for key, item in value.items():
            try:
                converted[key_converter(key)] = value_converter(item)
            except _Wrong as wrong:
                wrong.path.append(f"[{key!r}]")
                raise
        return converted
    return convert


def _record(cls, typed: bool):
    hints = _hints(cls)
    fields = {name: _converter(hint, typed) for name, hint in hints.items()}
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    expect = _exactly(cls if typed else dict)

    def convert(value):
        expect(value)
        given = {name: getattr(value, name) for name in fields} if typed else value
        _known_and_complete(given, fields, required)
        converted = {}
        for name, item in given.items():
            try:
                converted[name] = fields[name](item)
            except _Wrong as wrong:
                wrong.path.append(f".{name}")
                raise
        return value if typed else cls(**converted)
    return convert


def _known_and_complete(given: dict, fields: dict, required: set) -> None:
    if given.keys() - fields.keys():
        unknown = sorted(map(str, given.keys() - fields.keys()))
        raise _Wrong(f": unknown field(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    if required - given.keys():
        raise _Wrong(f": missing field(s) {', '.join(sorted(required - given.keys()))}")


def _name(kind: type) -> str:
    return {list: "a list", tuple: "a tuple", dict: "a dict", str: "a str", int: "an int",
            bool: "a bool", type(None): "None"}.get(
        kind, f"{'an' if kind.__name__[0] in 'AEIOU' else 'a'} {kind.__name__}")
