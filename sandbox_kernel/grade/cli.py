"""``sandbox-kernel grade NOTEBOOK...``: the command line (cli.py registers it).

    sandbox-kernel grade submissions/*/hw1.ipynb --memory 512M --timeout-cell 30s \\
                         --timeout 5m -j 2 --report grades.json

Every value is checked before a kernel starts: a missing notebook, a file
that is not a notebook, a bad limit or -j more submissions at once than
the host's available memory holds (-j x --memory) is one line on stderr
and exit status 2.  The executed notebooks go beside the report, in
``executed/``; the exit status is 0 when every submission was graded
(whatever its verdict).

nbformat, and in run.py nbclient, are imported only when grading runs.
"""
from __future__ import annotations

import asyncio
import os
import sys
import tempfile

from ..runtime.spec import SpecError, parse_cpus, parse_duration, parse_pids, parse_size
from . import report as reports

DEFAULTS = {"memory": "512M", "cpus": "1", "pids": "64", "timeout_cell": "30s", "timeout": "5m"}


class GradeError(ValueError):
    """Bad input; the message is one line."""


def add_arguments(parser) -> None:
    parser.add_argument("notebooks", nargs="+", metavar="NOTEBOOK", help="the submissions (.ipynb)")
    parser.add_argument("--memory", default=DEFAULTS["memory"], help="memory per submission (default: %(default)s)")
    parser.add_argument("--cpus", default=DEFAULTS["cpus"], help="CPU cores per submission (default: %(default)s)")
    parser.add_argument("--pids", default=DEFAULTS["pids"], help="processes and threads per submission (default: %(default)s)")
    parser.add_argument("--timeout-cell", default=DEFAULTS["timeout_cell"], help="per cell (default: %(default)s)")
    parser.add_argument("--timeout", default=DEFAULTS["timeout"], help="per submission (default: %(default)s)")
    parser.add_argument("-j", "--jobs", type=int, default=None,
                        help="submissions at once (default: the number of cores, within the memory budget)")
    parser.add_argument("--data", metavar="DIR", help="a directory every submission may read (read-only)")
    parser.add_argument("--report", metavar="FILE", help="grades.json or grades.csv; the executed "
                                                         "notebooks go beside it, in executed/")


def available_memory(meminfo: str = "/proc/meminfo") -> int | None:
    """MemAvailable in bytes, None when the host does not say."""
    try:
        with open(meminfo) as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def choose_jobs(asked: int | None, memory: int, cores: int, available: int | None) -> tuple[int, str]:
    """-j: the number asked, or the cores; within the memory budget.  A note
    when the default was lowered; GradeError when the number asked does not fit."""
    if asked is not None and asked < 1:
        raise GradeError(f"-j {asked}: expected at least 1 submission at once")
    jobs = asked or max(1, cores)
    if available is None or jobs * memory <= available:
        return jobs, ""
    fits = available // memory
    words = f"{jobs} x --memory {memory >> 20} MiB is more than the {available >> 20} MiB available"
    if asked is not None or fits < 1:
        raise GradeError(f"-j {jobs}: {words}; give -j {max(fits, 1)} or a smaller --memory")
    return fits, f"-j {fits}: {words}"


def check_notebooks(paths: list[str]) -> None:
    import nbformat       # here: the other subcommands' --help need no Jupyter packages
    for path in paths:
        if not os.path.isfile(path):
            raise GradeError(f"{path}: no such notebook file")
        try:
            nbformat.validate(nbformat.read(path, as_version=4))
        except (OSError, ValueError, nbformat.ValidationError, AttributeError, KeyError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise GradeError(f"{path}: not a Jupyter notebook (nbformat 4): {first}") from None


def check_limits(args):
    from .run import Limits
    try:
        memory = parse_size(args.memory)
        parse_cpus(args.cpus), parse_pids(args.pids)
        cell, whole = parse_duration(args.timeout_cell, "timeout-cell"), parse_duration(args.timeout)
    except SpecError as error:
        raise GradeError(str(error)) from None
    if memory is None or cell is None or whole is None:
        raise GradeError("--memory, --timeout-cell and --timeout need a value: 'none' cannot grade safely")
    if args.data and not os.path.isdir(args.data):
        raise GradeError(f"--data {args.data}: not a directory")
    if args.report and os.path.splitext(args.report)[1] not in (".json", ".csv"):
        raise GradeError(f"--report {args.report}: expected a .json or .csv file name")
    return Limits(args.memory, args.cpus, args.pids, cell, whole,
                  os.path.realpath(args.data) if args.data else None), memory


class Progress:
    """A tqdm bar over the class on a terminal (progress.py's style), else
    one plain line per graded submission."""

    def __init__(self, total: int, stream=None):
        self.stream, self.total, self.done, self.bar = stream or sys.stderr, total, 0, None
        if self.stream.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, desc="grading", unit="nb", file=self.stream)

    def graded(self, grade: reports.NotebookGrade) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(f"{os.path.basename(grade.notebook)}: {grade.verdict}")
            self.bar.update(1)
        else:
            self.stream.write(f"[{self.done}/{self.total}] {reports.summary_line(grade)}\n")
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def executed_paths(paths: list[str], report: str | None) -> list[str | None]:
    """Where each executed notebook goes: beside the report, in executed/,
    named after the submission's directory and file (unique)."""
    if not report:
        return [None] * len(paths)
    folder = os.path.join(os.path.dirname(os.path.abspath(report)), "executed")
    os.makedirs(folder, exist_ok=True)
    names, chosen = set(), []
    for path in paths:
        parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
        stem, number = f"{parent}-{os.path.splitext(os.path.basename(path))[0]}", 1
        name = stem
        while name in names:
            number += 1
            name = f"{stem}-{number}"
        names.add(name)
        chosen.append(os.path.join(folder, name + ".ipynb"))
    return chosen


async def grade_all(paths, limits, jobs: int, outputs, progress) -> list[reports.NotebookGrade]:
    from . import run
    with tempfile.TemporaryDirectory(prefix="sbk-grade-") as private:
        kernels, work = os.path.join(private, "kernels"), os.path.join(private, "work")
        os.makedirs(work)
        run.write_kernelspec(kernels, limits)
        gate = asyncio.Semaphore(jobs)

        async def one(index, path):
            async with gate:
                grade = await run.grade_one(path, index=index, limits=limits, kernels_dir=kernels,
                                            work_root=work, executed_path=outputs[index])
            progress.graded(grade)
            return grade
        return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(paths))))


def write_report(path: str, grades) -> None:
    text = reports.as_csv(grades) if path.endswith(".csv") else reports.as_json(grades)
    with open(path, "w") as handle:
        handle.write(text)


def main(args, parser) -> int:
    from ..kernel.install import InstallError
    try:
        check_notebooks(args.notebooks)
        limits, memory = check_limits(args)
        jobs, note = choose_jobs(args.jobs, memory, os.cpu_count() or 1, available_memory())
        outputs = executed_paths(args.notebooks, args.report)
    except (GradeError, OSError) as error:
        parser.exit(2, f"sandbox-kernel grade: {error}\n")
    if note:
        sys.stderr.write(f"sandbox-kernel grade: {note}\n")
    progress = Progress(len(args.notebooks))
    try:
        grades = asyncio.run(grade_all(args.notebooks, limits, jobs, outputs, progress))
    except InstallError as error:
        parser.exit(2, f"sandbox-kernel grade: {error}\n")
    finally:
        progress.close()
    for grade in grades:
        print(reports.summary_line(grade))
    if args.report:
        write_report(args.report, grades)
    return 0
