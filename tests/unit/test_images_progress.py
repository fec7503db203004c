"""Progress of an import: tqdm bars when the CLI writes to a terminal, one
line per layer otherwise, and in a notebook one live display updated in place."""
from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from sandbox_kernel import progress
from sandbox_kernel.runtime import images
from sandbox_kernel.session.commands import NotebookProgress

import image_archives as archives   # tests/ is on pytest's pythonpath


@pytest.fixture
def big_rootfs(tmp_path):
    """A 3 MiB rootfs tarball: enough bytes for a bar to move."""
    path = tmp_path / "big.tar"
    path.write_bytes(archives.layer_tar([archives.member("etc", "dir"),
                                         archives.member("etc/blob", data=os.urandom(3 << 20))]))
    return str(path)


def _read_all(fd: int, deadline: float) -> bytes:
    out = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:      # EIO: the other side is closed
                break
            if not data:
                break
            out += data
    return out


def test_the_cli_shows_a_tqdm_bar_on_a_terminal(tmp_path, big_rootfs):
    pytest.importorskip("tqdm")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))   # tqdm sizes its bar by it
    env = dict(os.environ, **{images.STORE_ENV: str(tmp_path / "store")})
    proc = subprocess.Popen([sys.executable, "-m", "sandbox_kernel.cli", "images", "import", big_rootfs,
                             "--name", "big"], stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    try:
        shown = _read_all(master, time.monotonic() + 60).decode(errors="replace")
        stdout = proc.communicate(timeout=60)[0].decode()
    finally:
        os.close(master)
    assert proc.returncode == 0 and stdout.startswith("imported big"), (stdout, shown)
    # tqdm's bar: the label, a percentage, a bar of blocks, bytes with units
    assert re.search(r"layer 1/1.*100%\|.*\| 3\.1\dM/3\.1\dM", shown), shown
    assert "\r" in shown            # redrawn in place


def test_without_a_terminal_the_cli_writes_one_line_per_layer(tmp_path, big_rootfs):
    env = dict(os.environ, **{images.STORE_ENV: str(tmp_path / "store")})
    ran = subprocess.run([sys.executable, "-m", "sandbox_kernel.cli", "images", "import", big_rootfs,
                          "--name", "big"], capture_output=True, text=True, env=env, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr == "layer 1/1: 3.0 MiB\n"


def test_terminal_progress_picks_tqdm_only_for_a_terminal():
    pytest.importorskip("tqdm")

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    assert isinstance(progress.terminal_progress(Terminal()), progress.TqdmProgress)
    assert isinstance(progress.terminal_progress(io.StringIO()), progress.LineProgress)


def test_the_notebook_bar_is_one_display_updated_in_place(tmp_path, big_rootfs, monkeypatch):
    monkeypatch.setenv(images.STORE_ENV, str(tmp_path / "store"))
    monkeypatch.setattr(NotebookProgress, "INTERVAL", 0.0)    # every chunk updates the bar
    shown = []
    images.import_image(big_rootfs, "big", progress=NotebookProgress(lambda kind, content: shown.append((kind, content))))
    kinds = [kind for kind, _ in shown]
    assert kinds[0] == "display_data" and set(kinds[1:]) == {"update_display_data"} and len(kinds) >= 4
    assert len({content["transient"]["display_id"] for _, content in shown}) == 1
    values = [int(re.search(r'value="(\d+)"', c["data"]["text/html"]).group(1)) for _, c in shown]
    assert values == sorted(values) and values[-1] == os.path.getsize(big_rootfs)
    assert f'max="{os.path.getsize(big_rootfs)}"' in shown[-1][1]["data"]["text/html"]
    assert shown[-1][1]["data"]["text/plain"].endswith("done")
