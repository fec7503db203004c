"""Grading throughput: submissions per minute of ``sandbox-kernel grade -j 2``
against ``jupyter nbconvert --execute`` of the same notebooks on a plain
ipykernel, with no sandbox, two nbconvert processes at once (the same
parallelism).

    sudo .venv/bin/python benchmarks/grade.py [--notebooks 20] [--runs 1]

Each notebook is small: a function, a test cell, a few prints.  Each
figure is the whole class from the command's start to its exit (the
kernels' starts included).  Target (issue 20): the sandboxed run at least
0.8x the throughput of the unsandboxed one.  Prints the figures and the
ratio; asserts nothing (the machine is shared and noisy).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import nbformat

from sandbox_kernel.kernel import install

CELLS = ["def add(a, b):\n    return a + b\n",
         "numbers = [add(i, i) for i in range(1000)]\nprint(sum(numbers))\n",
         "assert add(2, 3) == 5\nprint('checked')\n"]


def make_class(folder: str, count: int) -> list[str]:
    paths = []
    for index in range(count):
        notebook = nbformat.v4.new_notebook()
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                           "language": "python"}
        notebook.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
        path = os.path.join(folder, f"student{index:02d}", "hw.ipynb")
        os.makedirs(os.path.dirname(path))
        nbformat.write(notebook, path)
        paths.append(path)
    return paths


def plain_kernelspec(data_dir: str) -> dict:
    """This venv's ipykernel as "python3", in a private Jupyter path."""
    plain = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
             "display_name": "Python 3", "language": "python"}
    install.write_kernelspec(os.path.join(data_dir, "kernels", "python3"), plain)
    return {**os.environ, "JUPYTER_PATH": data_dir, "IPYTHONDIR": os.path.join(data_dir, "ipython")}


def timed(commands: list[list[str]], env: dict) -> float:
    """Seconds until every command (run at once) has exited; each must succeed."""
    started = time.monotonic()
    running = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
               for command in commands]
    for process in running:
        _, err = process.communicate(timeout=1800)
        if process.returncode != 0:
            raise SystemExit(f"{process.args[:4]} failed ({process.returncode}): {err.decode()[-500:]}")
    return time.monotonic() - started


def nbconvert_commands(paths: list[str], out: str, jobs: int) -> list[list[str]]:
    shares = [paths[i::jobs] for i in range(jobs)]
    return [[sys.executable, "-m", "jupyter", "nbconvert", "--execute", "--to", "notebook",
             "--ExecutePreprocessor.kernel_name=python3", "--output-dir", os.path.join(out, f"nbconvert{i}"),
             *share] for i, share in enumerate(shares) if share]


def grade_command(paths: list[str], out: str, jobs: int) -> list[list[str]]:
    return [[sys.executable, "-m", "sandbox_kernel.cli", "grade", *paths, "-j", str(jobs),
             "--memory", "512M", "--report", os.path.join(out, "grade", "grades.json")]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebooks", type=int, default=20)
    parser.add_argument("--runs", type=int, default=1, help="runs of each (the median is shown)")
    parser.add_argument("-j", "--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sbk-bench-grade-") as top:
        paths = make_class(os.path.join(top, "class"), args.notebooks)
        env = plain_kernelspec(os.path.join(top, "jupyter"))
        os.makedirs(os.path.join(top, "grade"))
        plain, sandboxed = [], []
        for _ in range(args.runs):        # in turns, so that a burst of load hits both alike
            plain.append(timed(nbconvert_commands(paths, top, args.jobs), env))
            sandboxed.append(timed(grade_command(paths, top, args.jobs), env))
    per_minute = lambda seconds: 60 * args.notebooks / statistics.median(seconds)  # noqa: E731
    plain_rate, sandbox_rate = per_minute(plain), per_minute(sandboxed)
    print(f"{args.notebooks} notebooks, {args.jobs} at once, median of {args.runs} run(s)")
    print(f"  nbconvert --execute, plain ipykernel: {plain_rate:7.1f} submissions/min "
          f"({statistics.median(plain):.1f} s)")
    print(f"  sandbox-kernel grade:                 {sandbox_rate:7.1f} submissions/min "
          f"({statistics.median(sandboxed):.1f} s)")
    ratio = sandbox_rate / plain_rate
    print(f"  ratio {ratio:.2f}x (target >= 0.8x: {'met' if ratio >= 0.8 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
