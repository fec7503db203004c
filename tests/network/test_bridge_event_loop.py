"""--net bridge from a thread whose asyncio loop runs, as ipykernel's main
thread (%%container cells) and control thread (a kernel's shutdown) are:
pyroute2's IPRoute cannot run its own loop there, so the runtime's netlink
work must happen in a thread of its own."""
from __future__ import annotations

import asyncio
import sys

from fakenet import leftovers

from sandbox_kernel.runtime.container import Container
from sandbox_kernel.runtime.spec import ContainerSpec


def test_a_bridge_starts_and_goes_inside_a_running_event_loop(net_env):
    async def in_the_loop():
        with Container(ContainerSpec(command=(sys.executable, "-c", "pass"), network="bridge")) as box:
            box.start()
            box.wait(60)
        return leftovers()
    assert asyncio.run(in_the_loop()) == []
