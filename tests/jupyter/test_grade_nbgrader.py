"""``nbgrader autograde`` (nbgrader 0.9, PyPI) executing every submission on
the sandbox kernel with the classroom policy, as docs/grading.md configures
it: a class of 7 made here in a throwaway course directory (two honest
submissions, a snoop, one after the gradebook, a fork bomb, an infinite
loop, a memory bomb).  nbgrader's own checks (the hidden tests, the locked
cells) keep working, and the gradebook stays outside every sandbox.  Real
kernels; every wait is bounded.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import nbformat
import pytest

from sandbox_kernel.kernel import install

from test_grade import FORK_BOMB, GRADEBOOK, LOOP, MEMORY_BOMB, kernels_running, leaked_cgroups, sbk_cgroups

nbgrader_api = pytest.importorskip("nbgrader.api", reason="nbgrader is not installed (pip install nbgrader)")

KERNEL = "sbk-test-grader"
SOURCE_ANSWER = "def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION\n"
TESTS = ("assert add(2, 3) == 5\n### BEGIN HIDDEN TESTS\n"
         "assert add(-1, 1) == 0   # SECRET-HIDDEN-TEST\n### END HIDDEN TESTS\n")
NBGRADER = {"solution": {"grade": False, "solution": True, "locked": False, "task": False,
                         "grade_id": "add", "schema_version": 3},
            "tests": {"grade": True, "solution": False, "locked": True, "task": False, "points": 1,
                      "grade_id": "test_add", "schema_version": 3}}


def nbgrader(course: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def write_config(course: str) -> None:
    with open(os.path.join(course, "nbgrader_config.py"), "w") as handle:
        handle.write(f"c = get_config()\nc.CourseDirectory.course_id = 'course'\n"
                     f"c.CourseDirectory.root = {course!r}\n"
                     f"c.Execute.kernel_name = {KERNEL!r}\nc.Execute.timeout = 60\n")


def write_kernelspec(data: str) -> None:
    """The sandbox kernel as docs/grading.md installs it: classroom, and the
    notebook's directory not mounted (--notebook-dir none): nbgrader writes
    the notebook with its hidden tests restored into the directory it then
    executes it in, where overlay would let a submission read them."""
    settings = install.checked_settings({"memory": "256M", "pids": "32", "timeout": "5s", "net": "none"})
    policy = install.checked_policy(settings, {"name": "classroom", "notebook_dir": "none"})
    install.write_kernelspec(os.path.join(data, "kernels", KERNEL),
                             install.kernel_json(settings, display_name="Grader", policy=policy))


def source_notebook(path: str) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell(SOURCE_ANSWER, metadata={"nbgrader": NBGRADER["solution"]}),
                      nbformat.v4.new_code_cell(TESTS, metadata={"nbgrader": NBGRADER["tests"]})]
    os.makedirs(os.path.dirname(path))
    nbformat.write(notebook, path)


def submit(course: str, student: str, answer: str, extra: str | None) -> None:
    """The released notebook with the student's answer (and an extra cell before the tests)."""
    notebook = nbformat.read(os.path.join(course, "release", "ps1", "hw.ipynb"), as_version=4)
    notebook.cells[0].source = answer
    if extra:
        notebook.cells.insert(1, nbformat.v4.new_code_cell(extra))
    folder = os.path.join(course, "submitted", student, "ps1")
    os.makedirs(folder)
    nbformat.write(notebook, os.path.join(folder, "hw.ipynb"))


# nbgrader runs a submission in autograded/STUDENT/ps1, beside its own
# files: those it may read; nothing else, and no hidden test anywhere
SNOOP = """\
import glob, os
own = os.path.realpath(os.getcwd()) + os.sep
found, secret = set(), False
for pattern in ({course!r} + '/**/*.ipynb', '/tmp/**/*.ipynb', '/*/*/*.ipynb',
                '/*/*/*/*.ipynb', '../../*/*/*.ipynb', '../*.ipynb'):
    for path in glob.glob(pattern, recursive=True):
        try:
            text = open(path, errors='replace').read()
        except OSError:
            continue
        secret |= 'SECRET-' + 'HIDDEN-TEST' in text
        if not os.path.realpath(path).startswith(own):
            found.add(path)
print('FOUND', sorted(found), 'SECRET', secret)
"""
RIGHT, WRONG = "def add(a, b):\n    return a + b\n", "def add(a, b):\n    return a - b\n"


@pytest.fixture(scope="module")
def autograded(tmp_path_factory):
    top = str(tmp_path_factory.mktemp("nbgrader"))
    course, data = os.path.join(top, "course"), os.path.join(top, "jupyter-data")
    os.makedirs(course)
    write_kernelspec(data)
    write_config(course)
    # nbgrader runs alembic by name: the one beside this Python
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = {**os.environ, "JUPYTER_PATH": data, "PATH": path}
    source_notebook(os.path.join(course, "source", "ps1", "hw.ipynb"))
    nbgrader(course, env, "generate_assignment", "ps1", "--force")
    hostile = {"snoop": SNOOP, "gradebook": GRADEBOOK, "forkbomb": FORK_BOMB, "loop": LOOP,
               "membomb": MEMORY_BOMB}
    submit(course, "right", RIGHT, None)
    submit(course, "wrong", WRONG, None)
    for student, code in hostile.items():
        submit(course, student, RIGHT, code.format(course=course))
    nbgrader(course, env, "db", "assignment", "add", "ps1")
    with open(os.path.join(course, "gradebook.db"), "rb") as handle:
        header = handle.read(16)
    cgroups_before = sbk_cgroups()
    nbgrader(course, env, "autograde", "ps1", "--create")
    scores = read_scores(course, ["right", "wrong", *hostile], path)
    return {"course": course, "scores": scores, "header": header, "cgroups_before": cgroups_before}


def read_scores(course: str, students: list[str], path: str) -> dict:
    saved = os.environ["PATH"]
    os.environ["PATH"] = path
    try:
        gradebook = nbgrader_api.Gradebook(f"sqlite:///{course}/gradebook.db")
        try:
            return {student: gradebook.find_submission_notebook("hw", "ps1", student).score
                    for student in students}
        finally:
            gradebook.close()
    finally:
        os.environ["PATH"] = saved


def autograded_text(course: str, student: str, cells: slice = slice(None)) -> str:
    """The outputs of the autograded notebook's cells (nbgrader's feedback
    of a failed test cell shows that cell, hidden tests included)."""
    notebook = nbformat.read(os.path.join(course, "autograded", student, "ps1", "hw.ipynb"), as_version=4)
    return json.dumps([cell.get("outputs") for cell in notebook.cells[cells]])


def test_honest_submissions_are_graded_with_the_hidden_tests(autograded):
    assert autograded["scores"]["right"] == 1 and autograded["scores"]["wrong"] == 0


def test_the_snoop_and_the_gradebook_seeker_get_nothing(autograded):
    for student in ("snoop", "gradebook"):
        text = autograded_text(autograded["course"], student, slice(1, 2))    # the extra cell
        assert "FOUND []" in text and "SECRET-HIDDEN-TEST" not in text, text
        assert student == "gradebook" or "SECRET False" in text, text
        assert autograded["scores"][student] == 1
    with open(os.path.join(autograded["course"], "gradebook.db"), "rb") as handle:
        assert handle.read(16) == autograded["header"]          # SQLite's header, not HACKED


def test_the_bombs_are_contained(autograded):
    course = autograded["course"]
    assert "BlockingIOError" in autograded_text(course, "forkbomb")
    assert "ContainerOutOfMemory" in autograded_text(course, "membomb")
    assert autograded["scores"]["membomb"] == 0                 # the fresh container lost add()
    loop = autograded_text(course, "loop")
    assert "time limit" in loop, loop


def test_nothing_is_left_behind(autograded):
    assert not kernels_running(autograded["course"])
    assert not leaked_cgroups(autograded["cgroups_before"])
