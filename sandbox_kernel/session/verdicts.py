"""Verdicts: what became of a cell, in plain words, from what the exchange
and the cgroup's counters say.  Pure functions of their arguments (an
Outcome, counters before and after, the limits, how the container ended):
nothing here reads a file or a session, but for one question an out-of-memory
verdict asks the runtime: the user's memory ceiling (`sandbox-kernel
delegate`), to name the limit that was hit.

Imports exchange (Ending), stats (formatting) and runtime.spec (Limits).
"""
from __future__ import annotations

import os
import re
import signal

from ..runtime.spec import Limits
from . import stats as stats_contract
from .exchange import Ending, Outcome

LOST = "the container was restarted and its variables are lost"


def judge_reply(outcome: Outcome, before, after, limit, limits: Limits) -> tuple[str, str | None]:
    """(status, message) of a cell the agent replied to."""
    status = "ok" if outcome.reply.get("status") == "ok" else "error"
    oom = stats_contract.delta((before or {}).get("oom_kills"), (after or {}).get("oom_kills"))
    if outcome.timed_out:
        return "timeout", (f"the cell ran past its {stats_contract.format_seconds(limit)} "
                           "time limit and was interrupted; the container and its variables are kept")
    if oom:
        return "oom", (f"a process of the cell ran out of memory{at_limit(limits, (after or {}).get('memory_peak'))}"
                       f"{files_share(after, limits)} and was killed; the container "
                       "and its variables are kept")
    return status, disk_note(outcome.reply, after, limits)


def judge_death(outcome: Outcome, result, before, after, limit, *, limits: Limits,
                timeout_grace: float, interrupt_grace: float, last_words: str) -> tuple[str, str]:
    """(status, message) of a cell whose container died or was killed;
    ``result``: the container's ExitResult (None: unknown)."""
    oom = stats_contract.delta((before or {}).get("oom_kills"), (after or {}).get("oom_kills"))
    if outcome.ending is Ending.TIMEOUT_KILLED:
        return "timeout", (f"the cell ran past its {stats_contract.format_seconds(limit)} time limit "
                           f"and did not stop within {timeout_grace:g} s of the interrupt, "
                           f"so it was killed; {LOST}")
    if outcome.ending is Ending.INTERRUPT_KILLED:
        return "killed", (f"the cell did not stop within {interrupt_grace:g} s of the "
                          f"interrupt, so it was killed; {LOST}")
    if outcome.ending is Ending.BROKEN:
        return "killed", f"the container broke the session protocol ({outcome.error}), so it was killed; {LOST}"
    if oom or (result is not None and result.status == "oom"):
        peak = (after or {}).get("memory_peak")
        peak_text = f" (peak {stats_contract.format_bytes(peak)})" if peak is not None else ""
        return "oom", (f"the cell ran out of memory{at_limit(limits, peak)}{peak_text}"
                       f"{files_share(after, limits)}; {LOST}")
    return "killed", f"{how_it_ended(result, last_words)}; {LOST}"


def exit_code(reply: dict) -> int | None:
    """A command's exit code from its reply ({"status": "ok", "exit_code": N});
    None when it did not run (a bad argv, a container that died)."""
    code = reply.get("exit_code")
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def result_counters(result) -> dict | None:
    if result is None:
        return None
    figures = result.stats.as_dict()
    figures.update(net_rx=None, net_tx=None)
    return figures


def at_limit(limits: Limits, peak: int | None = None, ceiling: int | None = -1) -> str:
    """Which limit the memory ran out at: the container's own, the user's
    ceiling (all their kernels and containers together), or the host's.
    ``ceiling`` -1: ask the runtime (the user's delegated ceiling, or None)."""
    if ceiling == -1:
        ceiling = user_memory_ceiling()
    if ceiling is not None and _ceiling_was_hit(limits.memory, peak, ceiling):
        return (f" at your {stats_contract.format_bytes(ceiling)} ceiling (the memory of all your "
                f"kernels and containers together, set by sandbox-kernel delegate)")
    if limits.memory is None:
        return " (no memory limit was set: the host's memory ran out)"
    return f" at the {stats_contract.format_bytes(limits.memory)} limit"


def _ceiling_was_hit(limit: int | None, peak: int | None, ceiling: int) -> bool:
    # the container's own limit binds only if it is the lower one and its peak came near it
    return limit is None or ceiling <= limit or (peak is not None and peak < 0.9 * limit)


def user_memory_ceiling() -> int | None:
    from ..runtime.cgroups import delegation
    try:
        ceiling = delegation.ceiling_of(os.getuid())
    except OSError:
        return None
    return ceiling.memory if ceiling is not None else None


FILES_SHARE_NAMED = 16 << 20
"""Files in the writable layer are named in an OOM message from this much on
(and from a tenth of the memory limit): less is not what filled memory."""

LAYER_WORDS = "the container's disk (its writable layer: /tmp, /workspace and image writes)"
_ENOSPC = re.compile(r"\[Errno 28\]|No space left on device")


def files_share(figures: dict | None, limits: Limits) -> str:
    """', of which 700 MiB were files in the writable layer (...)' for an OOM
    message, when the layer's files held a good part of the memory (tmpfs
    pages are charged to the container's memory), else ''.  The layer's own
    usage where the container could look at it, else the cgroup's shmem
    (which counts /dev/shm too)."""
    figures = figures or {}
    share = figures.get("disk_used")
    if share is None:
        share = figures.get("memory_shmem")
    if share is None or share < max(FILES_SHARE_NAMED, (limits.memory or 0) // 10):
        return ""
    return (f", of which {stats_contract.format_bytes(share)} were files in the writable layer "
            "(/tmp, /workspace), which are held in memory")


def disk_note(reply: dict, figures: dict | None, limits: Limits) -> str | None:
    """One sentence naming --disk when the cell ended with ENOSPC (errno 28)
    or left the writable layer full, else None.  Tells apart a layer of
    --disk's size and one capped at half the memory limit (its files are
    memory: runtime/rootfs.py layer_size), since what to raise differs."""
    figures = figures or {}
    used, size = figures.get("disk_used"), figures.get("disk_limit")
    full = stats_contract.disk_full(used, size)
    if not full and not _ENOSPC.search(str(reply.get("evalue") or "")):
        return None
    size = size if size is not None else limits.disk
    capped = limits.memory is not None and size < limits.disk
    fix = (f"%container limits --memory {size_arg(2 * limits.memory)} "
           f"--disk {size_arg(max(limits.disk, 2 * size))}") if capped \
        else f"%container limits --disk {size_arg(2 * size)}"
    # the memory limit the layer was sized by may have changed live since: not named
    where = (f"{stats_contract.format_bytes(size)} (--disk {stats_contract.format_bytes(limits.disk)} "
             f"is capped at half the memory limit, since its files are held in memory)") if capped \
        else f"the {stats_contract.format_bytes(size)} --disk limit"
    if full:
        return f"{LAYER_WORDS} is full at {where}; free space or raise it with {fix}"
    now = f", {stats_contract.format_bytes(used)} in use now" if used is not None else ""
    return (f"the cell got ENOSPC (no space left on device): {LAYER_WORDS} may hold up to "
            f"{where}{now}; free space or raise it with {fix}")


def size_arg(n: int) -> str:
    """A size as one types it: 2G, 768M."""
    if n % (1 << 30) == 0:
        return f"{n >> 30}G"
    return f"{-(-n // (1 << 20))}M"


def pids_note(limits: Limits, before, after, reply: dict) -> str | None:
    """Plain words when the cell hit the pids limit, else None.  The cgroup
    counts refused forks (pids.events "max"); where it cannot (no cgroup),
    a cell that ended in BlockingIOError [Errno 11] under a pids limit tells."""
    refused = stats_contract.delta((before or {}).get("pids_refused"),
                                   (after or {}).get("pids_refused"))
    if refused is None:
        failed = (reply.get("ename"), str(reply.get("evalue", "")))
        hit = limits.pids is not None and (
            failed[0] == "BlockingIOError" and failed[1].startswith("[Errno 11]")
            or failed == ("RuntimeError", "can't start new thread"))
    else:
        hit = refused > 0
    if not hit:
        return None
    what = f"the {limits.pids}-process limit (--pids {limits.pids})" if limits.pids is not None \
        else "the host's process limit"
    count = {None: "new processes or threads were", 1: "1 new process or thread was"}.get(
        refused, f"{refused} new processes or threads were")
    return (f"the cell hit {what}: {count} refused (in the cell: BlockingIOError [Errno 11], "
            "or RuntimeError: can't start new thread); "
            "the container and its variables are kept.  Wait for the processes a cell starts, "
            "end them, or raise the limit: %container limits --pids N")


def also(message: str | None, note: str | None) -> str | None:
    if note is None:
        return message
    return note if message is None else f"{message}; and {note}"


def how_it_ended(result, last_words: str) -> str:
    """Plain words for a container that ended without a reply."""
    if result is None:
        text = "the container stopped while the cell ran"
    elif result.signal == signal.SIGKILL or result.status == "killed":
        text = "the container was killed (SIGKILL) while the cell ran"
    elif result.signal:
        text = f"the container's Python died of {signal_name(result.signal)} while the cell ran"
    elif result.exit_code == 0:
        text = "the container's Python exited (code 0) before the cell finished"
    else:
        text = f"the container's Python crashed: it exited with code {result.exit_code}"
    if last_words:
        text += f" (its last words on stderr: {last_words!r})"
    return text


def signal_name(signum: int) -> str:
    try:
        return f"{signal.Signals(signum).name} ({signum})"
    except ValueError:
        return f"signal {signum}"


def asks_exit(reply: dict) -> bool:
    return any(isinstance(p, dict) and p.get("source") == "ask_exit" for p in reply.get("payload") or [])


_DEATH_NAMES = {"oom": "ContainerOutOfMemory", "timeout": "CellTimeout", "killed": "ContainerDied"}


def death_reply(status: str, message: str, execution_count: int) -> dict:
    """An execute_reply for a cell whose container died before replying."""
    ename = _DEATH_NAMES.get(status, "ContainerDied")
    return {"status": "error", "execution_count": execution_count, "ename": ename,
            "evalue": message, "traceback": [f"{ename}: {message}"],
            "user_expressions": {}, "payload": []}
