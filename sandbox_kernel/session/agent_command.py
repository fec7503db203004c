"""The ``command`` request of both agents: run a program, stream its output,
interrupt its whole process group.

Contract (docs: HOUSE.md contract 1)::

    host -> agent  {"type": "command", "id": N, "argv": ["ps", "aux"]}
    agent -> host  stream frames with id N (stdout, stderr), within the cell's output budget
    agent -> host  {"type": "reply", "id": N, "content": {"status": "ok", "exit_code": CODE}}

CODE is the exit status, 128+N for signal N, 127 if argv[0] was not found,
126 if it could not start (with a line "argv0: strerror" on stderr).  The
program runs in its own process group (start_new_session) with stdin
/dev/null.  SIGINT to the agent while it runs: SIGINT to the group, then
SIGKILL to the group COMMAND_KILL_GRACE seconds later (a second SIGINT:
SIGKILL at once), so a shell's background children stop too.

Standard library only, Python 3.7 syntax: the plain agent runs this on an
image's own python3.  Imports nothing of the project.
"""
from __future__ import annotations

import codecs
import os
import selectors
import signal
import subprocess
import time

COMMAND = "command"
COMMAND_KILL_GRACE = 2.0       # seconds between the group's SIGINT and its SIGKILL
READ_SIZE = 65536
POLL_INTERVAL = 0.1            # seconds between looks at the leader when no output comes
ARGV_ACCEPTED = "a non-empty list of str without NUL characters, e.g. ['ps', 'aux']"


def request_argv(request: dict) -> list:
    """The argv of a command request; ValueError saying what is accepted."""
    argv = request.get("argv")
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise ValueError(f"command request: 'argv' must be {ARGV_ACCEPTED}; "
                         f"got {type(argv).__name__}")
    if any("\0" in a for a in argv):
        raise ValueError(f"command request: 'argv' must be {ARGV_ACCEPTED}; an argument has NUL")
    return argv


def refused(exc: ValueError) -> dict:
    """The reply content to a command request whose argv is bad."""
    return {"status": "error", "ename": "ValueError", "evalue": str(exc), "traceback": []}


def run_command(argv: list, out, err, interruptible) -> int:
    """Run ``argv``; its output goes to ``out`` and ``err`` (write/flush)
    while it runs.  ``interruptible()`` is the context in which SIGINT raises
    KeyboardInterrupt (the interrupt gate's cell): it is entered only once
    the program has started, so an interrupt never leaves a half-made child."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        err.write(f"{argv[0]}: {exc.strerror}\n")
        err.flush()
        return 127 if isinstance(exc, FileNotFoundError) else 126
    with proc:
        pump = _Pump(proc, out, err)
        try:
            with interruptible():
                pump.run()
        except BaseException:
            signal_group(proc.pid, signal.SIGKILL)   # never leave it running unattended
            raise
        finally:
            pump.close()
        code = proc.wait()
    return 128 - code if code < 0 else code


def signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass                     # the whole group has exited


class _Pump:
    """Copies the program's pipes to the streams until it is done; turns
    KeyboardInterrupt into signals to its process group."""

    def __init__(self, proc: subprocess.Popen, out, err):
        self.proc = proc
        self.outputs = {proc.stdout: out, proc.stderr: err}
        self.streams = (out, err)
        self.decoders = {pipe: codecs.getincrementaldecoder("utf-8")("replace")
                         for pipe in self.outputs}
        self.selector = selectors.DefaultSelector()
        for pipe in self.outputs:
            self.selector.register(pipe, selectors.EVENT_READ)
        self.kill_at = None      # after an interrupt: when the group gets SIGKILL
        self.killed = False

    def run(self) -> None:
        done = False
        while not done:
            try:
                done = self._step()
            except KeyboardInterrupt:
                self._interrupted()

    def close(self) -> None:
        self.selector.close()
        for stream in self.streams:
            stream.flush()

    def _interrupted(self) -> None:
        if self.kill_at is None and not self.killed:
            signal_group(self.proc.pid, signal.SIGINT)   # as Ctrl-C in a terminal
            self.kill_at = time.monotonic() + COMMAND_KILL_GRACE
        else:                                            # asked twice: at once
            self._kill()

    def _kill(self) -> None:
        signal_group(self.proc.pid, signal.SIGKILL)
        self.kill_at, self.killed = None, True

    def _step(self) -> bool:
        """One look at the pipes; True when the command is done."""
        if self.outputs:
            events = self.selector.select(POLL_INTERVAL)
        else:                                            # both pipes closed, the leader runs on
            events = []
            try:
                self.proc.wait(POLL_INTERVAL)
            except subprocess.TimeoutExpired:
                pass
        for key, _ in events:
            self._read(key.fileobj)
        if self.kill_at is not None and time.monotonic() >= self.kill_at:
            self._kill()
        if self.proc.poll() is None:
            return False
        # The leader has exited.  A background child may still hold the pipes:
        # not waited for, unless an interrupt's grace runs (then it gets SIGKILL).
        return not self.outputs or (not events and self.kill_at is None)

    def _read(self, pipe) -> None:
        data = os.read(pipe.fileno(), READ_SIZE)
        stream = self.outputs[pipe]
        text = self.decoders[pipe].decode(data, final=not data)
        if text:
            stream.write(text)
            stream.flush()
        if not data:
            self.selector.unregister(pipe)
            del self.outputs[pipe]
