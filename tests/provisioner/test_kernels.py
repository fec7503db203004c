"""IRkernel and bash_kernel, wrapped by the sandbox-provisioner and driven
through jupyter_client and nbclient: a cell runs inside (hostname sandbox,
PID 1 the container's init), a memory bomb is contained and the OOM is in
the registry in plain words, interrupts, restarts, and nothing is left after
shutdown.  (Killing the server: test_server_kill.py.)"""
from __future__ import annotations

import os
import queue
import socket
import stat

import nbformat
import pytest
from provisioner.prov_helpers import MEMORY, WRAPPED, drain, leftovers, run, until
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from sandbox_kernel.provisioner import registry

INSIDE = {  # language -> a cell printing the hostname, PID 1's command line and the user id
    "ir": 'cat(system("hostname; tr \'\\\\0\' \' \' < /proc/1/cmdline; echo; id -u", intern = TRUE), sep = "\\n")',
    "bash": "hostname; tr '\\0' ' ' < /proc/1/cmdline; echo; id -u",
}


@pytest.mark.parametrize("kernel", ["ir", "bash"])
def test_a_cell_runs_inside_the_container(start, kernel):
    km, kc = start(WRAPPED[kernel])
    status, text = run(kc, INSIDE[kernel])
    lines = text.split()
    assert status == "ok", text
    assert lines[0] == "sandbox"
    assert lines[1] == "sbk-init"             # PID 1 is the container's init, not the host's
    assert lines[-1] == "65532"               # not root
    kernel_entry = registry.get(km.kernel_id)
    assert kernel_entry.container is not None and kernel_entry.deaths == []
    assert dict(kernel_entry.spec.labels)["kind"] == "provisioner"
    assert kernel_entry.spec.limits.memory == 256 << 20 and kernel_entry.spec.network == "none"


def test_an_R_memory_bomb_kills_only_its_kernel_and_says_so(start):
    km, kc = start(WRAPPED["ir"])
    with pytest.raises(Exception):       # the kernel dies: no reply comes
        run(kc, "x <- list(); for (i in 1:100) x[[i]] <- numeric(5e7)", timeout=120)
    assert until(lambda: not km.is_alive(), timeout=120)
    kernel = registry.get(km.kernel_id)
    death = kernel.deaths[-1]
    assert death.reason == "oom"
    assert death.message.startswith(f"the R kernel ran out of memory at the {MEMORY[:-1]} MiB limit (peak ")
    assert death.memory_limit == 256 << 20 and death.memory_peak is not None
    km.restart_kernel(now=True)             # what the server's restarter does
    drain(kc)
    kc.wait_for_ready(timeout=120)
    assert run(kc, "cat(1 + 1)")[1] == "2"
    assert kernel.restarts == 1 and len(kernel.deaths) == 1     # the death is kept across the restart


def test_a_bash_memory_bomb_is_contained_and_the_kernel_stays(start):
    km, kc = start(WRAPPED["bash"])
    status, text = run(kc, "head -c 2G /dev/zero | tail > /dev/null; echo status $?", timeout=180)
    assert "status 137" in text               # tail was OOM-killed (SIGKILL)
    assert km.is_alive() and run(kc, "echo alive")[1].strip() == "alive"
    kernel = registry.get(km.kernel_id)
    assert kernel.deaths == [] and kernel.stats().oom_kills >= 1


@pytest.mark.parametrize("kernel, code", [("ir", 'cat("started\\n"); Sys.sleep(600)'),
                                          ("bash", "echo started; sleep 600")])
def test_interrupt_by_signal_reaches_the_kernel(start, kernel, code):
    km, kc = start(WRAPPED[kernel])
    assert km.kernel_spec.interrupt_mode == "signal"
    msg_id = kc.execute(code)
    assert until(lambda: _started(kc, msg_id), timeout=120)     # the cell is in its sleep
    km.interrupt_kernel()
    reply = until(lambda: _reply_to(kc, msg_id), timeout=120)   # long before the sleep ends
    assert reply is not None          # IRkernel says "abort", ipykernel "error"
    assert km.is_alive() and run(kc, INSIDE[kernel])[0] == "ok"
    assert registry.get(km.kernel_id).deaths == []


@pytest.mark.parametrize("kernel", ["ir", "bash"])
def test_nothing_is_left_after_shutdown(start, kernel):
    km, kc = start(WRAPPED[kernel])
    kernel_id, container = km.kernel_id, registry.get(km.kernel_id).container
    assert leftovers()                        # its cgroup and directories, while it runs
    kc.stop_channels()
    km.shutdown_kernel(now=False)
    assert registry.get(kernel_id) is None
    assert container.state.value == "destroyed"
    assert leftovers() == []


def test_the_hmac_key_reaches_only_its_kernel(start, monkeypatch):
    monkeypatch.setenv("SBK_TEST_SERVER_SECRET", "the-hubs-api-token")
    km, kc = start(WRAPPED["bash"])
    key = km.session.key.decode()
    status, text = run(kc, "cat /proc/self/environ | tr '\\0' '\\n'; tr '\\0' ' ' < /proc/$PPID/cmdline")
    assert status == "ok"
    assert key not in text and "the-hubs-api-token" not in text   # not in its environment or argv
    outer = os.path.dirname(os.path.dirname(km.ip))
    for path, mode, uid in ((outer, 0o700, 0), (os.path.join(outer, "k"), 0o700, 65532),
                            (os.path.join(outer, "k", "kernel.json"), 0o600, 65532),
                            (os.path.dirname(km.ip), 0o700, 0)):     # the sockets the server uses
        info = os.lstat(path)
        assert (stat.S_IMODE(info.st_mode), info.st_uid) == (mode, uid), path
    assert km.transport == "ipc"              # no port anyone on the host could connect to
    for port in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"):
        assert stat.S_ISSOCK(os.lstat(f"{km.ip}-{getattr(km, port)}").st_mode)
    # another container of the same user (uid 65532) does not see it
    status, text = run(kc, "ls /run")
    assert text.split() == ["jupyter-kernel"]


@pytest.mark.parametrize("kernel, source", [("ir", "cat(Sys.info()[['nodename']])"), ("bash", "hostname")])
def test_nbclient_runs_a_notebook_and_reports_a_dead_kernel(jupyter_path, kernel, source):
    bomb = {"ir": "x <- list(); for (i in 1:100) x[[i]] <- numeric(5e7)",
            "bash": "kill -9 $PPID"}[kernel]    # bash_kernel is the parent of its bash
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source),
                                               nbformat.v4.new_code_cell(bomb)])
    client = NotebookClient(notebook, kernel_name=WRAPPED[kernel], timeout=180, startup_timeout=120)
    with pytest.raises(DeadKernelError):
        client.execute()
    assert "sandbox" in notebook.cells[0].outputs[0]["text"]
    assert leftovers() == []


def _started(kc, msg_id) -> bool:
    try:
        message = kc.get_iopub_msg(timeout=1)
    except queue.Empty:
        return False
    return message["parent_header"].get("msg_id") == msg_id and message["msg_type"] == "stream" \
        and "started" in message["content"]["text"]


def _reply_to(kc, msg_id):
    try:
        message = kc.get_shell_msg(timeout=1)
    except queue.Empty:
        return None
    return message if message["parent_header"].get("msg_id") == msg_id else None


def test_a_link_the_kernel_makes_for_a_socket_is_never_followed(start, tmp_path):
    """A kernel that puts a symbolic link where its socket should be, to a
    unix socket of the host, fails to start in one line; the server (root)
    connects to nothing through it."""
    host_socket = socket.socket(socket.AF_UNIX)
    host_socket.bind(str(tmp_path / "host.sock"))
    host_socket.listen()
    host_socket.settimeout(0.5)
    km = KernelManager(kernel_name=WRAPPED["bash"])
    km.kernel_spec.argv = ["/bin/sh", "-c", f"for p in $(seq 1 5); do ln -s {tmp_path}/host.sock "
                           "/run/jupyter-kernel/kernel-$p; done; sleep 60", "{connection_file}"]
    try:
        with pytest.raises(Exception, match="is not a socket the kernel bound \\(a symbolic link"):
            km.start_kernel()
        with pytest.raises(TimeoutError):
            host_socket.accept()
    finally:
        host_socket.close()
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    assert leftovers() == []
