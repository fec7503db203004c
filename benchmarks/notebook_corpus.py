"""Real public notebooks on plain ipykernel and on the sandbox kernel, compared
cell by cell (issue 25's corpus test).

    sudo .venv/bin/python benchmarks/notebook_corpus.py [--json FILE] [-k TEXT] [-v]
    sudo .venv/bin/python benchmarks/notebook_corpus.py --self-check   # ipykernel against itself

Options: -k TEXT runs the notebooks whose project/path contains TEXT; -v prints
both kernels' normalised outputs of each differing cell; --jobs N runs N
notebooks at a time (default 2, one per core here; about 2 minutes for the
corpus); --memory sets the sandbox kernel's memory limit (default 2G);
--self-check runs ipykernel twice instead: the cells that differ then are
the volatile ones, to list in the MANIFEST.

The corpus is tests/corpus: notebooks of three public projects, with the files
they read, pinned by commit in tests/corpus/MANIFEST.toml.  Each notebook runs
with nbclient twice, on this venv's ipykernel ("python3") and on the sandbox
kernel (a kernelspec written by the project's installer, with --memory 2G, no
footer, and the policy options a notebook's MANIFEST entry asks for), each time in a fresh copy of its project's tree in a temporary
directory, with the notebook's directory as the working directory, as
Jupyter starts a kernel.  Errors do not stop a run (allow_errors).

Per code cell the outputs are compared by output type, stream name, MIME keys
and normalised text.  Normalised: ANSI colours, memory addresses (0x...),
timings (%timeit, %time), dates, the run's own temporary directory, and the
pid in ipykernel's cell file names (/tmp/ipykernel_PID/HASH.py differs between
two ipykernel runs).  NOT normalised: the cell file names themselves and the
rest of a traceback: a traceback must read the same on both kernels.  Cells
listed as volatile_cells in the MANIFEST (unseeded random numbers, disk usage)
are compared by output types and MIME keys only.  Image bytes are compared by
key only.

Prints one row per notebook (cells, same, different, and the first difference
of each differing cell) and the totals; exit status 0 whatever the result
(tests/corpus/test_corpus.py asserts it).  --json FILE writes the result.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import tomllib
import uuid
from dataclasses import asdict, dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(REPO, "tests", "corpus")
MANIFEST = os.path.join(CORPUS, "MANIFEST.toml")
PLAIN, SANDBOX = "python3", "python3-sandbox"
CELL_TIMEOUT = 120
TEXT_MIME = re.compile(r"^(text/|application/(json|javascript)$)")
STATS_MIME = "application/vnd.sandbox-kernel.stats+json"


# ---- the corpus --------------------------------------------------------------------------

def load_manifest(path: str = MANIFEST) -> dict:
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def git_blob_sha(path: str) -> str:
    """The git blob id of a file, as upstream's `git ls-tree` shows it."""
    with open(path, "rb") as handle:
        data = handle.read()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def notebooks(manifest: dict, select: str | None = None) -> list[dict]:
    return [nb for nb in manifest["notebook"]
            if select is None or select.lower() in f"{nb['project']}/{nb['path']}".lower()]


# ---- normalising outputs ------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,16}")
TIMING = re.compile(r"\b\d+(?:[.,]\d+)?\s?(?:ns|µs|μs|us|ms|s|min)\b")
LOOPS = re.compile(r"\b[\d,]+ loops? each\b|\bof \d+ runs?\b")
DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}:?\d{2}|Z)?")
IPYKERNEL_PID = re.compile(r"/tmp/ipykernel_\d+/")


def normalise(text: str, workdir: str) -> str:
    text = ANSI.sub("", text)
    text = text.replace(workdir, "<workdir>")
    text = IPYKERNEL_PID.sub("/tmp/ipykernel_<pid>/", text)
    text = ADDRESS.sub("0x<address>", text)
    text = DATE.sub("<date>", text)
    text = LOOPS.sub("<loops>", text)
    return TIMING.sub("<time>", text)


def output_text(output: dict) -> str:
    kind = output["output_type"]
    if kind == "stream":
        return output["text"]
    if kind == "error":
        return "\n".join(output.get("traceback") or []) + f"\n{output['ename']}: {output['evalue']}"
    data = output.get("data", {})
    return "\n".join(f"[{mime}] {data[mime] if isinstance(data[mime], str) else json.dumps(data[mime], sort_keys=True)}"
                     for mime in sorted(data) if TEXT_MIME.match(mime))


def output_shapes(outputs: list[dict], workdir: str, *, with_text: bool) -> list[tuple]:
    """(type, stream name or MIME keys, normalised text) per output; adjacent
    stream outputs of one name merged (how a frontend shows them)."""
    shapes: list[list] = []
    for output in outputs:
        kind = output["output_type"]
        if kind in ("display_data", "execute_result") and STATS_MIME in output.get("data", {}):
            continue                                     # the sandbox kernel's footer, if on
        if kind == "stream":
            if shapes and shapes[-1][0] == "stream" and shapes[-1][1] == output["name"]:
                shapes[-1][2] += output["text"]
                continue
            shapes.append(["stream", output["name"], output["text"]])
        elif kind == "error":
            shapes.append(["error", output["ename"], output_text(output)])
        else:
            shapes.append([kind, ",".join(sorted(output.get("data", {}))), output_text(output)])
    return [(kind, key, normalise(text, workdir) if with_text else "") for kind, key, text in shapes]


def first_difference(plain: list[tuple], sandbox: list[tuple]) -> str:
    """One short line: where the two cells' outputs first differ."""
    for index, (a, b) in enumerate(zip(plain, sandbox)):
        if a[:2] != b[:2]:
            return f"output {index}: {a[0]} {a[1]} vs {b[0]} {b[1]}" + _error_hint(b)
        if a[2] != b[2]:
            return f"output {index} ({a[0]} {a[1]}): {_line_diff(a[2], b[2])}"
    if len(plain) != len(sandbox):
        extra = plain[len(sandbox):] or sandbox[len(plain):]
        who = "ipykernel only" if len(plain) > len(sandbox) else "sandbox only"
        return f"{who}: {extra[0][0]} {extra[0][1]}" + _error_hint(extra[0])
    return ""


def _error_hint(shape: tuple) -> str:
    if shape[0] != "error":
        return ""
    return ": " + _short(shape[2].strip().splitlines()[-1])


def _line_diff(a: str, b: str) -> str:
    a_lines, b_lines = a.splitlines(), b.splitlines()
    for x, y in zip(a_lines, b_lines):
        if x != y:
            return f"{_short(x)!r} vs {_short(y)!r}"
    return f"{len(a_lines)} vs {len(b_lines)} lines"


def _short(text: str, width: int = 70) -> str:
    text = text.strip()
    return text if len(text) <= width else text[:width - 3] + "..."


# ---- running a notebook --------------------------------------------------------------------

@dataclass
class Run:
    outputs: list            # per cell of the notebook: its outputs ([] for markdown)
    workdir: str
    seconds: float
    shutdown_seconds: float
    failure: str = ""        # the run itself failed (kernel died, timeout)


def kernelspecs(data_dir: str, memory: str, policies: list[dict] = ()) -> None:
    """This venv's plain ipykernel and the sandbox kernel (project installer,
    no footer) in data_dir, and one sandbox kernelspec more per policy a
    notebook asks for (its MANIFEST sandbox_policy, as an admin would install
    it: e.g. notebook_root "parent" for a notebook that reads ../images); a
    private IPython profile (no user's startup files)."""
    from sandbox_kernel.kernel import install
    plain = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
             "display_name": "Python 3", "language": "python"}
    install.write_kernelspec(os.path.join(data_dir, "kernels", PLAIN), plain)
    settings = install.checked_settings({"memory": memory})
    for policy in [{}, *policies]:
        spec = install.kernel_json(settings, footer=False,
                                   policy=install.checked_policy(settings, policy))
        install.write_kernelspec(os.path.join(data_dir, "kernels", sandbox_name(policy)), spec)
    os.environ["JUPYTER_PATH"] = data_dir
    os.environ["IPYTHONDIR"] = os.path.join(data_dir, "ipython")


def sandbox_name(policy: dict) -> str:
    """The sandbox kernelspec's name for a notebook's policy options."""
    if not policy:
        return SANDBOX
    return SANDBOX + "-" + hashlib.sha1(json.dumps(policy, sort_keys=True).encode()).hexdigest()[:8]


def run_notebook(entry: dict, kernel_name: str, scratch: str) -> Run:
    """nbclient runs the notebook in a fresh copy of its project's tree."""
    import nbformat
    from jupyter_client import KernelManager
    from nbclient import NotebookClient

    tree = os.path.join(scratch, uuid.uuid4().hex[:8], entry["project"])
    shutil.copytree(os.path.join(CORPUS, entry["project"]), tree)
    path = os.path.join(tree, entry["path"])
    workdir = os.path.dirname(path)
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:            # a run that fails at start must not show the stored outputs
        if cell.cell_type == "code":
            cell.outputs = []
    km = KernelManager(kernel_name=kernel_name, transport="ipc",
                       ip=os.path.join(scratch, "ipc-" + uuid.uuid4().hex[:8]))
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, startup_timeout=60, allow_errors=True,
                            kernel_name=kernel_name, shutdown_kernel="graceful",
                            resources={"metadata": {"path": workdir}})
    start, failure = time.monotonic(), ""
    try:
        client.execute()
    except Exception as error:       # a dead kernel or a timeout: reported, the corpus goes on
        failure = f"{type(error).__name__}: {_short(str(error), 200)}"
    seconds = time.monotonic() - start
    shutdown = _shutdown_seconds(km)
    outputs = [cell.get("outputs", []) if cell.cell_type == "code" else None for cell in nb.cells]
    return Run(outputs, workdir, seconds, shutdown, failure)


def _shutdown_seconds(km) -> float:
    """How long the kernel took to go (nbclient shut it down gracefully
    already when it could; this waits for the process to be gone)."""
    start = time.monotonic()
    with contextlib.suppress(Exception):
        if km.has_kernel and km.is_alive():
            km.shutdown_kernel(now=False)
    return time.monotonic() - start


# ---- comparing ---------------------------------------------------------------------------

@dataclass
class CellResult:
    cell: int
    same: bool
    volatile: bool
    difference: str = ""
    ipykernel: list = field(default_factory=list)   # the normalised outputs, when they differ
    sandbox: list = field(default_factory=list)


@dataclass
class NotebookResult:
    notebook: str
    cells: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    failures: dict = field(default_factory=dict)

    @property
    def different(self) -> list:
        return [c for c in self.cells if not c.same]


def compare(entry: dict, plain: Run, sandbox: Run) -> NotebookResult:
    volatile = set(entry.get("volatile_cells", []))
    result = NotebookResult(f"{entry['project']}/{entry['path']}",
                            seconds={"ipykernel": round(plain.seconds, 2),
                                     "other": round(sandbox.seconds, 2)},
                            failures={k: v for k, v in (("ipykernel", plain.failure),
                                                        ("other", sandbox.failure)) if v})
    for index, (a, b) in enumerate(zip(plain.outputs, sandbox.outputs)):
        if a is None:
            continue
        with_text = index not in volatile
        shapes_a = output_shapes(a, plain.workdir, with_text=with_text)
        shapes_b = output_shapes(b or [], sandbox.workdir, with_text=with_text)
        diff = first_difference(shapes_a, shapes_b)
        cell = CellResult(index, not diff, not with_text, diff)
        if diff:
            cell.ipykernel, cell.sandbox = shapes_a, shapes_b
        result.cells.append(cell)
    return result


def other_kernel(entry: dict, against: str) -> str:
    return sandbox_name(entry.get("sandbox_policy", {})) if against == SANDBOX else against


def _run_job(job: tuple) -> Run:
    """One notebook on one kernel, in a worker process (nbclient and
    jupyter_client keep their event loops and sockets to themselves there)."""
    entry, kernel_name, scratch = job
    return run_notebook(entry, kernel_name, scratch)


def run_corpus(select: str | None = None, memory: str = "2G", log=print, verbose: bool = False,
               jobs: int = 2, against: str = SANDBOX) -> dict:
    """Every selected notebook on ipykernel and on AGAINST (the sandbox
    kernel; ipykernel again to find volatile cells), JOBS runs at a time."""
    import concurrent.futures
    import multiprocessing
    from kernel_roundtrip import restored
    entries = notebooks(load_manifest(), select)
    results = []
    with tempfile.TemporaryDirectory(prefix="nb-corpus-") as scratch, \
            restored(("JUPYTER_PATH", "IPYTHONDIR")):
        kernelspecs(scratch, memory, [e["sandbox_policy"] for e in entries if e.get("sandbox_policy")])
        with concurrent.futures.ProcessPoolExecutor(
                jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = pool.map(_run_job, [(entry, kernel, scratch) for entry in entries
                                       for kernel in (PLAIN, other_kernel(entry, against))])
            for entry in entries:
                plain, other = next(runs), next(runs)
                result = compare(entry, plain, other)
                result.seconds["shutdown"] = round(other.shutdown_seconds, 2)
                results.append(result)
                log(row(result, verbose))
    return summary(results, memory, against)


def summary(results: list[NotebookResult], memory: str, against: str = SANDBOX) -> dict:
    cells = [c for r in results for c in r.cells]
    return {
        "kernels": [PLAIN, against],
        "sandbox_settings": {"memory": memory},
        "totals": {"notebooks": len(results),
                   "notebooks_same": sum(1 for r in results if not r.different and not r.failures),
                   "cells": len(cells), "cells_same": sum(c.same for c in cells),
                   "cells_different": sum(not c.same for c in cells),
                   "cells_volatile": sum(c.volatile for c in cells)},
        "notebooks": [{**asdict(r), "different": [asdict(c) for c in r.different]} for r in results],
    }


# ---- printing ----------------------------------------------------------------------------

def row(result: NotebookResult, verbose: bool = False) -> str:
    cells, different = len(result.cells), len(result.different)
    head = (f"{_short(result.notebook, 64):64} {cells:5} {cells - different:5} {different:5}"
            f" {result.seconds['ipykernel']:7.1f} {result.seconds['other']:7.1f}"
            f" {result.seconds['shutdown']:6.1f}")
    lines = [head]
    for cell in result.different:
        lines.append(f"    cell {cell.cell}: {cell.difference}")
        if verbose:
            lines += [f"      {who}: {output!r}" for who, outputs in (("ipykernel", cell.ipykernel),
                      ("sandbox", cell.sandbox)) for output in outputs]
    lines += [f"    run failed on {k}: {v}" for k, v in result.failures.items()]
    return "\n".join(lines)


def header(against: str = SANDBOX) -> str:
    other = "sbk s" if against == SANDBOX else "ipyk2 s"
    return (f"{'notebook':64} {'cells':>5} {'same':>5} {'diff':>5} {'ipyk s':>7} {other:>7}"
            f" {'stop s':>6}\n" + "-" * 105)


def footer(result: dict) -> str:
    t = result["totals"]
    return ("-" * 105 + f"\n{t['notebooks']} notebooks, {t['notebooks_same']} the same; "
            f"{t['cells']} code cells: {t['cells_same']} the same, {t['cells_different']} different "
            f"({t['cells_volatile']} volatile cells compared by type and MIME keys only)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="FILE", help="write the result as JSON")
    parser.add_argument("-k", dest="select", help="only notebooks whose project/path contains this")
    parser.add_argument("--memory", default="2G", help="the sandbox kernel's memory limit")
    parser.add_argument("--jobs", type=int, default=2, help="notebook runs at a time (default 2)")
    parser.add_argument("--self-check", action="store_true",
                        help="ipykernel against itself: the cells that differ are volatile_cells")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print both kernels' normalised outputs of every differing cell")
    args = parser.parse_args(argv)
    against = PLAIN if args.self_check else SANDBOX
    print(header(against), flush=True)
    result = run_corpus(args.select, args.memory, log=lambda line: print(line, flush=True),
                        verbose=args.verbose, jobs=args.jobs, against=against)
    print(footer(result))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
            handle.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
