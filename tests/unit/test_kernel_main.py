"""The sandbox kernel's entry point and the magics start the session's
zygote before their heavy imports, with the preload the session gives it;
the kernel's start imports only what its first reply needs."""
import inspect
import json
import os
import pathlib
import subprocess
import sys

import sandbox_kernel
from sandbox_kernel.session import client, preload

PACKAGE = pathlib.Path(sandbox_kernel.__file__).parent


def test_the_session_starts_the_zygote_with_the_agent_preloaded():
    assert client.ZYGOTE_PRELOAD == preload.ZYGOTE_PRELOAD == ("sandbox_kernel.session.agent",)
    assert client.AGENT_MODULE == preload.AGENT_MODULE


def test_the_kernels_entry_point_starts_the_zygote_before_importing_ipykernel():
    source = (PACKAGE / "kernel" / "__main__.py").read_text()
    assert source.index("start_zygote()") < source.index("import IPKernelApp")


def test_the_magics_start_the_zygote_before_importing_the_session():
    source = (PACKAGE / "magics" / "__init__.py").read_text()
    load = source[source.index("def load_ipython_extension"):]
    assert load.index("start_zygote()") < load.index("from ..session.commands import")


def modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SANDBOX_KERNEL_ZYGOTE": "0"})
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


# What a kernel whose first cells print text never needs: the markup cleaners
# (nh3, xml), the restricted unpickler (push/pull), the layer reader (image
# commands), doctor (a failed start) and ipykernel's debugger (debugpy).
NOT_ON_A_KERNELS_START = (
    "sandbox_kernel.session.sanitize_markup", "sandbox_kernel.session.sanitize_svg", "nh3",
    "xml.etree.ElementTree", "xml.sax.saxutils", "sandbox_kernel.session.unpickle",
    "sandbox_kernel.runtime.layers", "sandbox_kernel.runtime.doctor", "ipykernel.debugger", "debugpy")


def test_the_kernels_import_leaves_out_what_its_start_does_not_need():
    loaded = modules_after("from sandbox_kernel.kernel.kernel import SandboxKernel")
    assert "sandbox_kernel.session.client" in loaded       # the probe imported the kernel
    assert not loaded & set(NOT_ON_A_KERNELS_START), sorted(loaded & set(NOT_ON_A_KERNELS_START))


def test_kernel_info_does_not_import_the_debugger():
    """ipykernel's kernel_info imports debugpy to say whether it can debug;
    the sandbox kernel never offers a debugger and answers without it."""
    loaded = modules_after(
        "from sandbox_kernel.kernel.kernel import SandboxKernel\n"
        "class Bare(SandboxKernel):\n"
        "    banner = 'a banner'\n"
        "info = Bare.__new__(Bare).kernel_info\n"
        "assert info['supported_features'] == [], info\n"
        "assert info['implementation'] == 'sandbox-kernel' and info['banner'] == 'a banner', info\n"
        "assert info['language_info']['name'] == 'python' and info['protocol_version'], info")
    assert "ipykernel.debugger" not in loaded and "debugpy" not in loaded


def test_the_kernel_module_is_imported_after_ipykernel_binds_the_sockets():
    """A frontend connecting before the sockets exist retries every 100 ms:
    the entry point imports kernel.py in init_kernel, after init_sockets."""
    loaded = modules_after("import sandbox_kernel.kernel.__main__")
    assert "ipykernel.kernelapp" in loaded and "sandbox_kernel.kernel.kernel" not in loaded
    from ipykernel.kernelapp import IPKernelApp
    from sandbox_kernel.kernel.__main__ import SandboxKernelApp
    steps = inspect.getsource(IPKernelApp.initialize)
    assert steps.index("self.init_sockets()") < steps.index("self.init_kernel()")
    assert "from .kernel import SandboxKernel" in inspect.getsource(SandboxKernelApp.init_kernel)
