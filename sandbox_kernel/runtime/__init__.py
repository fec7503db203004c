"""The container runtime: namespaces, cgroups, overlayfs, seccomp.

Standard library and pyroute2 only; this package never imports IPython or
Jupyter, so it can be used on its own::

    from sandbox_kernel.runtime import Container, ContainerSpec, Limits

    spec = ContainerSpec(command=("/bin/sh", "-c", "echo hi"), limits=Limits(memory=64 << 20))
    with Container(spec) as box:
        box.start()
        result = box.wait()
    print(result.status, result.stats.memory_peak)
"""
