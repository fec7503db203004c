"""sandbox-kernel: notebook cells in resource-limited Linux containers."""
from .version import __version__  # noqa: F401


def load_ipython_extension(ip):
    """``%load_ext sandbox_kernel``: the %%container and %container magics."""
    from .magics import load_ipython_extension as load
    load(ip)


def unload_ipython_extension(ip):
    from .magics import unload_ipython_extension as unload
    unload(ip)
