"""The named sessions of one kernel (``Sessions``) and its warm pool: what
``%container`` and the cells of both faces open, change and close.

Every action on the host asks the sessions' policy first (policy.py).  A
new session's limits are parsed by options.parse (the one limit parser).

Imports runtime.images and runtime.spec, and of the session: client
(Session), policy, stats (the words of a limit), options and usage.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from ..runtime import images
from ..runtime.spec import Limits, SpecError, parse_network
from . import options
from . import policy as policies
from . import stats as stats_contract
from .client import Session
from .spare import BACKGROUND_DELAY
from .options import DEFAULT_SESSION
from .policy import Policy
from .usage import UsageError

LIMIT_OPTIONS = options.LIMIT_FIELDS
POOL_ENV = "SANDBOX_KERNEL_POOL"
# the trusted policy's notebook directory, from the host user's own environment
NOTEBOOK_ENV = {"notebook_dir": "SANDBOX_KERNEL_NOTEBOOK_DIR",
                "notebook_root": "SANDBOX_KERNEL_NOTEBOOK_ROOT"}
DEFAULT_POOL = 1
MAX_POOL = 4


class Sessions:
    """The named sessions of one kernel, and the faces' shared switches:
    ``auto`` (the session every cell runs in, or None) and ``footer``.

    The warm pool: ``warm_up`` starts containers ahead, in the background,
    with the defaults of a new session (host image, no network, the default
    limits), so that the first ``%%container`` cell finds its container
    running.  A new session takes one whose image and network match and
    gets its limits set live (memory, cpus and pids through the cgroup, as
    ``%container limits`` does); when none matches, the pool is dropped.
    Bounded (MAX_POOL), refilled in the background when a session takes
    one (until dropped), private to this process (each
    container's launcher lives only as long as its owner), and closed with
    the sessions.  A warm container is an ordinary container: its own
    cgroup with the limits, counted like any other.  The sessions made
    here (at most MAX_POOL of them) also keep a spare container for their
    restarts (spare.py) while the pool is on (SANDBOX_KERNEL_POOL > 0).

    The policy (policy.py) is asked before every action on the host: a new
    session (how many, its limits, network and image), a change of limits,
    and every image action but ls and inspect.  ``defaults`` are a new
    session's limits when none are given (the sandbox kernel's settings: a
    second session is not unlimited); ``made`` the images this process
    built, imported or pulled (a classroom kernel removes only those);
    ``trust_output`` is set on every session made here.  The magics'
    Sessions are ``trusted`` with no defaults: as before.
    """

    def __init__(self, factory: Callable[..., Session] = Session, *, policy: Policy | None = None,
                 defaults: dict | None = None, trust_output: bool = False,
                 notebook_dir: str | None = None):
        self.factory = factory
        # the notebook's directory, the cells' working directory at the same
        # path (policy.notebook_mount says how); None: this process's working
        # directory when a session is made (the magics: ipykernel's, as the
        # server started it in the notebook's directory, or after a %cd)
        self.notebook_dir = notebook_dir
        self.policy = policy if policy is not None else policies.trusted()
        self.defaults = dict(defaults or {})      # a new session's limits as typed ("1G"), if not given
        self.trust_output = trust_output          # every session's output shown as is (session/client.py)
        self.made: set[str] = set()               # images this kernel built, imported or pulled
        self.sessions: dict[str, Session] = {}
        self.pool: list[Session] = []
        self.pool_target = 0                      # warm_up's size: the pool is refilled to it
        self.spares = pool_size_or_default() > 0  # sessions keep a spare for their restarts
        self.auto: str | None = None
        self.auto_options: dict = {}
        self.footer = True
        self.new_session_hint = "a %%container cell creates one"   # the sandbox kernel says its own
        # a new session's --on-pressure: the sandbox kernel's (it gives its settings as
        # defaults) interrupt the cell; the magics' warn (pressure_watch.py)
        self.on_pressure = "interrupt" if defaults else "warn"

    def get(self, name: str) -> Session:
        """An existing session; UsageError naming the ones there are."""
        try:
            return self.sessions[name]
        except KeyError:
            there = ", ".join(sorted(self.sessions)) or "none yet"
            raise UsageError(f"no session named {name!r} (sessions: {there}); "
                             f"{self.new_session_hint}") from None

    def open(self, name: str = DEFAULT_SESSION, *, image=None, net=None, allow=None, rate=None,
             **limits) -> tuple[Session, list[str]]:
        """The session ``name``, created with these options if new; if it
        exists, given options change it.  Returns it and notes for the user."""
        given = {k: v for k, v in limits.items() if v is not None}
        session = self.sessions.get(name)
        if session is None:
            return self._new_session(name, image or images.HOST, net or "none", given,
                                     allow, rate), []
        if not given and image is None and net is None and allow is None and rate is None:
            return session, []
        self.check_changes(given, image, net)
        self.check_egress(session, net, allow, rate)
        changes = session.set_limits(**given, image=image, net=net, allow=allow, rate=rate)
        return session, change_notes(session, changes)

    def _new_session(self, name: str, image: str, net: str, given: dict, allow=None,
                     rate=None) -> Session:
        """A session with the given limits and the defaults for the others,
        after the policy said yes; a bad value raises before anything starts."""
        self.policy.check_sessions(len(self.sessions))
        wanted = {**{k: v for k, v in self.defaults.items() if k in LIMIT_OPTIONS}, **given}
        new_limits = parse_limits(wanted)
        self.policy.check_limits({k: getattr(new_limits, k) for k in LIMIT_OPTIONS})
        self.policy.check_network(net)
        egress = self.check_egress(None, net, allow, rate)
        self.policy.check_image(image)
        notebook = self.notebook_mount()
        session = self._from_pool(name, image, net, wanted, notebook)
        if session is None:
            session = self.factory(name, image=image, limits=new_limits, network=net)
            self._place(session, notebook)
        session.allow, session.rate = egress
        self._trust(session)
        # spare.py: a restart takes a container started ahead (MAX_POOL sessions keep one)
        session.keep_spare = self.spares and sum(s.keep_spare for s in self.sessions.values()) < MAX_POOL
        session.idle_pause = options.parse("idle_pause", self.defaults.get("idle_pause"), options.KERNEL)
        session.on_pressure = self.on_pressure
        self.sessions[name] = session
        return session

    def check_changes(self, given: dict, image: str | None, net: str | None) -> None:
        """What ``%container limits`` (or the magics' options) would change, asked of the policy."""
        self.policy.check_limit_strings(given)
        if net is not None:
            self.policy.check_network(net)
        if image is not None:
            self.policy.check_image(image)

    def check_egress(self, session: Session | None, net, allow, rate) -> tuple:
        """(allow, rate) as the session will have them (given ones parsed, the
        others its own), asked of the policy; UsageError, one line, for
        --allow or --rate on a network that is not a bridge."""
        network = parse_network(net) if net is not None else getattr(session, "network", "none")
        names = options.parse("allow", allow, options.LIMITS) if allow is not None \
            else getattr(session, "allow", ())
        bits = options.parse("rate", rate, options.LIMITS) if rate is not None \
            else getattr(session, "rate", None)
        if network != "bridge" and ((allow is not None and names) or (rate is not None and bits)):
            raise UsageError(f"--allow and --rate need --net bridge (the session's network is "
                             f"{network}): add --net bridge, or leave them out")
        self.policy.check_egress(network, names, bits)
        return names, bits

    def notebook_mount(self) -> policies.NotebookDir:
        """The notebook's directory as the policy has it in a new session.
        Under the trusted policy (the magics: the host user's own kernel)
        SANDBOX_KERNEL_NOTEBOOK_DIR (overlay|ro|rw|none) and
        SANDBOX_KERNEL_NOTEBOOK_ROOT (DIR|parent) change it; UsageError,
        one line, for a bad value."""
        path = self.notebook_dir
        if path is None:
            try:
                path = os.getcwd()
            except FileNotFoundError:   # the directory was removed under us
                path = None
        return self._notebook_policy().notebook_mount(path)

    def _notebook_policy(self) -> Policy:
        if self.policy.name != policies.TRUSTED:
            return self.policy
        given = {key: os.environ.get(variable) for key, variable in NOTEBOOK_ENV.items()}
        try:
            return policies.with_overrides(self.policy, {k: v for k, v in given.items() if v})
        except SpecError as error:
            raise UsageError(f"{error} (from {' or '.join(NOTEBOOK_ENV.values())})") from None

    @staticmethod
    def _place(session: Session, notebook: policies.NotebookDir) -> None:
        """The notebook's directory of a session not started yet."""
        session.notebook_dir = notebook.mount
        session.workdir = notebook.workdir
        session.notebook_words = notebook.words

    def _trust(self, session: Session) -> None:
        """The kernel's trust_output on every session it makes (session/client.py
        shows such a session's output unsanitised)."""
        if self.trust_output:
            session.trust_output = True

    def close(self, name: str) -> None:
        session = self.sessions.pop(name, None)
        if session is not None:
            session.stop()

    def close_all(self) -> None:
        """Destroy every container (kernel shutdown, extension unload)."""
        self.drop_pool()
        for name in list(self.sessions):
            self.close(name)

    # -- the warm pool ---------------------------------------------------------

    def warm_up(self, size: int = DEFAULT_POOL) -> int:
        """Start ``size`` containers ahead for the sessions to come (at most
        MAX_POOL); only while there is no session and no pool yet.  Returns
        how many were started."""
        if self.sessions or self.pool:
            return 0
        self.pool_target = min(size, MAX_POOL)
        self._refill(delay=0.0)
        return len(self.pool)

    def _refill(self, delay: float = BACKGROUND_DELAY) -> None:
        """Start containers ahead, in the background (after ``delay``
        seconds: the answer of the cell that took one goes out first),
        until the pool has pool_target of them: every new session finds one."""
        if len(self.pool) >= self.pool_target:
            return
        notebook = self.notebook_mount()
        while len(self.pool) < self.pool_target:
            session = self.factory(DEFAULT_SESSION, image=images.HOST, limits=parse_limits(self.defaults),
                                   network="none")
            self._place(session, notebook)
            self._trust(session)
            session.start_soon(delay)
            self.pool.append(session)

    def _refill_after_answer(self) -> None:
        """The refill once a taken container's session has answered: if it
        cannot be made (the notebook directory's setting changed meanwhile),
        the pool goes, and that answer is not an error."""
        try:
            self._refill()
        except (UsageError, SpecError, OSError):
            self.drop_pool()

    def drop_pool(self) -> None:
        """Destroy the containers started ahead that no session took."""
        pool, self.pool = self.pool, []
        self.pool_target = 0                      # dropped: not refilled (other options are in use)
        for session in pool:
            session.stop()

    def _from_pool(self, name: str, image: str, net: str, given: dict,
                   notebook: policies.NotebookDir | None = None) -> Session | None:
        """A warm session for the new session ``name``, with the limits it
        was asked for; None if none fits (the pool is then dropped: it was
        started for sessions like this one, or in another directory)."""
        network = parse_network(net)
        mount, workdir = (notebook.mount, notebook.workdir) if notebook else (None, None)
        fits = [s for s in self.pool if s.image == image and s.network == network
                and getattr(s, "notebook_dir", None) == mount and getattr(s, "workdir", None) == workdir]
        if not fits:
            self.drop_pool()
            return None
        session = fits[0]
        self.pool.remove(session)
        # the next new session's, in the background once this one has answered
        # (not while its first cell runs: the two starts would share the cpus)
        session.after_answer = self._refill_after_answer
        session.name = name
        try:
            session.set_limits(**given)
        except (OSError, RuntimeError):   # the cgroup refused: start one cold instead
            session.stop()
            return None
        session.label_container()         # its card: the new session's name, not the pool's
        return session


def pool_size(environ=os.environ) -> int:
    """How many containers the magics start ahead: SANDBOX_KERNEL_POOL
    (0 turns the pool off); UsageError for a value that is not 0..MAX_POOL."""
    text = environ.get(POOL_ENV, "").strip()
    if not text:
        return DEFAULT_POOL
    if not text.isdigit() or int(text) > MAX_POOL:
        raise UsageError(f"{POOL_ENV}={text!r}: not a pool size; accepted: 0 (no containers "
                         f"started ahead) to {MAX_POOL}; the default is {DEFAULT_POOL}")
    return int(text)


def pool_size_or_default(environ=os.environ) -> int:
    """pool_size, or the default when SANDBOX_KERNEL_POOL is bad (the magics say so when they load)."""
    try:
        return pool_size(environ)
    except UsageError:
        return DEFAULT_POOL


def parse_limits(strings: dict) -> Limits:
    """Limits from what a user typed ("512M", "1.5", "30s"); SpecError if bad
    ("none" too: a session's limit is lifted only where the policy has no cap,
    by the kernel's settings, which give None)."""
    return options.limits(strings, options.LIMITS)


def change_notes(session: Session, changes: dict) -> list[str]:
    notes = []
    if changes.get("changed"):
        notes.append(f"session {session.name!r}: {', '.join(changes['changed'])} changed "
                     f"({describe_limits(session)})")
    if changes.get("restart_needed"):
        notes.append(f"session {session.name!r}: {', '.join(changes['restart_needed'])} take effect on "
                     f"restart: run %container restart --name {session.name} (variables are lost)")
    return notes


def describe_limits(session: Session) -> str:
    limits = session.limits
    return ", ".join([
        f"memory {stats_contract.format_bytes(limits.memory) if limits.memory else 'unlimited'}",
        f"cpus {limits.cpus:g}" if limits.cpus else "cpus unlimited",
        f"pids {limits.pids}" if limits.pids else "pids unlimited",
        f"timeout {stats_contract.format_seconds(limits.timeout)}" if limits.timeout else "no timeout",
        f"net {session.network}", f"image {session.image}",
    ])

