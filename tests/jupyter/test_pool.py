"""Fast starts in real kernels: the container the magics start ahead when
they load (the warm pool) serves the first %%container cell with the limits
that cell asks for and goes away with the kernel; the agent of a sandbox
kernel holds no file of the kernel or of its zygote.  Every wait is bounded."""
from __future__ import annotations

import json
import time

import pytest

import kernel_fixtures as kf  # tests and tests/jupyter are on pytest's pythonpath
from open_files import LIST_FDS, open_files

SANDBOX = "sbk-test-pool-kernel"

@pytest.fixture(scope="module")
def kernelspecs(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("jupyter-data"))
    kf.install_kernelspec(data, SANDBOX)
    with kf.jupyter_path(data):
        yield data


@pytest.fixture
def start(kernelspecs):
    """start(name="python3", env=None): kernels of this test alone."""
    with kf.kernels_of_one_test("python3") as start_kernel:
        yield start_kernel


ok = kf.ok


def below(pid: int, comm: str) -> list[int]:
    """Live processes under pid named comm, except a child of one of them
    that still bears its parent's name (a launcher's init between fork and
    naming itself is not a second container)."""
    named = {}
    for child in kf.descendants(pid):
        try:
            with open(f"/proc/{child}/stat") as handle:
                name, rest = handle.read().rsplit(")", 1)
        except OSError:
            continue
        state, parent = rest.split()[:2]
        if name.endswith(f"({comm}") and state != "Z":
            named[child] = int(parent)
    return sorted(child for child, parent in named.items() if parent not in named)


def wait_for(condition, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def test_the_magics_start_a_container_ahead_and_the_first_cell_takes_it_with_its_limits(start):
    kernel = start()
    ok(kernel.run("%load_ext sandbox_kernel"))
    ok(kernel.run("%container footer output"))        # the footer read below is an output
    launchers = wait_for(lambda: below(kernel.pid, "sbk-launcher"))
    assert len(launchers) == 1, "loading the magics started no container ahead"
    zygotes = below(kernel.pid, "sbk-zygote")
    assert len(zygotes) == 1 and launchers[0] in kf.descendants(zygotes[0])

    ran = ok(kernel.run("%%container --memory 200M\nprint('in the warm container')"))
    assert ran.stdout == "in the warm container\n"
    assert ran.footers[-1]["cell"]["memory_limit"] == 200 << 20       # read from the cgroup
    status = ok(kernel.run("%container status")).of("display_data")[0]["data"]["text/plain"]
    assert str(launchers[0]) in status, status                 # the same container, not a second one
    assert f"sbk-{kernel.pid}-" in status                      # this kernel's own
    # in the background: the pool's next container, and the session's spare (spare.py)
    assert wait_for(lambda: len(below(kernel.pid, "sbk-launcher")) == 3)
    assert launchers[0] in below(kernel.pid, "sbk-launcher")


def launcher_of(kernel, name: str) -> int:
    """The launcher pid %container status names for session ``name``."""
    status = ok(kernel.run(f"%container status --name {name}")).of("display_data")[0]["data"]["text/plain"]
    pids = [pid for pid in below(kernel.pid, "sbk-launcher") if str(pid) in status]
    assert len(pids) == 1, status
    return pids[0]


# what one session leaves in its container: files where a user may write,
# a variable, an environment variable and a process still running
LEAVE_TRACES = """
import os, pathlib, subprocess
for place in ("/tmp", "/dev/shm", "/var/tmp", os.path.expanduser("~"), os.getcwd()):
    try:
        pathlib.Path(place, "left-by-a").write_text("secret of a")
    except OSError:
        pass
os.environ["LEFT_BY_A"] = "secret of a"
left_by_a = "secret of a"
held = subprocess.Popen(["sleep", "600"])
"""
FIND_TRACES = """
import os, glob
seen = [p for place in ("/tmp", "/dev/shm", "/var/tmp", os.path.expanduser("~"), os.getcwd())
        for p in glob.glob(os.path.join(place, "left-by-a"))]
seen += ["env"] if "LEFT_BY_A" in os.environ else []
seen += ["variable"] if "left_by_a" in globals() else []
seen += [pid for pid in os.listdir("/proc") if pid.isdigit()
         and open(f"/proc/{pid}/cmdline", "rb").read().startswith(b"sleep\0600")]
print(seen)
"""


def test_a_warm_container_holds_nothing_of_the_session_before_it(start):
    """The pool's next container and a session's spare were started ahead,
    while another session ran: the session that takes one (a new --name
    session; a restart) sees nothing the other wrote, set or started."""
    kernel = start(env={"SANDBOX_KERNEL_NOTEBOOK_DIR": "none"})     # a fresh /workspace each
    ok(kernel.run("%load_ext sandbox_kernel"))
    ok(kernel.run("%container footer off"))
    ok(kernel.run("%%container --name a\n" + LEAVE_TRACES))
    traces = ok(kernel.run("%%container --name a\n" + FIND_TRACES)).stdout
    assert "left-by-a" in traces and "env" in traces and "variable" in traces, traces   # the probe sees them
    assert wait_for(lambda: len(below(kernel.pid, "sbk-launcher")) == 3)   # a, the pool's next, a's spare
    warm = set(below(kernel.pid, "sbk-launcher"))

    assert ok(kernel.run("%%container --name b\n" + FIND_TRACES)).stdout == "[]\n"
    assert launcher_of(kernel, "b") in warm                     # the pool's container, started ahead
    ok(kernel.run("%container restart --name a"))
    assert ok(kernel.run("%%container --name a\n" + FIND_TRACES)).stdout == "[]\n"
    assert launcher_of(kernel, "a") in warm                     # a's spare, started ahead


def test_a_container_started_ahead_that_no_cell_used_goes_away_with_the_kernel(start, leftovers):
    kernel = start()
    ok(kernel.run("%load_ext sandbox_kernel"))
    assert wait_for(lambda: below(kernel.pid, "sbk-launcher"))
    processes = kf.descendants(kernel.pid)
    pid = kernel.pid
    kernel.shutdown()
    assert leftovers.wait(pid, processes) == {"cgroups": [], "state_dirs": [], "processes": []}


def test_the_pool_can_be_turned_off_and_a_bad_size_is_one_clear_line(start):
    off = start(env={"SANDBOX_KERNEL_POOL": "0"})
    bad = start(env={"SANDBOX_KERNEL_POOL": "lots"})
    ok(off.run("%load_ext sandbox_kernel"))
    ran = ok(bad.run("%load_ext sandbox_kernel"))
    assert ran.stderr.count("\n") == 1 and "SANDBOX_KERNEL_POOL='lots'" in ran.stderr, ran.stderr
    assert "0 (no containers started ahead) to 4" in ran.stderr
    time.sleep(2)                       # what a warm start would take, several times over
    assert below(off.pid, "sbk-launcher") == [] == below(bad.pid, "sbk-launcher")
    assert ok(off.run("%%container\nprint(1)")).stdout == "1\n"     # cold, as before


def test_the_sandbox_kernels_agent_holds_no_file_of_the_kernel_or_of_its_zygote(start):
    kernel = start(SANDBOX)
    ran = ok(kernel.run(LIST_FDS))
    inside = {int(fd): target for fd, target in json.loads(ran.stdout).items()}
    zygotes = below(kernel.pid, "sbk-zygote")
    assert len(zygotes) == 1
    of_kernel, of_zygote = open_files(kernel.pid), open_files(zygotes[0])
    assert inside[0] == "/dev/null"
    assert inside[1].startswith("pipe:") and inside[2].startswith("pipe:")
    channel = [fd for fd in inside if fd > 2]
    assert len(channel) == 1 and inside[channel[0]].startswith("socket:"), inside
    shared = set(inside.values()) - {"/dev/null"}     # a path anyone may open, not a shared file
    assert not shared & set(of_zygote.values()), (inside, of_zygote)
    # the kernel holds the read ends of the agent's two log pipes, and nothing else of it
    assert shared & set(of_kernel.values()) == {inside[1], inside[2]}, (inside, of_kernel)


def test_a_restart_after_a_change_of_limits_gets_the_new_limits_not_the_spares_old_ones(start):
    kernel = start()
    ok(kernel.run("%load_ext sandbox_kernel"))
    ok(kernel.run("%container footer output"))
    ok(kernel.run("%%container --name c --memory 200M\nx = 1"))
    assert wait_for(lambda: len(below(kernel.pid, "sbk-launcher")) == 3)   # c's spare is up, with 200M
    ok(kernel.run("%container limits --name c --memory 300M"))
    ok(kernel.run("%container restart --name c"))
    ran = ok(kernel.run("%%container --name c\nprint('restarted')"))
    assert ran.stdout == "restarted\n"
    assert ran.footers[-1]["cell"]["memory_limit"] == 300 << 20          # read from the cgroup


def test_a_spare_says_so_on_its_card_until_its_session_takes_it(start):
    """top and the stats endpoint tell a session's standby from the session."""
    from sandbox_kernel.runtime import cards
    kernel = start()
    ok(kernel.run("%load_ext sandbox_kernel"))
    ok(kernel.run("%%container --name s1\nx = 1"))
    roles = lambda: sorted(c.labels.get("role") or "" for c in cards.of_owner(kernel.pid)  # noqa: E731
                           if c.labels.get("session") == "s1")
    assert wait_for(lambda: roles() == ["", "spare"], 60), roles()
    ok(kernel.run("%container restart --name s1"))
    assert "" in roles()   # the spare taken is the session's container now, not a spare
