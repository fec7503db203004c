"""The IPython shell of the agent (agent.py), whose output leaves as frames:

    display(), figures       -> AgentDisplayPublisher -> "display_data", "clear_output"
    the cell's last value    -> AgentDisplayHook      -> "execute_result"
    a traceback              -> AgentShell._showtraceback -> "error"

with ipykernel's own magics (KernelMagics), cells compiled under the names
ipykernel gives them (CellCompiler), and the owner's home written ~ in
tracebacks (compress_owner_home).  Imports IPython, traitlets and the
agent core (agent_core.py, agent_output.py); nothing of the host's side.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from contextlib import contextmanager

from IPython.core import page
from IPython.core.autocall import ZMQExitAutocall
from IPython.core.compilerop import CachingCompiler
from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.display import Javascript, display
from IPython.utils import openpy
from traitlets import CBool, Instance, Type, default
from traitlets.config import Config

from .agent_core import Channel, bounded_error
from .agent_output import RichOutputs, flush_std_streams

INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


# ---------------------------------------------------------------------------
# IPython's output hooks


class AgentDisplayPublisher(DisplayPublisher):
    """display() and clear_output() as frames.  ``channel`` and ``outputs``
    (the budget's gate; the channel itself until the agent sets it) are set
    by the agent."""

    channel: Channel | None = None
    outputs: RichOutputs | Channel | None = None

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
        self._validate_data(data, metadata)
        flush_std_streams()
        self.outputs.emit(
            "update_display_data" if update else "display_data",
            data=data, metadata=metadata or {}, transient=transient or {},
        )

    def clear_output(self, wait=False):
        flush_std_streams()
        self.channel.emit("clear_output", wait=bool(wait))


class AgentDisplayHook(DisplayHook):
    """The cell's last value as an execute_result with every format IPython computes."""

    channel: Channel | None = None
    outputs: RichOutputs | Channel | None = None
    _bundle: dict | None = None

    def start_displayhook(self):
        super().start_displayhook()
        self._bundle = {"data": {}, "metadata": {}}

    def write_output_prompt(self):
        """No "Out[n]:" text: the count travels in the message."""

    def write_format_data(self, format_dict, md_dict=None):
        self._bundle = {"data": format_dict, "metadata": md_dict or {}}

    def finish_displayhook(self):
        flush_std_streams()
        bundle, self._bundle = self._bundle, None
        self._is_active = False
        if bundle and bundle["data"]:
            self.outputs.emit("execute_result", execution_count=self.prompt_count, **bundle)


class AgentShell(InteractiveShell):
    """An InteractiveShell whose output leaves as frames (cf. ipykernel's ZMQInteractiveShell)."""

    displayhook_class = Type(AgentDisplayHook)
    display_pub_class = Type(AgentDisplayPublisher)
    readline_use = CBool(False)
    autoindent = CBool(False)       # meaningless without a terminal
    exiter = Instance(ZMQExitAutocall)
    keepkernel_on_exit = None
    channel: Channel | None = None
    stdin_forwarder = None        # builtins.input and getpass: agent.py's StdinForwarder
    kernel = None                 # agent_comm.ParentKernel: what widgets ask of a kernel

    def get_parent(self) -> dict:
        """The frontend's message being answered (ipykernel's shell has it;
        ipywidgets' Output widget reads it)."""
        return self.kernel.get_parent() if self.kernel is not None else {}

    def set_parent(self, parent) -> None:
        if self.kernel is not None:
            self.kernel.set_parent(parent)

    @default("exiter")
    def _default_exiter(self):
        return ZMQExitAutocall(self)

    def attach(self, channel: Channel, outputs: RichOutputs | None = None) -> None:
        """Output goes to ``channel``; displays and results through ``outputs``
        (the cell's budget) when given."""
        self.channel = channel
        self.display_pub.channel = self.displayhook.channel = channel
        self.display_pub.outputs = self.displayhook.outputs = outputs or channel
        self.reset_error_state()

    def reset_error_state(self) -> None:
        self._last_traceback = None
        self.last_error = None                 # (ename, evalue) as last shown
        self.traceback_in_displayhook = False

    def init_environment(self):
        # As ipykernel: colours that Jupyter renders, and no pager to wait on.
        os.environ.update(TERM="xterm-color", CLICOLOR="1", FORCE_COLOR="1",
                          CLICOLOR_FORCE="1", PAGER="cat", GIT_PAGER="cat")

    def init_magics(self):
        super().init_magics()
        self.register_magics(KernelMagics)

    def init_hooks(self):
        super().init_hooks()
        self.set_hook("show_in_pager", page.as_hook(self._page_as_payload), 99)

    def _page_as_payload(self, strg, start=0, screen_lines=0, pager_cmd=None):
        """`obj?` and %magic? text goes back in the execute_reply payload, as in Jupyter."""
        data = strg if isinstance(strg, dict) else {"text/plain": strg}
        self.payload_manager.write_payload({"source": "page", "data": data, "start": max(0, start)})

    def ask_exit(self):
        """`exit` in a cell: the agent exits after the reply, as ipykernel does."""
        self.exit_now = not self.keepkernel_on_exit
        self.payload_manager.write_payload({"source": "ask_exit", "keepkernel": self.keepkernel_on_exit})

    def enable_gui(self, gui=None):
        """%matplotlib inline calls this with None; a container has no display
        for a GUI event loop."""
        if gui not in (None, "inline"):
            raise UsageError(f"no {gui!r} event loop in the container: "
                             f"figures show with %matplotlib inline (the default)")
        self.active_eventloop = gui

    def _showtraceback(self, etype, evalue, stb):
        flush_std_streams()
        if self.displayhook.is_active:
            self.traceback_in_displayhook = True   # a repr that raised fails the cell
        # bounded: the error frame and the reply must fit the cell's frame limit
        ename, evalue, stb = bounded_error(etype.__name__, str(evalue), list(stb))
        self.channel.emit("error", ename=ename, evalue=evalue, traceback=stb)
        self._last_traceback = stb
        self.last_error = (ename, evalue)

    @contextmanager
    def _tee(self, channel):
        # IPython 9 copies every string written to stdout/stderr into
        # history_manager.outputs, before our budget sees it, for the life of
        # the session: a cell printing 100 MB would keep 100 MB in the
        # container's memory.  Stream output is not kept in history here.
        yield


@magics_class
class KernelMagics(Magics):
    """ipykernel's own magics (its zmqshell.KernelMagics), so that %lsmagic and
    the notebooks that use them read the same; the pager is the payload's."""

    @line_magic
    def clear(self, arg_s):
        """Clear the terminal."""
        self.shell.system("clear")

    @line_magic
    def less(self, arg_s):
        """Show a file through the pager.  Files ending in .py are syntax-highlighted."""
        if not arg_s:
            raise UsageError("Missing filename.")
        if arg_s.endswith(".py"):
            text = self.shell.pycolorize(openpy.read_py_file(arg_s, skip_encoding_cookie=False))
        else:
            with open(arg_s) as handle:
                text = handle.read()
        page.page(text)

    more = line_magic("more")(less)

    @line_magic
    def man(self, arg_s):
        """Find the man page for the given command and display in pager."""
        page.page(self.shell.getoutput(f"man {arg_s} | col -b", split=False))

    @line_magic
    def autosave(self, arg_s):
        """Set the autosave interval in the notebook (in seconds); 0 disables it.
        As ipykernel: a Javascript display, which reaches the frontend only
        when the kernelspec says --trust-output (else it is dropped, with a note)."""
        try:
            interval = int(arg_s)
        except ValueError as exc:
            raise UsageError(f"%autosave requires an integer, got {arg_s!r}") from exc
        display(Javascript(f"IPython.notebook.set_autosave_interval({1000 * interval})"),
                include=["application/javascript"])
        print(f"Autosaving every {interval} seconds" if interval else "Autosave disabled")

    @line_magic
    def connect_info(self, arg_s):
        """Information for connecting other clients to this kernel: none here."""
        print(NO_CONNECTION_FILE, file=sys.stderr)

    @line_magic
    def qtconsole(self, arg_s):
        """Open a qtconsole connected to this kernel: not from a container."""
        print(NO_CONNECTION_FILE, file=sys.stderr)

    @line_magic
    def subshell(self, arg_s):
        """List all current subshells."""
        print("Kernel does not support subshells")   # ipykernel's words for such a kernel


NO_CONNECTION_FILE = ("the cells run in a container, which never sees the kernel's connection "
                      "file (its key would let cell code drive the kernel): connect to the "
                      "kernel from the host")


def compress_owner_home(owner_home: str) -> None:
    """File names in tracebacks and ``obj?`` abbreviate the kernel owner's home
    to ~, as ipykernel running as that user does (IPython's compress_user
    uses HOME, which inside is the container's).  The host's interpreter and
    the notebook's directory are seen inside at their host paths, so their
    frames read as on ipykernel; ~ means the owner's home, as there."""
    if not os.path.isabs(owner_home) or os.path.normpath(owner_home) == "/":
        return
    from IPython.core import oinspect
    from IPython.utils import path as ipython_path
    home = os.path.normpath(owner_home)
    prefix = os.path.join(home, "")

    def compress_user(path: str) -> str:
        if path == home:
            return "~"
        return "~" + os.sep + path[len(prefix):] if path.startswith(prefix) else path

    ipython_path.compress_user = compress_user   # tbtools looks it up at each call
    oinspect.compress_user = compress_user       # imported by name


class CellCompiler(CachingCompiler):
    """Cells named as ipykernel 6+ names them (ipykernel/compiler.py,
    XCachingCompiler): ``/tmp/ipykernel_PID/HASH.py``, HASH the murmur2 of
    the cell's code, or IPYKERNEL_CELL_NAME.  IPython's own name,
    ``<ipython-input-N-hash>``, shows in SyntaxErrors, warnings and pdb, and
    stack_data formats a traceback of such a name differently (other
    context lines, other highlighting).  A copy, not an import: importing
    ipykernel would bring ZeroMQ and jupyter_client into every container."""

    def get_code_name(self, raw_code, code, number):
        return ipykernel_cell_name(raw_code)


def ipykernel_cell_name(code: str) -> str:
    name = os.environ.get("IPYKERNEL_CELL_NAME")
    if name is None:
        folder = os.path.join(tempfile.gettempdir(), f"ipykernel_{os.getpid()}")
        name = os.path.join(folder, f"{murmur2_x86(code, 0xC70F6907)}.py")
    return name


def murmur2_x86(text: str, seed: int) -> int:
    """ipykernel's compiler.murmur2_x86, over the UTF-8 bytes of ``text``."""
    m, data = 0x5BD1E995, text.encode("utf-8")
    length = len(data)
    h = seed ^ length
    rounded_end = length & 0xFFFFFFFC
    for i in range(0, rounded_end, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = data[rounded_end:]
    if tail:
        h ^= int.from_bytes(tail, "little")
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def make_shell(channel: Channel, ipython_dir: str) -> AgentShell:
    if not os.environ.get("MPLBACKEND") and importlib.util.find_spec("matplotlib_inline"):
        # Like ipykernel: figures go through display() and are flushed by
        # matplotlib_inline's post_execute hook, which registers itself when
        # the backend is first loaded.  A backend the user chose wins.
        os.environ["MPLBACKEND"] = INLINE_BACKEND
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = AgentShell.instance(config=config, ipython_dir=ipython_dir,
                                compiler_class=CellCompiler)
    shell.attach(channel)
    shell.extension_manager.load_extension("storemagic")   # %store, as ipykernel's default
    return shell
