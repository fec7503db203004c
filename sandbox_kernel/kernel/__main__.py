"""``python -m sandbox_kernel.kernel -f {connection_file}``: the sandbox kernel,
as its kernelspec (``sandbox-kernel install``) launches it."""
from ipykernel.kernelapp import IPKernelApp

from .kernel import SandboxKernel

if __name__ == "__main__":
    IPKernelApp.launch_instance(kernel_class=SandboxKernel)
