"""The old command snippet, no longer sent: ``Session.run_command`` sends the
``command`` request (protocol.py).  Kept only while other owners' tests
(test_images_plain_agent, test_commands) and plain_agent's sniffing still
name it; the lead deletes this module with them.

It was Python source the agent ran, as a silent execute request, to run a
program in the container.  It
starts the process, streams its stdout and stderr as they come, forwards an
interrupt to it, and reports its exit code in a display_data of EXIT_MIME
that the host keeps to itself.  plain_agent.py recognises the one line of
``command_code`` and runs the same argv itself.

Imports nothing of the project.
"""
from __future__ import annotations

EXIT_MIME = "application/vnd.sandbox-kernel.exit+json"

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
