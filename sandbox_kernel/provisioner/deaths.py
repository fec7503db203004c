"""A provisioned kernel's death in plain words: "the R kernel ran out of
memory at the 1 GiB limit (peak 1 GiB)", never just "kernel died".

From the runtime's ExitResult (its status is "oom" when the cgroup counted
an OOM kill) and the spec's limits, with the words the sandbox kernel's
cells use (session/verdicts.py: at_limit, signal_name; session/stats.py:
format_bytes).  Pure functions.
"""
from __future__ import annotations

import signal
import time

from ..session import stats as stats_contract
from ..session import verdicts
from .registry import Death

# the language as people write it, where the kernelspec's word is not
_LANGUAGE_NAMES = {"python": "Python", "r": "R", "julia": "Julia", "javascript": "JavaScript"}


def kernel_words(language: str) -> str:
    """'the R kernel', 'the Python kernel', 'the bash kernel'."""
    name = (language or "").strip()
    name = _LANGUAGE_NAMES.get(name.lower(), name)
    return f"the {name} kernel" if name else "the kernel"


def death_of(language: str, result, limits) -> Death:
    """The Death of a container that ended by itself; ``result``: its
    runtime ExitResult (None: the end could not be read)."""
    who = kernel_words(language)
    if result is None:
        return Death("killed", f"{who} stopped (how it ended could not be read)", time.time())
    peak = result.stats.memory_peak
    limit = result.stats.memory_limit if result.stats.memory_limit is not None else limits.memory
    reason, words = _reason_and_words(who, result, limits, peak)
    return Death(reason, words, time.time(), result.exit_code, result.signal, peak, limit)


def _reason_and_words(who: str, result, limits, peak) -> tuple[str, str]:
    # an OOM kill counted earlier (a cell's child) does not make a later exit an OOM:
    # the OOM killer's signal is SIGKILL
    if result.status == "oom" and (result.signal == signal.SIGKILL or result.exit_code is None):
        peak_text = f" (peak {stats_contract.format_bytes(peak)})" if peak is not None else ""
        return "oom", f"{who} ran out of memory{verdicts.at_limit(limits)}{peak_text}"
    if result.status == "timeout":
        return "timeout", f"{who} ran past its time limit and was killed"
    if result.signal == signal.SIGKILL or result.status == "killed":
        return "killed", f"{who} was killed (SIGKILL)"
    if result.signal:
        return "signal", f"{who} died of {verdicts.signal_name(result.signal)}"
    if result.exit_code == 0:
        return "exit", f"{who} exited (code 0)"
    return "exit", f"{who} exited with code {result.exit_code}"
