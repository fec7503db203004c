"""input() and getpass() of the cells, in both agents: asked of the host's
frontend over the channel, as ipykernel's raw_input and getpass.

Standard library only, Python 3.7 syntax (the plain agent runs this on an
image's own python3).  Imports agent_core.py, agent_output.py, protocol.py.
"""
from __future__ import annotations

import select

from . import protocol
from .agent_core import ENAME_TEXT, Channel, cut_text
from .agent_output import flush_std_streams
from .protocol import ProtocolError


class StdinNotImplementedError(NotImplementedError):
    """IPython's name for it, without IPython: the frontend has no stdin."""


class StdinForwarder:
    """``builtins.input`` and ``getpass.getpass`` of the cells: an
    ``input_request`` frame, then the cell waits for the host's
    ``input_reply``.

    The wait is a select() on the socket while the cell's interrupt gate is
    armed, so SIGINT ends it with KeyboardInterrupt; the frame itself is read
    inside ``gate.deferred()``, so never half.  Each request has a number
    (``n``): a reply that comes after its input() was interrupted does not
    answer the next one, and one that comes after the cell ended is dropped
    by the serve loop (AgentCore.serve).
    """

    not_implemented = StdinNotImplementedError    # the IPython agent raises IPython's

    def __init__(self, channel: Channel):
        self.channel = channel
        self.allowed = False          # this cell's execute request said allow_stdin
        self.asked = 0

    def input(self, prompt="") -> str:
        return self.ask_unless_refused("raw_input", str(prompt), False)

    def getpass(self, prompt="Password: ", stream=None, **_terminal_only) -> str:
        return self.ask_unless_refused("getpass", str(prompt), True)

    def ask_unless_refused(self, what: str, prompt: str, password: bool) -> str:
        refusal = self.refusal(what)
        if refusal:
            raise refusal
        return self.ask(prompt, password)

    def refusal(self, what: str):
        """Why this call cannot ask the frontend (None: it can)."""
        channel = self.channel
        if not (self.allowed and channel.tagged and channel.gate.armed):
            return self.not_implemented(
                f"{what} was called, but this frontend does not support input requests.")
        if not channel.gate.in_main_thread():
            return self.not_implemented(
                f"{what} was called from a thread of the cell's; only the cell's own "
                f"(main) thread can ask the frontend for input")
        return None

    def ask(self, prompt: str, password: bool) -> str:
        flush_std_streams()             # what the cell printed comes before the prompt
        self.asked += 1
        self.channel.emit(protocol.INPUT_REQUEST, n=self.asked, password=password,
                          prompt=prompt[:protocol.INPUT_PROMPT_LIMIT])
        return self._answer(self._wait(self.asked))

    def _wait(self, number: int) -> dict:
        channel = self.channel
        while True:
            select.select([channel.sock], [], [])   # SIGINT: KeyboardInterrupt here
            with channel.gate.deferred():
                msg = channel.recv()
            if msg["type"] != protocol.INPUT_REPLY:
                raise ProtocolError(f"the host sent a {msg['type']!r:.60} frame while the cell "
                                    f"waited for an input_reply")
            if msg.get("n") == number:
                return msg                 # else the answer to an input() interrupted before

    def _answer(self, msg: dict) -> str:
        value = msg.get("value")
        if isinstance(value, str):
            return value
        name, message = str(msg.get("error", "")), cut_text(str(msg.get("message", "")), ENAME_TEXT)
        errors = {"EOFError": EOFError, "KeyboardInterrupt": KeyboardInterrupt,
                  "StdinNotImplementedError": self.not_implemented}
        if name in errors:
            raise errors[name](message) if message else errors[name]()
        raise RuntimeError(f"the host could not ask the frontend for input: {name}: {message}")
