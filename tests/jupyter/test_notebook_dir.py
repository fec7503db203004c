"""The notebook's files are there (issue 25, cause 1): the directory the
kernel was started in (the notebook's, as jupyter_server and nbclient start
kernels) is the cells' working directory, at the same path as on the host,
so ``data/x.csv`` and a local package beside the notebook work as on
ipykernel.  Driven through jupyter_client and nbclient, as frontends do.

How it is mounted is the policy's: the sandbox kernel's classroom default
is read-only with a writable overlay that stays in the container (the host's
files never change); ``sandbox-kernel install --notebook-dir rw`` writes
through; ``%%container`` in an ordinary kernel is read-write (its author is
the host user).  Never the root, a system directory or a home directory.

Before, every container started in a fresh, empty /workspace.
"""
from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

import kernel_fixtures as kf  # tests/jupyter is on pytest's pythonpath (pyproject)
from sandbox_kernel.kernel import install

CLASSROOM = "sbk-test-nbdir-classroom"
READ_WRITE = "sbk-test-nbdir-rw"
TRUSTED = "sbk-test-nbdir-trusted"
PARENT = "sbk-test-nbdir-parent"
STATS_MIME = kf.STATS_MIME


def make_notebook_dir(parent) -> str:
    """A course folder as a notebook finds it: a data file, a local package,
    and a sibling folder; 0700 as mkdtemp makes it (the container's user is
    not the kernel's: the mount maps the owner)."""
    directory = parent / "course"
    (directory / "data").mkdir(parents=True)
    (directory / "data" / "x.csv").write_text("a,b\n1,2\n")
    (directory / "mypkg").mkdir()
    (directory / "mypkg" / "__init__.py").write_text("ANSWER = 42\n")
    (parent / "images").mkdir()
    directory.chmod(0o700)
    return str(directory)


@pytest.fixture(scope="module")
def jupyter_data(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("jupyter-data"))
    for name, policy in ((CLASSROOM, {}), (READ_WRITE, {"notebook_dir": "rw"}),
                         (TRUSTED, {"name": "trusted"}), (PARENT, {"notebook_root": "parent"})):
        spec = install.kernel_json({}, footer="output", policy=install.checked_policy({}, policy))
        install.write_kernelspec(os.path.join(data, "kernels", name), spec)
    with kf.jupyter_path(data):
        yield data


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    return make_notebook_dir(tmp_path_factory.mktemp("nbdir"))


@pytest.fixture(scope="module")
def classroom(jupyter_data, course):
    kernel = kf.SandboxKernel(CLASSROOM, cwd=course)
    try:
        yield kernel
    finally:
        kernel.shutdown()


def test_a_cell_starts_in_the_notebooks_directory_and_reads_its_data(classroom, course):
    ran = kf.ok(classroom.run("import os\nprint(os.getcwd())\nprint(open('data/x.csv').read(), end='')"))
    assert ran.stdout == f"{course}\na,b\n1,2\n"


def test_a_local_package_beside_the_notebook_imports(classroom):
    assert kf.ok(classroom.run("import mypkg\nprint(mypkg.ANSWER)")).stdout == "42\n"


def test_classroom_writes_are_seen_inside_and_never_reach_the_host(classroom, course):
    ran = kf.ok(classroom.run(
        "open('out.txt', 'w').write('mine')\nopen('data/x.csv', 'w').write('changed')\n"
        "print(open('out.txt').read(), open('data/x.csv').read())"))
    assert ran.stdout == "mine changed\n"
    assert sorted(os.listdir(course)) == ["data", "mypkg"]
    with open(os.path.join(course, "data", "x.csv")) as handle:
        assert handle.read() == "a,b\n1,2\n"


def shown(ran) -> str:
    """What a host-side %container line showed: its text, on stdout or as a display."""
    return ran.stdout + "".join(c["data"].get("text/plain", "") for c in ran.of("display_data"))


def footer_text(ran) -> str:
    """The footer's text/plain (its JSON is the stats contract, without the dir)."""
    return [c["data"]["text/plain"] for c in ran.of("display_data") if STATS_MIME in c["data"]][-1]


def test_status_and_footer_say_what_is_mounted_and_how(classroom, course):
    status = shown(kf.ok(classroom.run("%container status")))
    row = next(line for line in status.splitlines() if line.startswith("notebook dir"))
    assert row.split(None, 2)[2] == f"{course} (read-only; writes stay in the container)"
    assert f"| dir {course} ro+overlay" in footer_text(kf.ok(classroom.run("1")))


def test_read_write_policy_writes_reach_the_host(jupyter_data, tmp_path):
    course = make_notebook_dir(tmp_path)
    kernel = kf.SandboxKernel(READ_WRITE, cwd=course)
    try:
        kf.ok(kernel.run("open('result.txt', 'w').write('42')"))
    finally:
        kernel.shutdown()
    path = os.path.join(course, "result.txt")
    with open(path) as handle:
        assert handle.read() == "42"
    assert os.stat(path).st_uid == os.geteuid()       # the kernel's user's file, as on ipykernel


def test_a_notebook_root_makes_sibling_folders_resolve_as_on_the_host(jupyter_data, tmp_path):
    course = make_notebook_dir(tmp_path)
    (tmp_path / "images" / "logo.png").write_bytes(b"png")
    kernel = kf.SandboxKernel(PARENT, cwd=course)
    try:
        ran = kf.ok(kernel.run("import os\nprint(os.getcwd(), open('../images/logo.png').read(),"
                               " open('data/x.csv').read().split()[0])"))
        assert ran.stdout == f"{course} png a,b\n"
    finally:
        kernel.shutdown()


def test_a_kernel_started_at_the_root_mounts_nothing_and_says_why(jupyter_data, tmp_path):
    # nor does the classroom take the directory a launch's environment names
    kernel = kf.SandboxKernel(CLASSROOM, cwd="/",
                              env={"JPY_SESSION_NAME": os.path.join(make_notebook_dir(tmp_path), "x.ipynb")})
    try:
        assert kf.ok(kernel.run("import os\nprint(os.getcwd())")).stdout == "/workspace\n"
        assert "/ is the root" in shown(kf.ok(kernel.run("%container status")))
    finally:
        kernel.shutdown()


def test_trusted_from_the_root_jpy_session_name_gives_the_notebooks_directory(jupyter_data, tmp_path):
    course = make_notebook_dir(tmp_path)
    kernel = kf.SandboxKernel(TRUSTED, cwd="/",
                              env={"JPY_SESSION_NAME": os.path.join(course, "lesson.ipynb")})
    try:
        assert kf.ok(kernel.run("print(open('data/x.csv').read(), end='')")).stdout == "a,b\n1,2\n"
    finally:
        kernel.shutdown()


def test_a_home_directory_itself_is_not_mounted(jupyter_data, tmp_path):
    home = make_notebook_dir(tmp_path)
    kernel = kf.SandboxKernel(CLASSROOM, cwd=home, env={"HOME": home})
    try:
        ran = kf.ok(kernel.run("import os\nprint(os.getcwd(), os.path.exists('data'))"))
        assert ran.stdout == "/workspace False\n"
        assert "a home directory" in shown(kf.ok(kernel.run("%container status")))
    finally:
        kernel.shutdown()


def test_container_cells_in_an_ordinary_kernel_read_and_write_the_notebooks_directory(tmp_path):
    course = make_notebook_dir(tmp_path)
    kernel = kf.SandboxKernel("python3", cwd=course)    # ipykernel, with the extension
    try:
        kf.ok(kernel.run("%load_ext sandbox_kernel\n%container footer output"))   # read below
        ran = kf.ok(kernel.run("%%container --name nbdir\nimport os, mypkg\n"
                               "print(os.getcwd(), open('data/x.csv').read().split()[0], mypkg.ANSWER)\n"
                               "open('from_container.txt', 'w').write('hi')"))
        assert ran.stdout == f"{course} a,b 42\n"
        assert f"| dir {course} rw" in footer_text(ran)
        kf.ok(kernel.run("%container stop --name nbdir"))
    finally:
        kernel.shutdown()
    with open(os.path.join(course, "from_container.txt")) as handle:
        assert handle.read() == "hi"


def test_nbclient_runs_a_notebook_beside_its_data(jupyter_data, tmp_path):
    course = make_notebook_dir(tmp_path)
    cells = ["import csv\nrows = list(csv.reader(open('data/x.csv')))\nprint(rows)",
             "from mypkg import ANSWER\nANSWER"]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbformat.write(notebook, os.path.join(course, "lesson.ipynb"))
    NotebookClient(notebook, timeout=120, kernel_name=CLASSROOM,
                   resources={"metadata": {"path": course}}).execute()
    first, second = (cell.outputs for cell in notebook.cells)
    assert [o.text for o in first if o.output_type == "stream"] == ["[['a', 'b'], ['1', '2']]\n"]
    assert [o.data["text/plain"] for o in second if o.output_type == "execute_result"] == ["42"]
