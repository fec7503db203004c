"""Pickle bombs from a real container (issue 13, "Variables in and out are
bounded"): the code in the container answers a pull with a small pickle that
asks the host for gigabytes, or for data nested deep enough to crash CPython.
Each is refused with one line, the host process grows by less than the
budget (256 MiB) and lives, and the next cell works.

The host side runs in a subprocess of its own, so that its peak RSS (VmHWM,
reset before the pull through /proc/self/clear_refs) is the pull's, and a
crash is a failed test.  That subprocess caps its own data segment
(RLIMIT_DATA) after the container has started: a regression fails with
MemoryError at worst, and never takes the machine's memory."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.usefixtures("no_leftovers")

BUDGET_MIB = 256

# Code run in the container: binds BOMB to the pickle of {"x": ...} that the
# agent will send for `pull x`.  R pickles as f(*args) whatever f and args are.
BOMBS = {
    "list-of-range": "BOMB = real_dumps({'x': R(list, range(3 * 10**7))})",
    "bytearray": "BOMB = real_dumps({'x': R(bytearray, 1 << 30)})",
    "nested-tuples": (  # a tuple 10**6 deep in a set: hashing it overflowed the C stack
        r"BOMB = b'\x80\x04}\x8c\x01x\x8f(' + b')' + b'\x85' * 10**6 + b'\x90s.'"),
    "deep-recursion": (  # deques 10**6 deep: freeing them overflowed the C stack
        r"BOMB = (b'\x80\x04}\x8c\x01xccollections\ndeque\n\x940' + b'h\x00)\x85R' * 10**6"
        r" + b'a' * (10**6 - 1) + b's.')"),
    "huge-dict": "import collections; BOMB = real_dumps({'x': R(collections.Counter, range(3 * 10**7))})",
    "numpy-array": (  # numpy's _reconstruct allocates shape x itemsize at once
        r"BOMB = (b'\x80\x04}\x8c\x01x\x8c\x16numpy._core.multiarray\x8c\x0c_reconstruct\x93'"
        r" + b'\x8c\x05numpy\x8c\x07ndarray\x93J\x00\xe1\xf5\x05\x85C\x01O\x87Rs.')"),
}

SETUP = textwrap.dedent('''
    import pickle
    real_dumps = pickle.dumps
    x = "the agent pulls only names that exist; what it sends for x is BOMB"

    class R:
        def __init__(self, func, *args):
            self.func, self.args = func, args

        def __reduce__(self):
            return self.func, self.args
''')

# The agent pickles pulled values with pickle.dumps: the cell replaces it.
ARM = "pickle.dumps = lambda *args, **kwargs: BOMB"

HOST = textwrap.dedent('''
    import json, resource, sys
    from sandbox_kernel.session.client import Session, VariableError

    def status(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

    setup, bomb, arm = json.loads(sys.argv[1])
    report = {}
    with Session("bombs") as session:
        for code in (setup, bomb, arm):
            result = session.execute(code)
            assert result.status == "ok", result.reply
        data = status("VmData") * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (data + (1536 << 20), data + (1536 << 20)))
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                            # VmHWM := VmRSS
        before = status("VmRSS")
        try:
            value = session.pull(["x"])
            report["outcome"] = "loaded"
            del value
        except VariableError as exc:
            report["outcome"] = str(exc)
        report["grew_mib"] = (status("VmHWM") - before) / 1024
        out = []
        after = session.execute("print(6 * 7)", on_output=lambda kind, content: out.append([kind, content]))
        report["next"] = [after.status, out]
    print(json.dumps(report))
''')


@pytest.mark.parametrize("name", BOMBS)
def test_a_pickle_bomb_is_refused_the_host_stays_small_and_the_next_cell_works(name):
    ran = subprocess.run([sys.executable, "-c", HOST, json.dumps([SETUP, BOMBS[name], ARM])],
                         capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, f"the host process died ({ran.returncode}): {ran.stderr[-3000:]}"
    report = json.loads(ran.stdout.strip().splitlines()[-1])
    outcome = report["outcome"]
    assert outcome.startswith("cannot pull 'x': ") and "\n" not in outcome, outcome
    assert any(words in outcome for words in (f"more than {BUDGET_MIB} MiB on the host",
                                              "levels deep", "asks the host for")), outcome
    assert report["grew_mib"] < BUDGET_MIB, report
    status, out = report["next"]
    assert status == "ok" and out == [["stream", {"name": "stdout", "text": "42\n"}]], report
