"""jupyter_kernel_test's standard tests against a plain ipykernel wrapped by
`sandbox-kernel install --wrap python3`: the protocol is the kernel's own,
untouched by the container (kernel_info, execute_result, display_data,
streams, errors, completion, inspect, is_complete, history, the pager,
clear_output), over ipc sockets in the provisioner's private directory."""
from __future__ import annotations

import os
import shutil
import tempfile

import jupyter_kernel_test
from provisioner.prov_helpers import leftovers

from sandbox_kernel.kernel import install
from sandbox_kernel.provisioner import registry

KERNEL_NAME = "python3-conformance-sandboxed"


class TestWrappedIPykernelConformance(jupyter_kernel_test.KernelTests):
    kernel_name = KERNEL_NAME
    language_name = "python"
    file_extension = ".py"

    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('test', file=sys.stderr)"
    code_generate_error = "raise"
    code_page_something = "zip?"
    code_clear_output = "from IPython.display import clear_output; clear_output()"
    code_inspect_sample = "zip"

    completion_samples = [{"text": "zi", "matches": {"zip"}}]
    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n"]
    incomplete_code_samples = ["print('''hello", "def f(x):\n  x*2"]
    invalid_code_samples = ["import = 7q"]

    code_execute_result = [
        {"code": "1+2+3", "result": "6"},
        {"code": "[n*n for n in range(1, 4)]", "result": "[1, 4, 9]"},
    ]
    code_display_data = [
        {"code": "from IPython.display import HTML, display; display(HTML('<b>test</b>'))",
         "mime": "text/html"},
        {"code": "from IPython.display import Math, display; display(Math('\\\\frac{1}{2}'))",
         "mime": "text/latex"},
    ]
    code_history_pattern = "1?2*"
    supported_history_operations = ("tail", "search")

    @classmethod
    def setUpClass(cls) -> None:
        if os.geteuid() != 0:
            raise __import__("unittest").SkipTest("the provisioner's tests run as root")
        cls._data_dir = tempfile.mkdtemp(prefix="sbk-prov-conformance-")
        install.install_wrapped("python3", {"memory": "512M"}, name=KERNEL_NAME, prefix=cls._data_dir)
        cls._before = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = os.path.join(cls._data_dir, "share", "jupyter")
        super().setUpClass()

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            super().tearDownClass()
        finally:
            if cls._before is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = cls._before
            shutil.rmtree(cls._data_dir, ignore_errors=True)
        assert leftovers() == []

    def test_the_kernel_runs_in_its_container(self) -> None:
        self.flush_channels()
        reply, outputs = self.execute_helper("import socket, os; print(socket.gethostname(), os.getuid())")
        assert reply["content"]["status"] == "ok"
        assert outputs[0]["content"]["text"].split() == ["sandbox", "65532"]
        assert any(kernel.spec is not None and "ipykernel_launcher" in kernel.spec.command
                   for kernel in registry.all())
