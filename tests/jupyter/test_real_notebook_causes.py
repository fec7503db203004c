"""Real notebooks run unchanged (issue 25): causes 2, 3 and 5, through
jupyter_client as a frontend drives a kernel, on both faces: the sandbox
kernel, and ``%%container`` cells in a plain ipykernel.

* cause 2: ``%%file mod.py`` then ``import mod`` works, also after ``%cd``;
  ``sys.path`` inside has '' (the working directory at each import) and no
  entry that does not exist in the container.
* cause 3: ``input()`` and ``getpass()`` are answered through the stdin
  channel (input_request / input_reply); without allow_stdin they raise
  StdinNotImplementedError as ipykernel does; an interrupt while the cell
  waits is a KeyboardInterrupt and the kernel stays usable.
* cause 5: a SyntaxError, a ZeroDivisionError inside an indented function
  and a warnings.warn read the same as on plain ipykernel (cell file names
  /tmp/ipykernel_PID/HASH.py, the same context lines), ANSI stripped and
  the PID normalised.

Every wait is bounded (kernel_fixtures); kernels are shut down at teardown.
"""
from __future__ import annotations

import os
import queue
import re
import time

import pytest

import kernel_fixtures as kf  # tests/jupyter is on pytest's pythonpath (pyproject)

NAME = "sbk-test-real-notebook-causes"
MAGIC = "%%container --name causes\n"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
PID = re.compile(r"/tmp/ipykernel_\d+/")
STDIN_WAIT = 90


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("jupyter-data"))
    kf.install_kernelspec(data, NAME, footer=False)
    with kf.jupyter_path(data):
        yield data


def _start(kernel_name: str, cwd: str) -> kf.SandboxKernel:
    return kf.SandboxKernel(kernel_name, cwd=cwd)


@pytest.fixture(scope="module")
def sandbox(data_dir, tmp_path_factory):
    kernel = _start(NAME, str(tmp_path_factory.mktemp("notebook")))
    try:
        yield kernel
    finally:
        kernel.shutdown()


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """A plain ipykernel with the extension: cells run in a container with %%container."""
    kernel = _start("python3", str(tmp_path_factory.mktemp("host-notebook")))
    try:
        kf.ok(kernel.run("%load_ext sandbox_kernel"))
        yield kernel
    finally:
        kernel.shutdown()


@pytest.fixture(params=["sandbox", "magics"])
def face(request):
    """(kernel, prefix): the sandbox kernel's cells as they are, or %%container cells."""
    if request.param == "sandbox":
        return request.getfixturevalue("sandbox"), ""
    return request.getfixturevalue("host"), MAGIC


# -- cause 2: imports -------------------------------------------------------------------


def test_a_module_written_by_a_cell_imports(face):
    kernel, prefix = face
    kf.ok(kernel.run(prefix + "import os, tempfile\n"
                              "os.chdir(tempfile.mkdtemp(prefix='causes-'))"))
    # %%file in the container: the magics' face says it through IPython's writefile
    kf.ok(kernel.run(prefix + "get_ipython().run_cell_magic('writefile', 'causes_mod.py', "
                              "'VALUE = 42\\n')"))
    ran = kf.ok(kernel.run(prefix + "import causes_mod\nprint(causes_mod.VALUE)"))
    assert ran.stdout.endswith("42\n")


def test_sys_path_has_the_working_directory_and_nothing_missing_inside(face):
    kernel, prefix = face
    ran = kf.ok(kernel.run(prefix + (
        "import os, sys\n"
        "print(repr([p for p in sys.path if p and not os.path.exists(p)]))\n"
        "print('' in sys.path)\n"
        "print(min([i for i, p in enumerate(sys.path) if p.endswith('-packages')] or [0]) "
        ">= sys.path.index(''))")))
    assert ran.stdout.splitlines()[-3:] == ["[]", "True", "True"]


def test_file_magic_then_import_in_the_sandbox_kernel(sandbox):
    kf.ok(sandbox.run("%cd /tmp"))
    kf.ok(sandbox.run("%%file causes_magic_mod.py\nANSWER = 'yes'\n"))
    assert kf.ok(sandbox.run("import causes_magic_mod\nprint(causes_magic_mod.ANSWER)")).stdout \
        == "yes\n"


# -- cause 3: input() and getpass() ------------------------------------------------------


def _stdin_request(kernel: kf.SandboxKernel, msg_id: str) -> dict:
    deadline = time.monotonic() + STDIN_WAIT
    while time.monotonic() < deadline:
        try:
            msg = kernel.kc.get_stdin_msg(timeout=1)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "input_request":
            return msg["content"]
    raise AssertionError(f"no input_request within {STDIN_WAIT} s")


def _cell_error(ran: kf.Ran) -> str:
    """The container cell's error as "ename: evalue", on either face."""
    error = ran.of("error")[-1]
    if error["ename"] == "ContainerError":
        return error["evalue"]
    return f"{error['ename']}: {error['evalue']}"


def test_input_is_answered_through_the_stdin_channel(face):
    kernel, prefix = face
    msg_id = kernel.kc.execute(prefix + "print('before')\nname = input('name? ')\n"
                                        "print('hello', name)", allow_stdin=True)
    request = _stdin_request(kernel, msg_id)
    assert request == {"prompt": "name? ", "password": False}
    kernel.kc.input("world")
    ran = kf.ok(kernel.collect(msg_id))
    assert ran.stdout.endswith("before\nhello world\n")


def test_getpass_asks_for_a_password(face):
    kernel, prefix = face
    msg_id = kernel.kc.execute(prefix + "import getpass\nsecret = getpass.getpass('key: ')\n"
                                        "print(len(secret))", allow_stdin=True)
    assert _stdin_request(kernel, msg_id) == {"prompt": "key: ", "password": True}
    kernel.kc.input("s3cret")
    assert kf.ok(kernel.collect(msg_id)).stdout.endswith("6\n")


def test_without_stdin_input_raises_as_in_ipykernel(face):
    kernel, prefix = face
    ran = kernel.run(prefix + "input('name? ')")        # allow_stdin=False
    assert ran.reply["status"] == "error"
    # the magics' face says it as ContainerError: "ename: evalue" of the container's
    assert _cell_error(ran) == (
        "StdinNotImplementedError: "
        "raw_input was called, but this frontend does not support input requests.")


def test_an_interrupt_ends_the_wait_and_the_kernel_stays_usable(face):
    kernel, prefix = face
    msg_id = kernel.kc.execute(prefix + "input('never answered: ')", allow_stdin=True)
    _stdin_request(kernel, msg_id)
    kernel.km.interrupt_kernel()
    ran = kernel.collect(msg_id)
    assert ran.reply["status"] == "error"
    assert _cell_error(ran).startswith("KeyboardInterrupt")
    assert kf.ok(kernel.run(prefix + "print(6 * 7)")).stdout.endswith("42\n")


# -- cause 5: tracebacks and warnings ----------------------------------------------------

CELLS = (
    "x = 1",
    "def outer(x):\n    if x:\n        for i in range(1):\n            return x / 0\nouter(1)",
    "import warnings\nwarnings.warn('careful')",
    "y = (1,\nz = 2",
)


def _normalised(ran: kf.Ran) -> list:
    """Errors and stderr, as text without colours and with PID for the kernel's pid."""
    def clean(text: str) -> str:
        return PID.sub("/tmp/ipykernel_PID/", ANSI.sub("", text))
    errors = [(e["ename"], clean(e["evalue"]), [clean(line) for line in e["traceback"]])
              for e in ran.of("error")]
    return [errors, clean(ran.stderr)]


def test_tracebacks_and_warnings_read_as_on_ipykernel(data_dir, tmp_path):
    """The same cells, in the same order (so the same In[N]), on fresh kernels."""
    got = {}
    for kernel_name in ("python3", NAME):
        kernel = _start(kernel_name, str(tmp_path))
        try:
            got[kernel_name] = [_normalised(kernel.run(cell)) for cell in CELLS]
        finally:
            kernel.shutdown()
    plain, sandboxed = got["python3"], got[NAME]
    assert "/tmp/ipykernel_PID/" in plain[2][1]           # the warning's location
    assert plain[1][0][0][0] == "ZeroDivisionError" and plain[3][0][0][0] == "SyntaxError"
    for cell, expected, actual in zip(CELLS, plain, sandboxed):
        assert actual == expected, f"cell {cell!r}"


# -- a live cpus change reaches the thread variables of the running agent ------------------

THREADS = ("import os, subprocess\n"
           "print(os.environ.get('OMP_NUM_THREADS'), os.environ.get('MKL_NUM_THREADS'), "
           "subprocess.run(['sh', '-c', 'echo $OPENBLAS_NUM_THREADS'], capture_output=True, "
           "text=True).stdout.strip())")


def test_a_live_cpus_change_rewrites_the_automatic_thread_variables(host):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs for a 2-cpu limit")
    prefix = "%%container --name causes-threads\n"
    kf.ok(host.run("%%container --name causes-threads --cpus 1\n"
                   "import os\nos.environ['MKL_NUM_THREADS'] = '3'"))     # the user's choice
    assert kf.ok(host.run(prefix + THREADS)).stdout.endswith("1 3 1\n")
    kf.ok(host.run("%container limits --name causes-threads --cpus 2"))
    assert kf.ok(host.run(prefix + THREADS)).stdout.endswith("2 3 2\n")
