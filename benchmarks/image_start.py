"""Session and container start on a 10 MB and a 1 GB stored image, and
import throughput.

    sudo .venv/bin/python benchmarks/image_start.py [--runs 20] [--small-mb 10] [--big-mb 1024]

Two images in a temporary store: busybox padded to --small-mb, and busybox
plus a layer of --big-mb of files.  Overlay stacks the layers as they are
(no copy), so starting on either should cost the same; the design's bar is
a ratio big/small within 1.1.  Two figures for each image:

* session start: a new Session on the image up to the end of its first
  cell (a --shell cell, /bin/true: busybox has no python, so the session's
  agent is the host's python3, as for any image without one);
* container start to exit of /bin/true (the runtime alone).

Runs are interleaved so that load bursts on this shared machine hit both alike.

It also prints the import of the big layer (unpack, checks, digests) against
``tar -x`` of the same tar into a fresh directory, each timed to its sync,
best of --io-runs taken in turns.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import io
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

from sandbox_kernel.runtime import images
from sandbox_kernel.runtime.container import Container
from sandbox_kernel.runtime.spec import ContainerSpec
from sandbox_kernel.session.client import Session


def _archives():
    path = pathlib.Path(__file__).parents[1] / "tests" / "image_archives.py"
    spec = importlib.util.spec_from_file_location("sbk_image_archives", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def filler_layer(path: str, megabytes: int, file_mb: int = 8) -> str:
    """A layer tar of incompressible files, megabytes in all, written as it
    is made (a 1 GB layer never sits in memory)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        folder = tarfile.TarInfo("data")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        archive.addfile(folder)
        for index in range(max(1, megabytes // file_mb)):
            info = tarfile.TarInfo(f"data/f{index:04d}")
            info.size, info.mode = file_mb << 20, 0o644
            archive.addfile(info, io.BytesIO(os.urandom(info.size)))
    return path


def start_to_exit(image: str) -> float:
    spec = ContainerSpec(command=("/bin/true",), image=image)
    started = time.perf_counter()
    with Container(spec, stdin=subprocess.DEVNULL) as box:
        box.start()
        result = box.wait()
    assert result.status == "ok", result
    return time.perf_counter() - started


def session_start(image: str) -> float:
    """A fresh session on ``image`` up to the end of its first (shell) cell."""
    started = time.perf_counter()
    with Session("bench", image=image) as session:
        code, _ = session.exec_command(["/bin/true"])
        elapsed = time.perf_counter() - started
    assert code == 0
    return elapsed


def timed(func) -> float:
    """Seconds of func() up to its writes on disk (sync): both sides pay
    their own writeback, and only theirs (a sync first)."""
    os.sync()
    started = time.perf_counter()
    func()
    os.sync()
    return time.perf_counter() - started


def best_of_alternating(runs: int, big: str, target: str) -> tuple[float, float]:
    """Best of ``runs`` for tar -x and for an import of the same tar, taken
    in turns (the disk is shared: its bursts should hit both alike), each
    into a fresh directory or a fresh store, timed to its sync."""
    tar_times, import_times = [], []
    for _ in range(runs):
        os.mkdir(target)
        tar_times.append(timed(lambda: subprocess.run(["tar", "-xf", big, "-C", target], check=True)))
        shutil.rmtree(target)
        store = images.Store(os.path.join(os.path.dirname(target), "import-store"))
        import_times.append(timed(lambda: images.import_image(big, "big", store=store)))
        shutil.rmtree(store.root)
    return min(tar_times), min(import_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--small-mb", type=int, default=10)
    parser.add_argument("--big-mb", type=int, default=1024)
    parser.add_argument("--io-runs", type=int, default=3, help="import and tar -x runs (best is shown)")
    args = parser.parse_args()
    archives = _archives()
    with tempfile.TemporaryDirectory(prefix="sbk-bench-", dir="/var/tmp") as work:
        os.environ[images.STORE_ENV] = os.path.join(work, "store")
        rootfs = archives.busybox_rootfs(os.path.join(work, "busybox"))
        images.import_image(rootfs, "base")
        small = filler_layer(os.path.join(work, "small.tar"), args.small_mb - 2)
        big = filler_layer(os.path.join(work, "big.tar"), args.big_mb)
        images.import_image(small, "small-layer")
        big_bytes = os.path.getsize(big)
        tar_seconds, import_seconds = best_of_alternating(args.io_runs, big, os.path.join(work, "tar-x"))
        images.import_image(big, "big-layer")
        for name, layer in (("small", "small-layer"), ("big", "big-layer")):
            _stack(name, layer)
        timings = {(kind, name): [] for kind in ("session", "container") for name in ("small", "big")}
        for kind, name in timings:
            MEASURES[kind](name)   # warm caches once
        for _ in range(args.runs):
            for kind, name in timings:
                timings[kind, name].append(MEASURES[kind](name))
    report(args, timings, import_seconds, tar_seconds, big_bytes)


MEASURES = {"session": session_start, "container": start_to_exit}


def _stack(name: str, filler: str) -> None:
    """Image ``name``: busybox's layer under the filler's (a record; no copy)."""
    store = images.Store()
    base, top = store.image("base"), store.image(filler)
    with store.lock():
        store.write_image(dataclasses.replace(base, name=name, layers=(*base.layers, *top.layers)))


def report(args, timings, import_seconds, tar_seconds, big_bytes) -> None:
    titles = {"session": "session start to the end of its first shell cell",
              "container": "container start to exit of /bin/true"}
    for kind, title in titles.items():
        medians = {name: statistics.median(timings[kind, name]) * 1000 for name in ("small", "big")}
        p90 = {name: statistics.quantiles(timings[kind, name], n=10)[-1] * 1000 for name in ("small", "big")}
        print(f"{title}, {args.runs} runs each (ms)")
        for name, size in (("small", args.small_mb), ("big", args.big_mb)):
            print(f"  {name:5s} image (~{size} MB): median {medians[name]:7.1f}   p90 {p90[name]:7.1f}")
        print(f"  ratio big/small (median): {medians['big'] / medians['small']:.2f}   (bar: 1.10)")
    mb = big_bytes / (1 << 20)
    print(f"import of a {mb:.0f} MiB layer: {import_seconds:.2f} s ({mb / import_seconds:.0f} MiB/s); "
          f"tar -x: {tar_seconds:.2f} s ({mb / tar_seconds:.0f} MiB/s); "
          f"ratio import/tar -x: {import_seconds / tar_seconds:.2f}")


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("image_start.py needs root (containers, whiteouts)")
    shutil.which("tar") or sys.exit("image_start.py needs tar")
    main()
