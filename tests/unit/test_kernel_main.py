"""The sandbox kernel's entry point and the magics start the session's
zygote before their heavy imports, with the preload the session gives it."""
import pathlib

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
