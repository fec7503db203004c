"""The host side of a session: one container running the agent, and the
requests that go to it.  ``Session`` keeps the lifecycle (start, restart,
stop, what becomes of a cell); the parts it is made of:

    errors.py      SessionError, SessionBusy, VariableError
    transport.py   the socket, the log pipes, the frame reader, the ids
    exchange.py    one request until its reply: deadline, interrupt, kill
    outputs.py     output frames checked field by field, capped, made inert
    verdicts.py    what became of a cell, in plain words (pure functions)
    variables.py   push and pull (the bounded unpickler: unpickle.py)
    figures.py     the container's counters, status() and snapshot()
    live_limits.py limits changed on a running session (set_limits)
    comm_session.py  the comm relay's handler, the frontend's comm requests
    container_signals.py  SIGINT to the agent, kill, the launcher's group

    with Session("demo", limits=Limits(memory=256 << 20)) as session:
        result = session.execute("x = 41; print(x + 1)", on_output=print)
        result.status, result.stats["cell"], session.pull(["x"])   # "ok", ..., {"x": 41}

Everything the agent sends is untrusted: the user's code runs in the same
process and can write to the socket.  Imports the runtime (container,
images, spec, zygote) and the modules above.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import threading
import time
from dataclasses import dataclass

from ..runtime import images
from ..runtime.container import LifecycleError, State
from ..runtime.spec import ContainerSpec, Limits, parse_env, parse_mount, parse_network, parse_size
from . import image_agent, labels, stats as stats_contract, verdicts
from .agent_core import DEFAULT_OUTPUT_LIMIT, OUTPUT_LIMIT_ENV  # one definition, the agents'
from .comm_session import CommSession
from .container_signals import ContainerSignals
from .errors import SessionBusy, SessionError, VariableError  # noqa: F401 -- callers import them here
from .exchange import INTERRUPT_GRACE, TIMEOUT_GRACE, Control, Ending, Exchange, Interrupts, \
    OnInput, Outcome
from .figures import NetDev, SessionFigures
from .live_limits import LiveLimits
from .outputs import Display, OnOutput
from .pausing import Pausing
from .pressure_watch import MemoryPressure
from .spare import Spares
from .transport import Transport

from .preload import AGENT_MODULE, ZYGOTE_PRELOAD, start_zygote  # noqa: F401 -- callers import them here

REQUEST_TIMEOUT = 60.0        # a request that is not a cell (complete, push, ...)
WARM_WAIT = 60.0              # a request waits this long for a start begun in the background
DEATH_WAIT = 5.0              # EOF on the socket to the container's exit
HISTORY_SIZE = 100


@dataclass
class CellResult:
    """What became of one cell (or command).

    reply    the content of Jupyter's execute_reply (made up, status error,
             when the container died before replying)
    stats    the stats contract (stats.py)
    status   ok, error, timeout, oom or killed
    message  plain words when the container died, ran out of memory or the
             cell timed out; else None
    exit_code  the command's exit code (run_command only)
    restarted  True when this cell's container died and the session started
             a fresh one (the variables are gone; the count goes on)
    """
    reply: dict
    stats: dict
    status: str
    message: str | None = None
    exit_code: int | None = None
    restarted: bool = False


def prewarm() -> None:
    """Start this process's zygote now, so the first cell does not wait for
    its IPython import (kernels and the magics call this when they load)."""
    start_zygote()


class Session(Pausing, MemoryPressure, SessionFigures, LiveLimits, CommSession, Spares):
    """One container running the agent, started on first use and kept."""

    def __init__(self, name: str = "default", *, image: str = "host", limits: Limits = Limits(),
                 network: str = "none", mounts=(), output_limit=None, env=(),
                 timeout_grace: float = TIMEOUT_GRACE, interrupt_grace: float = INTERRUPT_GRACE,
                 trust_output: bool = False, notebook_dir=None, workdir: str | None = None):
        images.resolve(image)                 # ImageNotFound lists the images there are
        # the notebook's directory (runtime.spec.Mount; policy.notebook_mount),
        # or None: a fresh /workspace; and the cells' working directory, at or
        # below its target (None: the target); settable until the container
        # starts (commands.Sessions sets them)
        self.notebook_dir = notebook_dir
        self.workdir = workdir
        self.name = name
        self.image = image
        self.limits = limits
        self.network = parse_network(network)
        self.mounts = tuple(parse_mount(m) for m in mounts)
        self.env = tuple(parse_env(e) for e in env)
        if output_limit is None:              # the kernel's environment may set it
            output_limit = os.environ.get(OUTPUT_LIMIT_ENV) or DEFAULT_OUTPUT_LIMIT
        self.output_limit = parse_size(output_limit, f"output limit ({OUTPUT_LIMIT_ENV})")
        # trust_output False: display data from the container is made inert
        # for the browser (session/sanitize.py)
        self._display = Display(trust_output)
        self.cell_history: collections.deque[dict] = collections.deque(maxlen=HISTORY_SIZE)
        # _state guards the container reference and the net/dev fd: snapshot()
        # (the panel's thread) and a cell's thread never read them at once
        self._state = threading.Lock()
        self._container: Container | None = None
        self._net_dev = NetDev()
        self._transport = Transport()
        self._signals = ContainerSignals(lambda: self._container)
        self._interrupts = Interrupts(self._signals.sigint_agent)
        # one Control for every exchange: a grace changed while a cell runs
        # (the kernel's shutdown shortens interrupt_grace) holds at once
        self._control = Control(self._interrupts, self._signals.kill,
                                self._signals.launcher_in_our_group, timeout_grace, interrupt_grace)
        self._started_at: float | None = None
        self._execution_count = 0
        self._lock = threading.Lock()
        self._closed = False
        self._abandoned = False
        self._used = False                    # has a request reached this container?
        self._warming: threading.Thread | None = None

    timeout_grace = property(lambda self: self._control.timeout_grace,
                             lambda self, seconds: setattr(self._control, "timeout_grace", seconds))
    interrupt_grace = property(lambda self: self._control.interrupt_grace,
                               lambda self, seconds: setattr(self._control, "interrupt_grace", seconds))

    @property
    def trust_output(self) -> bool:
        """Settable any time, read at every output."""
        return self._display.trust_output

    @trust_output.setter
    def trust_output(self, value: bool) -> None:
        self._display.trust_output = bool(value)

    # -- lifecycle -----------------------------------------------------------

    @property
    def running(self) -> bool:
        container = self._container
        return container is not None and container.state is State.RUNNING

    def start(self) -> None:
        """Start the container and its agent (nothing if it runs already)."""
        if self.running:
            return
        self._discard()
        prewarm()                             # the zygote imports the agent, if this starts it
        launched = self._take_spare() or self._launch()   # spare.py: a restart takes the spare
        with self._state:
            self._container = launched.container
        self._transport.attach(launched.sock, launched.logs)
        self._started_at = time.monotonic()
        self._closed = False
        self._used = False

    def start_soon(self, delay: float = 0.0) -> None:
        """Start the container in a background thread, ahead of the first
        request (the magics' warm pool, commands.Sessions.warm_up), after
        ``delay`` seconds (a refill: the reply of the request that asked
        goes out first).  Every request and ``set_limits`` wait for that
        start first (at most WARM_WAIT; one in its delay begins at once);
        ``stop`` cancels one still in its delay.  If it failed, the first
        request starts the container again, and a second failure is that
        request's error."""
        if self.running or self._warming is not None:
            return
        self._closed = False
        self._hurry = threading.Event()
        self._warming = threading.Thread(target=self._start_in_background, args=(delay,), daemon=True,
                                         name=f"sbk-warm-{self.name}")
        self._warming.start()

    def _start_in_background(self, delay: float) -> None:
        self._hurry.wait(delay)
        if self._closed:                  # stopped meanwhile
            return
        try:
            self.start()
            self.arm_memory_watch()       # spare.py: not in the first cell's time
        except Exception:                 # noqa: BLE001 -- the first request tries again and reports it
            pass

    def _await_warm(self) -> None:
        thread = self._warming
        if thread is None or thread is threading.current_thread():
            return
        self._hurry.set()
        thread.join(WARM_WAIT)
        if thread.is_alive():
            raise SessionError(f"the container of session {self.name!r} did not start within "
                               f"{WARM_WAIT:g} s")
        self._warming = None

    @property
    def used(self) -> bool:
        """True once a cell, a command or a push reached the running
        container: from then on replacing it would lose the user's state."""
        return self._used

    def _spec(self, fd: int) -> ContainerSpec:
        # the owner's home: the agent writes it as ~ in tracebacks, as ipykernel does
        env = self.env + ((OUTPUT_LIMIT_ENV, str(self.output_limit)),
                          ("SANDBOX_KERNEL_OWNER_HOME", os.path.expanduser("~")))
        agent = image_agent.agent_launch(self.image, AGENT_MODULE, fd)  # the image's python3, or ours
        notebook = (self.notebook_dir,) if self.notebook_dir is not None else ()
        return ContainerSpec(
            command=agent.command,
            # the time limit is per cell (ours), not the container's
            limits=dataclasses.replace(self.limits, timeout=None),
            **self._network_spec(), mounts=self.mounts + agent.mounts + notebook, env=env + agent.env,
            image=self.image, pass_fds=(fd,), labels=labels.for_session(self.name),
            workdir=(self.workdir or notebook[0].target) if notebook else "/workspace")

    def restart(self) -> None:
        """A fresh container; the variables of the old one are lost."""
        with self._busy():
            self._discard()
            self.start()

    def stop(self) -> None:
        """Destroy the container.  Idempotent; a later execute starts a new one."""
        self._closed = True               # a start still in its delay does not begin
        try:
            self._await_warm()            # a start under way must not finish after us
        except SessionError:
            pass
        self._closed = True               # (one under way set it back)
        self._drop_spare()
        self._discard()

    close = stop

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _discard(self) -> None:
        """Destroy the container (if any) and close our ends of its channels."""
        with self._state:
            container, self._container = self._container, None
            self._net_dev.close()
        if container is not None:
            container.destroy()
        self._transport.close()
        self._started_at = None
        self._pressure_forget()           # pressure_watch.py: the container's memory watch
        if container is not None:
            self._comms_gone()

    # -- cells -----------------------------------------------------------------

    def execute(self, code: str, *, silent: bool = False, store_history: bool = True,
                on_output: OnOutput | None = None, timeout: float | None = None,
                user_expressions: dict | None = None, on_input: OnInput | None = None) -> CellResult:
        """Run a cell; outputs go to on_output(msg_type, content) as they come.
        ``timeout`` (seconds) overrides the session's per-cell limit.

        ``on_input(prompt, password)`` answers the cell's input() and
        getpass() (the frontend's stdin); it may raise EOFError or
        KeyboardInterrupt (ipykernel's _input_request does), which the cell
        then gets.  SIGINT interrupts it (KeyboardInterrupt, in the main
        thread), and the time it waits does not count against the cell's
        time limit.  None: the frontend has no stdin, and input() raises
        StdinNotImplementedError as in ipykernel."""
        # count_from: a fresh container's agent counts on from the old one's
        # last cell (only a new Session starts at 1, as a kernel restart does)
        request = {"type": "execute", "code": code, "silent": silent,
                   "count_from": self._execution_count + 1,
                   "store_history": store_history and not silent,
                   "user_expressions": user_expressions or {}, "allow_stdin": on_input is not None}
        return self._run_cell(request, on_output, timeout, on_input=on_input)

    def run_command(self, argv, *, on_output: OnOutput | None = None,
                    timeout: float | None = None) -> CellResult:
        """Run a program in the container (like docker exec), streaming its
        output; the result's exit_code is its exit status (128+N: signal N)."""
        if not isinstance(argv, (list, tuple)) or not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError("a command is a non-empty list of str, e.g. ['ps', 'aux']")
        return self._run_cell({"type": "command", "argv": list(argv)}, on_output, timeout,
                              command=True)

    def exec_command(self, argv, *, on_output: OnOutput | None = None,
                     timeout: float | None = None) -> tuple[int, str]:
        """(exit code, stdout and stderr text) of a program run in the container."""
        chunks = []

        def collect(kind, content):
            if kind == "stream":
                chunks.append(content["text"])
            if on_output is not None:
                on_output(kind, content)
        result = self.run_command(argv, on_output=collect, timeout=timeout)
        if result.exit_code is None:
            raise SessionError(result.message or f"the command did not run: "
                               f"{result.reply.get('ename')}: {result.reply.get('evalue')}")
        return result.exit_code, "".join(chunks)

    def _run_cell(self, request: dict, on_output, timeout, command: bool = False,
                  on_input: OnInput | None = None) -> CellResult:
        with self._busy():
            self.start()
            self._tell_resumed(on_output)     # pausing.py: the cell that woke the session says so
            self._used = True
            before, peaks_reset = self._cell_baseline()
            started = time.monotonic()
            limit = timeout if timeout is not None else self.limits.timeout
            self._pressure_begin()            # pressure_watch.py: the memory watch, until _pressure_end
            outcome = self._exchange(self._pressure_request(request), limit, cell=True,
                                     on_output=on_output, on_input=on_input)
            self._pressure_end()
            wall = time.monotonic() - started
            return self._conclude(outcome, before, peaks_reset, wall, limit, command)

    def _exchange(self, request: dict, timeout, *, cell: bool, on_output: OnOutput | None = None,
                  on_input: OnInput | None = None) -> Outcome:
        handler = self.comm_handler
        return Exchange(self._transport, self._with_parent(request), self._control, timeout, cell,
                        self.output_limit, self._display, on_output, on_input,
                        on_comm=handler.from_agent if handler is not None else None).run()

    def _cell_baseline(self) -> tuple[dict | None, bool]:
        try:
            peaks_reset = bool(self._container.cgroup.reset_peaks())
        except OSError:
            peaks_reset = False
        return self._counters(), peaks_reset

    def _conclude(self, outcome: Outcome, before, peaks_reset, wall, limit,
                  command: bool = False) -> CellResult:
        restarted = False
        if outcome.ending is Ending.REPLY:
            after = self._counters()
            status, message = self._judge_reply(outcome, before, after, limit)
            reply = outcome.reply
            message = verdicts.also(message, verdicts.pids_note(self.limits, before, after, reply))
            if verdicts.asks_exit(reply):
                self._reap(kill=False)
                message = "the cell called exit(): the container stopped; the next cell starts a fresh one"
        else:
            result = self._reap(kill=outcome.ending is not Ending.DIED)
            after = verdicts.result_counters(result)
            status, message = self._judge_death(outcome, result, before, after, limit)
            reply = verdicts.death_reply(status, message, self._execution_count + 1)
            message, restarted = self._restart_after_death(message)
        if isinstance(reply.get("execution_count"), int):
            self._execution_count = reply["execution_count"]
        figures = stats_contract.cell_figures(before, after, peaks_reset=peaks_reset)
        figures["memory_pressure"] = self._pressure_seen
        stats = stats_contract.build_stats(
            session=self.name, image=self.image, limits=self.limits,
            execution_count=None if command else reply.get("execution_count"),
            wall=wall, figures=figures, status=status, warnings=self._warnings_once() + self._pressure_warnings(),
            trusted_output=self.trust_output, network=self._network_dict())
        self.cell_history.append(stats)
        exit_code = verdicts.exit_code(reply) if command else None
        return CellResult(reply, stats, status, message, exit_code, restarted)

    def _warnings_once(self) -> list[str]:
        """The container's warnings (rootless: limits no cgroup enforces), in
        the footer of its first cell only."""
        container = self._container
        if container is None or getattr(self, "_warned", None) is container:
            return []
        self._warned = container
        return container.warnings

    def _judge_reply(self, outcome, before, after, limit) -> tuple[str, str | None]:
        return verdicts.judge_reply(outcome, before, after, limit, self.limits)

    def _judge_death(self, outcome, result, before, after, limit) -> tuple[str, str]:
        return verdicts.judge_death(outcome, result, before, after, limit, limits=self.limits,
                                    timeout_grace=self.timeout_grace,
                                    interrupt_grace=self.interrupt_grace,
                                    last_words=self._last_words())

    def _restart_after_death(self, message: str) -> tuple[str, bool]:
        """The message, and whether a fresh container was started."""
        if self._closed or self._abandoned:   # stopped, or its owner is going, while the cell ran
            return message.replace("the container was restarted", "the session was stopped"), False
        try:
            self.start()
        except Exception as exc:          # the cell's report must still reach the user
            return message.replace("was restarted", "could not be restarted") + f" ({exc})", False
        return message, True

    def abandon(self) -> None:
        """The owner is going (a kernel's shutdown): a container that dies is not replaced."""
        self._abandoned = True

    def _reap(self, kill: bool):
        """Wait for the dying container, read how it ended, destroy it."""
        container = self._container
        if container is None or container.state is State.DESTROYED:
            self._discard()
            return None
        if kill:
            container.kill()
        result = None
        try:
            result = container.wait(DEATH_WAIT)
        except (LifecycleError, OSError):
            pass
        self._transport.drain_logs(None)
        self._discard()
        return result

    def _last_words(self) -> str:
        return self._transport.last_words()

    # -- the editor's requests ---------------------------------------------------

    def complete(self, code: str, cursor_pos: int | None = None) -> dict:
        return self._request({"type": "complete", "code": code, "cursor_pos": cursor_pos})

    def inspect(self, code: str, cursor_pos: int | None = None, detail_level: int = 0) -> dict:
        return self._request({"type": "inspect", "code": code, "cursor_pos": cursor_pos,
                              "detail_level": detail_level})

    def is_complete(self, code: str) -> dict:
        return self._request({"type": "is_complete", "code": code})

    def history(self, **kwargs) -> dict:
        return self._request({"type": "history", **kwargs})

    def _request(self, request: dict, timeout: float = REQUEST_TIMEOUT) -> dict:
        """A request that is not a cell: its reply content, or an error reply
        when the agent does not answer in time or died."""
        with self._busy():
            self.start()
            self._used = self._used or request["type"] == "push"   # the others change nothing
            outcome = self._exchange(request, timeout, cell=False)
            if outcome.ending is Ending.REPLY:
                return outcome.reply
            if outcome.ending is Ending.GAVE_UP:
                return {"status": "error", "ename": "TimeoutError",
                        "evalue": f"the container did not answer {request['type']} within {timeout:g} s"}
            return self._died(outcome)

    def _died(self, outcome: Outcome) -> dict:
        """The error reply of a request whose container died, broke the
        protocol or was killed; the container is reaped."""
        result = self._reap(kill=outcome.ending is not Ending.DIED)
        message = f"the container broke the session protocol ({outcome.error})" \
            if outcome.ending is Ending.BROKEN else verdicts.how_it_ended(result, self._last_words())
        return {"status": "error", "ename": "ContainerDied",
                "evalue": f"{message}; the next request starts a fresh container"}

    # -- variables ---------------------------------------------------------------

    def push(self, values: dict) -> list[str]:
        """Set variables in the container (pickled).  VariableError names the
        variable that cannot be pickled."""
        from . import variables   # the unpickler's modules: only for push and pull
        return variables.push(self._request, values)

    def pull(self, names) -> dict:
        """Variables from the container, through the restricted unpickler."""
        from . import variables
        return variables.pull(self._request, names)

    # -- control -------------------------------------------------------------------

    def interrupt(self) -> None:
        """SIGINT to the agent: KeyboardInterrupt in the running cell (an idle
        agent ignores it).  If the cell does not stop within interrupt_grace
        seconds, the container is killed."""
        self._interrupts.interrupt()

    @contextlib.contextmanager
    def _busy(self):
        """One request at a time per session."""
        self._await_warm()
        if not self._lock.acquire(blocking=False):
            raise SessionBusy(f"session {self.name!r} is running another request")
        try:
            self._wake()                  # pausing.py: a paused session resumes by itself
            yield self
        finally:
            self._idle_again()            # and pauses again after idle_pause seconds of nothing
            self._lock.release()
            self._spare_soon()            # spare.py: the next restart's container, once answered
