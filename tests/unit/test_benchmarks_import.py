"""The benchmarks stay runnable: every module imports without starting
anything, and fast_start's report puts each figure beside its baseline with
the right verdict.  (Running them needs root and minutes: the jupyter tier
runs ``fast_start.py --quick`` once; speed itself is never asserted.)"""
from __future__ import annotations

import argparse
import importlib
import pathlib
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))    # as `python benchmarks/X.py` has it


@pytest.mark.parametrize("name", sorted(p.stem for p in BENCHMARKS.glob("*.py")))
def test_every_benchmark_imports_without_side_effects(name, on_path, monkeypatch):
    monkeypatch.delitem(sys.modules, name, raising=False)
    before = sorted(pathlib.Path("/tmp").glob("sbk-*"))
    module = importlib.import_module(name)
    assert callable(getattr(module, "main", None)), f"{name}.py has no main()"
    assert sorted(pathlib.Path("/tmp").glob("sbk-*")) == before


def figures(ms: float):
    """Made-up timings: every contender takes ``ms``, bwrap and the
    baselines are fixed."""
    bare = {"sandbox-kernel (fork)": [ms] * 3, "sandbox-kernel (zygote)": [ms] * 3,
            "bwrap --unshare-all": [8.0] * 3, "unshare -fmpuin": [5.0] * 3}
    first = {"pool": [ms / 1000] * 3, "cold": [2 * ms / 1000] * 3, "import": [0.2] * 3}
    fresh = {"plain start": [1.0] * 3, "sandbox start": [1.2] * 3, "run all": [0.5] * 3}
    trips = {("python3", "pass"): [0.010] * 3, ("sbk-benchmark", "pass"): [0.0105] * 3}
    mib = 1 << 20
    memory = {"one": (60 * mib, 20 * mib), "many": (60 * mib * 3, 50 * mib), "one uss": 10 * mib,
              "many uss": 30 * mib, "zygote": (30 * mib, 6 * mib), "baseline": (22 * mib, 15 * mib),
              "all up": 0.4, "left": []}
    return bare, first, fresh, trips, memory


def test_the_report_has_every_figure_its_baseline_and_verdict(on_path):
    fast_start = importlib.import_module("fast_start")
    args = argparse.Namespace(runs=3, sessions=3)
    text = fast_start.report(args, *figures(7.0))
    lines = text.splitlines()
    fork = next(line for line in lines if "sandbox-kernel (fork)" in line)
    assert "bwrap 8.0 ms" in fork and "0.88x" in fork and fork.endswith("met") and "NOT" not in fork
    pool = [line for line in lines if "pool: a second after" in line][0]
    assert "7.0 ms" in pool and "<= 50 ms: met" in pool
    assert any('import IPython" 200.0 ms' in line and "0.07x" in line for line in lines)
    cold_ratio = lines[lines.index(next(l for l in lines if "cold: a new" in l)) + 1]
    assert "0.07x" in cold_ratio and "<= 0.25x: met" in cold_ratio
    trip = next(line for line in lines if "warm 'pass'" in line)
    assert "1.05x" in trip and "<= 1.1x: met" in trip
    rss = next(line for line in lines if "RSS per extra session" in line)
    assert "60.0 MiB" in rss and "NOT met" in rss
    assert "all answered a first cell" in text and "removed after: yes" in text


def test_a_slow_run_is_reported_as_not_met(on_path):
    fast_start = importlib.import_module("fast_start")
    text = fast_start.report(argparse.Namespace(runs=3, sessions=3), *figures(90.0))
    pool = next(line for line in text.splitlines() if "pool: a second after" in line)
    assert "<= 50 ms: NOT met" in pool
    assert "<= 1x: NOT met" in next(line for line in text.splitlines() if "(zygote)" in line)
