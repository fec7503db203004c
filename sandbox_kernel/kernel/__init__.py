"""The sandbox kernel: every cell runs in the session's container.

    kernel.py    SandboxKernel, an ipykernel Kernel subclass (wrapper kernel)
    settings.py  limits, network, image: defaults, config, kernelspec, environment
    install.py   ``sandbox-kernel install``: the kernelspec
    __main__.py  ``python -m sandbox_kernel.kernel -f {connection_file}``

Importing this package imports nothing of ipykernel: ``sandbox-kernel
install`` stays light.
"""
