"""The host side of a session: one container running the agent, and the
requests that go to it.

    from sandbox_kernel.session.client import Session
    from sandbox_kernel.runtime.spec import Limits

    with Session("demo", limits=Limits(memory=256 << 20)) as session:
        result = session.execute("x = 41; print(x + 1)",
                                 on_output=lambda kind, content: print(kind, content))
        result.status          # "ok"
        result.stats["cell"]   # the stats contract (stats.py)
        session.pull(["x"])    # {"x": 41}

How one request goes (``_Exchange``)::

    host                                   container
    start(): socketpair, 2 log pipes  -->  agent, its socket end as --fd N;
                                           fd 1 and 2 are the log pipes
    execute: frame out  ---------------->  shell.run_cell
             select([socket, log pipes], bounded wait) <-- stream/display/... frames
             on_output(kind, content)      (and fd 1/2 text as "stream")
             reply  <----------------------
             | no reply by the cell's time limit: SIGINT, and SIGKILL after a grace
             | EOF on the socket: the container died; Container.wait says how,
             |   the cgroup's OOM counter says why; a fresh container is started

Every wait is bounded: the loop never blocks in recv, a request that is not a
cell gives up after REQUEST_TIMEOUT, and a cell past its time limit (or an
interrupt the agent does not honour) ends with the container killed.

Everything the agent sends is untrusted: the user's code runs in the same
process and can write to the socket.  Frames are read by a bounded
FrameReader, ids are checked, output content is rebuilt field by field with
its types checked, and a frame that breaks the protocol gets the container
killed.  Pulled values are unpickled by ``unpickle.RestrictedUnpickler``,
which loads only plain data types, within a memory budget: plain ``pickle``
would let the container run code on the host, or fill its memory.

Commands (``exec_command``, ``run_command``; ``%%container --shell``) run as
a subprocess of the agent: a silent execute request runs a small snippet in a
private namespace that starts the process, streams its stdout and stderr as
they come, forwards an interrupt to it, and reports its exit code in a
display_data of EXIT_MIME that the host keeps to itself.  So a command sees
the same container (files, processes, limits) as the cells, and needs no
second way into the container's namespaces.
"""
from __future__ import annotations

import codecs
import collections
import dataclasses
import fcntl
import json
import os
import pickle
import re
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..runtime import images, zygote
from ..runtime.container import Container, LifecycleError, State
from ..runtime.cgroups.cpus import thread_environment
from ..runtime.images import ImageNotFound  # noqa: F401 -- re-exported (below)
from ..runtime.spec import ContainerSpec, Limits, SpecError, parse_cpus, parse_duration, parse_env, \
    parse_mount, parse_network, parse_pids, parse_size
from . import image_agent, protocol, sanitize, stats as stats_contract
from .protocol import ProtocolError
from .unpickle import (  # noqa: F401 -- re-exported: tests and callers use client's names
    SAFE_GLOBALS, RefusedGlobal, RestrictedUnpickler, restricted_loads, unpickle_pulled)

# ImageNotFound and SpecError are re-exported: the magics and the kernel talk
# only to session (DESIGN, boundaries), and catch these two from here.
AGENT_MODULE = "sandbox_kernel.session.agent"
OUTPUT_LIMIT_ENV = "SANDBOX_KERNEL_OUTPUT_LIMIT"
DEFAULT_OUTPUT_LIMIT = 1 << 20
EXIT_MIME = "application/vnd.sandbox-kernel.exit+json"

REQUEST_TIMEOUT = 60.0        # a request that is not a cell (complete, push, ...)
WARM_WAIT = 60.0              # a request waits this long for a start begun in the background
TIMEOUT_GRACE = 2.0           # after a cell's time limit: SIGINT, then this long to stop
INTERRUPT_GRACE = 5.0         # after a user's interrupt: this long to stop, then SIGKILL
GROUP_SIGNAL_DELAY = 0.5      # see _Exchange._forward_host_sigint
DEATH_WAIT = 5.0              # EOF on the socket to the container's exit
POLL_INTERVAL = 0.2           # longest select(); a signal handler's flag is seen this fast
INPUT_SEND_WAIT = 10.0        # seconds an agent may take to read an input_reply
HOST_OUTPUT_SLACK = 1 << 20   # see host_output_cap
LOG_PIPE_SIZE = 1 << 20
HISTORY_SIZE = 100
# outputs whose bundles sanitize.py makes inert unless the session trusts its output
_DISPLAY_KINDS = ("display_data", "update_display_data", "execute_result")

OnOutput = Callable[[str, dict], None]
# on_input(prompt, password) -> the frontend's answer: input() and getpass() in a cell
OnInput = Callable[[str, bool], str]


class SessionError(RuntimeError):
    """A request the session could not carry out; the message says why."""


class SessionBusy(SessionError):
    """Another request of this session is running (one at a time)."""


class VariableError(SessionError):
    """push or pull failed for one variable; ``name`` is it."""

    def __init__(self, name: str | None, message: str):
        self.name = name
        super().__init__(message)


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
    """
    reply: dict
    stats: dict
    status: str
    message: str | None = None
    exit_code: int | None = None


# ---------------------------------------------------------------------------
# What the agent sends, checked field by field


_OUTPUT_FIELDS = {
    "stream": {"name": str, "text": str},
    "display_data": {"data": dict, "metadata": dict, "transient": dict},
    "update_display_data": {"data": dict, "metadata": dict, "transient": dict},
    "execute_result": {"execution_count": int, "data": dict, "metadata": dict},
    "error": {"ename": str, "evalue": str, "traceback": list},
    "clear_output": {"wait": bool},
}
_OPTIONAL = {"transient": dict, "metadata": dict}


def clean_output(msg: dict) -> dict:
    """The Jupyter content of an output frame, with only its known fields;
    ProtocolError when one is missing or of the wrong type."""
    kind = msg["type"]
    content = {}
    for field, kind_of in _OUTPUT_FIELDS[kind].items():
        if field not in msg and field in _OPTIONAL:
            content[field] = kind_of()
            continue
        value = msg.get(field)
        if not isinstance(value, kind_of) or (kind_of is int and isinstance(value, bool)):
            raise ProtocolError(f"{kind} frame: {field!r} must be {kind_of.__name__}, "
                                f"got {type(value).__name__}")
        content[field] = value
    if kind == "stream" and content["name"] not in ("stdout", "stderr"):
        raise ProtocolError(f"stream frame: name must be stdout or stderr, got {content['name']!r}")
    if kind == "error" and not all(isinstance(line, str) for line in content["traceback"]):
        raise ProtocolError("error frame: traceback must be a list of str")
    return content


def host_output_cap(output_limit: int) -> int:
    """Characters of output per request the host passes on.  The agent cuts a
    cell's stream text, displays and result at ``output_limit`` bytes (as
    JSON, whose escapes make them longer than the characters), and sends
    notices and an error beyond it: an agent past this cap is a cell writing
    frames of its own, and the rest of its output is dropped."""
    return 2 * output_limit + HOST_OUTPUT_SLACK


def _content_size(content: dict) -> int:
    """Characters of one output: its text, every data value (those that
    are not text as JSON), its metadata, an error's value and traceback."""
    if "text" in content:
        return len(content["text"])
    if "traceback" in content:
        return len(content["evalue"]) + sum(len(line) for line in content["traceback"])
    size = sum(len(v) if isinstance(v, str) else len(json.dumps(v))
               for v in content.get("data", {}).values())
    return size + sum(len(json.dumps(content[k])) for k in ("metadata", "transient") if content.get(k))


# ---------------------------------------------------------------------------
# Commands: the snippet the agent runs for exec_command


COMMAND_SNIPPET = r'''
import codecs, os, selectors, signal, subprocess, sys, time

def _pump(proc):
    sel = selectors.DefaultSelector()
    outs = {proc.stdout: sys.stdout, proc.stderr: sys.stderr}
    decoders = {f: codecs.getincrementaldecoder("utf-8")("replace") for f in outs}
    for f in outs:
        sel.register(f, selectors.EVENT_READ)
    stop_at = None
    while outs:
        try:
            events = sel.select(0.1)
            for key, _ in events:
                data = os.read(key.fd, 65536)
                f = key.fileobj
                if data:
                    outs[f].write(decoders[f].decode(data))
                else:
                    outs[f].write(decoders[f].decode(b"", True))
                    sel.unregister(f)
                    del outs[f]
            if not events and proc.poll() is not None:
                break        # exited; a background child may hold the pipes
            if stop_at is not None and time.monotonic() > stop_at and proc.poll() is None:
                proc.kill()
        except KeyboardInterrupt:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT) if stop_at is None else proc.kill()
            stop_at = stop_at or time.monotonic() + 2
    sys.stdout.flush()
    sys.stderr.flush()
    code = proc.wait()
    return 128 - code if code < 0 else code

def _run(argv, mime):
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        sys.stderr.write(f"{argv[0]}: {exc.strerror}\n")
        code = 127 if isinstance(exc, FileNotFoundError) else 126
    else:
        with proc:
            code = _pump(proc)
    from IPython.display import publish_display_data
    publish_display_data({mime: {"exit_code": code}})

_run(ARGV, MIME)
'''


def command_code(argv) -> str:
    """One line of Python that runs ``argv`` through COMMAND_SNIPPET without
    binding a name in the user's namespace."""
    if not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("a command is a non-empty list of str, e.g. ['ps', 'aux']")
    names = {"__name__": "__sbk_command__", "ARGV": list(argv), "MIME": EXIT_MIME}
    return f"__import__('builtins').exec({COMMAND_SNIPPET!r}, {names!r})"


# ---------------------------------------------------------------------------
# The session


@dataclass
class _Outcome:
    ending: str                 # reply, died, timeout_killed, interrupt_killed, broken, gave_up
    reply: dict | None = None
    timed_out: bool = False
    error: str | None = None
    exit_code: int | None = None


def prewarm() -> None:
    """Start this process's zygote now, so the first cell does not wait for
    its IPython import (kernels and the magics call this when they load)."""
    if zygote.enabled():
        zygote.shared()


class Session:
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
        self.timeout_grace = timeout_grace
        self.interrupt_grace = interrupt_grace
        # False: display data from the container is made inert for the browser
        # (session/sanitize.py); settable any time, read at every output
        self.trust_output = bool(trust_output)
        self._drop_noted = False              # the one note that output was dropped
        self.cell_history: collections.deque[dict] = collections.deque(maxlen=HISTORY_SIZE)
        self._container: Container | None = None
        self._sock: socket.socket | None = None
        self._logs: dict[int, tuple[str, codecs.IncrementalDecoder]] = {}
        self._log_tail = collections.deque(maxlen=20)
        self._reader: protocol.FrameReader | None = None
        self._started_at: float | None = None
        self._next_id = 0
        self._recent_cells: collections.deque[int] = collections.deque(maxlen=16)
        self._stale: set[int] = set()
        self._execution_count = 0
        self._lock = threading.Lock()
        self._interrupt_at: float | None = None
        self._closed = False
        self._used = False                    # has a request reached this container?
        self._net_dev: int | None = None      # the container's /proc/PID/net/dev, kept open
        self._warming: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._container is not None and self._container.state is State.RUNNING

    def start(self) -> None:
        """Start the container and its agent (nothing if it runs already)."""
        if self.running:
            return
        self._discard()
        ours, theirs = socket.socketpair()
        pipes = [os.pipe() for _ in ("stdout", "stderr")]
        try:
            container = Container(self._spec(theirs.fileno()), stdin=subprocess.DEVNULL,
                                  stdout=pipes[0][1], stderr=pipes[1][1])
            container.start()
        except BaseException:
            ours.close()
            for r, _ in pipes:
                os.close(r)
            raise
        finally:
            theirs.close()
            for _, w in pipes:
                os.close(w)
        ours.setblocking(False)
        self._container, self._sock = container, ours
        self._reader = protocol.FrameReader()
        self._logs = {}
        for (r, _), stream in zip(pipes, ("stdout", "stderr")):
            _prepare_log_pipe(r)
            self._logs[r] = (stream, codecs.getincrementaldecoder("utf-8")("replace"))
        self._started_at = time.monotonic()
        self._execution_count = 0
        self._closed = False
        self._used = False

    def start_soon(self) -> None:
        """Start the container in a background thread, ahead of the first
        request (the magics' warm pool, commands.Sessions.warm_up).  Every
        request, ``set_limits`` and ``stop`` wait for that start first (at
        most WARM_WAIT).  If it failed, the first request starts the
        container again, and a second failure is that request's error."""
        if self.running or self._warming is not None:
            return
        self._closed = False
        self._warming = threading.Thread(target=self._start_in_background, daemon=True,
                                         name=f"sbk-warm-{self.name}")
        self._warming.start()

    def _start_in_background(self) -> None:
        try:
            self.start()
        except Exception:                 # noqa: BLE001 -- the first request tries again and reports it
            pass

    def _await_warm(self) -> None:
        thread = self._warming
        if thread is None or thread is threading.current_thread():
            return
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
            network=self.network, mounts=self.mounts + agent.mounts + notebook, env=env + agent.env,
            image=self.image, pass_fds=(fd,),
            workdir=(self.workdir or notebook[0].target) if notebook else "/workspace")

    def restart(self) -> None:
        """A fresh container; the variables of the old one are lost."""
        with self._busy():
            self._discard()
            self.start()

    def stop(self) -> None:
        """Destroy the container.  Idempotent; a later execute starts a new one."""
        try:
            self._await_warm()            # a start under way must not finish after us
        except SessionError:
            pass
        self._discard()
        self._closed = True

    close = stop

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _discard(self) -> None:
        """Destroy the container (if any) and close our ends of its channels."""
        container, self._container = self._container, None
        if container is not None:
            container.destroy()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        # swap, then pop: a _read_log at EOF in another thread pops the same
        # dict, so each fd is closed exactly once (a second close could hit a
        # number ZeroMQ was handed meanwhile)
        logs, self._logs = self._logs, {}
        while logs:
            try:
                fd, _ = logs.popitem()
            except KeyError:
                break
            os.close(fd)
        self._reader = None
        self._started_at = None
        net_dev, self._net_dev = self._net_dev, None
        if net_dev is not None:
            os.close(net_dev)

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
        request = {"type": "execute", "code": code, "silent": silent,
                   "store_history": store_history and not silent,
                   "user_expressions": user_expressions or {}, "allow_stdin": on_input is not None}
        return self._run_cell(request, on_output, timeout, on_input=on_input)

    def run_command(self, argv, *, on_output: OnOutput | None = None,
                    timeout: float | None = None) -> CellResult:
        """Run a program in the container (like docker exec), streaming its
        output; the result's exit_code is its exit status (128+N: signal N)."""
        request = {"type": "execute", "code": command_code(argv), "silent": True,
                   "store_history": False, "user_expressions": {}, "allow_stdin": False}
        return self._run_cell(request, on_output, timeout, command=True)

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
            self._used = True
            before, peaks_reset = self._cell_baseline()
            started = time.monotonic()
            limit = timeout if timeout is not None else self.limits.timeout
            outcome = _Exchange(self, request, on_output, limit, cell=True, command=command,
                                on_input=on_input).run()
            wall = time.monotonic() - started
            return self._conclude(outcome, before, peaks_reset, wall, limit, command)

    def _cell_baseline(self) -> tuple[dict | None, bool]:
        try:
            peaks_reset = bool(self._container.cgroup.reset_peaks())
        except OSError:
            peaks_reset = False
        return self._counters(), peaks_reset

    def _conclude(self, outcome: _Outcome, before, peaks_reset, wall, limit,
                  command: bool = False) -> CellResult:
        if outcome.ending == "reply":
            after = self._counters()
            status, message = self._judge_reply(outcome, before, after, limit)
            reply = outcome.reply
            message = _also(message, _pids_note(self.limits, before, after, reply))
            if _asks_exit(reply):
                self._reap(kill=False)
                message = "the cell called exit(): the container stopped; the next cell starts a fresh one"
        else:
            result = self._reap(kill=outcome.ending != "died")
            after = _result_counters(result)
            status, message = self._judge_death(outcome, result, before, after, limit)
            reply = _death_reply(status, message, self._execution_count + 1)
            message = self._restart_after_death(message)
        if isinstance(reply.get("execution_count"), int):
            self._execution_count = reply["execution_count"]
        figures = stats_contract.cell_figures(before, after, peaks_reset=peaks_reset)
        stats = stats_contract.build_stats(
            session=self.name, image=self.image, limits=self.limits,
            execution_count=None if command else reply.get("execution_count"),
            wall=wall, figures=figures, status=status, warnings=self._warnings_once(),
            trusted_output=self.trust_output)
        self.cell_history.append(stats)
        return CellResult(reply, stats, status, message, outcome.exit_code)

    def _warnings_once(self) -> list[str]:
        """The container's warnings (rootless: limits no cgroup enforces), in
        the footer of its first cell only."""
        container = self._container
        if container is None or getattr(self, "_warned", None) is container:
            return []
        self._warned = container
        return container.warnings

    def _judge_reply(self, outcome, before, after, limit) -> tuple[str, str | None]:
        status = "ok" if outcome.reply.get("status") == "ok" else "error"
        oom = stats_contract.delta((before or {}).get("oom_kills"), (after or {}).get("oom_kills"))
        if outcome.timed_out:
            return "timeout", (f"the cell ran past its {stats_contract.format_seconds(limit)} "
                               "time limit and was interrupted; the container and its variables are kept")
        if oom:
            return "oom", (f"a process of the cell ran out of memory{_at_limit(self.limits)}"
                           f"{_files_share(after, self.limits)} and was killed; the container "
                           "and its variables are kept")
        return status, _disk_note(outcome.reply, after, self.limits)

    def _judge_death(self, outcome, result, before, after, limit) -> tuple[str, str]:
        lost = "the container was restarted and its variables are lost"
        oom = stats_contract.delta((before or {}).get("oom_kills"), (after or {}).get("oom_kills"))
        if outcome.ending == "timeout_killed":
            return "timeout", (f"the cell ran past its {stats_contract.format_seconds(limit)} time limit "
                               f"and did not stop within {self.timeout_grace:g} s of the interrupt, "
                               f"so it was killed; {lost}")
        if outcome.ending == "interrupt_killed":
            return "killed", (f"the cell did not stop within {self.interrupt_grace:g} s of the "
                              f"interrupt, so it was killed; {lost}")
        if outcome.ending == "broken":
            return "killed", f"the container broke the session protocol ({outcome.error}), so it was killed; {lost}"
        if oom or (result is not None and result.status == "oom"):
            peak = (after or {}).get("memory_peak")
            peak_text = f" (peak {stats_contract.format_bytes(peak)})" if peak is not None else ""
            return "oom", (f"the cell ran out of memory{_at_limit(self.limits)}{peak_text}"
                           f"{_files_share(after, self.limits)}; {lost}")
        return "killed", f"{_how_it_ended(result, self._last_words())}; {lost}"

    def _restart_after_death(self, message: str) -> str:
        if self._closed:                  # stopped from another thread while the cell ran
            return message.replace("the container was restarted", "the session was stopped")
        try:
            self.start()
        except Exception as exc:          # the cell's report must still reach the user
            return message.replace("was restarted", "could not be restarted") + f" ({exc})"
        return message

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
        self._drain_logs(None)
        self._discard()
        return result

    def _last_words(self) -> str:
        return "".join(self._log_tail).strip()[-500:]

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
            outcome = _Exchange(self, request, None, timeout, cell=False).run()
            if outcome.ending == "reply":
                return outcome.reply
            if outcome.ending == "gave_up":
                return {"status": "error", "ename": "TimeoutError",
                        "evalue": f"the container did not answer {request['type']} within {timeout:g} s"}
            result = self._reap(kill=outcome.ending != "died")
            message = _how_it_ended(result, self._last_words()) if outcome.ending == "died" \
                else f"the container broke the session protocol ({outcome.error})"
            return {"status": "error", "ename": "ContainerDied",
                    "evalue": f"{message}; the next request starts a fresh container"}

    # -- variables ---------------------------------------------------------------

    def push(self, values: dict) -> list[str]:
        """Set variables in the container (pickled).  VariableError names the
        variable that cannot be pickled."""
        for name in values:
            if not (isinstance(name, str) and name.isidentifier()):
                raise VariableError(str(name), f"cannot push {name!r}: not a variable name")
        try:
            text = protocol.pack_values(values)
        except Exception:
            raise _unpicklable(values) from None
        reply = self._request({"type": "push", "values": text})
        if reply.get("status") != "ok":
            raise VariableError(reply.get("name"), f"push failed: {reply.get('evalue') or reply}")
        return list(reply.get("values") or values)

    def pull(self, names) -> dict:
        """Variables from the container, through the restricted unpickler.
        One request per name, so that a refusal names its variable."""
        values = {}
        for name in names:
            reply = self._request({"type": "pull", "names": [name]})
            if reply.get("status") != "ok":
                raise VariableError(name, reply.get("evalue") or f"cannot pull {name!r}")
            if not isinstance(reply.get("values"), str):
                raise VariableError(name, f"cannot pull {name!r}: the agent sent no values")
            values[name] = unpickle_pulled(name, reply["values"])
        return values

    # -- control -------------------------------------------------------------------

    def interrupt(self) -> None:
        """SIGINT to the agent: KeyboardInterrupt in the running cell (an idle
        agent ignores it).  If the cell does not stop within interrupt_grace
        seconds, the container is killed."""
        container = self._container
        if container is not None and container.state is State.RUNNING:
            self._interrupt_at = time.monotonic()
            try:
                container.signal(signal.SIGINT)
            except (LifecycleError, ProcessLookupError):
                pass

    def set_limits(self, **strings) -> dict:
        """Change limits from what a user typed: memory, cpus, pids, timeout,
        net, image, disk.  memory, cpus and pids change live; timeout applies
        to the next cell; net, image and disk need a restart (they are kept
        for it).  A container no cell has used yet (one started ahead) has
        nothing to lose: for net, image and disk it is replaced at once.
        Returns {"changed": [...], "restart_needed": [...]}."""
        self._await_warm()                # a start under way gets the new limits too
        parsers = {"memory": lambda v: parse_size(v, "memory"), "cpus": parse_cpus,
                   "pids": parse_pids, "timeout": lambda v: parse_duration(v, "timeout"),
                   "disk": lambda v: parse_size(v, "disk")}
        unknown = set(strings) - set(parsers) - {"net", "image"}
        if unknown:
            raise SessionError(f"unknown limit {', '.join(sorted(unknown))}: "
                               "memory, cpus, pids, timeout, disk, net, image")
        new = {key: parsers[key](value) for key, value in strings.items()
               if key in parsers and value is not None}
        limits = dataclasses.replace(self.limits, **new)
        changed = [key for key in new if getattr(limits, key) != getattr(self.limits, key)]
        if self.running and any(k in changed for k in ("memory", "cpus", "pids")):
            self._container.update_limits(dataclasses.replace(
                limits, timeout=None, disk=self._container.spec.limits.disk))
            if "cpus" in changed:
                self._follow_thread_variables(self.limits.cpus, limits.cpus)
        restart = [key for key in changed if key == "disk"]
        restart += self._set_placement(strings.get("net"), strings.get("image"))
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
        old, new = thread_environment(old_cpus), thread_environment(new_cpus)
        chosen = {name for name, _ in self.env} | set(images.environment(self.image))
        changes = {name: [old.get(name), new.get(name)] for name in sorted({*old, *new})
                   if old.get(name) != new.get(name) and name not in chosen}
        if not changes:
            return
        try:
            self._request({"type": "update_environ", "changes": changes}, timeout=10)
        except SessionBusy:          # a cell runs (another thread): its variables stay
            pass

    def _set_placement(self, net, image) -> list[str]:
        changed = []
        if net is not None and parse_network(net) != self.network:
            self.network = parse_network(net)
            changed.append("net")
        if image is not None and image != self.image:
            self.image = images.resolve(image)
            changed.append("image")
        return changed

    # -- figures -------------------------------------------------------------------

    def status(self) -> dict:
        """Name, image, limits, state, pid, uptime and the current figures."""
        container = self._container
        state = container.state.value if container is not None else ("stopped" if self._closed else "not started")
        if self._warming is not None and self._warming.is_alive():
            state = "starting"
        return {
            "name": self.name, "image": self.image, "network": self.network,
            "limits": stats_contract.limits_dict(self.limits), "state": state,
            "container": container.name if container is not None else None,
            "pid": container.pid if container is not None else None,
            "uptime": time.monotonic() - self._started_at if self._started_at else None,
            "cells": len(self.cell_history), "execution_count": self._execution_count,
            "stats": self._counters() if self.running else None,
        }

    def stats(self) -> dict:
        """The stats contract for the whole container so far (not one cell):
        cpu and io since it started; status null while it is idle."""
        figures = stats_contract.cell_figures(None, self._counters() if self.running else None,
                                              peaks_reset=True)
        uptime = time.monotonic() - self._started_at if self._started_at else None
        return stats_contract.build_stats(
            session=self.name, image=self.image, limits=self.limits,
            execution_count=self._execution_count, wall=uptime, figures=figures, status=None,
            warnings=self._container.warnings if self.running else None,
            trusted_output=self.trust_output)

    def _counters(self) -> dict | None:
        """CgroupStats of the container plus net_rx/net_tx; None if none runs."""
        container = self._container
        if container is None or container.cgroup is None:
            return None
        try:
            figures = container.stats().as_dict()
        except (LifecycleError, OSError):
            return None
        figures.update(self._net_counters(container))
        return figures

    def _net_counters(self, container) -> dict:
        """Bytes through the container's own network namespace (loopback
        excluded); null on the host's network, where they are the host's."""
        unknown = {"net_rx": None, "net_tx": None}
        if self.network == "host":
            return unknown
        try:
            if self._net_dev is None:
                self._net_dev = _open_net_dev(container)
            return parse_net_dev(os.pread(self._net_dev, 1 << 16, 0).decode("ascii"))
        except (OSError, IndexError, ValueError):
            return unknown

    # -- plumbing ------------------------------------------------------------------

    def _busy(self):
        return _Busy(self)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _drain_logs(self, on_output: OnOutput | None, budget: list | None = None) -> None:
        """Whatever the container wrote to its fds 1 and 2 (not through the
        agent), as stream output; read until the pipes are empty."""
        for fd in list(self._logs):
            while self._read_log(fd, on_output, budget):
                pass

    def _read_log(self, fd: int, on_output, budget) -> bool:
        """One read of a log pipe; False when it is empty or closed."""
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, OSError):
            return False
        if not data:                      # every writer is gone: the container ended
            if self._logs.pop(fd, None) is not None:   # else _discard closes it
                os.close(fd)
            return False
        entry = self._logs.get(fd)
        if entry is None:                 # discarded meanwhile
            return False
        stream, decoder = entry
        text = decoder.decode(data)
        if stream == "stderr":
            self._log_tail.append(text[-500:])
        if on_output is not None and text:
            if budget is not None:
                text = budget[0].admit(text)
            if text:
                on_output("stream", {"name": stream, "text": text})
        return True


class _Busy:
    """One request at a time per session."""

    def __init__(self, session: Session):
        self.session = session

    def __enter__(self):
        self.session._await_warm()
        if not self.session._lock.acquire(blocking=False):
            raise SessionBusy(f"session {self.session.name!r} is running another request")
        return self

    def __exit__(self, *exc):
        self.session._lock.release()


class _Budget:
    """Characters of fd output (not through the agent) a request may still pass on."""

    def __init__(self, limit: int):
        self.limit, self.used, self.dropped = limit, 0, 0

    def admit(self, text: str) -> str:
        room = max(self.limit - self.used, 0)
        kept = text[:room]
        self.used += len(kept)
        self.dropped += len(text) - len(kept)
        return kept


class _Exchange:
    """One request and everything the agent sends until its reply.

    Bounded: select() waits at most POLL_INTERVAL; a cell's time limit
    interrupts and then kills; a request that is not a cell gives up at its
    timeout (its late reply is recognised and dropped).  EOF on the socket is
    the container's death.
    """

    def __init__(self, session: Session, request: dict, on_output, timeout, *, cell: bool,
                 command: bool = False, on_input: OnInput | None = None):
        self.session = session
        self.id = session._new_id()
        self.request = {**request, "id": self.id}
        self.on_output = on_output
        self.on_input = on_input
        self.timeout = timeout
        self.cell = cell
        self.command = command
        self.outcome: _Outcome | None = None
        self.timed_out = False
        self.kill_at: float | None = None
        self.sigint_at: float | None = None
        self.forwarded = False
        self.exit_code: int | None = None
        self.passed_bytes = 0
        self.dropped_frames = 0
        self.log_budget = [_Budget(session.output_limit)]
        self.output_cap = host_output_cap(session.output_limit)

    def run(self) -> _Outcome:
        session = self.session
        try:
            outbox = memoryview(protocol.encode(self.request))
        except (ProtocolError, TypeError, ValueError) as exc:
            raise SessionError(f"cannot send the {self.request['type']} request: {exc}") from None
        self._bound_frames()
        if self.cell and self.request["type"] == "execute" and not self.command:
            session._recent_cells.append(self.id)
        session._interrupt_at = None
        session._log_tail.clear()
        start = time.monotonic()
        self.deadline = start + self.timeout if self.timeout else None
        with _SigintToFlag(self):
            while self.outcome is None:
                try:
                    self._check_clock(time.monotonic())
                    if self.outcome is not None:
                        break
                    outbox = self._wait_and_move(outbox)
                except KeyboardInterrupt:   # not in the main thread: no handler of ours
                    self.sigint_at = self.sigint_at or time.monotonic()
        self._finish_notices()
        self.outcome.timed_out = self.timed_out
        self.outcome.exit_code = self.exit_code
        return self.outcome

    def _bound_frames(self) -> None:
        """The host's frame limit for this request: a cell's frames are small
        (protocol.cell_frame_limit: the agent cuts its outputs to fit), so
        reading one never costs the host more than a few MB; push and pull
        replies, and a late reply of a request given up on, may be larger."""
        session = self.session
        small = self.request["type"] == "execute" and not session._stale
        if session._reader is not None:
            session._reader.max_frame = protocol.cell_frame_limit(session.output_limit) if small \
                else protocol.DEFAULT_MAX_FRAME

    def _wait_and_move(self, outbox: memoryview) -> memoryview:
        session = self.session
        if session._sock is None:         # stopped from another thread
            self.outcome = _Outcome("died")
            return outbox
        readers = [session._sock, *session._logs]
        writers = [session._sock] if outbox else []
        try:
            readable, writable, _ = select.select(readers, writers, [], self._wait())
        except InterruptedError:
            return outbox
        if writable:
            try:
                sent = session._sock.send(outbox[:1 << 20])
                outbox = outbox[sent:]
            except BlockingIOError:
                pass
            except OSError:               # EPIPE, ECONNRESET: the agent is gone
                self.outcome = _Outcome("died")
                return outbox
        for fd in readable:
            if fd is session._sock:
                self._read_socket()
            elif self.outcome is None:
                session._read_log(fd, self.on_output, self.log_budget)
        return outbox

    def _wait(self) -> float:
        now, wait = time.monotonic(), POLL_INTERVAL
        for moment in (self.deadline, self.kill_at):
            if moment is not None:
                wait = min(wait, max(moment - now, 0.0))
        return wait

    # -- time ------------------------------------------------------------------

    def _check_clock(self, now: float) -> None:
        session = self.session
        if self.kill_at is not None and now >= self.kill_at:
            self.outcome = _Outcome("timeout_killed" if self.timed_out else "interrupt_killed")
            return
        if self.deadline is not None and now >= self.deadline and not self.timed_out:
            if not self.cell:
                session._stale.add(self.id)
                self.outcome = _Outcome("gave_up")
                return
            self.timed_out = True
            self.kill_at = now + session.timeout_grace
            session.interrupt()
            return
        self._forward_host_sigint(now)
        if self.cell and session._interrupt_at is not None and self.kill_at is None:
            self.kill_at = session._interrupt_at + session.interrupt_grace

    def _forward_host_sigint(self, now: float) -> None:
        """A SIGINT to this process (the kernel's interrupt) goes on to the agent.

        jupyter_client interrupts a kernel with killpg: every process of the
        kernel's group gets it, and the container's launcher is one of them
        (it forwards to init, which forwards to the agent).  Then the agent
        is interrupted already, and one more SIGINT would interrupt its
        traceback too.  So when the launcher shares our group, we wait
        GROUP_SIGNAL_DELAY for the cell to stop before sending our own.
        """
        if self.sigint_at is None or self.forwarded:
            return
        delay = GROUP_SIGNAL_DELAY if self._launcher_in_our_group() else 0.0
        if now >= self.sigint_at + delay:
            self.forwarded = True
            self.session.interrupt()
            self.session._interrupt_at = self.sigint_at

    def _launcher_in_our_group(self) -> bool:
        container = self.session._container
        try:
            return container is not None and os.getpgid(container.pid) == os.getpgrp()
        except (OSError, TypeError):
            return False

    # -- frames ----------------------------------------------------------------

    def _read_socket(self) -> None:
        session = self.session
        try:
            data = session._sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.outcome = _Outcome("died")
            return
        try:
            for msg in session._reader.feed(data):
                self._dispatch(msg)
                if self.outcome is not None:
                    return
        except ProtocolError as exc:
            self.outcome = _Outcome("broken", error=str(exc))

    def _dispatch(self, msg: dict) -> None:
        kind, msg_id = msg["type"], msg.get("id")
        if msg_id is not None and type(msg_id) is not int:    # a list would not hash below
            raise ProtocolError(f"a {kind:.60} frame whose id is a {type(msg_id).__name__}, not an int")
        session = self.session
        if kind == protocol.REPLY:
            if msg_id in session._stale and msg_id != self.id:
                session._stale.discard(msg_id)
                return
            if msg_id != self.id:
                raise ProtocolError(f"a reply for request {msg_id!r} while request {self.id} was waiting")
            if not isinstance(msg.get("content"), dict):
                raise ProtocolError("a reply without a content object")
            self.outcome = _Outcome("reply", reply=msg["content"])
            return
        if kind == protocol.INPUT_REQUEST:
            self._answer_input(msg)
            return
        if kind not in protocol.OUTPUT_TYPES:
            raise ProtocolError(f"unknown message type {kind!r:.60}")
        content = clean_output(msg)
        if msg_id != self.id and msg_id not in session._recent_cells:
            return                 # output of a request we gave up on
        if self.command and kind == "display_data" and EXIT_MIME in content["data"]:
            self._take_exit_code(content["data"][EXIT_MIME])
            return
        self._pass_on(kind, content)

    # -- input() in the cell ------------------------------------------------------

    def _answer_input(self, msg: dict) -> None:
        """The frontend's answer to the cell's input() or getpass(), sent back
        at once: the agent waits for nothing else.  The prompt is the
        agent's (untrusted): plain text, cut to INPUT_PROMPT_LIMIT."""
        prompt, password, number = msg.get("prompt"), msg.get("password"), msg.get("n")
        if msg.get("id") != self.id or not self.cell:
            raise ProtocolError(f"an input_request for request {msg.get('id')!r} while request "
                                f"{self.id} ({self.request['type']}) was waiting")
        if not (isinstance(prompt, str) and type(password) is bool and type(number) is int):
            raise ProtocolError("an input_request needs a str prompt, a bool password and an int n")
        answer = self._ask_frontend(prompt[:protocol.INPUT_PROMPT_LIMIT], password)
        self._send_now({"type": protocol.INPUT_REPLY, "id": self.id, "n": number, **answer})

    def _ask_frontend(self, prompt: str, password: bool) -> dict:
        if self.on_input is None:
            return {"error": "StdinNotImplementedError", "message": protocol.NO_STDIN}
        started = time.monotonic()
        try:
            with _SigintRaises():
                value = self.on_input(prompt, password)
        except KeyboardInterrupt:       # the user interrupted the wait: so is the cell
            return {"error": "KeyboardInterrupt", "message": "Interrupted by user"}
        except Exception as exc:        # EOFError, StdinNotImplementedError...: the cell's to see
            return {"error": type(exc).__name__, "message": str(exc)[:1000]}
        finally:
            if self.deadline is not None:   # a person typing is not the cell running
                self.deadline += time.monotonic() - started
        if not isinstance(value, str):
            return {"error": "TypeError", "message": f"the answer is a {type(value).__name__}, not str"}
        if len(value) > protocol.INPUT_VALUE_LIMIT:
            return {"error": "ValueError", "message": (
                f"the answer is {len(value)} characters, more than input() takes "
                f"({protocol.INPUT_VALUE_LIMIT})")}
        return {"value": value}

    def _send_now(self, msg: dict) -> None:
        """One small frame, written whole before anything else is read (the
        socket is non-blocking); an agent that takes none of it within
        INPUT_SEND_WAIT is stuck, and its stream lost: the container goes."""
        frame = memoryview(protocol.encode(msg))
        give_up = time.monotonic() + INPUT_SEND_WAIT
        sock = self.session._sock
        while frame and sock is not None:
            remaining = give_up - time.monotonic()
            try:
                if remaining <= 0 or not select.select([], [sock], [], remaining)[1]:
                    break
                frame = frame[sock.send(frame):]
            except BlockingIOError:
                continue
            except OSError:
                break
        if frame:
            raise ProtocolError(f"the agent did not take the input_reply within {INPUT_SEND_WAIT} s")

    def _take_exit_code(self, value) -> None:
        code = value.get("exit_code") if isinstance(value, dict) else None
        if isinstance(code, int) and not isinstance(code, bool):
            self.exit_code = code

    def _pass_on(self, kind: str, content: dict) -> None:
        if self.on_output is None:
            return
        size = _content_size(content)
        if self.passed_bytes + size > self.output_cap and kind != "error":
            self.dropped_frames += 1
            return
        self.passed_bytes += size
        if kind in _DISPLAY_KINDS and not self.session.trust_output:
            content = self._inert(content)
        self.on_output(kind, content)

    def _inert(self, content: dict) -> dict:
        """Display data made inert for the browser (sanitize.py); the first
        time a session drops a type, one line on stderr says so."""
        clean = sanitize.sanitize_bundle(content["data"], content["metadata"])
        if clean.dropped and not self.session._drop_noted:
            self.session._drop_noted = True
            self.on_output("stream", {"name": "stderr", "text": (
                f"[sandbox] not shown: {', '.join(clean.dropped)}: output from the container that "
                f"could run code in the browser is dropped, and HTML, Markdown and SVG are "
                f"sanitised (trust_output / --trust-output shows it as it is)\n")})
        return {**content, "data": clean.data, "metadata": clean.metadata}

    def _finish_notices(self) -> None:
        if self.on_output is None:
            return
        self.session._drain_logs(self.on_output, self.log_budget)
        dropped = self.log_budget[0].dropped
        if dropped:
            self.on_output("stream", {"name": "stderr", "text": (
                f"[output cut: the container's processes wrote more than "
                f"{stats_contract.format_bytes(self.session.output_limit)} to their stdout/stderr; "
                f"{dropped} characters dropped]\n")})
        if self.dropped_frames:
            self.on_output("stream", {"name": "stderr", "text": (
                f"[output cut: the cell sent more than {stats_contract.format_bytes(self.output_cap)}"
                f" of output; {self.dropped_frames} messages dropped]\n")})


class _SigintRaises:
    """While the frontend is asked for input (main thread only), SIGINT raises
    KeyboardInterrupt, as it does in a kernel waiting in ipykernel's
    _input_request: the wait must end on an interrupt, and _SigintToFlag's
    flag would leave it waiting."""

    def __init__(self):
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


class _SigintToFlag:
    """While a request runs in the main thread, SIGINT (the kernel's
    interrupt) only sets a flag: a KeyboardInterrupt in the middle of the
    exchange would lose frames.  The exchange forwards it to the agent."""

    def __init__(self, exchange: _Exchange):
        self.exchange = exchange
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                self.previous = signal.signal(signal.SIGINT, self._on_sigint)
            except ValueError:
                self.previous = None
        return self

    def _on_sigint(self, signum, frame) -> None:
        if self.exchange.sigint_at is None:
            self.exchange.sigint_at = time.monotonic()

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


# ---------------------------------------------------------------------------
# Helpers


def _prepare_log_pipe(fd: int) -> None:
    os.set_blocking(fd, False)
    try:
        fcntl.fcntl(fd, 1031, LOG_PIPE_SIZE)   # F_SETPIPE_SZ: room between cells
    except OSError:
        pass


def parse_net_dev(text: str) -> dict:
    """/proc/PID/net/dev -> {"net_rx", "net_tx"} bytes, loopback left out."""
    rx = tx = 0
    for line in text.splitlines()[2:]:
        name, _, fields = line.partition(":")
        numbers = fields.split()
        if name.strip() == "lo" or len(numbers) < 9:
            continue
        rx += int(numbers[0])
        tx += int(numbers[8])
    return {"net_rx": rx, "net_tx": tx}


def _open_net_dev(container) -> int:
    """An fd of /proc/PID/net/dev of a process of the container, opened once
    per container: the open file holds the container's network namespace,
    so pread reads its counters without finding a process (six cgroup.procs
    files on cgroup v1) and opening a file at every cell.  The process is
    checked to be in the container's cgroup after the open: a pid reused by
    a host process between the two would read the host's counters."""
    pid = container.cgroup.pids()[0]
    fd = os.open(f"/proc/{pid}/net/dev", os.O_RDONLY | os.O_CLOEXEC)
    if pid not in container.cgroup.pids():
        os.close(fd)
        raise ProcessLookupError(f"process {pid} left the container")
    return fd


def _result_counters(result) -> dict | None:
    if result is None:
        return None
    figures = result.stats.as_dict()
    figures.update(net_rx=None, net_tx=None)
    return figures


def _at_limit(limits: Limits) -> str:
    if limits.memory is None:
        return " (no memory limit was set: the host's memory ran out)"
    return f" at the {stats_contract.format_bytes(limits.memory)} limit"


FILES_SHARE_NAMED = 16 << 20
"""Files in the writable layer are named in an OOM message from this much on
(and from a tenth of the memory limit): less is not what filled memory."""

LAYER_WORDS = "the container's disk (its writable layer: /tmp, /workspace and image writes)"
_ENOSPC = re.compile(r"\[Errno 28\]|No space left on device")


def _files_share(figures: dict | None, limits: Limits) -> str:
    """', of which 700 MiB were files in the writable layer (...)' for an OOM
    message, when the layer's files held a good part of the memory (tmpfs
    pages are charged to the container's memory), else ''.  The layer's own
    usage where the container could look at it, else the cgroup's shmem
    (which counts /dev/shm too)."""
    figures = figures or {}
    share = figures.get("disk_used")
    if share is None:
        share = figures.get("memory_shmem")
    if share is None or share < max(FILES_SHARE_NAMED, (limits.memory or 0) // 10):
        return ""
    return (f", of which {stats_contract.format_bytes(share)} were files in the writable layer "
            "(/tmp, /workspace), which are held in memory")


def _disk_note(reply: dict, figures: dict | None, limits: Limits) -> str | None:
    """One sentence naming --disk when the cell ended with ENOSPC (errno 28)
    or left the writable layer full, else None.  Tells apart a layer of
    --disk's size and one capped at half the memory limit (its files are
    memory: runtime/rootfs.py layer_size), since what to raise differs."""
    figures = figures or {}
    used, size = figures.get("disk_used"), figures.get("disk_limit")
    full = stats_contract.disk_full(used, size)
    if not full and not _ENOSPC.search(str(reply.get("evalue") or "")):
        return None
    size = size if size is not None else limits.disk
    capped = limits.memory is not None and size < limits.disk
    fix = (f"%container limits --memory {_size_arg(2 * limits.memory)} "
           f"--disk {_size_arg(max(limits.disk, 2 * size))}") if capped \
        else f"%container limits --disk {_size_arg(2 * size)}"
    # the memory limit the layer was sized by may have changed live since: not named
    where = (f"{stats_contract.format_bytes(size)} (--disk {stats_contract.format_bytes(limits.disk)} "
             f"is capped at half the memory limit, since its files are held in memory)") if capped \
        else f"the {stats_contract.format_bytes(size)} --disk limit"
    if full:
        return f"{LAYER_WORDS} is full at {where}; free space or raise it with {fix}"
    now = f", {stats_contract.format_bytes(used)} in use now" if used is not None else ""
    return (f"the cell got ENOSPC (no space left on device): {LAYER_WORDS} may hold up to "
            f"{where}{now}; free space or raise it with {fix}")


def _size_arg(n: int) -> str:
    """A size as one types it: 2G, 768M."""
    if n % (1 << 30) == 0:
        return f"{n >> 30}G"
    return f"{-(-n // (1 << 20))}M"


def _pids_note(limits: Limits, before, after, reply: dict) -> str | None:
    """Plain words when the cell hit the pids limit, else None.  The cgroup
    counts refused forks (pids.events "max"); where it cannot (no cgroup),
    a cell that ended in BlockingIOError [Errno 11] under a pids limit tells."""
    refused = stats_contract.delta((before or {}).get("pids_refused"),
                                   (after or {}).get("pids_refused"))
    if refused is None:
        failed = (reply.get("ename"), str(reply.get("evalue", "")))
        hit = limits.pids is not None and (
            failed[0] == "BlockingIOError" and failed[1].startswith("[Errno 11]")
            or failed == ("RuntimeError", "can't start new thread"))
    else:
        hit = refused > 0
    if not hit:
        return None
    what = f"the {limits.pids}-process limit (--pids {limits.pids})" if limits.pids is not None \
        else "the host's process limit"
    count = {None: "new processes or threads were", 1: "1 new process or thread was"}.get(
        refused, f"{refused} new processes or threads were")
    return (f"the cell hit {what}: {count} refused (in the cell: BlockingIOError [Errno 11], "
            "or RuntimeError: can't start new thread); "
            "the container and its variables are kept.  Wait for the processes a cell starts, "
            "end them, or raise the limit: %container limits --pids N")


def _also(message: str | None, note: str | None) -> str | None:
    if note is None:
        return message
    return note if message is None else f"{message}; and {note}"


def _how_it_ended(result, last_words: str) -> str:
    """Plain words for a container that ended without a reply."""
    if result is None:
        text = "the container stopped while the cell ran"
    elif result.signal == signal.SIGKILL or result.status == "killed":
        text = "the container was killed (SIGKILL) while the cell ran"
    elif result.signal:
        text = f"the container's Python died of {_signal_name(result.signal)} while the cell ran"
    elif result.exit_code == 0:
        text = "the container's Python exited (code 0) before the cell finished"
    else:
        text = f"the container's Python crashed: it exited with code {result.exit_code}"
    if last_words:
        text += f" (its last words on stderr: {last_words!r})"
    return text


def _signal_name(signum: int) -> str:
    try:
        return f"{signal.Signals(signum).name} ({signum})"
    except ValueError:
        return f"signal {signum}"


def _asks_exit(reply: dict) -> bool:
    return any(isinstance(p, dict) and p.get("source") == "ask_exit" for p in reply.get("payload") or [])


_DEATH_NAMES = {"oom": "ContainerOutOfMemory", "timeout": "CellTimeout", "killed": "ContainerDied"}


def _death_reply(status: str, message: str, execution_count: int) -> dict:
    """An execute_reply for a cell whose container died before replying."""
    ename = _DEATH_NAMES.get(status, "ContainerDied")
    return {"status": "error", "execution_count": execution_count, "ename": ename,
            "evalue": message, "traceback": [f"{ename}: {message}"],
            "user_expressions": {}, "payload": []}


def _unpicklable(values: dict) -> VariableError:
    for name, value in values.items():
        try:
            pickle.dumps(value, protocol=pickle.DEFAULT_PROTOCOL)
        except Exception as exc:
            return VariableError(name, f"cannot push {name!r}: a {type(value).__name__} "
                                       f"cannot be pickled: {exc}")
    return VariableError(None, "the variables pickle one by one but not together")
