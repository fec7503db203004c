"""How an image import or pull shows its progress on a terminal or in a log:
tqdm bars when stderr is a terminal and tqdm is installed, else one line
per layer.  Presentation, so outside the runtime, which reports only to the
no-op runtime.image_basics.Progress interface these implement; a notebook's
live display is session/commands.py's NotebookProgress.

Imports runtime.image_basics (Progress, format_size) and, on a terminal, tqdm.
Used by images_cli.py.
"""
from __future__ import annotations

import sys

from .runtime.image_basics import Progress, format_size


class LineProgress(Progress):
    """One line per layer, for logs and terminals without tqdm."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.label, self.done = "", 0

    def start(self, label, total):
        self.label, self.done = label, 0

    def advance(self, count):
        self.done += count

    def end(self, note=""):
        self.stream.write(f"{self.label}: {format_size(self.done)}{' ' + note if note else ''}\n")
        self.stream.flush()


class TqdmProgress(Progress):
    def __init__(self, tqdm):
        self.tqdm, self.bar = tqdm, None

    def start(self, label, total):
        self.bar = self.tqdm(total=total, desc=label, unit="B", unit_scale=True, leave=True)

    def advance(self, count):
        self.bar.update(count)

    def end(self, note=""):
        if note:
            self.bar.set_postfix_str(note)
        self.bar.close()


def terminal_progress(stream=None) -> Progress:
    """tqdm bars on a terminal when tqdm is installed, else a line per layer."""
    stream = stream or sys.stderr
    if stream.isatty():
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return TqdmProgress(tqdm)
    return LineProgress(stream)
