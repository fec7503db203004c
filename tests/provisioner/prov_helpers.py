"""Helpers of the provisioner's tests (conftest.py has the fixtures):
``from provisioner.prov_helpers import ...`` (tests/ is on pytest's pythonpath)."""
from __future__ import annotations

import glob
import os
import queue
import tempfile
import time

from sandbox_kernel.runtime.cgroups import detect_driver

MEMORY = "256M"
WRAPPED = {"ir": "ir-sandboxed", "bash": "bash-sandboxed", "python3": "python3-sandboxed"}
START_TIMEOUT = 120


def leftovers(pid: int | None = None) -> list[str]:
    """What containers and connection directories of process ``pid`` (this
    one) left: sbk-<pid>-* cgroups and /run (or temp dir) entries."""
    prefix = f"sbk-{pid or os.getpid()}-"
    groups = [path for path in detect_driver().leftovers() if os.path.basename(path).startswith(prefix)]
    dirs = [path for parent in ("/run", tempfile.gettempdir())
            for path in glob.glob(os.path.join(parent, prefix + "*"))]
    return groups + dirs


def run(kc, code: str, timeout: float = 60) -> tuple[str, str]:
    """(reply status, the text of its streams and results) of one cell."""
    texts = []

    def keep(message):
        content = message["content"]
        if message["msg_type"] == "stream":
            texts.append(content["text"])
        elif message["msg_type"] in ("execute_result", "display_data"):
            texts.append(content["data"].get("text/plain", ""))
        elif message["msg_type"] == "error":
            texts.append("\n".join(content.get("traceback") or [content.get("evalue", "")]))
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=keep)
    return reply["content"]["status"], "".join(texts)


def until(check, timeout: float = 30, step: float = 0.2):
    """check()'s first true value within ``timeout`` seconds, else None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    return None


def drain(kc) -> None:
    """Forget the iopub messages of a cell that did not finish (a dead kernel's)."""
    try:
        while True:
            kc.get_iopub_msg(timeout=0.2)
    except queue.Empty:
        pass
