"""The sandbox kernel: every cell runs in the session's container.

    kernel.py    SandboxKernel, an ipykernel Kernel subclass (wrapper kernel)
    cells.py     which lines of a cell run on the host; CellMessages, the cell runner's Face
    config.py    the kernel's traits and SandboxPolicy (c.SandboxKernel.*, c.SandboxPolicy.*)
    requests.py  complete, inspect, is_complete, history: answered by the agent
    startup.py   doctor's answer when no container can start; the banner's settings
    usage.py     usage_request (jupyter-resource-usage's kernel panel)
    settings.py  limits, network, image: defaults, config, kernelspec, environment
    install.py   ``sandbox-kernel install``: the kernelspec
    __main__.py  ``python -m sandbox_kernel.kernel -f {connection_file}``

Importing this package imports nothing of ipykernel: ``sandbox-kernel
install`` stays light.
"""
