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


def figures(ms: float) -> dict:
    """Made-up timings: every contender takes ``ms``, bwrap and the
    baselines are fixed."""
    bare = {"sandbox-kernel (fork)": [ms] * 3, "sandbox-kernel (zygote)": [ms] * 3,
            "bwrap --unshare-all": [8.0] * 3, "unshare -fmpuin": [5.0] * 3}
    burst = {"sandbox-kernel": [1000 / ms] * 3, "bwrap": [125.0] * 3}        # starts per second
    shell = {"run": [2 * ms / 1000] * 3, "bwrap": [0.005] * 3, "python3 -c pass": [0.02] * 3}
    first = {"pool": [ms / 1000] * 3, "cold": [ms / 1000] * 3, "import": [0.2] * 3}
    fresh = {"plain start": [1.0] * 3, "sandbox start": [1.2] * 3, "run all": [0.5] * 3,
             "sandbox start, fork server": [1.1] * 3, "run all, fork server": [0.4] * 3}
    trips = {("python3", "pass"): [0.010] * 3, ("sbk-benchmark", "pass"): [0.0102] * 3}
    oom = {"restart": [ms / 1000] * 3, "no spare": [0.1] * 3, "plain": [0.008] * 3}
    mib = 1 << 20
    memory = {"one": (60 * mib, 20 * mib), "many": (60 * mib * 3, 50 * mib), "one uss": 10 * mib,
              "many uss": 30 * mib, "zygote": (30 * mib, 6 * mib), "baseline": (22 * mib, 15 * mib),
              "all up": 0.4, "left": []}
    return {"bare": bare, "burst": burst, "shell": shell, "first": first, "fresh": fresh,
            "trips": trips, "oom": oom, "memory": memory}


def _line(text: str, words: str) -> str:
    return next(line for line in text.splitlines() if words in line)


def test_the_report_has_every_figure_its_baseline_and_verdict(on_path):
    fast_start = importlib.import_module("fast_start")
    text = fast_start.report(argparse.Namespace(runs=3, sessions=3), figures(7.0))
    fork = _line(text, "sandbox-kernel (fork)")
    assert "bwrap 8.0 ms" in fork and "0.88x" in fork and fork.endswith("met") and "NOT" not in fork
    burst = _line(text, "sandbox-kernel, Python API")      # 142.9/s against bwrap's 125/s
    assert "1.14x" in burst and ">= 0.8x: met" in burst
    assert "<= 40 ms: met" in _line(text, "  sandbox-kernel run -- true ")
    assert "<= 20 ms: met" in _line(text, "cold: a new --name session")
    assert "NOT met" in _line(text, "run all: at once after")           # 500 ms against 50
    assert "1.20x" in _line(text, "start to first reply") and "NOT met" in _line(text, "start to first reply")
    forked = [line for line in text.splitlines() if "fork server on" in line]
    assert len(forked) == 2 and "off 500.0 ms" in forked[0] and "0.80x" in forked[0]
    assert "plain ipykernel 1000.0 ms" in forked[1] and "1.10x" in forked[1]
    trip = _line(text, "warm round trip of 'pass'")
    assert "1.02x" in trip and "<= 1.03x: met" in trip
    assert "<= 20 ms: met" in _line(text, "restart after an out-of-memory cell")
    assert "no spare (as before) 100.0 ms" in text
    rss = _line(text, "RSS per extra session")
    assert "60.0 MiB" in rss and "NOT met" in rss
    assert "all answered a first cell" in text and "removed after: yes" in text


def test_a_slow_run_is_reported_as_not_met(on_path):
    fast_start = importlib.import_module("fast_start")
    text = fast_start.report(argparse.Namespace(runs=3, sessions=3), figures(90.0))
    assert "<= 20 ms: NOT met" in _line(text, "cold: a new --name session")
    assert "<= 1x: NOT met" in _line(text, "(zygote)")
    assert ">= 0.8x: NOT met" in _line(text, "sandbox-kernel, Python API")
    assert "<= 20 ms: NOT met" in _line(text, "restart after an out-of-memory cell")


def test_a_run_without_the_oom_row_says_so(on_path):
    fast_start = importlib.import_module("fast_start")
    measured = figures(7.0)
    measured["oom"] = fast_start.NOT_MEASURED
    assert "not measured (--skip-oom)" in fast_start.report(argparse.Namespace(runs=3, sessions=3), measured)
