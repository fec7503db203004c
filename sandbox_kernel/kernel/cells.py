"""One execute request of the sandbox kernel: which lines of the cell run on
the host (``split_cell``), and the output adapter that publishes what the
cell runner (session/runner.py) brings back (``CellMessages``): the
container's outputs relayed unchanged, host-side command output, errors and
the footer.

The footer (issue 17): by default the outputs are only the code's; the
cell's stats go in the execute_reply's metadata, ``{"sandbox_kernel":
{"stats": CONTRACT, "footer": "beside", "notebook_dir": ...}}``
(``ReplyMetadata``, stats.beside), where the labextension reads them, draws
the footer under the cell and keeps them in the cell's metadata.  With the
footer's place "output" the footer is a display_data after the outputs too,
as before, for frontends without the extension.

Help: ``%container?``, ``%container -h``, ``%container SUB?`` and
``%%container?`` / ``%%container -h`` run on the host and show the help
(the container's IPython has no ``%container``).

May import: sandbox_kernel.session (commands, runner).  Never the magics,
and nothing of kernel.py (the kernel is passed in).
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

from ..session import commands, options
from ..session import stats as stats_contract

RED, BOLD, RESET = "\x1b[31m", "\x1b[1m", "\x1b[0m"
HOST_PREFIX = "host> "
NOT_IN_THIS_KERNEL = {
    "on": "every cell already runs in the container in the sandbox kernel",
    "off": "the sandbox kernel has no host-side Python to run cells in",
    "push": "the sandbox kernel has no host-side variables to push: define them in a cell",
    "pull": "the sandbox kernel has no host-side namespace to pull into: the variables "
            "live in the container already",
}
_COMMAND_LINE = re.compile(r"^%container(\s|\?|$)")     # "%container?" is its help
_CELL_MAGIC = re.compile(r"^%%container(\s|$)")
_CELL_MAGIC_HELP = re.compile(r"^%%container(\?{1,2}|\s+(-h|--help|\?{1,2}))\s*$")


class ReplyMetadata:
    """Mixed into the kernel: the execute_reply's metadata gets what the
    cell's CellMessages left (contract 2), once; ipykernel calls
    finish_metadata after do_execute, before it sends the reply."""

    reply_metadata: dict = {}

    def finish_metadata(self, parent, metadata, reply_content):
        metadata = super().finish_metadata(parent, metadata, reply_content)
        extra, self.reply_metadata = self.reply_metadata, {}
        return {**metadata, **extra}


class CellMessages:
    """What one execute request publishes (the runner's Face for the kernel)."""

    def __init__(self, kernel, silent: bool):
        self.kernel = kernel
        self.silent = silent
        self.error_seen = False
        kernel.reply_metadata = {}        # nothing of the cell before reaches this reply

    def opened(self, session, notes: list[str]) -> None:
        """The kernel's one session is opened with its settings: no notes to show."""

    def output(self, kind: str, content: dict) -> None:
        """Session.execute's on_output: a Jupyter message content, as the agent sent it."""
        if kind == "error":
            self.error_seen = True
        if not self.silent:
            self.kernel.send_response(self.kernel.iopub_socket, kind, content)

    def concluded(self, run) -> None:
        """After the cell: the agent's count followed, then how it ended."""
        self.kernel.follow_count(run)
        self.conclude(run.result)

    def stats(self, stats: dict, footer: str) -> None:
        """The cell's stats, for the execute_reply's metadata (every cell
        that ran: the labextension draws them when ``footer`` is beside)."""
        self.kernel.reply_metadata = {stats_contract.REPLY_KEY: stats_contract.beside(stats, footer)}

    def footer(self, bundle: dict) -> None:
        """The footer as an output (its place is "output")."""
        self.display(bundle, {stats_contract.REPLY_KEY: {"footer": True}})

    def display(self, data: dict, metadata: dict) -> None:
        if not self.silent:
            self.kernel.send_response(self.kernel.iopub_socket, "display_data",
                                      {"data": data, "metadata": metadata, "transient": {}})

    def ok(self) -> dict:
        return {"status": "ok", "execution_count": self.kernel.agent_count,
                "user_expressions": {}, "payload": []}

    def fail(self, ename: str, evalue: str, traceback: list) -> dict:
        """Publish an error and return the error reply."""
        traceback = list(traceback) or [f"{RED}{ename}{RESET}: {evalue}"]
        content = {"ename": ename, "evalue": evalue, "traceback": traceback}
        self.output("error", content)
        return {"status": "error", "execution_count": self.kernel.agent_count, **content,
                "user_expressions": {}, "payload": []}

    def conclude(self, result) -> None:
        """After the outputs: the error of a cell whose container died (the
        agent sent none), or the session's plain words as a notice."""
        reply = result.reply
        if reply.get("status") == "error" and not self.error_seen:
            ename = reply.get("ename") or "ContainerError"
            evalue = reply.get("evalue") or result.message or ""
            traceback = [f"{RED}{BOLD}{ename}{RESET}: {evalue}"]
            reply["traceback"] = traceback
            self.output("error", {"ename": ename, "evalue": evalue, "traceback": traceback})
        elif result.message:
            self.output("stream", {"name": "stderr", "text": f"[sandbox] {result.message}\n"})


# ---------------------------------------------------------------------------
# Cells: which lines run on the host


class CellError(ValueError):
    """A cell this kernel will not run; the message says how to fix it."""


@dataclass
class CellPlan:
    commands: list = field(default_factory=list)   # "%container ..." lines, in order
    code: str = ""                                  # for the container ("" if none)


def split_cell(code: str) -> CellPlan:
    """Leading ``%container`` lines (among blank and comment lines) run on
    the host; the rest of the cell runs in the container, the command lines
    left there as comments so that line numbers and history stay true."""
    lines = code.splitlines(keepends=True)
    plan = CellPlan()
    body_from = len(lines)
    for number, line in enumerate(lines):
        stripped = line.strip()
        if _CELL_MAGIC_HELP.match(stripped):        # the magics' help is %container's here
            plan.commands.append("%container -h")
            lines[number] = f"# {stripped}   (ran on the host)\n"
            continue
        if _CELL_MAGIC.match(stripped):
            raise CellError("in the sandbox kernel every cell runs in the container already: "
                            "drop the %%container line (limits: %container limits --memory 2G)")
        if _COMMAND_LINE.match(stripped):
            plan.commands.append(stripped)
            lines[number] = f"# {stripped}   (ran on the host)\n"
        elif stripped and not stripped.startswith("#"):
            body_from = number
            break
    for number in range(body_from, len(lines)):
        if _COMMAND_LINE.match(lines[number]) or _CELL_MAGIC.match(lines[number]):
            raise CellError(f"line {number + 1}: %container runs on the host before the cell's "
                            f"code: put it at the top of the cell, or in a cell of its own")
    if body_from == len(lines):
        return plan
    plan.code = "".join(lines)
    return plan


def parsed_command(rest: str):
    """The parsed %container line; None for -h (commands.run shows the help)."""
    try:
        return commands.parse(rest)
    except commands.HelpRequested:
        return None


def host_bundle(line: str, output) -> tuple[dict, dict]:
    """A host-side command's output, marked as such: "host> " before the
    command in text, a labelled box in HTML."""
    text = f"{HOST_PREFIX}{line}\n{output.text}".rstrip("\n")
    body = output.html or f"<pre>{html.escape(output.text)}</pre>"
    markup = ('<div class="sandbox-kernel-host" style="border-left:3px solid #9e9e9e;'
              'padding-left:8px">'
              '<div style="font-family:monospace;font-size:11px;opacity:0.7">'
              f'on the host: {html.escape(line)}</div>{body}</div>')
    return {"text/plain": text, "text/html": markup}, {"sandbox_kernel": {"host_command": line}}
