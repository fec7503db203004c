"""jupyter_kernel_test's standard tests against a plain ipykernel wrapped by
`sandbox-kernel install --wrap python3`: the protocol is the kernel's own,
untouched by the container (kernel_info, execute_result, display_data,
streams, errors, completion, inspect, is_complete, history, the pager,
clear_output), over ipc sockets in the provisioner's private directory."""
from __future__ import annotations

import contextlib
import os
import tempfile
import unittest

import jupyter_kernel_test
import kernel_fixtures
import test_conformance as sandbox_conformance  # tests/jupyter is on pytest's pythonpath (pyproject)
from provisioner.prov_helpers import leftovers

from sandbox_kernel.kernel import install
from sandbox_kernel.provisioner import registry

KERNEL_NAME = "python3-conformance-sandboxed"
SAMPLES = ("language_name", "file_extension", "code_hello_world", "code_stderr", "code_generate_error",
           "code_page_something", "code_clear_output", "code_inspect_sample", "completion_samples",
           "complete_code_samples", "incomplete_code_samples", "invalid_code_samples",
           "code_execute_result", "code_display_data", "code_history_pattern",
           "supported_history_operations")


class TestWrappedIPykernelConformance(jupyter_kernel_test.KernelTests):
    kernel_name = KERNEL_NAME
    # the samples are the sandbox kernel's (both are IPython inside), set below

    @classmethod
    def setUpClass(cls) -> None:
        if os.geteuid() != 0:
            raise unittest.SkipTest("the provisioner's tests run as root")
        cls._undo = contextlib.ExitStack()     # the data directory and JUPYTER_PATH, undone in order
        data = cls._undo.enter_context(tempfile.TemporaryDirectory(prefix="sbk-prov-conformance-"))
        install.install_wrapped("python3", {"memory": "512M"}, name=KERNEL_NAME, prefix=data)
        cls._undo.enter_context(kernel_fixtures.jupyter_path(os.path.join(data, "share", "jupyter")))
        super().setUpClass()

    @classmethod
    def tearDownClass(cls) -> None:
        with cls._undo:
            super().tearDownClass()
        assert leftovers() == []

    def test_the_kernel_runs_in_its_container(self) -> None:
        self.flush_channels()
        reply, outputs = self.execute_helper("import socket, os; print(socket.gethostname(), os.getuid())")
        assert reply["content"]["status"] == "ok"
        assert outputs[0]["content"]["text"].split() == ["sandbox", "65532"]
        assert any(kernel.spec is not None and "ipykernel_launcher" in kernel.spec.command
                   for kernel in registry.all())


for _name in SAMPLES:
    setattr(TestWrappedIPykernelConformance, _name,
            getattr(sandbox_conformance.TestSandboxKernelConformance, _name))
