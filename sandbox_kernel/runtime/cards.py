"""Cards: what each running container on this machine is, for those who look from outside.

Every started Container writes ``card.json`` into its state directory (mode
0600, its owner's) and the card goes with the directory.  ``sandbox-kernel
top`` (root: every user's), the jupyter_server stats endpoint (a user: their
own kernels') and the JupyterHub admin page read them with ``scan``.

A card is input from whoever owns the directory: a student can write one in
/tmp claiming anything.  So a card is believed only when the directory and
the file are real (never a symlink), both owned by the uid the card names,
and its owner process is alive and that uid's; its cgroup paths must lie
under /sys/fs/cgroup.  A card that fails a check is skipped, not shown.

Imports: cgroups (to read a group's figures again from its paths), stats.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import pwd
import re
import stat
import tempfile
import time
from dataclasses import dataclass, field

from .cgroups.v1 import V1Cgroup
from .cgroups.v2 import V2Cgroup
from .stats import CgroupStats


CARD_FILE = "card.json"
CARD_VERSION = 1
CGROUP_ROOT = "/sys/fs/cgroup/"
STATE_PARENTS = ("/run", "/tmp")
_STATE_DIR = re.compile(r"^(sbk-(\d+)-[0-9a-f]+)-")   # <container name>-<mkdtemp suffix>
_MAX_CARD = 64 << 10


@dataclass(frozen=True)
class Card:
    name: str                 # sbk-<owner pid>-<hex>
    owner_pid: int            # the process that owns the Container (a kernel, a server)
    uid: int
    user: str
    image: str
    started: float            # time.time() at the start
    limits: dict              # memory, cpus, pids, disk, timeout as the spec says
    cgroup: dict              # {"driver": "v1", "paths": {...}} | {"driver": "v2", "path", "controllers"} | {"driver": "null"}
    network: str = "none"
    net_host_ifname: str | None = None
    labels: dict = field(default_factory=dict)
    state_dir: str = ""
    init_pid: int | None = None

    @property
    def uptime(self) -> float:
        return max(0.0, time.time() - self.started)

    def stats(self) -> CgroupStats | None:
        """The live figures, from the recorded cgroup; None once it is gone
        (or for the null driver, which has no group to read)."""
        group = _reopen(self.name, self.cgroup)
        if group is None:
            return None
        try:
            figures = group.stats()
        except OSError:
            return None
        finally:
            _close(group)
        return _with_spec_limits(figures, self.limits)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def card_of(container) -> Card:
    """The card of a started runtime Container."""
    spec = container.spec
    uid = os.getuid()
    process = getattr(container, "_process", None)
    return Card(
        name=container.name, owner_pid=os.getpid(), uid=uid, user=_user_name(uid),
        image=spec.image, started=getattr(container, "started_wall", 0.0) or time.time(),
        limits=dataclasses.asdict(spec.limits), cgroup=describe(container.cgroup),
        network=spec.network, net_host_ifname=getattr(container, "net_host_ifname", None),
        labels=dict(spec.labels), state_dir=container.state_dir or "",
        init_pid=getattr(process, "pid", None))


def write(card: Card) -> None:
    """Write (or replace) the card in its state directory, atomically."""
    final = os.path.join(card.state_dir, CARD_FILE)
    partial = final + ".new"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"version": CARD_VERSION, **card.as_dict()}, handle)
    os.replace(partial, final)


def describe(cgroup) -> dict:
    if isinstance(cgroup, V2Cgroup):
        return {"driver": "v2", "path": cgroup.dir.path, "controllers": list(cgroup.controllers)}
    if isinstance(cgroup, V1Cgroup):
        return {"driver": "v1", "paths": {c: d.path for c, d in cgroup.dirs.items()}}
    return {"driver": "null"}


# -- reading ------------------------------------------------------------------

def scan(parents=None) -> list[Card]:
    """Every believable card of a live owner under the state parents."""
    if parents is None:
        parents = sorted({*STATE_PARENTS, tempfile.gettempdir()})
    cards = []
    for parent in parents:
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for entry in names:
            if _STATE_DIR.match(entry):
                card = read(os.path.join(parent, entry))
                if card is not None:
                    cards.append(card)
    return sorted(cards, key=lambda c: c.started)


def of_owner(pid: int, parents=None) -> list[Card]:
    return [card for card in scan(parents) if card.owner_pid == pid]


def labelled(key: str, value: str, parents=None) -> list[Card]:
    return [card for card in scan(parents) if card.labels.get(key) == value]


def read(state_dir: str) -> Card | None:
    """The card in one state directory if every check holds, else None."""
    try:
        dir_stat = os.lstat(state_dir)
        if not stat.S_ISDIR(dir_stat.st_mode):
            return None
        fd = os.open(os.path.join(state_dir, CARD_FILE), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        file_stat = os.fstat(fd)
        if not stat.S_ISREG(file_stat.st_mode) or file_stat.st_size > _MAX_CARD:
            return None
        raw = os.read(fd, _MAX_CARD)
    except OSError:
        return None
    finally:
        os.close(fd)
    card = _parse(raw, state_dir)
    if card is None or not _believable(card, dir_stat.st_uid, file_stat.st_uid):
        return None
    return card


def _parse(raw: bytes, state_dir: str) -> Card | None:
    try:
        data = json.loads(raw)
        if data.pop("version", None) != CARD_VERSION:
            return None
        data["state_dir"] = state_dir   # where it was found, not what it says
        card = Card(**data)
    except (ValueError, TypeError):
        return None
    typed = (isinstance(card.owner_pid, int) and isinstance(card.uid, int)
             and isinstance(card.limits, dict) and isinstance(card.cgroup, dict)
             and isinstance(card.labels, dict) and isinstance(card.started, (int, float)))
    return card if typed else None


def _believable(card: Card, dir_uid: int, file_uid: int) -> bool:
    if not (dir_uid == file_uid == card.uid):
        return False
    match = _STATE_DIR.match(os.path.basename(card.state_dir))
    if match is None or match.group(1) != card.name or int(match.group(2)) != card.owner_pid:
        return False
    try:
        owner_uid = os.stat(f"/proc/{card.owner_pid}").st_uid
    except OSError:
        return False   # the owner is gone: the reaper's, not ours to show
    return owner_uid == card.uid and _paths_allowed(card.cgroup)


def _paths_allowed(cgroup: dict) -> bool:
    paths = list(cgroup.get("paths", {}).values()) if cgroup.get("driver") == "v1" else [cgroup.get("path")]
    if cgroup.get("driver") == "null":
        return True
    return all(isinstance(p, str) and p.startswith(CGROUP_ROOT) and "/../" not in p + "/"
               for p in paths)


def _reopen(name: str, described: dict):
    driver = described.get("driver")
    if driver == "v2" and os.path.isdir(described["path"]):
        return V2Cgroup(name, described["path"], tuple(described.get("controllers", ())))
    if driver == "v1" and all(os.path.isdir(p) for p in described["paths"].values()):
        return V1Cgroup(name, described["paths"])
    return None


def _close(group) -> None:
    dirs = [group.dir] if isinstance(group, V2Cgroup) else group.hierarchies
    for directory in dirs:
        close = getattr(directory, "close", None)
        if close is not None:
            close()


def _with_spec_limits(figures: CgroupStats, limits: dict) -> CgroupStats:
    return dataclasses.replace(
        figures,
        memory_limit=figures.memory_limit if figures.memory_limit is not None else limits.get("memory"),
        pids_limit=figures.pids_limit if figures.pids_limit is not None else limits.get("pids"),
        cpu_limit=figures.cpu_limit if figures.cpu_limit is not None else limits.get("cpus"))


@functools.lru_cache(maxsize=64)   # a pwd lookup reads /etc/passwd: 0.5 ms of every start
def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
