"""The sandbox kernel: an ipykernel ``Kernel`` whose every cell runs in its
session's container.

It is a wrapper kernel (the echo kernel of ipykernel's docs): class
attributes for kernel_info, async ``do_*`` handlers, ``send_response`` for
output.  It has no IPython shell of its own; the cells run in the agent's
shell inside the container, through ``sandbox_kernel.session``'s public API
only (DESIGN, boundaries), and the side panel's channel::

    frontend --execute_request--> SandboxKernel.do_execute
                                    |  leading "%container ..." lines: commands.run, on the host
                                    |  the rest: runner.run (session/runner.py)
                                    v
      iopub  <-- stream / display_data / execute_result / error / clear_output, unchanged
             <-- execute_reply, the cell's stats in its metadata (cells.py)

How the pieces behave:

* **Start.**  The container is started in a helper thread as the kernel
  starts (``prestart``), so the first cell does not wait for it; every
  shell handler waits for that thread (bounded by ``start_wait``).  If the
  container cannot start, the first cell answers with what
  ``sandbox-kernel doctor`` finds and how to fix it, as an error; the kernel
  stays up and the next cell tries again.  No crash loop.
* **Execution count.**  The session's: replies and execute_result carry its
  numbers, and ``execution_count`` follows them, so execute_input matches.
  A fresh container (after it died, or ``%container restart``) counts on
  from the old one's last cell; only a kernel restart starts at 1 again.
* **Container death.**  Out of memory, killed, crashed: the session says
  why in plain words and starts a fresh container; the kernel publishes an
  error with a clear ename (ContainerOutOfMemory, ContainerDied, CellTimeout)
  and replies with it.
* **Interrupts.**  The kernelspec says ``"interrupt_mode": "message"``:
  jupyter_client's ``interrupt_kernel()`` sends interrupt_request on the
  control channel, and ipykernel's handler (control thread) sends SIGINT to
  the kernel's process group.  The cell runs in this process's main thread
  inside ``Session.execute``, which turns SIGINT into "interrupt the agent"
  (and knows the container's launcher, in our group, got the signal too).
  Outside that exchange, the handler this kernel installs for each shell
  request does the same, so an interrupt is never a KeyboardInterrupt in
  the kernel's own code (which would lose the reply).  A plain SIGINT to the
  kernel (``interrupt_mode: signal``, ``kill -INT``) takes the same path.
  Message mode is the default because it needs no process for the manager
  to signal: it works through any provisioner, local or remote.
* **Shutdown and restart.**  ``do_shutdown`` (control thread) destroys the
  containers, some 50 ms each, and replies; the process then exits by itself
  (``_at_exit`` closes a race in ipykernel's exit that made it wait 10 s and
  be SIGTERMed by the manager).  A cell still running is interrupted and, if
  it does not stop within SHUTDOWN_GRACE, killed; the main thread destroys
  its containers when it ends (never two threads on one container's fds).
  Restart is a shutdown and a new kernel process, hence a fresh container.
  When the kernel is SIGKILLed, each container's launcher sees its lifeline
  close and removes the container (runtime/launcher.py).
* **Resource usage.**  ``usage_request`` (control channel) answers with the
  stats contract of the container plus the keys jupyter-resource-usage's
  kernel panel reads (kernel_memory, kernel_cpu, cpu_count,
  host_virtual_memory...), filled with the container's figures and limits.
* **Widgets.**  The container's comms are this kernel's own
  (session/comm_relay.py, set up in ``__init__``): each session's comm frames
  go to the relay, never through the cell's output path; the frontend's
  messages to them run in the container like a cell.
* **Side panel.**  Comm target ``sandbox_kernel.stats``, served by the
  panel's ``StatsChannel`` (panel/channel.py, messages.py): the stats
  contract in its envelope when a frontend opens it or asks, at cell start
  and end, and once a second while a cell runs.

No debugger and no kernel subshells (kernel_info does not offer them): the
agent runs one request at a time, and no debug adapter runs in the container.

Settings (limits, network, image, footer) and their precedence: settings.py.
``doctor_root`` (SANDBOX_KERNEL_DOCTOR_ROOT) points doctor at a fake host
(a directory with proc/ and sys/), checked before the first container: how
the tests show the "this host cannot run containers" answer on a host that can.

Its parts: cells.py (which lines run on the host; the runner's Face that
publishes a cell), config.py (traits), requests.py (the editor's requests),
startup.py (doctor's answer), usage.py (usage_request).  May import the
session (commands, client, runner, stats, policy), the panel's channel, the
runtime's doctor and errors, ipykernel and traitlets; never the magics.
"""
from __future__ import annotations

import atexit
import os
import platform
import signal
import socket
import threading

from ipykernel._version import kernel_protocol_version
from ipykernel.kernelbase import Kernel
from traitlets import Bool, Float, TraitError, Unicode

from ..version import __version__    # not the package: its __init__ loads the magics
from ..panel.channel import StatsChannel
from ..runtime import images
from ..runtime.spec import Limits, SpecError
from ..session import commands, labels, policy as policies, stats as stats_contract
from ..session.comm_relay import CommRelay
from ..session.client import SessionBusy, SessionError, prewarm
from ..session.runner import Cell, CellRunner, StepFailed
from . import settings as kernel_settings
from .cells import (NOT_IN_THIS_KERNEL, RED, RESET, CellMessages, ReplyMetadata, host_bundle,
                    parsed_command)
from .cells import CellError, split_cell  # noqa: F401 -- moved to cells.py; tests import them here
from .config import SandboxPolicy
from .requests import EditorRequests
from .startup import describe, doctor_error, start_failure
from .usage import UsageMeter

SESSION = commands.DEFAULT_SESSION
DOCTOR_ROOT_ENV = "SANDBOX_KERNEL_DOCTOR_ROOT"
SHUTDOWN_GRACE = 0.2        # s a running cell has to stop at shutdown before it is killed
CONTROL_FINISH_WAIT = 5.0    # s the exiting main thread waits for the control thread's last request
# what a container that cannot start makes Session.execute raise: the cell answers with doctor's findings
START_ERRORS = (SessionError, SpecError, images.ImageNotFound, OSError, RuntimeError)


class SandboxKernel(ReplyMetadata, EditorRequests, Kernel):
    """Python 3 in a resource-limited container: every cell runs there."""

    implementation = "sandbox-kernel"
    implementation_version = __version__
    language_info = {
        "name": "python",
        "version": platform.python_version(),
        "mimetype": "text/x-python",
        "codemirror_mode": {"name": "ipython", "version": 3},
        "pygments_lexer": "ipython3",
        "nbconvert_exporter": "python",
        "file_extension": ".py",
    }

    # memory, cpus, pids, timeout, net, image, footer: the kernel settings of the one option schema
    vars().update(kernel_settings.setting_traits())
    trust_output = Bool(False, help="show the container's output as it is (scripts and HTML "
                                    "included) instead of sanitised: for code you trust"
                        ).tag(config=True)
    prestart = Bool(True, help="start the container as the kernel starts, not at the first cell"
                    ).tag(config=True)
    start_wait = Float(120.0, help="seconds a request waits for the container to start").tag(config=True)
    doctor_root = Unicode("", help=f"check this fake host (a directory with proc/ and sys/) with "
                                   f"doctor before the first container; also {DOCTOR_ROOT_ENV}"
                          ).tag(config=True)
    # not ipykernel's 0.5 ms sleep after each cell: the outputs went through the IOPub thread
    _execute_sleep = Float(0.0).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._count = 0              # what ipykernel counts with (execute_input)
        self.agent_count = 0        # the agent's count after the last cell
        self._checked = False
        self._interrupted = False
        self._cell_running = False
        self._shutting_down = False
        # set when the control thread has finished the request that shut us down
        self._shutdown_handled = threading.Event()
        self._shutdown_thread: threading.Thread | None = None
        self._blocked: tuple | None = None        # (ename, evalue, traceback): every cell says it
        self._start_error: BaseException | None = None
        labels.label_process(kind="kernel", kernel_id=labels.kernel_id_of(
            getattr(self.parent, "connection_file", None)))   # on the containers' cards
        self.resolved = self._resolve_settings()
        self.policy, policy_errors = self._resolve_policy()
        self.sessions = commands.Sessions(
            policy=self.policy, trust_output=self.trust_output,
            defaults={k: self.resolved.values[k] for k in (*kernel_settings.LIMITS, "idle_pause")},
            notebook_dir=kernel_settings.notebook_directory(
                trust_environment=self.policy.name != policies.CLASSROOM))
        self.sessions.footer = self.resolved.footer
        self.sessions.on_pressure = "interrupt"   # a cell near the limit stops; its session stays
        self.sessions.new_session_hint = (f"every cell runs in the session {SESSION!r}: "
                                          f"leave out --name")
        self.usage = UsageMeter()
        self.stats_channel = self._init_comms()
        # the container's comms (widgets) as this kernel's own (comm_relay.py)
        self.comm_relay = CommRelay(self, self.comm_manager)
        self.comm_relay.register_targets()
        self.sessions.factory = self.comm_relay.attaching(self.sessions.factory)
        self.runner = CellRunner(self.sessions, self.stats_channel)
        errors = self.resolved.errors + policy_errors
        if errors:
            self._blocked = ("SandboxSettingsError", "; ".join(errors),
                             [f"{RED}SandboxSettingsError{RESET}: {e}" for e in errors])
        self._preparing = threading.Thread(target=self._prepare, name="sbk-prestart", daemon=True)
        if self.prestart and self._blocked is None:
            self._preparing.start()
        atexit.register(self._at_exit)

    @property
    def banner(self) -> str:
        values = self.resolved.values
        return (f"Python {platform.python_version()} in a container (sandbox-kernel {__version__})\n"
                f"Every cell runs in a resource-limited Linux container: "
                f"{describe(values)}.\n"
                f"%container status shows it; %container limits --memory 2G changes it.\n"
                f"Policy: {self.policy.describe()}.")

    @property
    def kernel_info(self) -> dict:
        """ipykernel's fields, no supported features: no "debugger" (no debug
        adapter in the container), no "kernel subshells" (the agent runs one
        request at a time).  Not ipykernel's: its debugger check imports debugpy
        (45-90 ms of the kernel's start, on the first reply's way)."""
        return {"protocol_version": kernel_protocol_version, "implementation": self.implementation,
                "implementation_version": self.implementation_version,
                "language_info": self.language_info, "banner": self.banner,
                "help_links": self.help_links,
                "supported_features": []}

    # -- execution count: the agent's ------------------------------------------------

    @property
    def execution_count(self) -> int:
        """ipykernel adds 1 before each cell that is not silent and publishes
        it with execute_input; after the cell it is the agent's count again."""
        return self._count

    @execution_count.setter
    def execution_count(self, value: int) -> None:
        self._count = value

    # -- settings and start ------------------------------------------------------------

    def _resolve_settings(self) -> kernel_settings.Resolved:
        configured = {name: getattr(self, name) for name in kernel_settings.SETTINGS}
        cli = getattr(self.parent, "cli_config", None) or {}
        from_cli = set(cli.get("SandboxKernel", {})) if "SandboxKernel" in cli else set()
        resolved = kernel_settings.resolve(configured, from_command_line=from_cli,
                                           footer=self.footer)
        self.log.info("sandbox-kernel settings: %s", ", ".join(
            f"{k}={v} ({resolved.sources[k]})" for k, v in resolved.values.items()))
        return resolved

    def _resolve_policy(self) -> tuple:
        """The installer's policy (config files < kernelspec argv; never the
        environment, never the notebook) and what is wrong with it.  With an
        error every cell says it (fail closed), and the sessions get the
        classroom preset of the built-in defaults meanwhile."""
        settings = {name: getattr(self, name) for name in kernel_settings.SETTINGS}
        try:
            configured = SandboxPolicy(parent=self).options()
        except TraitError as error:
            policy, errors = None, [f"c.SandboxPolicy / --SandboxPolicy: {error}"]
        else:
            policy, errors = kernel_settings.resolve_policy(self.resolved, settings, configured)
        if policy is None:
            defaults = {k: policies.parse_limit(k, kernel_settings.DEFAULTS[k])
                        for k in kernel_settings.LIMITS}
            policy = policies.classroom(defaults)
        self.log.info("sandbox-kernel policy: %s", policy.describe())
        return policy, errors

    def container_session(self):
        """The kernel's sandbox session (created on first use, with the settings)."""
        session, _ = self.runner.open(SESSION, self._session_options(), change_existing=False)
        return session

    def _session_options(self) -> dict:
        """Sessions.open's options for the kernel's session: its settings."""
        values = self.resolved.values
        return {"image": values["image"], "net": values["net"], "allow": values["allow"],
                "rate": values["rate"],
                **{k: values[k] for k in kernel_settings.LIMITS}}

    def _prepare(self) -> None:
        """The helper thread: check a fake host if asked, then start the
        container (and the session's zygote, for the containers after it)."""
        try:
            if self._fake_host_blocks():
                return
            prewarm()
            session = self.container_session()
            session.start()
            session.arm_memory_watch()    # session/spare.py: not in the first cell's time
        except Exception as error:     # reported by the first cell, which tries again
            self.log.warning("the container did not start: %s", error)
            self._start_error = error

    def _fake_host_blocks(self) -> bool:
        root = self.doctor_root or os.environ.get(DOCTOR_ROOT_ENV, "")
        if not root:
            return False
        from ..runtime import doctor     # only for a fake host (tests), not on a kernel's start
        checks = doctor.diagnose(os.path.join(root, "proc"), os.path.join(root, "sys"))
        if doctor.can_run_containers(checks):
            return False
        self._blocked = doctor_error(checks)
        return True

    def _ready(self, consume: bool = True) -> tuple | None:
        """Wait for the helper thread; the error a cell must answer with, if
        any.  A failed start is said once (``consume``); the next cell tries again."""
        if self._preparing.is_alive():
            self._preparing.join(self.start_wait)
            if self._preparing.is_alive():
                return ("ContainerStartError",
                        f"the container did not start within {self.start_wait:g} s", [])
        elif not self.prestart and self._blocked is None and not self._checked:
            self._checked = True
            self._fake_host_blocks()
        if self._blocked is not None:
            return self._blocked
        if self._start_error is not None:
            if not consume:
                return ("ContainerStartError", str(self._start_error), [])
            error, self._start_error = self._start_error, None
            return start_failure(error)
        return None

    # -- execute -----------------------------------------------------------------------

    async def do_execute(self, code, silent, store_history=True, user_expressions=None,
                         allow_stdin=False, **_ignored):
        cell = CellMessages(self, silent)
        self._interrupted = False
        self._cell_running = True
        self._allow_stdin = bool(allow_stdin)     # ipykernel's raw_input and getpass read it
        try:
            return self._execute(code, cell, store_history, user_expressions or {})
        except Exception as error:       # the frontend waits for a reply: it must get one
            self.log.exception("sandbox kernel: a cell failed in the kernel itself")
            return cell.fail(type(error).__name__, str(error),
                             [f"{RED}{type(error).__name__}{RESET}: {error} (in the sandbox kernel, "
                              f"not in the cell: please report it)"])
        finally:
            self._count = self.agent_count
            self._cell_running = False
            if self._shutting_down:
                self.sessions.close_all()

    def _execute(self, code: str, cell: CellMessages, store_history: bool, user_expressions: dict) -> dict:
        problem = self._ready()
        if problem is not None:
            return cell.fail(*problem)
        try:
            plan = split_cell(code)
        except CellError as error:
            return cell.fail("UsageError", str(error), [f"{RED}UsageError{RESET}: {error}"])
        for line in plan.commands:
            failed = self._host_command(line, cell)
            if failed is not None:
                return failed
        if not plan.code.strip():           # commands only, or an empty cell
            return cell.ok()
        if self._interrupted:
            return cell.fail("KeyboardInterrupt", "interrupted before the cell started", [])
        return self._run_in_container(plan.code, cell, store_history, user_expressions)

    def _run_in_container(self, code, cell, store_history, user_expressions) -> dict:
        """The cell through the runner, in the kernel's one session (made with
        the settings if new; never changed by them)."""
        request = Cell(code, session=SESSION, options=self._session_options(),
                       change_existing=False, silent=cell.silent, store_history=store_history,
                       user_expressions=user_expressions, footer=not cell.silent,
                       on_input=self._frontend_input if self._allow_stdin else None)
        try:
            return self.runner.run(request, cell).result.reply
        except StepFailed as failed:
            return self._step_failed(failed, cell)

    @staticmethod
    def _step_failed(failed: StepFailed, cell: CellMessages) -> dict:
        """A cell that did not run: busy, or its container could not start;
        anything else is the kernel's own failure (do_execute says so)."""
        error = failed.error
        if failed.step == "execute" and isinstance(error, SessionBusy):
            return cell.fail("SessionBusy", str(error), [])
        if failed.step == "execute" and isinstance(error, START_ERRORS):
            return cell.fail(*start_failure(error))
        raise error

    def _frontend_input(self, prompt: str, password: bool) -> str:
        """The container cell's input() and getpass(), asked of the frontend
        by ipykernel's own machinery (an input_request on the stdin channel;
        SIGINT ends the wait with KeyboardInterrupt, "\x04" is EOFError)."""
        return self.getpass(prompt) if password else self.raw_input(prompt)

    def follow_count(self, run) -> None:
        """The session's count, also after its container died: the next
        container counts on from it (Session.execute's count_from)."""
        count = run.result.reply.get("execution_count")
        if isinstance(count, int) and not isinstance(count, bool):
            self.agent_count = count

    # -- %container, on the host -------------------------------------------------------

    def _host_command(self, line: str, cell: CellMessages) -> dict | None:
        """Run one %container line; an error reply if it failed, else None."""
        rest = line[len("%container"):]
        self.container_session()
        try:
            args = parsed_command(rest)
            name = args.command if args is not None else None
            if name in NOT_IN_THIS_KERNEL:
                raise commands.UsageError(f"%container {name}: {NOT_IN_THIS_KERNEL[name]}")
            output = self.runner.host_command(rest, namespace={}, on_output=cell.output)
        except (commands.UsageError, policies.PolicyRefused) as error:
            # one line, as the user's mistake deserves: no traceback, no usage block
            ename = "PolicyRefused" if isinstance(error, policies.PolicyRefused) else "UsageError"
            return cell.fail(ename, str(error), [f"{RED}{ename}{RESET}: {error}"])
        cell.display(*host_bundle(line, output))
        return None

    # -- interrupt, shutdown -----------------------------------------------------------

    def pre_handler_hook(self):
        """While a shell request runs, SIGINT interrupts the container's cell;
        never a KeyboardInterrupt here (ipykernel's default), which would
        lose the reply.  Session.execute installs its own while it waits."""
        self.saved_sigint_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame) -> None:
        self._interrupted = True
        session = self.sessions.sessions.get(SESSION)
        if session is not None:
            session.interrupt()

    async def dispatch_control(self, msg):
        """ipykernel's, then a note for ``_at_exit`` once a shutdown_request
        has been handled to the end (reply, status idle, and the flush of
        sys.stdout that ipykernel does after every control request)."""
        try:
            await super().dispatch_control(msg)
        finally:
            if self._shutting_down:
                self._shutdown_handled.set()

    def _at_exit(self) -> None:
        """The main thread, on its way out, before ipykernel's own atexit
        ``IPKernelApp.close`` (registered before this kernel existed, so run
        after it).  That close stops the IOPub thread and then joins the
        control thread.  A shutdown_request stops the main loop from the
        control thread, which then still flushes sys.stdout: a flush waits
        for the IOPub thread to run it, up to its 10 s flush_timeout, and
        never returns early if that thread has just been stopped.  This
        kernel's main thread has nothing else to do at exit, so it won that
        race most times (the manager then SIGTERMed the kernel after 2.5 s).
        Waiting here for the control thread to finish the request closes
        the race; the wait is bounded for a control thread that hangs."""
        if self._shutting_down and self._shutdown_thread is not threading.current_thread():
            self._shutdown_handled.wait(CONTROL_FINISH_WAIT)
        self.sessions.close_all()

    async def do_shutdown(self, restart):
        """Destroy the containers.  A cell still running is interrupted (and
        killed after SHUTDOWN_GRACE) and its containers destroyed by the main
        thread when it ends (or by the launcher's lifeline, if the manager
        kills this process first)."""
        self._shutting_down = True
        self._shutdown_thread = threading.current_thread()    # control; main if sent on shell
        try:
            if self._preparing.is_alive():
                self._preparing.join(self.start_wait)
            if self._cell_running:
                for session in list(self.sessions.sessions.values()):
                    # a cell that ignores the interrupt is killed soon, not after
                    # the user's grace: the manager SIGTERMs us after 2.5 s
                    session.interrupt_grace = min(session.interrupt_grace, SHUTDOWN_GRACE)
                    session.abandon()     # no fresh container for a cell killed now
                    session.interrupt()
            else:
                self.sessions.close_all()
        finally:
            # after the containers: nothing in the panel's channel may skip their removal
            self.stats_channel.close()
        return {"status": "ok", "restart": restart}

    # -- usage_request and the side panel's comm ----------------------------------------

    async def usage_request(self, stream, ident, parent):
        """The container's figures, in the stats contract's shape plus the
        keys of ipykernel's usage_reply (see usage.py)."""
        if not self.session:
            return
        try:
            content = self.usage.reply(self.current_stats(), self.sessions.sessions.get(SESSION))
        except Exception as error:       # jupyter-resource-usage waits for a reply
            self.log.warning("sandbox kernel: usage_request failed: %s", error, exc_info=True)
            content = {"hostname": socket.gethostname(), "pid": os.getpid(), "error": str(error)}
        self.session.send(stream, "usage_reply", content, parent, ident)

    def current_stats(self) -> dict:
        session = self.sessions.sessions.get(SESSION)
        if session is not None:
            return session.stats()
        values = self.resolved.values
        return stats_contract.build_stats(session=SESSION, image=values["image"], limits=Limits(),
                                          execution_count=None, wall=None, figures={}, status=None)

    def _init_comms(self):
        """Comms, as ipykernel's own kernel has them; the side panel's channel."""
        from ipykernel.comm import CommManager
        self.comm_manager = CommManager(kernel=self)
        for msg_type in ("comm_open", "comm_msg", "comm_close"):
            self.shell_handlers[msg_type] = getattr(self.comm_manager, msg_type)
        channel = StatsChannel(self, lambda: list(self.sessions.sessions.values()), kind="sandbox",
                               policy=lambda: self.sessions.policy.as_dict())
        channel.register()
        return channel
