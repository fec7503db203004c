"""The grade command's pure parts: a cell's verdict from its execute_reply,
a notebook's verdict, the JSON and CSV reports, -j within the memory budget,
where the executed notebooks go."""
from __future__ import annotations

import csv
import io
import json

import pytest

from sandbox_kernel.grade import cli as grade_cli
from sandbox_kernel.grade.report import (CellVerdict, NotebookGrade, as_csv, as_json, cell_verdict,
                                         notebook_verdict, summary_line)


def reply_metadata(status: str, **figures) -> dict:
    cell = {"status": status, "wall": 0.5, "cpu_user": 0.25, "cpu_system": 0.125,
            "memory_peak": 1 << 20, **figures}
    return {"sandbox_kernel": {"stats": {"session": "default", "cell": cell}, "footer": "beside"}}


@pytest.mark.parametrize("content, metadata, verdict, exception", [
    ({"status": "ok"}, reply_metadata("ok"), "ok", None),
    ({"status": "error", "ename": "AssertionError"}, reply_metadata("error"), "error", "AssertionError"),
    ({"status": "error", "ename": "CellTimeout"}, reply_metadata("timeout"), "timeout", None),
    ({"status": "error", "ename": "ContainerOutOfMemory"}, reply_metadata("oom"), "oom", None),
    ({"status": "error", "ename": "ContainerDied"}, reply_metadata("killed"), "killed", None),
    ({"status": "error", "ename": "BlockingIOError"}, reply_metadata("error", pids_refused=3),
     "pids", "BlockingIOError"),
    ({"status": "ok"}, reply_metadata("ok", pids_refused=3), "ok", None),   # refused but handled
    ({"status": "error", "ename": "NameError"}, {}, "error", "NameError"),  # no stats: still a verdict
    ({"status": "ok"}, {"sandbox_kernel": "junk"}, "ok", None),
])
def test_cell_verdict(content, metadata, verdict, exception):
    got = cell_verdict(4, content, metadata)
    assert (got.index, got.verdict, got.exception) == (4, verdict, exception)


def test_cell_figures_come_from_the_stats_contract():
    got = cell_verdict(0, {"status": "ok"}, reply_metadata("ok"))
    assert (got.wall, got.cpu, got.memory_peak) == (0.5, 0.375, 1 << 20)
    bare = cell_verdict(0, {"status": "ok"}, reply_metadata("ok", cpu_user=None, cpu_system=None,
                                                            memory_peak=None))
    assert (bare.cpu, bare.memory_peak) == (None, None)       # unknown stays unknown, never 0


def test_notebook_verdict_is_the_first_failure_or_what_stopped_it():
    cells = [CellVerdict(0, "ok"), CellVerdict(1, "oom"), CellVerdict(2, "error", "NameError")]
    assert notebook_verdict(cells) == "oom"
    assert notebook_verdict(cells[:1]) == "ok"
    assert notebook_verdict(cells[:1], stopped="timeout") == "timeout"
    assert notebook_verdict([]) == "ok"


def grades() -> list[NotebookGrade]:
    return [NotebookGrade("a/hw.ipynb", "ok", [CellVerdict(0, "ok"), CellVerdict(1, "ok")], 1.25, "x/a-hw.ipynb"),
            NotebookGrade("b/hw.ipynb", "error", [CellVerdict(0, "ok"), CellVerdict(1, "error", "AssertionError")],
                          2.0, None, "")]


def test_json_report():
    report = json.loads(as_json(grades()))["submissions"]
    assert [(g["notebook"], g["verdict"], g["cells_ok"]) for g in report] == \
           [("a/hw.ipynb", "ok", 2), ("b/hw.ipynb", "error", 1)]
    assert report[1]["cells"][1] == {"index": 1, "verdict": "error", "exception": "AssertionError",
                                     "wall": None, "cpu": None, "memory_peak": None}


def test_csv_report():
    rows = list(csv.DictReader(io.StringIO(as_csv(grades()))))
    assert rows[0] == {"notebook": "a/hw.ipynb", "verdict": "ok", "cells_ok": "2", "cells": "2",
                       "first_failure": "", "wall": "1.250", "executed": "x/a-hw.ipynb", "note": ""}
    assert rows[1]["first_failure"] == "cell 1: error AssertionError"


def test_summary_line():
    assert summary_line(grades()[1]) == "b/hw.ipynb: error, 1/2 cells ok (cell 1: error AssertionError)"
    assert summary_line(grades()[0]) == "a/hw.ipynb: ok, 2/2 cells ok"


GIB = 1 << 30


def test_jobs_default_to_the_cores_within_the_memory_budget():
    assert grade_cli.choose_jobs(None, GIB // 2, 4, 8 * GIB) == (4, "")
    jobs, note = grade_cli.choose_jobs(None, GIB, 8, 3 * GIB)
    assert jobs == 3 and "8 x --memory 1024 MiB" in note and "3072 MiB available" in note
    assert grade_cli.choose_jobs(None, GIB, 2, None) == (2, "")     # the host does not say


def test_jobs_asked_beyond_the_budget_are_refused():
    with pytest.raises(grade_cli.GradeError, match="give -j 2 or a smaller --memory"):
        grade_cli.choose_jobs(5, GIB, 2, 2 * GIB + 1)
    with pytest.raises(grade_cli.GradeError, match="at least 1"):
        grade_cli.choose_jobs(0, GIB, 2, None)
    with pytest.raises(grade_cli.GradeError):
        grade_cli.choose_jobs(None, 4 * GIB, 2, GIB)      # not even one fits


def test_available_memory_reads_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 100 kB\nMemAvailable:   2048 kB\n")
    assert grade_cli.available_memory(str(meminfo)) == 2048 * 1024
    assert grade_cli.available_memory(str(tmp_path / "absent")) is None


def test_executed_notebooks_get_unique_names_beside_the_report(tmp_path):
    report = str(tmp_path / "out" / "grades.json")
    (tmp_path / "out").mkdir()
    paths = grade_cli.executed_paths(["s/alice/hw.ipynb", "t/alice/hw.ipynb", "bob/hw.ipynb"], report)
    assert [p.rsplit("/", 2)[1:] for p in paths] == [["executed", "alice-hw.ipynb"],
                                                     ["executed", "alice-hw-2.ipynb"],
                                                     ["executed", "bob-hw.ipynb"]]
    assert grade_cli.executed_paths(["a.ipynb"], None) == [None]
