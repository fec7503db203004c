"""`%%container -o` and `%container pull` in a real ipykernel: a variable
whose pickle asks the host for a gigabyte is refused with one line, the
kernel's RSS grows by less than the pull limit (256 MiB), and the next cells,
here and in the container, work."""
from __future__ import annotations

BOMB = ("class R:\n"
        "    def __reduce__(self):\n"
        "        return bytearray, (1 << 30,)\n"
        "x = R()")

# In the kernel's own process: its peak RSS since the last reset, in KiB.
RESET_PEAK = ("import re\nopen('/proc/self/clear_refs', 'w').write('5')\n"
              "_rss = lambda f: int(re.search(f + r':\\s+(\\d+)', open('/proc/self/status').read())[1])\n"
              "_before = _rss('VmRSS')")
PEAK_GROWTH = "print((_rss('VmHWM') - _before) // 1024)"


def _ok(ran):
    assert ran.reply["status"] == "ok", ran.error_text + ran.stderr
    return ran


def _refused(ran):
    assert ran.reply["status"] == "error"
    said = ran.reply.get("evalue", "") + ran.error_text + ran.stderr
    assert "cannot pull 'x': its pickle would need more than 256 MiB on the host" in said
    assert "Traceback (most recent call last)" not in said
    return ran


def test_a_bomb_pulled_by_either_magic_is_refused_and_the_kernel_stays_small(kernel):
    _ok(kernel.run(RESET_PEAK))
    _refused(kernel.run(f"%%container --name bombs -o x\n{BOMB}"))
    _refused(kernel.run("%container pull x --name bombs"))
    assert int(_ok(kernel.run(PEAK_GROWTH)).stdout) < 256
    assert _ok(kernel.run("%%container --name bombs\nprint(6 * 7)")).stdout == "42\n"
    assert _ok(kernel.run("print('x' in dir())")).stdout == "False\n"
