"""``python -m sandbox_kernel.kernel -f {connection_file}``: the sandbox kernel,
as its kernelspec (``sandbox-kernel install``) launches it.

The session's zygote starts first (session/preload.py), so that it imports
the agent (IPython, in its own process) while this one imports ipykernel:
the kernel's first cell then finds it ready, instead of the container's
start following both imports one after the other.

The kernel's own modules (kernel.py: the session, the runtime) are imported
after ipykernel has bound the kernel's sockets (``SandboxKernelApp``): a
frontend that connects before the sockets exist retries every 100 ms, so each
millisecond of import before the bind could cost a frontend a whole retry;
after it, the frontend's requests wait in the sockets while the kernel is made.
"""
import os

from ..session.preload import start_zygote

# kernel.py's DOCTOR_ROOT_ENV: a stand-in host is checked first, and may have no containers
if __name__ == "__main__" and not os.environ.get("SANDBOX_KERNEL_DOCTOR_ROOT"):
    start_zygote()

from ipykernel.kernelapp import IPKernelApp  # noqa: E402 -- after the zygote's start


class SandboxKernelApp(IPKernelApp):
    """ipykernel's application, whose kernel is the sandbox kernel, imported
    once the sockets are bound (see the module's docstring)."""

    def init_kernel(self):
        from .kernel import SandboxKernel
        self.kernel_class = SandboxKernel
        super().init_kernel()


if __name__ == "__main__":
    SandboxKernelApp.launch_instance()
