"""Comms and widgets from inside the container, and counts across container
restarts, through jupyter_client as a frontend drives them: the sandbox
kernel, and %%container in an ordinary ipykernel.

Needs root (conftest.py skips the tier otherwise).  Every wait is bounded.
"""
from __future__ import annotations

import pytest

import kernel_fixtures as kf  # tests/jupyter is on pytest's pythonpath (pyproject)

NAME = "sbk-test-widgets"
SMALL = "sbk-test-widgets-128m"
ok = kf.ok


@pytest.fixture(scope="module", autouse=True)
def kernelspecs(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("jupyter-data"))
    kf.install_kernelspec(data, NAME, footer=False)
    kf.install_kernelspec(data, SMALL, {"memory": "128M"}, footer=False)
    with kf.jupyter_path(data):
        yield data


@pytest.fixture
def fresh(kernelspecs):
    with kf.kernels_of_one_test(NAME) as start:
        yield start


# ---------------------------------------------------------------------------
# counts


def test_the_count_goes_on_after_an_out_of_memory_death(fresh):
    k = fresh(SMALL)
    ok(k.run("kept = 1"))
    before = ok(k.run("kept")).reply["execution_count"]
    died = k.run("hog = bytearray(400 << 20)")
    assert died.reply["ename"] == "ContainerOutOfMemory"
    assert died.reply["execution_count"] == before + 1
    after = k.run("print('fresh')")
    assert after.stdout == "fresh\n"
    assert after.of("execute_input")[0]["execution_count"] == before + 2
    assert after.reply["execution_count"] == before + 2
