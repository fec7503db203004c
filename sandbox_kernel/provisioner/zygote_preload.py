"""What the zygote of a server's provisioned kernels imports while idle.

A wrapped kernel that is ``python -m MODULE`` of the server's own
interpreter on the host image (a wrapped ipykernel, bash_kernel) runs in a
fork of the runtime's zygote without exec (runtime/spawn.py
in_process_module).  Those kernels are ipykernel's: with ipykernel imported
once in the zygote, each start forks it instead of importing it again.
The zygote imports these quietly in its idle time (a missing one is left to
the kernel), so the first start never waits for them.  Nothing else here:
the zygote imports this module itself.
"""
ZYGOTE_PRELOAD = ("ipykernel.kernelapp",)
