"""``benchmarks/fast_start.py --quick`` runs to the end here: every figure of
the report is there, and the benchmark removed everything it made (its
containers, its kernels' directory).  Figures are printed, never asserted."""
from __future__ import annotations

import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
ROWS = ("sandbox-kernel (fork)", "sandbox-kernel (zygote)", "unshare -fmpuin", "pool: a second after",
        "run all: at once after", "cold: a new --name session", 'python -c "import IPython"',
        "starts of /bin/true in a row", "sandbox-kernel, Python API", "sandbox-kernel run -- true",
        "plain ipykernel", "start to first reply", "warm round trip of 'pass'",
        "restart after an out-of-memory cell", "no spare (as before)",
        "one session alone, RSS", "one session alone, PSS", "RSS per extra session",
        "PSS per extra session", "all answered a first cell")


def bench_dirs() -> set[str]:
    return {p.name for p in pathlib.Path("/tmp").glob("sbk-bench-*")}


def test_the_quick_benchmark_reports_every_figure_and_leaves_nothing():
    before = bench_dirs()
    ran = subprocess.run([sys.executable, str(REPO / "benchmarks" / "fast_start.py"), "--quick"],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    missing = [row for row in ROWS if row not in ran.stdout]
    assert not missing, f"rows missing: {missing}\n{ran.stdout}"
    assert "removed after: yes" in ran.stdout
    assert bench_dirs() <= before
