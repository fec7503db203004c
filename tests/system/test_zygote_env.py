"""Nothing of the owner's environment, and nothing of another container's
request, is anywhere in a workload's memory.

The agent is forked from the zygote without exec: clearing os.environ there
leaves the environ block the zygote started with, and whatever freed memory
of the zygote still holds (an earlier request's config, parsed and freed).  So the tests search the workload's
whole address space, every readable mapping of /proc/self/mem, for a canary
that was in the owner's environment (as JUPYTERHUB_API_TOKEN is in a
kernel's) or in an earlier container's env.

Each owner runs in a fresh interpreter, with the canaries in its environment
from its start: the zygote is one per owner process, started on first use,
and the one of this pytest process may be older than any canary.  The needle
is never written in the workload: it looks for "canary-" and 32 hex digits,
and compares the SHA-256 of each such string with the one it was given.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys

import pytest

pytestmark = pytest.mark.usefixtures("no_leftovers")

# Runs in the workload: every match of the pattern whose hash is one of ours,
# by the mapping it was found in.  Read in chunks (with an overlap, so a match
# across two chunks is not missed) to keep the scan's own memory small.
SCAN = r'''
import ctypes, hashlib, json, re
def scan(hashes, pid="self"):
    if pid == "self":
        # A change of uid may have left us non-dumpable, which gives
        # /proc/self/mem to root; a process may make itself dumpable again.
        # (A cell could as well read with ctypes.string_at, as the issue did.)
        ctypes.CDLL(None, use_errno=True).prctl(4, 1, 0, 0, 0)     # PR_SET_DUMPABLE
    pattern = re.compile(rb"canary-[0-9a-f]{32}")
    found, chunk, regions = [], 1 << 22, 0
    with open(f"/proc/{pid}/maps") as maps:
        lines = [line.split() for line in maps]
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for fields in lines:
            if not fields[1].startswith("r"):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            name = fields[5] if len(fields) > 5 else "anonymous"
            regions += 1
            for at in range(start, end, chunk):
                try:
                    mem.seek(at)
                    data = mem.read(min(chunk + 64, end - at))
                except (OSError, OverflowError, ValueError):
                    break   # [vvar] and the like: not readable through mem
                for match in pattern.finditer(data):
                    digest = hashlib.sha256(match.group()).hexdigest()
                    if digest in hashes:
                        found.append([hashes[digest], name])
    return {"found": found, "regions": regions}
'''

# The owner: a fresh interpreter with the canary in its environment from the
# start.  A second thread makes containers come from the zygote, as in a
# kernel (a single-threaded owner forks the launcher itself, and the
# workload then execs).
OWNER = r'''
import json, os, subprocess, sys, tempfile, threading
from sandbox_kernel.runtime import zygote
from sandbox_kernel.runtime.container import Container
from sandbox_kernel.runtime.spec import ContainerSpec
from sandbox_kernel.session.client import Session

SCAN, hashes, earlier, how = json.loads(sys.argv[1])
exec(SCAN)     # scan(), for the zygote's memory, read from here
if how in ("session", "zygote"):
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()

def parent_of(pid):
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])

def in_session():
    # an earlier session of this owner whose container had a secret in its env
    # (values of more than 512 bytes, which Python allocates with malloc,
    # not from its small-object pools that the next request reuses first)
    secrets = [f"SBK_EARLIER_SECRET_{n}={'p' * 600}{earlier}" for n in range(32)]
    with Session("earlier", env=secrets) as first:
        first.execute("1")
    with Session("canary") as session:
        out = []
        result = session.execute(SCAN + f"\nprint(__import__('json').dumps(scan({hashes!r})))",
                                 on_output=lambda kind, content: out.append(content.get("text", "")))
        via = parent_of(session._container.pid) == zygote.shared().process.pid
    assert result.status == "ok", (result.reply, out)
    # every later fork of the zygote starts with a copy of its memory
    in_zygote = scan(hashes, zygote.shared().process.pid)["found"]
    return dict(json.loads("".join(out)), zygote=via, in_zygote=in_zygote)

def in_container(spawn):
    code = SCAN + f"\nprint(__import__('json').dumps(scan({hashes!r})))"
    with tempfile.TemporaryFile("w+") as out:
        with Container(ContainerSpec(command=("python3", "-c", code)), stdout=out,
                       stdin=subprocess.DEVNULL, spawn=spawn) as box:
            box.start()
            assert box.wait().exit_code == 0
        out.seek(0)
        return json.loads(out.read())

print(json.dumps(in_session() if how == "session" else in_container(how)))
'''


def canary() -> str:
    return "canary-" + secrets.token_hex(16)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def run_owner(how: str) -> tuple[dict, dict]:
    """Run an owner with fresh canaries in its environment; return what the
    workload found and the canaries by name."""
    canaries = {"owner environment": canary(), "earlier container's env": canary(),
                "hub token": canary()}
    hashes = {digest(value): name for name, value in canaries.items()}
    env = dict(os.environ, SBK_CANARY_SECRET=canaries["owner environment"],
               JUPYTERHUB_API_TOKEN=canaries["hub token"], JPY_PARENT_PID=str(os.getpid()),
               SANDBOX_KERNEL_ZYGOTE="1")
    done = subprocess.run(
        [sys.executable, "-c", OWNER,
         json.dumps([SCAN, hashes, canaries["earlier container's env"], how])],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), canaries


@pytest.fixture(scope="module")
def session_report() -> dict:
    report, _ = run_owner("session")
    assert report["zygote"], "the session's container did not come from the zygote"
    assert report["regions"] > 10, report      # the scan did read the address space
    return report


def _of_kind(found: list, *kinds: str) -> list:
    return [[kind, mapping] for kind, mapping in found if kind in kinds]


def test_the_agent_forked_by_the_zygote_has_no_byte_of_the_owners_environment(session_report):
    kinds = ("owner environment", "hub token")
    assert _of_kind(session_report["found"], *kinds) == [], (
        f"found in the agent's memory (kind, mapping): {session_report['found']}")
    # nor the zygote, whose memory every later container starts with
    assert _of_kind(session_report["in_zygote"], *kinds) == [], (
        f"found in the zygote's memory (kind, mapping): {session_report['in_zygote']}")


def test_the_agent_has_nothing_of_an_earlier_containers_request(session_report):
    kind = "earlier container's env"
    assert _of_kind(session_report["found"], kind) == [], session_report["found"]
    assert _of_kind(session_report["in_zygote"], kind) == [], session_report["in_zygote"]


@pytest.mark.parametrize("spawn", ["zygote", "fork", "exec"])
def test_a_plain_workload_has_no_byte_of_the_owners_environment(spawn):
    report, _ = run_owner(spawn)
    assert report["regions"] > 10, report
    assert report["found"] == [], report["found"]


def test_the_zygote_itself_starts_with_only_what_it_needs():
    from sandbox_kernel.runtime import zygote
    owner = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
             "PYTHONPATH": "/opt/lib", "JUPYTERHUB_API_TOKEN": "secret", "JPY_PARENT_PID": "1",
             "HOME": "/home/someone", "AWS_SECRET_ACCESS_KEY": "x", "SANDBOX_KERNEL_MEMORY": "1G"}
    kept = zygote.zygote_environment(owner)
    assert {k: v for k, v in kept.items() if k != "PYTHONUSERBASE"} == {
        "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "PYTHONPATH": "/opt/lib"}
