"""The open files of a process, fd -> target: ``open_files(pid)`` reads
/proc/PID/fd on the host, and a cell that runs ``LIST_FDS`` prints the same as
JSON from inside a container.  The fast-start and pool tests use both to show
that a forked agent holds none of its owner's or its fork server's files.
(tests/ is on pytest's pythonpath: pyproject.toml.)"""
from __future__ import annotations

import os

LIST_FDS = """import json, os
found = {}
for fd in os.listdir('/proc/self/fd'):
    try:
        found[int(fd)] = os.readlink(f'/proc/self/fd/{fd}')
    except OSError:
        pass                     # the directory listdir had open
print(json.dumps(found))
"""


def open_files(pid: int) -> dict[int, str]:
    found = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass                 # closed between the listing and the look
    return found
