"""The course: every notebooks/NN-*.ipynb and its Korean edition notebooks/ko/NN-*.ipynb,
checked as a student would meet it.

For each notebook:
- its shape: a goal at the top, exercises (a markdown cell, a collapsed
  reference solution tagged ``solution``, a ``check`` cell that asserts with a
  message), further reading; a kernel it declares (``python3-sandbox``, or
  ``python3`` with ``%load_ext sandbox_kernel``).  The headings are the edition's
  own words (SHAPE_WORDS: "Goal", "Exercises", "Further reading" in English;
  "목표", "연습 문제", "더 읽을거리" in Korean, whose notebooks also link the
  glossary notebooks/ko/용어집.md in their first cell);
- the committed outputs: no errors, and every figure the prose quotes agrees
  with what a code cell printed;
- a fresh run top to bottom with nbclient on its kernel: no cell errors
  (except cells tagged ``raises-exception``), the quoted figures hold again,
  and nothing is left behind (sbk-* cgroups, /tmp/sbk-*, /run/sbk-*, mounts);
- ``jupyter nbconvert --to html`` renders it.

Quoted figures: the prose writes ``<span data-figure="NAME">64 MiB</span>``
(one number inside), optionally with ``data-tolerance="exact"`` (the default:
the printed value, rounded to the decimals the prose shows, equals it),
``"N%"`` (relative) or ``"xN"`` (within a factor N, for timings).  A code cell
prints a line ``NAME = NUMBER [unit]`` (stdout or text/plain).

Runs natively (scripts/test course) and, for the notebooks that show cgroup
files, in the cgroup v2 guest (scripts/test course-v2), where processes start
about ten times slower: the timeouts scale.  A notebook runs in its own
directory (notebooks/ or notebooks/ko/), as Jupyter would start it.

Committed outputs are written by the same run (one notebook at a time, as root):
    .venv/bin/python tests/test_notebooks.py --write notebooks/ko/03-namespaces.ipynb
tests/test_course_twins.py checks that each Korean notebook keeps its English
twin's code cells.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import glob
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import nbformat
import pytest

import jupyter_env   # tests/: on pytest's pythonpath, and the script's own directory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(REPO, "notebooks")
KOREAN_DIR = os.path.join(NOTEBOOK_DIR, "ko")
ENGLISH = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, "[0-9][0-9]-*.ipynb")))
KOREAN = sorted(glob.glob(os.path.join(KOREAN_DIR, "[0-9][0-9]-*.ipynb")))
NOTEBOOKS = ENGLISH + KOREAN
KERNELS = ("python3-sandbox", "python3")
GLOSSARY = "용어집.md"                            # notebooks/ko/용어집.md, linked by both editions

# The words each edition's shape checks look for (the Korean ones are agreed with the
# translators in /work/notes/ko_headings.md): the goal in the first cell, the headings of
# the exercises and of further reading.
SHAPE_WORDS = {
    "en": {"goal": r"\bgoal\b", "exercises": r"^#+\s*exercises\b",
           "further reading": r"^#+\s*further reading"},
    "ko": {"goal": r"목표", "exercises": r"^#+\s*연습 문제",
           "further reading": r"^#+\s*더 읽을거리"},
}


def _in_uml_guest() -> bool:
    """User-Mode Linux (the cgroup v2 guest of ../shared/tools/run-in-v2)."""
    try:
        with open("/proc/cpuinfo") as handle:
            return "UML" in handle.read()
    except OSError:
        return False


SLOW = 10 if _in_uml_guest() else 1           # processes start ~10x slower in the guest
CELL_TIMEOUT = 120 * SLOW
STARTUP_TIMEOUT = 60 * SLOW
NOTEBOOK_TIMEOUT = 180 * SLOW                   # a notebook takes about a minute natively


def test_the_course_has_notebooks():
    assert ENGLISH, f"no notebook named NN-*.ipynb in {NOTEBOOK_DIR}"
    assert KOREAN, f"no notebook named NN-*.ipynb in {KOREAN_DIR}"


def ids(path: str) -> str:
    """00-start-here.ipynb for the English edition, ko/00-start-here.ipynb for the Korean."""
    return os.path.relpath(path, NOTEBOOK_DIR)


def edition(path: str) -> str:
    return "ko" if os.path.dirname(os.path.abspath(path)) == KOREAN_DIR else "en"


def shape_word(path: str, what: str) -> str:
    return SHAPE_WORDS[edition(path)][what]


# ---- the shape of a notebook ----------------------------------------------------------

def tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def read(path: str):
    return nbformat.read(path, as_version=4)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_is_valid_and_declares_a_kernel_it_can_run_on(path):
    notebook = read(path)
    nbformat.validate(notebook)
    kernel = notebook.metadata.get("kernelspec", {}).get("name")
    assert kernel in KERNELS, f"{ids(path)} declares kernel {kernel!r}; expected one of {KERNELS}"
    if kernel == "python3":
        assert any(cell.cell_type == "code" and "%load_ext sandbox_kernel" in cell.source
                   for cell in notebook.cells), (
            f"{ids(path)} runs on the python3 kernel but never runs %load_ext sandbox_kernel")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_opens_with_its_goal(path):
    first = read(path).cells[0]
    goal = shape_word(path, "goal")
    assert first.cell_type == "markdown" and re.search(goal, first.source, re.I), (
        f"{ids(path)}: the first cell should be markdown that states the notebook's goal"
        f" (a line with {goal!r})")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
@pytest.mark.parametrize("heading", ["exercises", "further reading"])
def test_notebook_has_the_headings_of_its_edition(path, heading):
    markdown = [cell.source for cell in read(path).cells if cell.cell_type == "markdown"]
    pattern = shape_word(path, heading)
    assert any(re.search(pattern, text, re.I | re.M) for text in markdown), (
        f"{ids(path)}: no markdown heading {heading!r} (a line matching {pattern!r})")


@pytest.mark.parametrize("path", KOREAN, ids=ids)
def test_a_korean_notebook_links_the_glossary_at_the_top(path):
    first = read(path).cells[0]
    assert f"]({GLOSSARY})" in first.source, (
        f"{ids(path)}: the first cell should link the glossary: [용어집]({GLOSSARY})")


def test_the_glossary_exists_and_the_english_edition_links_it():
    assert os.path.isfile(os.path.join(KOREAN_DIR, GLOSSARY)), f"no {KOREAN_DIR}/{GLOSSARY}"
    start = read(os.path.join(NOTEBOOK_DIR, "00-start-here.ipynb"))
    assert any(f"](ko/{GLOSSARY})" in cell.source for cell in start.cells
               if cell.cell_type == "markdown"), (
        f"00-start-here.ipynb should link the glossary: [...](ko/{GLOSSARY})")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_every_check_cell_follows_a_collapsed_solution_after_an_exercise(path):
    cells = read(path).cells
    checks = [i for i, cell in enumerate(cells) if "check" in tags(cell)]
    assert checks, f"{ids(path)}: no exercise with a cell tagged 'check'"
    for i in checks:
        check = cells[i]
        where = f"{ids(path)} cell {i}"
        assert check.cell_type == "code", f"{where}: a check cell must be code"
        assert "raises-exception" not in tags(check), f"{where}: a check cell must pass, not raise"
        assert asserts_with_a_message(check.source), (
            f"{where}: a check cell should `assert ..., 'a helpful message'`")
        assert i >= 2, f"{where}: a check cell needs an exercise and a solution before it"
        solution, exercise = cells[i - 1], cells[i - 2]
        assert solution.cell_type == "code" and "solution" in tags(solution), (
            f"{where}: the cell before a check cell must be its solution (a code cell tagged"
            " 'solution')")
        assert solution.metadata.get("jupyter", {}).get("source_hidden") is True, (
            f"{where}: the solution cell should be collapsed: metadata"
            ' "jupyter": {"source_hidden": true}')
        assert exercise.cell_type == "markdown", (
            f"{where}: the solution should follow a markdown cell that sets the exercise")


def asserts_with_a_message(source: str) -> bool:
    """An ``assert test, message`` in the cell (the body of a %%container cell counts)."""
    lines = source.splitlines()
    if lines and lines[0].startswith("%%"):
        if not lines[0].startswith("%%container") or "--shell" in lines[0]:
            return False
        lines = lines[1:]
    python = "\n".join("pass" if line.lstrip().startswith(("%", "!")) else line
                       for line in lines)
    try:
        tree = ast.parse(python)
    except SyntaxError:
        return False
    return any(isinstance(node, ast.Assert) and node.msg is not None for node in ast.walk(tree))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_committed_outputs_have_no_errors_and_agree_with_the_prose(path):
    notebook = read(path)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.get("execution_count") for cell in code), (
        f"{ids(path)} is committed without outputs: execute it and commit the outputs")
    errors = [(cell.source.splitlines()[:1], out.get("ename")) for cell in code
              for out in cell.outputs
              if out.output_type == "error" and "raises-exception" not in tags(cell)]
    assert not errors, f"{ids(path)}: committed outputs hold errors: {errors}"
    assert not footers(notebook), f"{ids(path)}: committed outputs hold stats footers"
    check_figures(notebook, f"{ids(path)} (committed outputs)")


STATS_MIME = "application/vnd.sandbox-kernel.stats+json"


def footers(notebook) -> list[str]:
    """The first line of each cell with a stats footer among its outputs:
    the footer is beside the cell by default (issue 17), never an output."""
    return [cell.source.splitlines()[0] if cell.source else "" for cell in notebook.cells
            if any(STATS_MIME in out.get("data", {}) for out in cell.get("outputs", []))]


# ---- quoted figures -------------------------------------------------------------------

SPAN = re.compile(r"<span\s+([^>]*)>(.*?)</span>", re.S)
ATTRIBUTE = re.compile(r'([\w-]+)\s*=\s*"([^"]*)"')
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def quoted_figures(notebook) -> list[tuple[str, str, str]]:
    """(name, text inside the span, tolerance) of every data-figure span."""
    found = []
    for cell in notebook.cells:
        if cell.cell_type != "markdown":
            continue
        for attributes, text in SPAN.findall(cell.source):
            attrs = dict(ATTRIBUTE.findall(attributes))
            if "data-figure" in attrs:
                found.append((attrs["data-figure"], text, attrs.get("data-tolerance", "exact")))
    return found


def printed_values(notebook, name: str) -> list[str]:
    """Every NUMBER of a line ``NAME = NUMBER [unit]`` in the code cells' outputs."""
    line = re.compile(rf"^[ \t]*{re.escape(name)}[ \t]*=[ \t]*({NUMBER.pattern})"
                      r"(?:[ \t]+\S.*)?[ \t]*$", re.M)
    values = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.outputs:
            if out.output_type == "stream" and out.name == "stdout":
                texts = [out.text]
            elif out.output_type in ("execute_result", "display_data"):
                texts = [out.get("data", {}).get("text/plain", "")]
            else:
                continue
            for text in texts:
                values += line.findall("".join(text) if isinstance(text, list) else text)
    return values


def agrees(printed: str, quoted: str, tolerance: str) -> bool:
    value, claim = float(printed), float(quoted)
    if tolerance == "exact":
        decimals = len(quoted.split(".")[1]) if "." in quoted and "e" not in quoted.lower() else 0
        return math.isclose(round(value, decimals), claim, rel_tol=1e-9, abs_tol=1e-12)
    if tolerance.endswith("%"):
        return abs(value - claim) <= float(tolerance[:-1]) / 100 * abs(claim)
    factor = float(tolerance[1:])
    if claim == 0:
        return value == 0
    return claim / factor <= value <= claim * factor if claim > 0 else \
        claim * factor <= value <= claim / factor


TOLERANCE = re.compile(r"^(exact|\d+(\.\d+)?%|x\d+(\.\d+)?)$")


def check_figures(notebook, where: str) -> None:
    problems = []
    for name, text, tolerance in quoted_figures(notebook):
        numbers = NUMBER.findall(text)
        if len(numbers) != 1:
            problems.append(f'figure "{name}": the span should hold one number, not {text!r}')
            continue
        if not TOLERANCE.match(tolerance):
            problems.append(f'figure "{name}": data-tolerance="{tolerance}" is not "exact",'
                            ' "N%" or "xN"')
            continue
        values = printed_values(notebook, name)
        if not values:
            problems.append(f'figure "{name}" ({text}) is printed nowhere: a code cell should'
                            f' print a line "{name} = NUMBER [unit]"')
        for value in values:
            if not agrees(value, numbers[0], tolerance):
                problems.append(f'figure "{name}": the prose says {text!r} ({tolerance}),'
                                f" a cell printed {name} = {value}")
    assert not problems, f"{where}:\n  " + "\n  ".join(problems)


# ---- a fresh run ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def kernelspecs(tmp_path_factory):
    with course_kernelspecs(str(tmp_path_factory.mktemp("jupyter"))):
        yield


@contextlib.contextmanager
def course_kernelspecs(data_dir: str):
    """python3-sandbox written by the project's installer (with its default settings) into
    a temporary Jupyter data directory; python3 is the venv's own ipykernel."""
    from sandbox_kernel.kernel import install
    spec = install.kernel_json(install.checked_settings({}), footer=True)
    install.write_kernelspec(os.path.join(data_dir, "kernels", "python3-sandbox"), spec)
    with jupyter_env.jupyter_path(data_dir):
        yield


@pytest.mark.skipif(os.geteuid() != 0, reason="the notebooks run cells in real containers: root")
@pytest.mark.timeout(NOTEBOOK_TIMEOUT)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_runs_top_to_bottom(path, kernelspecs):
    fresh_run(path)


def fresh_run(path: str):
    """The notebook run top to bottom, its figures checked, nothing left behind."""
    before = sbk_things()
    notebook, kernel_pid = execute(path)
    check_figures(notebook, f"{ids(path)} (fresh run)")
    assert not footers(notebook), f"{ids(path)}: a fresh run's outputs hold stats footers"
    left = wait_for_leftovers(before, kernel_pid, sbk_prefixes(notebook))
    assert not left, f"{ids(path)} left behind: {left}"
    return notebook


def execute(path: str):
    """Run the notebook with nbclient on the kernel it declares, in the notebook's own
    directory; (notebook, kernel pid)."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    notebook = read(path)
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT, startup_timeout=STARTUP_TIMEOUT,
                            kernel_name=notebook.metadata.kernelspec.name,
                            resources={"metadata": {"path": os.path.dirname(path)}})
    pids = []
    client.on_notebook_start = lambda notebook: pids.append(client.km.provisioner.process.pid)
    try:
        client.execute()
    except CellExecutionError as error:
        pytest.fail(f"{ids(path)}: a cell failed on a fresh run:\n{error}", pytrace=False)
    return notebook, pids[0] if pids else None


def sbk_things() -> set[str]:
    """What a notebook could leave: sbk-* cgroups, /tmp/sbk-*, /run/sbk-*, mounts of them."""
    from sandbox_kernel.runtime.cgroups import detect_driver
    things = {f"cgroup {path}" for path in detect_driver().leftovers()}
    things |= {f"path {path}" for path in glob.glob("/tmp/sbk-*") + glob.glob("/run/sbk-*")}
    with open("/proc/self/mountinfo") as handle:
        things |= {f"mount {line.split()[4]}" for line in handle if "sbk-" in line.split()[4]}
    return things


def wait_for_leftovers(before: set[str], kernel_pid: int | None, prefixes=(),
                       timeout: float = 20) -> list:
    """New sbk things that stay after the notebook's kernel is gone (see someone_elses)."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        left = sorted(thing for thing in sbk_things() - before
                      if not someone_elses(thing, kernel_pid, prefixes))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def someone_elses(thing: str, kernel_pid: int | None, prefixes=()) -> bool:
    """Other tests may run at the same time as a notebook.  A thing named sbk-PID-... of a
    live process that is not the notebook's kernel is theirs; so is a /tmp or /run path
    without a PID unless its name starts with an sbk-... prefix the notebook's code
    spells out (its own temporary directories: tempfile.mkdtemp(prefix="sbk-course-02-"))."""
    match = re.search(r"sbk-(\d+)-", thing)
    if match:
        pid = int(match.group(1))
        return pid != kernel_pid and pid != os.getpid() and os.path.exists(f"/proc/{pid}")
    if thing.startswith("path "):
        return not os.path.basename(thing).startswith(tuple(prefixes))
    return False


def sbk_prefixes(notebook) -> tuple[str, ...]:
    """The sbk-... names the notebook's code cells spell out."""
    return tuple({prefix for cell in notebook.cells if cell.cell_type == "code"
                  for prefix in re.findall(r"sbk-[\w.-]+", cell.source)})


# ---- rendering ------------------------------------------------------------------------

@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_renders_to_html(path, tmp_path):
    jupyter = os.path.join(os.path.dirname(sys.executable), "jupyter")
    if not os.access(jupyter, os.X_OK):
        jupyter = shutil.which("jupyter") or "jupyter"
    done = subprocess.run([jupyter, "nbconvert", "--to", "html", "--output-dir", str(tmp_path),
                           path], capture_output=True, text=True, timeout=120 * SLOW)
    assert done.returncode == 0, f"nbconvert --to html {ids(path)} failed:\n{done.stderr}"
    html = tmp_path / (os.path.basename(path)[:-len(".ipynb")] + ".html")
    assert html.exists() and html.stat().st_size > 0, f"nbconvert wrote no {html.name}"
    assert 'data-figure="' in html.read_text() or not quoted_figures(read(path)), (
        f"{html.name} lost the quoted figures' spans")


@pytest.mark.parametrize("path", NOTEBOOKS + [os.path.join(KOREAN_DIR, GLOSSARY)], ids=ids)
def test_bold_and_italics_render(path):
    """CommonMark does not close ``**`` after a punctuation mark when a letter follows, as a
    Korean particle does: ``**네임스페이스(namespace)**를`` shows its stars; the English term
    goes outside: ``**네임스페이스**(namespace)를``."""
    if path.endswith(".ipynb"):
        texts = [(f"cell {i}", cell.source) for i, cell in enumerate(read(path).cells)
                 if cell.cell_type == "markdown"]
    else:
        with open(path, encoding="utf-8") as handle:
            texts = [("", handle.read())]
    problems = [f"{where}: ...{snippet}..." for where, text in texts
                for snippet in stray_stars(text)]
    assert not problems, (f"{ids(path)}: emphasis shown as stars (put a parenthesis after the"
                          " closing stars):\n  " + "\n  ".join(problems))


def stray_stars(markdown: str) -> list[str]:
    """The places where ``*`` is left in the prose once nbconvert rendered it (code aside)."""
    from nbconvert.filters.markdown_mistune import markdown2html_mistune
    html = markdown2html_mistune(markdown)
    prose = re.sub(r"<(code|pre)\b.*?</\1>", "", html, flags=re.S)
    return [prose[max(0, m.start() - 25):m.end() + 25].replace("\n", " ")
            for m in re.finditer(r"\*+", prose)]


def test_stray_stars_are_found_and_rendered_emphasis_is_not():
    assert stray_stars("**네임스페이스(namespace)**를 가집니다")
    assert stray_stars("*스로틀링(throttling)*됩니다")
    assert not stray_stars("**네임스페이스**(namespace)를, *스로틀링*(throttling)됩니다")
    assert not stray_stars("**Goal:** see `sbk-*` and\n\n    a * b\n")


# ---- the checker itself: a contradicted or missing figure fails ------------------------

def notebook_quoting(prose: str, printed: str):
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
    cell = new_code_cell("...", outputs=[new_output("stream", name="stdout", text=printed)])
    return new_notebook(cells=[new_markdown_cell(prose), cell])


@pytest.mark.parametrize("prose, printed", [
    ('<span data-figure="limit">64 MiB</span>', "limit = 64 MiB\n"),
    ('<span data-figure="limit">64 MiB</span>', "limit = 64.3\n"),
    ('<span data-tolerance="10%" data-figure="t">2.0 s</span>', "t = 2.15 s\n"),
    ('<span data-figure="t" data-tolerance="x3">12 ms</span>', "  t = 30.5 ms\n"),
])
def test_figures_that_agree_pass(prose, printed):
    check_figures(notebook_quoting(prose, printed), "test")


@pytest.mark.parametrize("prose, printed, complaint", [
    ('<span data-figure="limit">64 MiB</span>', "limit = 128 MiB\n", "a cell printed limit = 128"),
    ('<span data-figure="limit">64 MiB</span>', "limit = 64\nlimit = 65\n", "limit = 65"),
    ('<span data-figure="t" data-tolerance="10%">2.0 s</span>', "t = 2.3 s\n", "t = 2.3"),
    ('<span data-figure="t" data-tolerance="x3">12 ms</span>', "t = 40 ms\n", "t = 40"),
    ('<span data-figure="limit">64 MiB</span>', "the limit = 64\n", "printed nowhere"),
    ('<span data-figure="limit">64 of 128 MiB</span>', "limit = 64\n", "one number"),
    ('<span data-figure="t" data-tolerance="about">1 s</span>', "t = 1\n", "data-tolerance"),
])
def test_a_contradicted_or_missing_figure_fails(prose, printed, complaint):
    with pytest.raises(AssertionError, match=re.escape(complaint)):
        check_figures(notebook_quoting(prose, printed), "test")


def test_a_check_cell_must_assert_with_a_message():
    assert asserts_with_a_message('assert x == 1, "check your work: x should be 1"')
    assert asserts_with_a_message('%%container\nassert x == 1, "check your work"')
    assert not asserts_with_a_message("assert x == 1")
    assert not asserts_with_a_message("print(x == 1)")


def test_a_thing_a_notebook_leaves_is_found_and_a_live_neighbours_is_not(tmp_path):
    before = sbk_things()
    left = tempfile.mkdtemp(prefix="sbk-course-selftest-", dir="/tmp")
    try:
        found = wait_for_leftovers(before, None, ("sbk-course-selftest-",), timeout=0.3)
        assert f"path {left}" in found
        assert f"path {left}" not in wait_for_leftovers(before, None, ("sbk-other-",), timeout=0)
    finally:
        os.rmdir(left)
    assert f"path {left}" not in wait_for_leftovers(before, kernel_pid=None, timeout=0.3)
    neighbour = f"cgroup /sys/fs/cgroup/sbk-{os.getppid()}-1234"    # a live process's
    assert someone_elses(neighbour, kernel_pid=None)
    assert not someone_elses(neighbour, kernel_pid=os.getppid())    # the notebook kernel's own
    assert not someone_elses("path /run/sbk-999999999-x", kernel_pid=None)   # a dead owner's


# ---- writing the committed outputs ----------------------------------------------------

def write_outputs(path: str) -> None:
    """Run one notebook as test_notebook_runs_top_to_bottom does and save its outputs,
    once its figures agree and it left nothing behind."""
    with tempfile.TemporaryDirectory(prefix="course-jupyter-") as data_dir, \
            course_kernelspecs(data_dir):
        notebook = fresh_run(path)
    nbformat.write(notebook, path)
    print(f"wrote the outputs of a fresh run into {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run course notebooks top to bottom (as"
                                     " root) and save their outputs for a commit.")
    parser.add_argument("--write", nargs="+", required=True, metavar="NOTEBOOK",
                        help="notebooks/NN-*.ipynb or notebooks/ko/NN-*.ipynb")
    args = parser.parse_args(argv)
    for path in args.write:
        try:
            write_outputs(os.path.abspath(path))
        except (AssertionError, pytest.fail.Exception) as error:
            print(f"{path}: not written: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
