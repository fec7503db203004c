"""Verdicts and the grade report: pure functions, no kernel, no files read.

A cell's verdict, isolate-style, from its execute_reply (the stats contract
under ``metadata.sandbox_kernel.stats``, session/stats.py) and its error
output::

    ok | error (with the exception's name) | timeout | oom | pids | killed

``pids``: the cell failed while the pids limit refused forks or threads (a
fork bomb stopped by --pids).  A notebook's verdict is the first cell that
was not ok (its verdict), ``ok`` when all were, or what stopped the whole
submission (``timeout`` for --timeout, ``killed`` for a dead kernel,
``error`` when it could not run at all).

Imports session.stats only (where the stats ride).
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field

from ..session import stats as stats_contract

VERDICTS = ("ok", "error", "timeout", "oom", "pids", "killed")
CSV_FIELDS = ("notebook", "verdict", "cells_ok", "cells", "first_failure", "wall", "executed", "note")


@dataclass
class CellVerdict:
    index: int                       # the cell's index among the notebook's cells
    verdict: str
    exception: str | None = None     # the error's ename, for verdict "error"
    wall: float | None = None        # seconds, as the kernel measured them
    cpu: float | None = None         # user + system seconds
    memory_peak: int | None = None   # bytes


@dataclass
class NotebookGrade:
    notebook: str                    # the submission's path, as given
    verdict: str
    cells: list[CellVerdict] = field(default_factory=list)
    wall: float | None = None        # the whole submission, seconds
    executed: str | None = None      # where its executed copy was written
    note: str = ""                   # why it stopped, in words

    @property
    def cells_ok(self) -> int:
        return sum(1 for cell in self.cells if cell.verdict == "ok")

    def first_failure(self) -> CellVerdict | None:
        return next((cell for cell in self.cells if cell.verdict != "ok"), None)

    def as_dict(self) -> dict:
        return {"notebook": self.notebook, "verdict": self.verdict, "cells_ok": self.cells_ok,
                "cells": [asdict(cell) for cell in self.cells], "wall": self.wall,
                "executed": self.executed, "note": self.note}


def stats_of(reply_metadata: dict | None) -> dict | None:
    """The cell part of the stats contract in an execute_reply's metadata."""
    beside = (reply_metadata or {}).get(stats_contract.REPLY_KEY) or {}
    stats = beside.get("stats") if isinstance(beside, dict) else None
    cell = stats.get("cell") if isinstance(stats, dict) else None
    return cell if isinstance(cell, dict) else None


def _cpu(cell: dict) -> float | None:
    user, system = cell.get("cpu_user"), cell.get("cpu_system")
    if user is None and system is None:
        return None
    return (user or 0.0) + (system or 0.0)


def cell_verdict(index: int, reply_content: dict | None, reply_metadata: dict | None) -> CellVerdict:
    """One cell's verdict from its execute_reply (content and metadata)."""
    content = reply_content or {}
    cell = stats_of(reply_metadata) or {}
    status = cell.get("status")
    failed = content.get("status") == "error" or status not in (None, "ok")
    if not failed:
        verdict = "ok"
    elif status in ("timeout", "oom", "killed"):
        verdict = status
    elif cell.get("pids_refused"):
        verdict = "pids"          # the pids limit refused forks while the cell failed
    else:
        verdict = "error"
    exception = content.get("ename") if verdict in ("error", "pids") else None
    return CellVerdict(index, verdict, exception, cell.get("wall"), _cpu(cell), cell.get("memory_peak"))


def notebook_verdict(cells: list[CellVerdict], stopped: str | None = None) -> str:
    """``stopped``: what ended the whole submission early (a verdict), if anything."""
    if stopped:
        return stopped
    failure = next((cell for cell in cells if cell.verdict != "ok"), None)
    return "ok" if failure is None else failure.verdict


def as_json(grades: list[NotebookGrade]) -> str:
    return json.dumps({"submissions": [grade.as_dict() for grade in grades]}, indent=1) + "\n"


def as_csv(grades: list[NotebookGrade]) -> str:
    """One row per submission; the cells' details are in the JSON report."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for grade in grades:
        failure = grade.first_failure()
        writer.writerow({
            "notebook": grade.notebook, "verdict": grade.verdict, "cells_ok": grade.cells_ok,
            "cells": len(grade.cells), "wall": "" if grade.wall is None else f"{grade.wall:.3f}",
            "first_failure": "" if failure is None else _failure_words(failure),
            "executed": grade.executed or "", "note": grade.note})
    return out.getvalue()


def _failure_words(cell: CellVerdict) -> str:
    words = f"cell {cell.index}: {cell.verdict}"
    return f"{words} {cell.exception}" if cell.exception else words


def summary_line(grade: NotebookGrade) -> str:
    """One line per submission for the terminal."""
    failure = grade.first_failure()
    where = f" ({_failure_words(failure)})" if failure is not None and grade.verdict != "ok" else ""
    note = f" - {grade.note}" if grade.note else ""
    return f"{grade.notebook}: {grade.verdict}, {grade.cells_ok}/{len(grade.cells)} cells ok{where}{note}"
