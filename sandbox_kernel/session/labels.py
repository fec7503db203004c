"""What this process's containers are for, written on their cards (runtime/cards.py)
for `sandbox-kernel top`, the stats endpoint and the hub's admin page.

The face says it once (``kind`` "kernel" or "magics", the kernel's id from its
connection file); each session adds its name.
"""
from __future__ import annotations

import os
import re

PROCESS_LABELS: dict[str, str] = {}
_KERNEL_FILE = re.compile(r"^kernel-(.+)\.json$")


def label_process(**labels) -> None:
    PROCESS_LABELS.update({key: str(value) for key, value in labels.items() if value})


def kernel_id_of(connection_file: str | None) -> str | None:
    """The id Jupyter gave the kernel: its connection file is kernel-<id>.json."""
    match = _KERNEL_FILE.match(os.path.basename(connection_file or ""))
    return match.group(1) if match else None


def for_session(name: str) -> tuple[tuple[str, str], ...]:
    return tuple({**PROCESS_LABELS, "session": name}.items())
