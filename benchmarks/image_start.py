"""Container start on a small and a big stored image, and import throughput.

    sudo .venv/bin/python benchmarks/image_start.py [--runs 30] [--big-mb 200]

Two images in a temporary store: busybox alone (~2 MB, padded to --small-mb)
and busybox plus a layer of --big-mb of files.  Overlay stacks the layers
as they are (no copy), so start-to-exit of /bin/true should cost the same on
both: the ratio big/small is printed, and the design's bar is 1.1.  Runs are
interleaved so that load bursts on this shared machine hit both alike.

It also prints the import of the big layer (unpack, checks, digests) against
``tar -x`` of the same tar into a fresh directory.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from sandbox_kernel.runtime import images
from sandbox_kernel.runtime.container import Container
from sandbox_kernel.runtime.spec import ContainerSpec


def _archives():
    path = pathlib.Path(__file__).parents[1] / "tests" / "image_archives.py"
    spec = importlib.util.spec_from_file_location("sbk_image_archives", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def filler_layer(path: str, megabytes: int, file_mb: int = 4) -> str:
    """A layer tar of incompressible files, megabytes in all."""
    archives = _archives()
    members = [archives.member("data", "dir")]
    for index in range(max(1, megabytes // file_mb)):
        members.append(archives.member(f"data/f{index:04d}", data=os.urandom(file_mb << 20)))
    pathlib.Path(path).write_bytes(archives.layer_tar(members))
    return path


def start_to_exit(image: str) -> float:
    spec = ContainerSpec(command=("/bin/true",), image=image)
    started = time.perf_counter()
    with Container(spec, stdin=subprocess.DEVNULL) as box:
        box.start()
        result = box.wait()
    assert result.status == "ok", result
    return time.perf_counter() - started


def timed(func) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--small-mb", type=int, default=10)
    parser.add_argument("--big-mb", type=int, default=200)
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
        import_seconds = timed(lambda: images.import_image(big, "big-layer"))
        target = os.path.join(work, "tar-x")
        os.mkdir(target)
        tar_seconds = timed(lambda: subprocess.run(["tar", "-xf", big, "-C", target], check=True))
        for name, layer in (("small", "small-layer"), ("big", "big-layer")):
            _stack(name, layer)
        timings = {"small": [], "big": []}
        for name in timings:
            start_to_exit(name)   # warm caches once
        for _ in range(args.runs):
            for name in timings:
                timings[name].append(start_to_exit(name))
    report(args, timings, import_seconds, tar_seconds, big_bytes)


def _stack(name: str, filler: str) -> None:
    """Image ``name``: busybox's layer under the filler's (a record; no copy)."""
    store = images.Store()
    base, top = store.image("base"), store.image(filler)
    with store.lock():
        store.write_image(dataclasses.replace(base, name=name, layers=(*base.layers, *top.layers)))


def report(args, timings, import_seconds, tar_seconds, big_bytes) -> None:
    medians = {name: statistics.median(values) * 1000 for name, values in timings.items()}
    p90 = {name: statistics.quantiles(values, n=10)[-1] * 1000 for name, values in timings.items()}
    print(f"start to exit of /bin/true, {args.runs} runs each (ms)")
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
