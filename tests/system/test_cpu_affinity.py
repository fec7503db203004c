"""A cpus limit is also the CPU count a container sees (issue 25, cause 4).

Under --cpus 1 on a 2-CPU host, len(os.sched_getaffinity(0)) said 2, so
BLAS, OpenMP and joblib started two threads per pool, which the quota then
throttled.  Now the container is pinned to ceil(cpus) CPUs (never more than
the owner may use) and the thread-pool variables say the same, unless the
user set them; without a limit nothing changes.  Whichever driver runs here:
v1's cpuset hierarchy natively, v2 without cpuset in the guest
(../shared/tools/run-in-v2) and the null driver as a user
(tests/rootless/as-user): init binds itself there.
"""
from __future__ import annotations

import json
import math
import os

import pytest

from sandbox_kernel.runtime.spec import Limits
from sandbox_kernel.session.client import Session

pytestmark = pytest.mark.usefixtures("no_leftovers")

HOST_CPUS = len(os.sched_getaffinity(0))
# The documented list (README; cgroups/cpus.py THREAD_VARIABLES)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "PYTHON_CPU_COUNT")

# The workload's view: its CPU count and the thread variables it was given
SEEN = ("import json, os\n"
        "print(json.dumps({'cpus': sorted(os.sched_getaffinity(0)),\n"
        "                  'env': {k: os.environ.get(k) for k in %r}}))" % (THREAD_VARIABLES,))


def seen(pyrun, **spec_fields) -> dict:
    ran = pyrun(SEEN, **spec_fields)
    assert ran.result.status == "ok", ran.stderr
    return json.loads(ran.stdout)


@pytest.mark.parametrize("spawn", ["fork", "exec", "zygote"])
def test_one_cpu_limit_is_one_cpu_and_the_thread_variables_say_one(pyrun, spawn):
    inside = seen(pyrun, limits=Limits(cpus=1), spawn=spawn)
    assert len(inside["cpus"]) == 1
    assert inside["env"] == dict.fromkeys(THREAD_VARIABLES, "1")


@pytest.mark.parametrize("cpus", [0.5, 1.5, 2, 64])
def test_the_count_is_the_limit_rounded_up_within_the_host(pyrun, cpus):
    expected = min(math.ceil(cpus), HOST_CPUS)
    inside = seen(pyrun, limits=Limits(cpus=cpus))
    assert len(inside["cpus"]) == expected
    assert set(inside["cpus"]) <= os.sched_getaffinity(0)
    assert inside["env"]["OMP_NUM_THREADS"] == str(expected)


def test_a_thread_variable_the_user_set_is_kept(pyrun):
    inside = seen(pyrun, limits=Limits(cpus=1), env=(("OMP_NUM_THREADS", "3"), ("MKL_NUM_THREADS", "5")))
    assert (inside["env"]["OMP_NUM_THREADS"], inside["env"]["MKL_NUM_THREADS"]) == ("3", "5")
    assert inside["env"]["OPENBLAS_NUM_THREADS"] == "1"   # the ones not set still follow the limit
    assert len(inside["cpus"]) == 1


def test_without_a_limit_the_host_cpus_and_no_variables(pyrun):
    inside = seen(pyrun, limits=Limits())
    assert set(inside["cpus"]) == os.sched_getaffinity(0)
    assert inside["env"] == dict.fromkeys(THREAD_VARIABLES)


# -- a live change reaches the running agent ---------------------------------------

# A thread started before the change: its affinity must move too (a BLAS pool's do)
START_THREAD = ("import os, threading, time\n"
                "_started = threading.Event()\n"
                "def _pool_thread():\n"
                "    global _tid\n"
                "    _tid = threading.get_native_id(); _started.set(); time.sleep(3600)\n"
                "threading.Thread(target=_pool_thread, daemon=True).start(); _started.wait()\n")
COUNTS = "print(len(os.sched_getaffinity(0)), len(os.sched_getaffinity(_tid)))"


def cell(session: Session, code: str) -> str:
    out: list[str] = []
    result = session.execute(code, on_output=lambda kind, c: out.append(c.get("text", "")))
    assert result.status == "ok", (result.reply, out)
    return "".join(out).strip()


def test_a_live_cpus_change_moves_the_running_agent_and_its_threads():
    if HOST_CPUS < 2:
        pytest.skip("this host gives one CPU: a change from 1 to 2 CPUs cannot be seen")
    with Session("cpu-affinity", limits=Limits(cpus=1)) as session:
        cell(session, START_THREAD)
        assert cell(session, COUNTS) == "1 1"
        session.set_limits(cpus="2")
        assert cell(session, COUNTS) == "2 2"
        session.set_limits(cpus="0.5")
        assert cell(session, COUNTS) == "1 1"
        session.set_limits(cpus="1.5")
        assert cell(session, COUNTS) == "2 2"


def test_two_one_cpu_containers_are_spread_over_the_cpus():
    if HOST_CPUS < 2:
        pytest.skip("this host gives one CPU: there is nothing to spread over")
    from sandbox_kernel.runtime.cgroups import detect_driver
    if detect_driver().leftovers():
        # their CPUs count in the choice: two new containers may then rightly share one
        pytest.skip("other containers run on this machine: the spread is theirs to share")
    with Session("spread-a", limits=Limits(cpus=1)) as first, \
            Session("spread-b", limits=Limits(cpus=1)) as second:
        where = [cell(s, "import os; print(sorted(os.sched_getaffinity(0)))") for s in (first, second)]
    assert where[0] != where[1], where


# numpy's OpenBLAS sizes its pool once, when numpy is imported: what it chose
BLAS_THREADS = '''
import ctypes, os
import numpy
def blas_threads():
    paths = sorted({line.split()[-1] for line in open("/proc/self/maps") if "openblas" in line.lower()})
    for path in paths:
        library = ctypes.CDLL(path)
        for name in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                     "openblas_get_num_threads"):
            if hasattr(library, name):
                return getattr(library, name)()
    return "no OpenBLAS"
print(blas_threads())
'''


def test_numpys_openblas_starts_one_thread_under_one_cpu(pyrun):
    pytest.importorskip("numpy")
    ran = pyrun(BLAS_THREADS, limits=Limits(cpus=1))
    assert ran.result.status == "ok", ran.stderr
    if ran.stdout.strip() == "no OpenBLAS":
        pytest.skip("this numpy is not built on OpenBLAS")
    assert ran.stdout.strip() == "1"
