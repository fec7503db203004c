"""The sandbox kernel through jupyter_client, as a frontend drives it: cells
in the container, outputs relayed unchanged, the footer, %container on the
host, interrupts, OOM, kill -9, restart, usage_request, the stats comm, a
host that cannot run containers, 20 kernels at once, and a real notebook.

Needs root (conftest.py skips the tier otherwise).  Every wait is bounded.
"""
from __future__ import annotations

import os
import pathlib
import queue
import re
import signal
import textwrap
import threading
import time
import uuid

import pytest

from sandbox_kernel.session.stats import CELL_FIELDS


import kernel_fixtures as kf  # tests/jupyter is on pytest's pythonpath (pyproject)

NAME = "sbk-test-kernel"
SMALL = "sbk-test-kernel-128m"
DEFAULT = "sbk-test-kernel-default"


@pytest.fixture(scope="module", autouse=True)
def kernelspecs(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("jupyter-data"))
    kf.install_kernelspec(data, NAME)                       # the footer as an output (argv)
    kf.install_kernelspec(data, SMALL, {"memory": "128M"})
    kf.install_kernelspec(data, DEFAULT, footer=True)       # the installer's default: beside
    with kf.jupyter_path(data):
        yield data


@pytest.fixture(scope="module")
def kernel(kernelspecs):
    """One kernel shared by this module's light tests."""
    k = kf.SandboxKernel(NAME)
    yield k
    k.shutdown()


@pytest.fixture
def fresh(kernelspecs):
    """Kernels of this test alone: fresh(name=NAME, env=None)."""
    with kf.kernels_of_one_test(NAME) as start:
        yield start


ok = kf.ok


# ---------------------------------------------------------------------------
# cells


def test_outputs_arrive_unchanged_in_order_and_the_footer_comes_last(kernel):
    code = textwrap.dedent("""\
        import sys
        from IPython.display import display, HTML, clear_output
        print("out")
        print("err", file=sys.stderr)
        handle = display(HTML("<b>first</b>"), display_id=True)
        handle.update(HTML("<b>second</b>"))
        clear_output(wait=True)
        6 * 7
        """)
    ran = ok(kernel.run(code))
    kinds = [k for k in ran.kinds if k != "execute_input"]
    assert kinds == ["stream", "stream", "display_data", "update_display_data", "clear_output",
                     "execute_result", "display_data"], kinds
    assert ran.stdout == "out\n" and ran.stderr == "err\n"
    shown = ran.of("display_data")[0]
    assert shown["data"]["text/html"] == "<b>first</b>" and shown["transient"]["display_id"]
    assert ran.of("update_display_data")[0]["transient"] == shown["transient"]
    assert ran.of("clear_output")[0] == {"wait": True}
    assert ran.result == "42"
    footer = ran.of("display_data")[-1]["data"]
    assert set(footer) == {"text/plain", "text/html", kf.STATS_MIME}
    stats = footer[kf.STATS_MIME]
    assert set(stats) == {"session", "image", "limits", "cell"}
    assert set(stats["cell"]) == set(CELL_FIELDS)
    assert stats["cell"]["status"] == "ok" and stats["limits"]["memory"] == 1 << 30
    assert stats["cell"]["memory_current"] > 0


def test_execution_count_is_the_agents_everywhere(kernel):
    counts = []
    for code in ("a = 1", "a + 1", "print(a)"):
        ran = ok(kernel.run(code))
        announced = ran.of("execute_input")[0]["execution_count"]
        assert announced == ran.reply["execution_count"]
        counts.append(announced)
        if ran.result is not None:
            assert ran.of("execute_result")[0]["execution_count"] == announced
    assert counts == list(range(counts[0], counts[0] + 3))
    ok(kernel.run("b = 2", silent=True))
    ran = ok(kernel.run("b"))
    assert ran.reply["execution_count"] == counts[-1] + 1 and ran.result == "2"


def test_an_exception_is_an_error_reply_with_the_containers_traceback(kernel):
    ran = kernel.run("def f():\n    raise ValueError('bad value')\nf()")
    assert ran.reply["status"] == "error"
    assert ran.reply["ename"] == "ValueError" and ran.reply["evalue"] == "bad value"
    plain = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(ran.reply["traceback"]))
    assert "raise ValueError('bad value')" in plain
    assert ran.of("error")[0]["ename"] == "ValueError"
    assert ran.footers[-1]["cell"]["status"] == "error"


def test_the_cell_runs_in_a_container_not_in_the_kernel(kernel):
    ran = ok(kernel.run("import os, socket\n"
                        "(socket.gethostname(), os.getuid(), sorted(p for p in os.listdir('/proc') "
                        "if p.isdigit())[:1], os.stat('/proc/self/ns/pid').st_ino)"))
    hostname, uid, first_pid, pid_ns = eval(ran.result)
    assert hostname == "sandbox" and uid != 0 and first_pid == ["1"]
    assert pid_ns != os.stat("/proc/self/ns/pid").st_ino


def test_completion_and_inspection_see_the_containers_variables(kernel):
    ok(kernel.run("sandboxed_only_value = {'k': 1}"))
    reply = kernel.request("complete", "sandboxed_only_va")
    assert reply["status"] == "ok" and "sandboxed_only_value" in reply["matches"]
    reply = kernel.request("inspect", "sandboxed_only_value")
    assert reply["status"] == "ok" and reply["found"] and "dict" in reply["data"]["text/plain"]
    assert kernel.request("is_complete", "for i in range(3):")["status"] == "incomplete"
    assert kernel.request("is_complete", "x = 1")["status"] == "complete"
    history = kernel.request("history", hist_access_type="tail", n=3, output=False, raw=True)
    assert history["status"] == "ok" and any("sandboxed_only_value" in h[2] for h in history["history"])


# ---------------------------------------------------------------------------
# %container, on the host


def test_container_lines_run_on_the_host_and_say_so(kernel):
    ran = ok(kernel.run("%container status"))
    shown = [c for c in ran.of("display_data") if kf.STATS_MIME not in c["data"]]
    assert len(shown) == 1 and not ran.footers        # a host command has no container footer
    data = shown[0]["data"]
    assert data["text/plain"].startswith("host> %container status\n")
    assert "running" in data["text/plain"] and "on the host" in data["text/html"]
    assert shown[0]["metadata"]["sandbox_kernel"]["host_command"] == "%container status"


def test_container_lines_first_then_the_code_in_the_container(kernel):
    ran = ok(kernel.run("%container limits --memory 768M\n\nlimited = True\nlimited"))
    assert "memory changed" in ran.of("display_data")[0]["data"]["text/plain"]
    assert ran.result == "True"
    assert ran.footers[-1]["limits"]["memory"] == 768 << 20
    history = kernel.request("history", hist_access_type="tail", n=1, output=False, raw=True)
    assert "(ran on the host)" in history["history"][-1][2]
    ok(kernel.run("%container limits --memory 1G"))


def run_keeping_reply(kernel, code: str):
    """kernel.run, and the execute_reply's metadata (kernel_fixtures keeps its content only)."""
    seen, original = [], kernel.kc.get_shell_msg

    def keep(*args, **kwargs):
        msg = original(*args, **kwargs)
        seen.append(msg)
        return msg
    kernel.kc.get_shell_msg = keep
    try:
        ran = kernel.run(code)
    finally:
        del kernel.kc.get_shell_msg
    return ran, next(m for m in seen if m["content"] is ran.reply)["metadata"]


def no_footer_output(ran) -> bool:
    return not any(kf.STATS_MIME in c.get("data", {}) for kind, c, _ in ran.messages
                   if kind in ("display_data", "execute_result", "update_display_data"))


def test_by_default_the_outputs_are_the_codes_and_the_stats_ride_in_the_reply(fresh):
    """Issue 17: no footer display_data; the execute_reply's metadata has
    the stats (contract 2); %container footer output brings the footer back
    as the last output, off leaves it out of both."""
    kernel = fresh(DEFAULT)
    ran, metadata = run_keeping_reply(kernel, "print('out')\n6 * 7")
    assert [k for k in ran.kinds if k != "execute_input"] == ["stream", "execute_result"]
    beside = metadata["sandbox_kernel"]
    assert beside["footer"] == "beside" and beside["stats"]["cell"]["status"] == "ok"
    assert set(beside["stats"]) == {"session", "image", "limits", "cell"}
    assert set(beside["stats"]["cell"]) == set(CELL_FIELDS)
    assert beside["stats"]["limits"]["memory"] == 1 << 30 and beside["notebook_dir"]

    ran, metadata = run_keeping_reply(kernel, "1 / 0")
    assert [k for k in ran.kinds if k != "execute_input"] == ["error"]
    assert metadata["sandbox_kernel"]["stats"]["cell"]["status"] == "error"

    ran, metadata = run_keeping_reply(kernel, "%container footer output\nprint('again')")
    assert ran.kinds[-1] == "display_data" and ran.footers[-1]["cell"]["status"] == "ok"
    assert metadata["sandbox_kernel"]["footer"] == "output"
    ran, metadata = run_keeping_reply(kernel, "%container footer off\nprint('none')")
    assert no_footer_output(ran) and metadata["sandbox_kernel"]["footer"] == "off"


def test_the_footer_setting_from_the_environment(fresh):
    kernel = fresh(DEFAULT, env={"SANDBOX_KERNEL_FOOTER": "output"})
    ran, metadata = run_keeping_reply(kernel, "x = 1")
    assert ran.footers and metadata["sandbox_kernel"]["footer"] == "output"


@pytest.mark.parametrize("line", ["%container?", "%container??", "%container -h",
                                  "%%container?", "%%container -h"])
def test_the_help_of_container_and_of_the_cell_magic(kernel, line):
    """Issue 17: the full help, on the host (%%container? went to the
    container's IPython: "Object `%%container` not found")."""
    lines = shown_lines(ok(kernel.run(line)))
    text = "\n".join(lines)
    assert len(lines) > 20 and "not found" not in text, text
    assert "usage: %container" in text and "footer" in text and "%%container" in text
    assert "limits" in text and "Examples" in text


def test_stats_off_hides_the_footer_and_on_brings_it_back(kernel):
    ok(kernel.run("%container stats off"))
    assert not ok(kernel.run("1")).footers
    ok(kernel.run("%container stats on"))
    assert ok(kernel.run("1")).footers


def test_a_bad_container_line_is_a_usage_error_and_nothing_runs(kernel):
    ran = kernel.run("%container bogus\nnever_defined = 1")
    assert ran.reply["status"] == "error" and ran.reply["ename"] == "UsageError"
    assert "unknown subcommand 'bogus'" in ran.reply["evalue"]
    assert kernel.run("never_defined").reply["ename"] == "NameError"
    for code, words in (("x = 1\n%container status", "put it at the top"),
                        ("%%container\nx = 1", "every cell runs in the container already"),
                        ("%container push x", "no host-side variables")):
        ran = kernel.run(code)
        assert ran.reply["ename"] == "UsageError" and words in ran.reply["evalue"], ran.reply


def test_container_restart_gives_a_fresh_container_whose_count_goes_on(fresh):
    """Issue 17, contract 3: only a kernel restart resets the count."""
    k = fresh()
    ok(k.run("before = 1"))
    ok(k.run("before"))
    ran = ok(k.run("%container restart"))
    assert "a fresh container is running" in ran.of("display_data")[0]["data"]["text/plain"]
    gone = k.run("before")
    assert gone.reply["ename"] == "NameError"
    assert gone.of("execute_input")[0]["execution_count"] == gone.reply["execution_count"] == 3


# ---------------------------------------------------------------------------
# interrupt


def _started(ran) -> bool:
    return "started" in ran.stdout


@pytest.mark.parametrize("how", ["message", "signal"])
def test_an_interrupt_reaches_the_cell_and_the_container_is_kept(kernel, how):
    ok(kernel.run("kept_before_interrupt = 'yes'"))
    msg_id = kernel.send("import time\nprint('started', flush=True)\ntime.sleep(60)")
    kernel.collect(msg_id, timeout=30, until=_started)
    start = time.monotonic()
    if how == "message":
        assert kernel.km.kernel_spec.interrupt_mode == "message"
        kernel.km.interrupt_kernel()
    else:
        kernel.km.signal_kernel(signal.SIGINT)       # what interrupt_mode "signal" does
    ran = kernel.collect(msg_id, timeout=30)
    assert time.monotonic() - start < 10
    assert ran.reply["status"] == "error" and ran.reply["ename"] == "KeyboardInterrupt"
    assert ok(kernel.run("kept_before_interrupt")).result == "'yes'"


# ---------------------------------------------------------------------------
# the container dies; the kernel does not


def test_out_of_memory_is_an_error_and_the_next_cell_gets_a_fresh_container(fresh):
    k = fresh(SMALL)
    ok(k.run("kept = 1"))
    ran = k.run("hog = bytearray(400 << 20)")
    assert ran.reply["status"] == "error"
    assert ran.reply["ename"] == "ContainerOutOfMemory"
    assert "out of memory at the 128 MiB limit" in ran.reply["evalue"]
    assert "variables are lost" in ran.reply["evalue"]
    assert ran.of("error")[0]["ename"] == "ContainerOutOfMemory"     # shown, not only replied
    assert ran.footers[-1]["cell"]["status"] == "oom"
    assert k.km.is_alive()
    gone = k.run("kept")
    assert gone.reply["ename"] == "NameError"
    # contract 3: the count goes on in the fresh container (one more than the OOM cell)
    assert gone.of("execute_input")[0]["execution_count"] == gone.reply["execution_count"] == 3
    assert ok(k.run("print('fresh')")).stdout == "fresh\n"


def test_a_cell_past_its_time_limit_is_interrupted_and_says_why(fresh):
    k = fresh(env={"SANDBOX_KERNEL_TIMEOUT": "2s"})
    ok(k.run("kept = 'yes'"))
    start = time.monotonic()
    ran = k.run("while True:\n    pass")
    assert time.monotonic() - start < 15
    assert ran.reply["status"] == "error"
    assert "ran past its 2.00 s time limit" in ran.stderr
    assert ran.footers[-1]["cell"]["status"] == "timeout"
    assert ok(k.run("kept")).result == "'yes'"


def test_kill_9_of_the_kernel_leaves_nothing_behind(fresh):
    k = fresh()
    ok(k.run("import subprocess; child = subprocess.Popen(['sleep', '600'])"))
    pid = k.pid
    processes = kf.descendants(pid)
    assert len(processes) >= 3                 # launcher, init, agent, sleep
    os.kill(pid, signal.SIGKILL)
    left, took = kf.wait_for_nothing_left(pid, processes, timeout=15)
    assert not any(left.values()), left
    assert took < 1.0, f"the container outlived its kernel by {took:.2f} s"


def test_shutdown_destroys_the_container(fresh):
    k = fresh()
    ok(k.run("1"))
    pid, processes = k.pid, kf.descendants(k.pid)
    k.shutdown()
    left, _ = kf.wait_for_nothing_left(pid, processes, timeout=15)
    assert not any(left.values()), left


def test_restart_gives_a_fresh_container(fresh):
    k = fresh()
    ok(k.run("before_restart = 1"))
    old_pid, processes = k.pid, kf.descendants(k.pid)
    k.km.restart_kernel(now=False)
    k.kc.wait_for_ready(timeout=60)
    left, _ = kf.wait_for_nothing_left(old_pid, processes, timeout=15)
    assert not any(left.values()), left
    assert k.run("before_restart").reply["ename"] == "NameError"
    assert ok(k.run("1 + 1")).result == "2"


# ---------------------------------------------------------------------------
# usage_request and the stats comm


def test_usage_request_answers_with_the_containers_figures(kernel):
    ok(kernel.run("ballast = bytearray(50 << 20)"))
    reply = kernel.control("usage_request")
    assert reply["msg_type"] == "usage_reply"
    content = reply["content"]
    assert content["session"] == "default" and content["image"] == "host"
    assert content["limits"]["memory"] == 1 << 30 and content["limits"]["cpus"] == 1.0
    assert set(content["cell"]) == set(CELL_FIELDS)
    assert content["cell"]["memory_current"] >= 50 << 20
    # the keys jupyter-resource-usage's kernel panel reads
    assert content["kernel_memory"] == content["cell"]["memory_current"]
    assert content["pid"] > 0 and content["hostname"]
    assert content["cpu_count"] == 1.0 and content["kernel_cpu"] is not None
    assert content["host_virtual_memory"]["total"] == 1 << 30
    ok(kernel.run("del ballast"))


def _comm_messages(kernel, comm_id, stop, timeout=30) -> list[dict]:
    """The data of the comm's messages on iopub until stop(datas, msg) is true."""
    datas, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = kernel.kc.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if msg["msg_type"] == "comm_msg" and msg["content"]["comm_id"] == comm_id:
            data = msg["content"]["data"]
            assert msg["metadata"]["event"] == data["event"] and data["kernel"] == "sandbox"
            assert set(data["sessions"][0]["stats"]) == {"session", "image", "limits", "cell"}
            datas.append(data)
        if stop(datas, msg):
            return datas
    raise AssertionError(f"comm messages so far: {[d['event'] for d in datas]}")


def test_the_stats_comm_pushes_the_contract(kernel):
    """The side panel's channel (panel/channel.py) serves the sandbox kernel."""
    comm_id = uuid.uuid4().hex
    session = kernel.kc.session
    kernel.kc.shell_channel.send(session.msg(
        "comm_open", {"comm_id": comm_id, "target_name": "sandbox_kernel.stats", "data": {}}))
    cell = kernel.send("import time\ntime.sleep(2.5)")

    def cell_idle(datas, msg):
        return (msg["parent_header"].get("msg_id") == cell and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle")
    datas = _comm_messages(kernel, comm_id, cell_idle)
    events = [d["event"] for d in datas]
    assert events[0] == "snapshot" and datas[0]["reason"] == "open", events
    assert "cell_start" in events and events[-1] == "cell_end" and "tick" in events, events
    row = datas[-1]["cell"]
    assert row["stats"]["cell"]["status"] == "ok" and row["stats"]["cell"]["wall"] >= 2.5
    assert row["execution_count"] == row["stats"]["cell"]["execution_count"]
    kernel.shell_reply(cell, time.monotonic() + 10)
    kernel.kc.shell_channel.send(session.msg("comm_msg", {"comm_id": comm_id,
                                                          "data": {"request": "stats"}}))
    datas = _comm_messages(kernel, comm_id, lambda datas, msg: bool(datas))
    assert datas[0]["event"] == "snapshot" and datas[0]["reason"] == "request"
    assert datas[0]["history"][-1]["stats"] == row["stats"]
    kernel.kc.shell_channel.send(session.msg("comm_close", {"comm_id": comm_id, "data": {}}))
    ran = ok(kernel.run("pass"))
    assert not ran.of("comm_msg")              # closed: nothing more is sent


# ---------------------------------------------------------------------------
# a host that cannot run containers, bad settings


def _fake_host_without_containers(root: pathlib.Path) -> str:
    """A /proc and /sys that doctor reads as: not root, user namespaces off."""
    proc = root / "proc"
    for ns in ("mnt", "uts", "ipc", "net", "pid", "cgroup", "user"):
        (proc / "self" / "ns").mkdir(parents=True, exist_ok=True)
        (proc / "self" / "ns" / ns).write_text("")
    (proc / "self" / "status").write_text("Name:\tpython3\nUid:\t1000\t1000\t1000\t1000\nSeccomp:\t0\n")
    (proc / "self" / "mountinfo").write_text("")
    (proc / "self" / "cgroup").write_text("0::/\n")
    (proc / "filesystems").write_text("nodev\tproc\nnodev\toverlay\n")
    (proc / "sys" / "kernel").mkdir(parents=True)
    (proc / "sys" / "kernel" / "unprivileged_userns_clone").write_text("0\n")
    (root / "sys").mkdir()
    return str(root)


def test_a_host_that_cannot_run_containers_answers_with_doctor(fresh, tmp_path):
    k = fresh(env={"SANDBOX_KERNEL_DOCTOR_ROOT": _fake_host_without_containers(tmp_path)})
    for _ in range(2):                    # every cell says it; the kernel does not crash
        ran = k.run("print('never runs')")
        assert ran.reply["status"] == "error" and ran.reply["ename"] == "ContainersUnavailable"
        assert "user namespaces" in ran.reply["evalue"]
        text = ran.error_text
        assert "Containers cannot run on this host" in text
        assert "fix: sysctl -w kernel.unprivileged_userns_clone=1" in text
        assert "never runs" not in ran.stdout
    assert k.km.is_alive() and k.kc.is_alive()
    assert k.request("complete", "pri")["status"] == "ok"
    assert kf.descendants(k.pid) == set()        # no container was started


def test_a_bad_setting_is_reported_by_the_first_cell(fresh):
    k = fresh(env={"SANDBOX_KERNEL_MEMORY": "12X"})
    ran = k.run("1")
    assert ran.reply["ename"] == "SandboxSettingsError"
    assert "invalid memory '12X'" in ran.reply["evalue"]
    assert "SANDBOX_KERNEL_MEMORY" in ran.reply["evalue"]
    assert k.km.is_alive()


# ---------------------------------------------------------------------------
# many kernels at once


def test_twenty_kernels_each_in_its_own_container(kernelspecs, tmp_path):
    count, kernels = 20, []
    try:
        # all 20 start at once (each its own thread); they talk over Unix sockets
        # (kernel_fixtures), as TCP's free-port pick can be taken before a kernel binds
        starters = [threading.Thread(
            target=lambda: kernels.append(kf.SandboxKernel(NAME, ready_timeout=180)))
            for _ in range(count)]
        for t in starters:
            t.start()
        for t in starters:
            t.join(240)
        assert len(kernels) == count
        port = 18555
        probe = textwrap.dedent("""\
            import os, socket
            marker = 'mine-' + str({i})
            open('/tmp/' + marker, 'w').close()
            server = socket.socket()
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(('127.0.0.1', {port}))
            server.listen()
            seen = (sorted(f for f in os.listdir('/tmp') if f.startswith('mine-')),
                    len([p for p in os.listdir('/proc') if p.isdigit()]),
                    os.stat('/proc/self/ns/pid').st_ino, os.stat('/proc/self/ns/net').st_ino,
                    os.stat('/proc/self/ns/mnt').st_ino)
            seen
            """)
        ids = [k.send(probe.format(i=i, port=port)) for i, k in enumerate(kernels)]
        seen = [eval(ok(k.collect(msg_id, timeout=240)).result) for k, msg_id in zip(kernels, ids)]
        for i, (files, nprocs, *_namespaces) in enumerate(seen):
            assert files == [f"mine-{i}"]              # its own files only
            assert nprocs <= 4, nprocs                 # init, agent (and a helper): its own only
        for column in (2, 3, 4):                       # pid, net, mnt namespaces: one each
            assert len({s[column] for s in seen}) == count
        # each has its own loopback: the server of kernel 0 is out of reach of the others
        reach = ("import socket\ns = socket.socket()\ns.settimeout(2)\n"
                 f"print(s.connect_ex(('127.0.0.1', {port + 1})))")
        ok(kernels[0].run(f"server2 = socket.socket(); server2.bind(('127.0.0.1', {port + 1})); "
                          "server2.listen()"))
        assert ok(kernels[0].run(reach)).stdout.strip() == "0"      # reachable inside its own
        for k in kernels[1:4]:
            assert ok(k.run(reach)).stdout.strip() != "0"            # refused elsewhere
    finally:
        stoppers = [threading.Thread(target=k.shutdown) for k in kernels]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(120)


# ---------------------------------------------------------------------------
# a real notebook


def test_nbclient_runs_a_notebook_end_to_end(kernelspecs):
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in (
        "data = [1, 3, 2]\nprint('sum', sum(data))",
        "%container status",
        "import matplotlib.pyplot as plt\nplt.plot(data)\nplt.show()",
        "raise ValueError('expected in this notebook')",
        "len(data)",
    )]
    client = NotebookClient(nb, kernel_name=NAME, timeout=240, startup_timeout=120,
                            allow_errors=True)
    client.execute()
    outputs = [cell.outputs for cell in nb.cells]
    assert outputs[0][0]["text"] == "sum 6\n"
    assert outputs[1][0]["data"]["text/plain"].startswith("host> %container status")
    assert any("image/png" in o.get("data", {}) for o in outputs[2]), outputs[2]
    errors = [o for o in outputs[3] if o["output_type"] == "error"]
    assert errors and errors[0]["ename"] == "ValueError"
    assert outputs[4][0]["data"]["text/plain"] == "3"
    assert kf.STATS_MIME in outputs[4][-1]["data"]
    nbformat.validate(nb)


# ---------------------------------------------------------------------------
# bad %container input: one line, and the kernel carries on

BAD_CONTAINER_LINES = {
    "%container frobnicate": "unknown subcommand 'frobnicate'",
    "%container exec": "no command given",
    "%container exec --": "no command given",
    "%container status --bogus": "unknown option --bogus",
    "%container status extra": "unexpected argument 'extra'",
    "%container limits --memory": "--memory needs a value",
    "%container limits --memory lots": "invalid memory 'lots'",
    "%container limits --cpus many": "invalid cpus 'many'",
    "%container limits --net wifi": "invalid net 'wifi'",
    "%container stats maybe": "unknown switch 'maybe'",
    "%container restart --name": "--name needs a value",
    "%container image": "no action given",
    "%container image frob": "unknown action 'frob'",
    "%container image import": "missing PATH",
    "%container image build x": "missing --from BASE, --run SCRIPT",
    "%container 'unclosed": "no closing quotation",
    "%container push x": "no host-side variables",
    "%container status --name nope": "no session named 'nope' (sessions: default); every cell runs",
}


def shown_lines(ran) -> list[str]:
    """The text a frontend shows for a cell's outputs (streams, errors'
    tracebacks, text of displays other than the footer), as lines."""
    shown = []
    for kind, content, _ in ran.messages:
        if kind == "stream":
            shown.append(content["text"])
        elif kind == "error":
            shown.append("\n".join(content["traceback"]))
        elif kind in ("display_data", "execute_result") and kf.STATS_MIME not in content["data"]:
            shown.append(content["data"].get("text/plain", ""))
    return "\n".join(text.strip("\n") for text in shown if text.strip()).splitlines()


def test_each_bad_container_line_is_one_line_and_the_kernel_carries_on(kernel):
    ok(kernel.run("kept_through_bad_lines = 'yes'"))
    for line, words in BAD_CONTAINER_LINES.items():
        ran = kernel.run(line)
        lines = shown_lines(ran)
        assert ran.reply["status"] == "error", (line, ran.reply)
        assert len(lines) == 1 and words in lines[0], (line, lines)
        assert "\n" not in ran.reply["evalue"], (line, ran.reply["evalue"])
    assert ok(kernel.run("kept_through_bad_lines")).result == "'yes'"
    help_lines = shown_lines(ok(kernel.run("%container -h")))
    assert len(help_lines) > 10 and any("limits" in line for line in help_lines)
    assert len(shown_lines(ok(kernel.run("%container limits?")))) > 5


def test_the_containers_card_names_the_kernel_and_its_session(kernel):
    """top, the stats endpoint and the hub's admin page find a kernel's container by its card."""
    from sandbox_kernel.runtime import cards
    ok(kernel.run("1"))
    mine = cards.of_owner(kernel.pid)
    assert mine, "no card of the kernel's container"
    assert {c.labels.get("kind") for c in mine} == {"kernel"}
    assert "default" in {c.labels.get("session") for c in mine}
    # a bare KernelManager names its connection file at random: no id to tell (a jupyter
    # server's is kernel-<id>.json, labels.kernel_id_of; tests/unit/test_labels.py)
    assert {c.labels.get("kernel_id") for c in mine} == {None}
