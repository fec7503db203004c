"""The CPU count a notebook sees is its cpus limit (issue 25, cause 4),
through the sandbox kernel and jupyter_client as a frontend drives it.

The kernel's default is 1 cpu: a cell asking how many CPUs it may use says
1, where it said the host's count before, and the thread-pool variables
(OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, ...) say the same.  A live
``%container limits --cpus 2`` widens the running container at once.
"""
from __future__ import annotations

import os

import pytest

import kernel_fixtures as kf  # tests/jupyter is on pytest's pythonpath (pyproject)
from sandbox_kernel.kernel import install

NAME = "sbk-test-cpu-count"
COUNT = "import os\nprint(len(os.sched_getaffinity(0)), os.environ.get('OMP_NUM_THREADS'))"


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("jupyter-data"))
    # the classroom policy caps cpus at 1 unless the installer raises the cap
    spec = install.kernel_json({}, footer=False, policy=install.checked_policy({}, {"max_cpus": "2"}))
    install.write_kernelspec(os.path.join(data, "kernels", NAME), spec)
    with kf.jupyter_path(data):
        k = kf.SandboxKernel(NAME)
        try:
            yield k
        finally:
            k.shutdown()


def test_a_cell_under_the_default_one_cpu_sees_one_cpu(kernel):
    assert kf.ok(kernel.run(COUNT)).stdout == "1 1\n"


def test_a_live_cpus_change_widens_the_running_container(kernel):
    wider = min(2, len(os.sched_getaffinity(0)))
    kf.ok(kernel.run("import os\n_before = os.getpid()"))
    kf.ok(kernel.run("%container limits --cpus 2"))
    ran = kf.ok(kernel.run("print(len(os.sched_getaffinity(0)), os.getpid() == _before)"))
    assert ran.stdout == f"{wider} True\n"   # the same process, not a new container
    kf.ok(kernel.run("%container limits --cpus 1"))
    assert kf.ok(kernel.run("print(len(os.sched_getaffinity(0)))")).stdout == "1\n"
