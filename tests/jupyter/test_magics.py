"""%%container and %container in a real ipykernel, seen as a frontend sees them."""
from __future__ import annotations

import datetime
import os
import signal
import time


MiB = 1 << 20
STATS_MIME = "application/vnd.sandbox-kernel.stats+json"


def _ok(ran):
    assert ran.reply["status"] == "ok", ran.error_text + ran.stderr
    return ran


def test_a_variable_lives_on_between_cells(kernel):
    _ok(kernel.run("%%container --name persist\nanswer = 6 * 7"))
    ran = _ok(kernel.run("%%container --name persist\nprint(answer)"))
    assert ran.stdout == "42\n"


def test_the_last_value_and_a_footer_with_three_mime_types(kernel):
    ran = _ok(kernel.run("%%container --name value\n1 + 1"))
    datas = [c["data"] for c in ran.of("display_data")]
    assert {"text/plain": "2"} in datas
    footer = datas[-1]
    assert set(footer) == {"text/plain", "text/html", STATS_MIME}
    assert footer[STATS_MIME]["session"] == "value"
    assert footer[STATS_MIME]["cell"]["status"] == "ok"


def test_clear_output_and_display_updates_are_republished(kernel):
    code = ("%%container --name disp\nfrom IPython.display import display, clear_output\n"
            "print('first')\nclear_output(wait=True)\nhandle = display('a', display_id=True)\n"
            "handle.update('b')")
    ran = _ok(kernel.run(code))
    kinds = [kind for _, kind, _, _ in ran.messages]
    assert kinds.index("clear_output") > kinds.index("stream")
    assert ran.of("clear_output")[0]["wait"] is True
    shown, updated = ran.of("display_data")[0], ran.of("update_display_data")[0]
    assert shown["data"]["text/plain"] == "'a'" and updated["data"]["text/plain"] == "'b'"
    assert shown["transient"]["display_id"] == updated["transient"]["display_id"]


def test_inputs_and_outputs_round_trip_a_dict_and_a_numpy_array(kernel):
    _ok(kernel.run("import numpy as np\nconfig = {'a': [1, 2], 'b': {'c': None}}\n"
                   "arr = np.arange(12, dtype='float32').reshape(3, 4)"))
    _ok(kernel.run("%%container --name io -i config,arr -o config2,arr2\n"
                   "config2 = dict(config, seen=True)\narr2 = arr * 2"))
    ran = _ok(kernel.run("print(config2 == dict(config, seen=True), arr2.dtype, "
                         "bool((arr2 == arr * 2).all()), type(arr2).__module__)"))
    assert ran.stdout == "True float32 True numpy\n"


def test_an_unpicklable_input_and_a_refused_output_name_the_variable(kernel):
    ran = kernel.run("gen = (i for i in range(3))\n")
    ran = kernel.run("%%container --name io2 -i gen\npass")
    assert ran.reply["status"] == "error"
    assert "'gen'" in ran.error_text and "generator" in ran.error_text
    ran = kernel.run("%%container --name io2 -o thing\nclass Thing: pass\nthing = Thing()")
    assert ran.reply["status"] == "error"
    assert "'thing'" in ran.error_text and "__main__.Thing" in ran.error_text
    assert "Traceback (most recent call last)" not in ran.error_text


def test_printed_lines_arrive_while_the_cell_runs(kernel):
    code = "%%container --name live\nimport time\nfor i in range(3):\n    print(i)\n    time.sleep(1)"
    ran = _ok(kernel.run(code))
    streams = [(date, c["text"]) for _, kind, c, date in ran.messages if kind == "stream"]
    assert [text for _, text in streams] == ["0\n", "1\n", "2\n"]
    dates = [d if isinstance(d, datetime.datetime) else datetime.datetime.fromisoformat(d)
             for d, _ in streams]
    gaps = [(b - a).total_seconds() for a, b in zip(dates, dates[1:])]
    assert all(gap > 0.5 for gap in gaps), gaps   # one message per line, as it was printed


def test_a_matplotlib_figure_arrives_as_png(kernel):
    code = ("%%container --name plot\nimport matplotlib.pyplot as plt\n"
            "plt.plot([1, 3, 2])\nplt.show()")
    ran = _ok(kernel.run(code, timeout=180))      # a first import builds matplotlib's font cache
    assert any("image/png" in c["data"] for c in ran.of("display_data")), ran.messages


def test_a_cell_past_the_memory_limit_says_so_and_the_next_gets_a_fresh_container(kernel):
    _ok(kernel.run("%%container --name oom --memory 128M\nkept = 1"))
    ran = kernel.run("%%container --name oom\nhog = bytearray(400 << 20)")
    assert ran.reply["status"] == "error"
    assert "ran out of memory at the 128 MiB limit" in ran.error_text
    assert "variables are lost" in ran.error_text
    assert ran.footers[-1]["cell"]["status"] == "oom"
    assert ran.footers[-1]["cell"]["oom_kills"] >= 1
    ran = kernel.run("%%container --name oom\nprint(1 + 1)\nkept")
    assert ran.stdout == "2\n"
    assert "NameError" in ran.error_text        # a fresh container: kept is gone


def test_a_cell_past_its_timeout_is_stopped_and_says_so(kernel):
    started = time.monotonic()
    ran = kernel.run("%%container --name slow --timeout 2\nimport time\ntime.sleep(60)")
    assert time.monotonic() - started < 30
    assert ran.reply["status"] == "error"
    assert "time limit" in ran.error_text
    assert ran.footers[-1]["cell"]["status"] == "timeout"


def test_interrupt_kernel_interrupts_the_container_cell_and_the_session_lives(kernel):
    _ok(kernel.run("%%container --name intr\nbefore = 'still here'"))
    msg_id = kernel.kc.execute("%%container --name intr\nimport time\nprint('started', flush=True)\n"
                               "time.sleep(60)")
    kernel.collect(msg_id, timeout=60, until=lambda ran: "started" in ran.stdout)
    kernel.km.interrupt_kernel()
    ran = kernel.collect(msg_id, timeout=30)
    assert ran.reply["status"] == "error"
    assert "KeyboardInterrupt" in ran.error_text
    ran = _ok(kernel.run("%%container --name intr\nprint(before)"))
    assert ran.stdout == "still here\n"


def test_a_100_mb_print_is_cut_and_the_kernel_answers_at_once(kernel):
    ran = _ok(kernel.run("%%container --name flood\nprint('x' * 100_000_000)", timeout=180))
    assert len(ran.stdout) < 4 * MiB
    assert "output cut" in ran.stderr
    started = time.monotonic()
    reply = kernel.kc.kernel_info(reply=True, timeout=10)
    assert reply["content"]["status"] == "ok"
    assert time.monotonic() - started < 1.0


def test_the_footer_peak_is_at_least_what_the_cell_allocated_and_the_limit_matches(kernel):
    code = ("%%container --name peak --memory 512M\nimport numpy as np\n"
            "block = np.ones(100 * 2**20 // 8)\nblock.sum()")
    ran = _ok(kernel.run(code))
    cell = ran.footers[-1]["cell"]
    assert cell["memory_limit"] == 512 * MiB
    assert ran.footers[-1]["limits"]["memory"] == 512 * MiB
    assert cell["memory_peak"] >= 100 * MiB


def test_shell_runs_in_the_same_container(kernel):
    _ok(kernel.run("%%container --name sh\nopen('made-by-python', 'w').write('hi')"))
    ran = _ok(kernel.run("%%container --name sh --shell\nhostname\nps -e -o pid=,comm=\ncat made-by-python"))
    lines = ran.stdout.splitlines()
    assert lines[0] == "sandbox"
    assert any(line.split() == ["1", "sbk-init"] for line in lines), lines
    assert lines[-1] == "hi"
    ran = kernel.run("%%container --name sh --shell\necho partial; exit 3")
    assert ran.reply["status"] == "error" and "code 3" in ran.error_text


def test_bad_arguments_give_the_usage_not_a_traceback(kernel):
    for line in ("%%container --bogus\npass", "%container frobnicate", "%container limits --nope 1",
                 "%%container --memory lots\npass"):
        ran = kernel.run(line)
        assert ran.reply["status"] == "error", line
        assert ran.reply["ename"] == "UsageError", (line, ran.reply)
        assert "Traceback (most recent call last)" not in ran.error_text
    assert "usage: %container" in kernel.run("%container frobnicate").reply["evalue"]
    assert "usage: %%container" in kernel.run("%%container --bogus\npass").reply["evalue"]


def test_a_missing_image_lists_the_images_there_are(kernel):
    ran = kernel.run("%%container --name img --image nope\npass")
    assert ran.reply["status"] == "error"
    assert "no image named 'nope'; images here: host" in ran.reply["evalue"]


def test_container_subcommands(kernel):
    _ok(kernel.run("%%container --name cmds\nx = 5"))
    assert "running" in _ok(kernel.run("%container status --name cmds")).of("display_data")[0]["data"]["text/plain"]
    ran = _ok(kernel.run("%container exec --name cmds -- sh -c 'echo $((x + 1)) out; id -un'"))
    assert ran.stdout.splitlines() == ["1 out", "sandbox"]
    _ok(kernel.run("%container pull x --name cmds"))
    assert _ok(kernel.run("print(x)")).stdout == "5\n"
    _ok(kernel.run("y = [1, 2]\n%container push y --name cmds"))
    assert _ok(kernel.run("%%container --name cmds\nprint(y)")).stdout == "[1, 2]\n"
    table = _ok(kernel.run("%container stats --name cmds")).of("display_data")[0]["data"]
    assert "text/html" in table and "ok" in table["text/plain"]
    ran = _ok(kernel.run("%container limits --name cmds --memory 300M --net host"))
    assert "restart" in ran.stdout
    _ok(kernel.run("%container stats off"))
    assert kernel.run("%%container --name cmds\npass").footers == []
    _ok(kernel.run("%container stats on"))


def test_container_on_runs_every_cell_in_the_container(kernel):
    _ok(kernel.run("%container on --name auto"))
    try:
        ran = _ok(kernel.run("import socket\nprint(socket.gethostname())"))
        assert ran.stdout == "sandbox\n"
    finally:
        _ok(kernel.run("%container off"))
    assert _ok(kernel.run("import socket\nprint(socket.gethostname())")).stdout != "sandbox\n"


def test_nothing_is_left_after_the_kernel_shuts_down(fresh_kernel, leftovers):
    _ok(fresh_kernel.run("%%container --name a\nx = 1"))
    _ok(fresh_kernel.run("%%container --name b\ny = 2"))
    pid, processes = fresh_kernel.pid, leftovers.descendants(fresh_kernel.pid)
    assert processes, "the kernel should have container launchers below it"
    fresh_kernel.shutdown()
    left = leftovers.wait(pid, processes)
    assert not any(left.values()), left


def test_nothing_is_left_after_the_kernel_is_killed(fresh_kernel, leftovers):
    _ok(fresh_kernel.run("%%container --name a\nx = 1"))
    msg_id = fresh_kernel.kc.execute("%%container --name b\nimport time\nprint('go', flush=True)\n"
                                     "time.sleep(60)")
    fresh_kernel.collect(msg_id, timeout=60, until=lambda ran: "go" in ran.stdout)
    pid, processes = fresh_kernel.pid, leftovers.descendants(fresh_kernel.pid)
    os.kill(pid, signal.SIGKILL)
    left = leftovers.wait(pid, processes)
    assert not any(left.values()), left


BAD_CONTAINER_LINES = {
    "%container frobnicate": "unknown subcommand 'frobnicate'",
    "%container exec": "no command given",
    "%container exec --": "no command given",
    "%container status --bogus": "unknown option --bogus",
    "%container limits --memory": "--memory needs a value",
    "%container limits --name badlines --memory lots": "invalid memory 'lots'",
    "%container stats maybe": "unknown switch 'maybe'",
    "%container push": "missing NAMES",
    "%container pull 1abc": "not variable names",
    "%container image": "no action given",
    "%container image rm": "missing IMAGE",
    "%container 'unclosed": "no closing quotation",
    "%%container --bogus\npass": "unrecognized arguments: --bogus",
    "%%container --memory\npass": "expected one argument",
}


def _shown_lines(ran) -> list[str]:
    """What a frontend shows for the cell (streams and error tracebacks), as lines."""
    shown = [c["text"] for c in ran.of("stream")]
    shown += ["\n".join(c["traceback"]) for c in ran.of("error")]
    return "\n".join(text.strip("\n") for text in shown if text.strip()).splitlines()


def test_each_bad_container_line_is_one_line_and_the_kernel_carries_on(kernel):
    _ok(kernel.run("kept_through_bad_lines = 'yes'"))
    _ok(kernel.run("%%container --name badlines\n1"))
    for line, words in BAD_CONTAINER_LINES.items():
        ran = kernel.run(line)
        lines = _shown_lines(ran)
        assert ran.reply["status"] == "error" and ran.reply["ename"] == "UsageError", (line, ran.reply)
        assert len(lines) == 1 and words in lines[0], (line, lines)
    assert _ok(kernel.run("print(kept_through_bad_lines)")).stdout == "yes\n"
    assert len(_shown_lines(_ok(kernel.run("%container -h")))) > 10
