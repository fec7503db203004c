"""``python -m sandbox_kernel.kernel -f {connection_file}``: the sandbox kernel,
as its kernelspec (``sandbox-kernel install``) launches it.

The session's zygote starts first (session/preload.py), so that it imports
the agent (IPython, in its own process) while this one imports ipykernel:
the kernel's first cell then finds it ready, instead of the container's
start following both imports one after the other."""
import os

from ..session.preload import start_zygote

# kernel.py's DOCTOR_ROOT_ENV: a stand-in host is checked first, and may have no containers
if __name__ == "__main__" and not os.environ.get("SANDBOX_KERNEL_DOCTOR_ROOT"):
    start_zygote()

from ipykernel.kernelapp import IPKernelApp  # noqa: E402 -- after the zygote's start

from .kernel import SandboxKernel  # noqa: E402

if __name__ == "__main__":
    IPKernelApp.launch_instance(kernel_class=SandboxKernel)
