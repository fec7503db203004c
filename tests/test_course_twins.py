"""The two editions of the course cannot drift apart (issue 24).

Each Korean notebook notebooks/ko/NN-slug.ipynb is the twin of notebooks/NN-slug.ipynb:
only the prose is translated.  The code cells are the same, in the same order, byte for
byte, with the same tags (solution, check, step-check, raises-exception) and the same
collapsed solutions; the kernel is the same; and the prose quotes the same figures
(data-figure NAME and tolerance), which tests/test_notebooks.py checks against each
notebook's own outputs.
"""
from __future__ import annotations

import copy
import difflib
import os
import re

import nbformat
import pytest
from nbformat.v4 import new_markdown_cell

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(REPO, "notebooks")
KOREAN_DIR = os.path.join(NOTEBOOK_DIR, "ko")
KOREAN = sorted(os.path.join(KOREAN_DIR, name) for name in os.listdir(KOREAN_DIR)
                if re.match(r"^\d\d-.*\.ipynb$", name)) if os.path.isdir(KOREAN_DIR) else []

SPAN = re.compile(r"<span\s+([^>]*)>", re.S)
ATTRIBUTE = re.compile(r'([\w-]+)\s*=\s*"([^"]*)"')


def ids(path: str) -> str:
    return os.path.relpath(path, NOTEBOOK_DIR)


def twin_of(path: str) -> str:
    """notebooks/ko/NN-slug.ipynb -> notebooks/NN-slug.ipynb"""
    return os.path.join(NOTEBOOK_DIR, os.path.basename(path))


def read(path: str):
    return nbformat.read(path, as_version=4)


def code_cells(notebook) -> list[dict]:
    """What must not drift, per code cell: its source, tags and whether it is collapsed."""
    return [{"source": cell.source,
             "tags": list(cell.metadata.get("tags", [])),
             "source_hidden": cell.metadata.get("jupyter", {}).get("source_hidden", False)}
            for cell in notebook.cells if cell.cell_type == "code"]


def figures(notebook) -> list[tuple[str, str]]:
    """(NAME, tolerance) of every data-figure span in the prose, sorted."""
    found = []
    for cell in notebook.cells:
        if cell.cell_type != "markdown":
            continue
        for attributes in SPAN.findall(cell.source):
            attrs = dict(ATTRIBUTE.findall(attributes))
            if "data-figure" in attrs:
                found.append((attrs["data-figure"], attrs.get("data-tolerance", "exact")))
    return sorted(found)


def drift(korean, english) -> list[str]:
    """How the Korean notebook's code differs from its English twin's; [] when it does not."""
    problems = []
    kernel = [nb.metadata.get("kernelspec", {}).get("name") for nb in (korean, english)]
    if kernel[0] != kernel[1]:
        problems.append(f"kernel {kernel[0]!r}, the English twin's is {kernel[1]!r}")
    ours, theirs = code_cells(korean), code_cells(english)
    for number, (mine, twin) in enumerate(zip(ours, theirs), start=1):
        problems += [f"code cell {number}: {difference}" for difference in cell_drift(mine, twin)]
    if len(ours) != len(theirs):
        problems.append(f"{len(ours)} code cells, the English twin has {len(theirs)}")
    if figures(korean) != figures(english):
        problems.append(f"quoted figures (data-figure, tolerance) {figures(korean)},"
                        f" the English twin quotes {figures(english)}")
    return problems


def cell_drift(mine: dict, twin: dict) -> list[str]:
    differences = []
    if mine["source"] != twin["source"]:
        diff = difflib.unified_diff(twin["source"].splitlines(), mine["source"].splitlines(),
                                    "English", "Korean", lineterm="", n=0)
        differences.append("source differs:\n    " + "\n    ".join(list(diff)[2:8]))
    for key in ("tags", "source_hidden"):
        if mine[key] != twin[key]:
            differences.append(f"{key} {mine[key]!r}, the English twin's {twin[key]!r}")
    return differences


def test_the_course_has_korean_notebooks():
    assert KOREAN, f"no notebook named NN-*.ipynb in {KOREAN_DIR}"


ENGLISH = sorted(os.path.join(NOTEBOOK_DIR, name) for name in os.listdir(NOTEBOOK_DIR)
                 if re.match(r"^\d\d-.*\.ipynb$", name))


@pytest.mark.parametrize("path", ENGLISH, ids=ids)
def test_every_english_notebook_has_a_korean_twin(path):
    korean = os.path.join(KOREAN_DIR, os.path.basename(path))
    assert os.path.isfile(korean), (
        f"{ids(path)} has no Korean twin {ids(korean)}: the course is taught in both")


@pytest.mark.parametrize("path", KOREAN, ids=ids)
def test_a_korean_notebook_has_an_english_twin_of_the_same_name(path):
    assert os.path.isfile(twin_of(path)), (
        f"{ids(path)} has no English twin {ids(twin_of(path))}: name a Korean notebook as"
        " the English one it translates")


@pytest.mark.parametrize("path", KOREAN, ids=ids)
def test_a_korean_notebook_keeps_its_twins_code_cells_and_figures(path):
    problems = drift(read(path), read(twin_of(path)))
    assert not problems, (f"{ids(path)} drifted from {ids(twin_of(path))} (translate only the"
                          " prose; code cells stay byte for byte):\n  " + "\n  ".join(problems))


# ---- the check itself catches a drift ----------------------------------------------------

def a_twin_pair():
    """A Korean notebook and its English twin, as committed (the first pair there is)."""
    assert KOREAN, "no Korean notebook to derive a drift from"
    return read(KOREAN[0]), read(twin_of(KOREAN[0]))


def first_code(notebook):
    return next(cell for cell in notebook.cells if cell.cell_type == "code")


def last_check(notebook):
    return [cell for cell in notebook.cells if "check" in cell.metadata.get("tags", [])][-1]


def translate_a_comment(notebook):
    first_code(notebook).source += "\n# 번역된 주석"


def reorder_code(notebook):
    code = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    cells = notebook.cells
    cells[code[0]], cells[code[1]] = cells[code[1]], cells[code[0]]


def drop_last_code(notebook):
    last = max(i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code")
    del notebook.cells[last]


def untag_a_check(notebook):
    last_check(notebook).metadata["tags"] = []


def open_a_solution(notebook):
    solution = next(cell for cell in notebook.cells
                    if "solution" in cell.metadata.get("tags", []))
    solution.metadata.pop("jupyter", None)


def change_the_kernel(notebook):
    notebook.metadata["kernelspec"] = dict(notebook.metadata["kernelspec"], name="python2")


def quote_another_figure(notebook):
    notebook.cells.insert(0, new_markdown_cell(
        '<span data-figure="a_figure_the_english_lacks">1</span>'))


@pytest.mark.parametrize("mutate, complaint", [
    (translate_a_comment, "source differs"),
    (reorder_code, "source differs"),
    (drop_last_code, "code cells, the English twin has"),
    (untag_a_check, "tags"),
    (open_a_solution, "source_hidden"),
    (change_the_kernel, "kernel 'python2'"),
    (quote_another_figure, "a_figure_the_english_lacks"),
])
def test_a_drift_is_caught(mutate, complaint):
    korean, english = a_twin_pair()
    assert drift(korean, english) == [], "the committed pair should not drift to begin with"
    drifted = copy.deepcopy(korean)
    mutate(drifted)
    problems = drift(drifted, english)
    assert any(complaint in problem for problem in problems), problems


def test_markdown_differs_freely():
    korean, english = a_twin_pair()
    drifted = copy.deepcopy(korean)
    drifted.cells.insert(1, new_markdown_cell("추가 설명: 설명은 자유롭게 늘려도 됩니다."))
    assert drift(drifted, english) == []
