"""Fixtures of the provisioner's tests: real kernels (IRkernel from Debian,
bash_kernel and ipykernel from the venv) wrapped by `sandbox-kernel install
--wrap` into a temporary Jupyter data directory, started through
jupyter_client as a frontend starts them, and shut down even when a test
fails.  Every wait is bounded; each test checks that nothing of its kernels
is left (containers' cgroups, state and connection directories).
"""
from __future__ import annotations

import os
import shutil
import tempfile

import kernel_fixtures  # tests/jupyter is on pytest's pythonpath (pyproject)
import pytest
from provisioner.prov_helpers import MEMORY, START_TIMEOUT, WRAPPED, leftovers
from sandbox_kernel.kernel import install

if os.geteuid() != 0:
    pytest.skip("the provisioner's tests run as root", allow_module_level=True)


@pytest.fixture(scope="session")
def jupyter_path():
    """The wrapped kernelspecs, in a data directory of their own on JUPYTER_PATH."""
    data = tempfile.mkdtemp(prefix="sbk-prov-tests-")
    for wrapped in WRAPPED:
        install.install_wrapped(wrapped, {"memory": MEMORY}, name=WRAPPED[wrapped], prefix=data)
    kernels = os.path.join(data, "share", "jupyter")
    try:
        with kernel_fixtures.jupyter_path(kernels):
            yield kernels
    finally:
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def start(jupyter_path):
    """start(name) -> (km, kc) of a wrapped kernel; every kernel started is
    shut down afterwards, and nothing of this process's may be left."""
    from jupyter_client.manager import start_new_kernel
    started = []

    def _start(name: str, **kwargs):
        km, kc = start_new_kernel(kernel_name=name, startup_timeout=START_TIMEOUT, **kwargs)
        started.append((km, kc))
        return km, kc
    try:
        yield _start
    finally:
        for km, kc in started:
            kc.stop_channels()
            if km.has_kernel:
                km.shutdown_kernel(now=True)
    assert leftovers() == []

