"""Benchmarks leave nothing behind: every temporary directory they make is
a context-managed one, removed when the benchmark ends (a bare mkdtemp left
/tmp/sbk-bench-* directories on the machine)."""
from __future__ import annotations

import ast
import pathlib

import pytest

BENCHMARKS = sorted((pathlib.Path(__file__).resolve().parents[2] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_no_bare_mkdtemp_or_mkstemp(path):
    tree = ast.parse(path.read_text())
    bare = [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in ("mkdtemp", "mkstemp")]
    assert not bare, f"{path.name} lines {bare}: use tempfile.TemporaryDirectory in a with block"
