"""Limits a user changes on a running session (``%container limits``,
Session.set_limits): what they typed, parsed into a new ``Limits``, and the
thread variables that follow a live cpus change (pure functions); and
``LiveLimits``, the part of Session (client.py) that applies them.

Imports runtime (spec's parsers, images, cgroups.cpus) and errors.
"""
from __future__ import annotations

import dataclasses

from ..runtime import images
from ..runtime.cgroups.cpus import thread_environment
from ..runtime.spec import Limits, parse_network
from . import options
from .errors import SessionBusy, SessionError

PLACEMENT = ("net", "image", "allow", "rate")      # need a new container; the session handles them
LIVE = ("memory", "cpus", "pids")


def new_limits(limits: Limits, strings: dict) -> tuple[Limits, list[str]]:
    """(the limits with what was typed, the names that changed);
    SessionError for a name that is not a limit, SpecError for a value."""
    unknown = set(strings) - set(options.LIMIT_FIELDS) - set(PLACEMENT)
    if unknown:
        raise SessionError(f"unknown limit {', '.join(sorted(unknown))}: "
                           "memory, cpus, pids, timeout, disk, net, image, allow, rate")
    new = {key: options.parse(key, value, options.LIMITS) for key, value in strings.items()
           if key in options.LIMIT_FIELDS and value is not None}
    changed_limits = dataclasses.replace(limits, **new)
    changed = [key for key in new if getattr(changed_limits, key) != getattr(limits, key)]
    return changed_limits, changed


def thread_variable_changes(old_cpus, new_cpus, chosen: set[str]) -> dict:
    """{name: [old, new]} of the thread variables (OMP_NUM_THREADS...) that a
    cpus change moves, leaving out those the user set (``chosen``: -e, the
    image, a cell)."""
    old, new = thread_environment(old_cpus), thread_environment(new_cpus)
    return {name: [old.get(name), new.get(name)] for name in sorted({*old, *new})
            if old.get(name) != new.get(name) and name not in chosen}


class LiveLimits:
    """Session's set_limits (a part of Session, client.py): changes its
    limits, network and image, and the running container's limits; reads
    env, running, _used, _container and _request."""

    def set_limits(self, **strings) -> dict:
        """Change limits from what a user typed: memory, cpus, pids, timeout,
        net, image, disk.  memory, cpus and pids change live; timeout applies
        to the next cell; net, image and disk need a restart (they are kept
        for it).  A container no cell has used yet (one started ahead) has
        nothing to lose: for net, image and disk it is replaced at once.
        Returns {"changed": [...], "restart_needed": [...]}."""
        self._await_warm()                # a start under way gets the new limits too
        limits, changed = new_limits(self.limits, strings)
        if self.running and any(k in changed for k in LIVE):
            self._container.update_limits(dataclasses.replace(
                limits, timeout=None, disk=self._container.spec.limits.disk))
            if "cpus" in changed:
                self._follow_thread_variables(self.limits.cpus, limits.cpus)
        restart = [key for key in changed if key == "disk"]
        restart += self._set_placement(strings.get("net"), strings.get("image"))
        restart += self._set_egress(strings.get("allow"), strings.get("rate"))
        self.limits = limits
        if restart and self.running and not self._used:
            self._discard()
            self.start_soon()
            return {"changed": changed + restart, "restart_needed": []}
        if not self.running:
            return {"changed": changed + restart, "restart_needed": []}
        return {"changed": [k for k in changed if k not in restart], "restart_needed": restart}

    def _follow_thread_variables(self, old_cpus, new_cpus) -> None:
        """The agent's thread variables (OMP_NUM_THREADS...) follow a live
        cpus change, so that the processes cells start from now on size
        their pools to it; those the user set (-e, the image, a cell) stay."""
        chosen = {name for name, _ in self.env} | set(images.environment(self.image))
        changes = thread_variable_changes(old_cpus, new_cpus, chosen)
        if not changes:
            return
        try:
            self._request({"type": "update_environ", "changes": changes}, timeout=10)
        except SessionBusy:          # a cell runs (another thread): its variables stay
            pass

    def _set_egress(self, allow, rate) -> list[str]:
        """--allow and --rate of a bridge: kept for the next container (the
        resolver, the nftables set and tc are made with it)."""
        changed = []
        if allow is not None and options.parse("allow", allow, options.LIMITS) != self.allow:
            self.allow = options.parse("allow", allow, options.LIMITS)
            changed.append("allow")
        if rate is not None and options.parse("rate", rate, options.LIMITS) != self.rate:
            self.rate = options.parse("rate", rate, options.LIMITS)
            changed.append("rate")
        return changed

    def _set_placement(self, net, image) -> list[str]:
        changed = []
        if net is not None and parse_network(net) != self.network:
            self.network = parse_network(net)
            changed.append("net")
        if image is not None and image != self.image:
            self.image = images.resolve(image)
            changed.append("image")
        return changed
