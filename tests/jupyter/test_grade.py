"""``sandbox-kernel grade`` on a class of 6 submissions made here, in a
throwaway course directory: two honest ones (right and wrong), a snoop that
reads its classmates and the source notebook, one that goes for the
gradebook and the course directory, a fork bomb, an infinite loop and a
memory bomb.  Real sandbox kernels, one per submission; every wait is
bounded (the grade command's own --timeout, and the subprocess's).
"""
from __future__ import annotations

import csv
import glob
import json
import os
import subprocess
import sys
import tempfile

import nbformat
import pytest

SOLUTION = "def add(a, b):\n    return a + b\n"
CHECK = "assert add(2, 3) == 5\nprint('checked')\n"
HIDDEN = "# hidden test: SECRET-HIDDEN-TEST\nassert add(-1, 1) == 0\n"

# what each hostile submission looks for; {course} is filled in by the test
SNOOP = """\
import glob, os
found = []
for pattern in ({course!r} + '/submitted/*/*.ipynb', {course!r} + '/source/*.ipynb', '../*/*.ipynb',
                '../../*/*/*.ipynb', '/tmp/**/*.ipynb'):
    for path in glob.glob(pattern, recursive=True):
        try:
            found.append((path, open(path).read(200)))
        except OSError:
            pass
print('FOUND', found)
assert not found, found
"""
GRADEBOOK = """\
import os
found = []
for path in ({course!r} + '/gradebook.db', '../gradebook.db', '../../gradebook.db'):
    try:
        with open(path, 'r+b') as handle:
            found.append(handle.read(16))
            handle.seek(0); handle.write(b'HACKED')
    except OSError:
        pass
for folder in ({course!r}, '..', '../..'):
    try:
        found += [name for name in os.listdir(folder) if name in ('gradebook.db', 'source', 'submitted')]
    except OSError:
        pass
print('FOUND', found)
assert not found, found
"""
FORK_BOMB = """\
import os, time
while True:
    if os.fork() == 0:
        while True:
            time.sleep(1)
"""
LOOP = "while True:\n    pass\n"
MEMORY_BOMB = "hog = bytes(range(256)) * (4 << 20)   # 1 GiB, written\n"


def make_notebook(path: str, cells: list[str]) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    nbformat.write(notebook, path)


def make_class(course: str) -> dict[str, str]:
    """The course directory: gradebook.db, source/hw.ipynb (with the hidden
    test), submitted/<student>/hw.ipynb; returns student -> path."""
    os.makedirs(course)
    with open(os.path.join(course, "gradebook.db"), "wb") as handle:
        handle.write(b"SQLite format 3\x00 grades of the class")
    make_notebook(os.path.join(course, "source", "hw.ipynb"), [SOLUTION, CHECK, HIDDEN])
    answers = {
        "right": [SOLUTION, CHECK],
        "wrong": ["def add(a, b):\n    return a - b\n", CHECK],
        "snoop": [SOLUTION, SNOOP.format(course=course), CHECK],
        "gradebook": [SOLUTION, GRADEBOOK.format(course=course), CHECK],
        "forkbomb": [SOLUTION, FORK_BOMB, CHECK],
        "loop": [SOLUTION, LOOP, CHECK],
        "membomb": [SOLUTION, MEMORY_BOMB, CHECK],
    }
    paths = {}
    for student, cells in answers.items():
        paths[student] = os.path.join(course, "submitted", student, "hw.ipynb")
        make_notebook(paths[student], cells)
    return paths


def grade(paths: list[str], report: str, *extra: str, timeout: float = 400) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "sandbox_kernel.cli", "grade", *paths, "--memory", "256M",
               "--pids", "32", "--timeout-cell", "5s", "--timeout", "2m", "-j", "2",
               "--report", report, *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def sbk_cgroups() -> set[str]:
    found = set()
    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"):
        found |= {os.path.basename(p) for p in glob.glob(os.path.join(root, "**", "sbk-*"), recursive=True)}
    return found


def leaked_cgroups(before: set[str]) -> set[str]:
    """sbk- cgroups made since ``before`` whose maker (sbk-PID-...) is gone:
    those of our kernels; other engineers' live kernels may make theirs."""
    leaked = set()
    for name in sbk_cgroups() - before:
        pid = name.split("-")[1]
        if not (pid.isdigit() and os.path.exists(f"/proc/{pid}")):
            leaked.add(name)
    return leaked


def kernels_running(cwd_prefix: str = os.path.join(tempfile.gettempdir(), "sbk-grade-")) -> set[int]:
    """Sandbox kernels still running in a directory below ``cwd_prefix``
    (the grader's private workspaces, or a course's autograded/)."""
    mine = set()
    for entry in glob.glob("/proc/[0-9]*"):
        try:
            with open(os.path.join(entry, "cmdline"), "rb") as handle:
                if b"sandbox_kernel.kernel" not in handle.read():
                    continue
            if os.readlink(os.path.join(entry, "cwd")).startswith(cwd_prefix):
                mine.add(int(entry.split("/")[2]))
        except OSError:
            continue
    return mine


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The whole class graded once, as JSON, and the course's bytes before."""
    top = str(tmp_path_factory.mktemp("grade"))
    course = os.path.join(top, "course")
    paths = make_class(course)
    with open(os.path.join(course, "gradebook.db"), "rb") as handle:
        gradebook = handle.read()
    cgroups_before = sbk_cgroups()
    report = os.path.join(top, "out", "grades.json")
    os.makedirs(os.path.dirname(report))
    done = grade(list(paths.values()), report)
    assert done.returncode == 0, done.stderr
    with open(report) as handle:
        grades = {os.path.basename(os.path.dirname(g["notebook"])): g
                  for g in json.load(handle)["submissions"]}
    return {"course": course, "paths": paths, "gradebook": gradebook, "grades": grades,
            "report": report, "done": done, "cgroups_before": cgroups_before}


def cell_of(grade: dict, index: int) -> dict:
    return next(cell for cell in grade["cells"] if cell["index"] == index)


def test_honest_submissions_are_graded_by_their_assert_cell(graded):
    right, wrong = graded["grades"]["right"], graded["grades"]["wrong"]
    assert (right["verdict"], right["cells_ok"]) == ("ok", 2)
    assert wrong["verdict"] == "error" and wrong["cells_ok"] == 1
    assert cell_of(wrong, 1)["exception"] == "AssertionError"
    assert cell_of(right, 1)["wall"] is not None and cell_of(right, 1)["memory_peak"]


def test_honest_grades_are_the_same_graded_alone(graded, tmp_path):
    paths = graded["paths"]
    report = str(tmp_path / "alone.json")
    done = grade([paths["right"], paths["wrong"]], report)
    assert done.returncode == 0, done.stderr
    with open(report) as handle:
        alone = json.load(handle)["submissions"]
    for grade_alone in alone:
        student = os.path.basename(os.path.dirname(grade_alone["notebook"]))
        in_class = graded["grades"][student]
        assert [(c["verdict"], c["exception"]) for c in grade_alone["cells"]] == \
               [(c["verdict"], c["exception"]) for c in in_class["cells"]]


def test_the_snoop_finds_no_classmate_and_no_source_notebook(graded):
    snoop = graded["grades"]["snoop"]
    assert snoop["verdict"] == "ok", snoop
    executed = nbformat.read(snoop["executed"], as_version=4)
    text = json.dumps([cell.get("outputs") for cell in executed.cells])
    assert "FOUND []" in text and "SECRET-HIDDEN-TEST" not in text


def test_the_gradebook_is_out_of_reach_and_unchanged(graded):
    assert graded["grades"]["gradebook"]["verdict"] == "ok", graded["grades"]["gradebook"]
    with open(os.path.join(graded["course"], "gradebook.db"), "rb") as handle:
        assert handle.read() == graded["gradebook"]


def test_the_fork_bomb_is_contained(graded):
    bomb = graded["grades"]["forkbomb"]
    assert cell_of(bomb, 1)["verdict"] in ("pids", "killed"), bomb
    assert cell_of(bomb, 2)["verdict"] == "ok"          # the grader went on, in the same kernel


def test_the_infinite_loop_times_out(graded):
    loop = graded["grades"]["loop"]
    assert loop["verdict"] == "timeout" and cell_of(loop, 1)["verdict"] == "timeout", loop


def test_the_memory_bomb_is_oom(graded):
    bomb = graded["grades"]["membomb"]
    assert bomb["verdict"] == "oom" and cell_of(bomb, 1)["verdict"] == "oom", bomb


def test_the_executed_notebooks_are_beside_the_report(graded):
    folder = os.path.join(os.path.dirname(graded["report"]), "executed")
    names = sorted(os.listdir(folder))
    assert len(names) == 7 and all(name.endswith("-hw.ipynb") for name in names)
    right = nbformat.read(graded["grades"]["right"]["executed"], as_version=4)
    assert "checked" in json.dumps(right.cells[1].outputs)
    assert right.cells[1].metadata["sandbox_kernel"]["stats"]["cell"]["status"] == "ok"


def test_nothing_is_left_behind(graded):
    assert not leaked_cgroups(graded["cgroups_before"])
    assert not kernels_running()


def test_the_csv_report(graded, tmp_path):
    report = str(tmp_path / "grades.csv")
    done = grade([graded["paths"]["right"], graded["paths"]["wrong"]], report)
    assert done.returncode == 0, done.stderr
    with open(report) as handle:
        rows = {os.path.basename(os.path.dirname(row["notebook"])): row for row in csv.DictReader(handle)}
    assert (rows["right"]["verdict"], rows["right"]["cells_ok"], rows["right"]["cells"]) == ("ok", "2", "2")
    assert rows["wrong"]["first_failure"] == "cell 1: error AssertionError"


@pytest.mark.parametrize("argv, words", [
    (["/nonexistent/hw.ipynb"], "no such notebook file"),
    (["--memory", "lots", "{nb}"], "memory"),
    (["--timeout-cell", "-3", "{nb}"], "timeout-cell"),
    (["--pids", "0", "{nb}"], "pids"),
    (["-j", "0", "{nb}"], "-j 0"),
    (["-j", "100000", "--memory", "1T", "{nb}"], "available"),
    (["--report", "grades.txt", "{nb}"], ".json or .csv"),
    (["--memory", "none", "{nb}"], "invalid memory 'none'"),
    (["--data", "/nonexistent/data", "{nb}"], "not a directory"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, argv, words):
    notebook = str(tmp_path / "hw.ipynb")
    make_notebook(notebook, [SOLUTION])
    command = [sys.executable, "-m", "sandbox_kernel.cli", "grade", *[a.format(nb=notebook) for a in argv]]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and words in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_a_file_that_is_not_a_notebook_is_one_line(tmp_path):
    bad = tmp_path / "hw.ipynb"
    bad.write_text("print('not json')")
    done = subprocess.run([sys.executable, "-m", "sandbox_kernel.cli", "grade", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "not a Jupyter notebook" in done.stderr
    assert done.stderr.count("\n") == 1


def test_the_whole_submission_timeout_stops_only_it(tmp_path):
    slow = str(tmp_path / "slow" / "hw.ipynb")
    make_notebook(slow, ["import time"] + ["time.sleep(1)"] * 20)
    right = str(tmp_path / "right" / "hw.ipynb")
    make_notebook(right, [SOLUTION, CHECK])
    report = str(tmp_path / "grades.json")
    try:
        done = grade([slow, right], report, "--timeout", "4s")
        assert done.returncode == 0, done.stderr
        with open(report) as handle:
            by_student = {os.path.basename(os.path.dirname(g["notebook"])): g
                          for g in json.load(handle)["submissions"]}
        assert by_student["slow"]["verdict"] == "timeout" and "--timeout 4s" in by_student["slow"]["note"]
        assert 0 < by_student["slow"]["cells_ok"] < 21
        assert by_student["right"]["verdict"] == "ok"
    finally:
        assert not kernels_running()


def test_data_is_readable_and_stays_unchanged(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "numbers.csv").write_text("1,2,3\n")
    reader = str(tmp_path / "student" / "hw.ipynb")
    make_notebook(reader, ["print('READ', open('data/numbers.csv').read())",
                           "try:\n    open('data/numbers.csv', 'w').write('0')\nexcept OSError as e:\n"
                           "    print('refused', e.errno)\n"])
    report = str(tmp_path / "out" / "grades.json")
    os.makedirs(os.path.dirname(report))
    done = grade([reader], report, "--data", str(data))
    assert done.returncode == 0, done.stderr
    with open(report) as handle:
        only = json.load(handle)["submissions"][0]
    executed = nbformat.read(only["executed"], as_version=4)
    assert "READ 1,2,3" in json.dumps(executed.cells[0].outputs), only
    assert (data / "numbers.csv").read_text() == "1,2,3\n"
