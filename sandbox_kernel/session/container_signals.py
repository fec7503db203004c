"""Signals from a session to its container, for its exchanges (exchange.py's
Control) and Session.interrupt: SIGINT to the agent, SIGKILL to every
process, and whether the container's launcher shares this process's group
(then a kernel's killpg reached the agent already).

``current`` returns the session's container of the moment (None: none):
it changes at every restart.  Imports runtime.container (State,
LifecycleError) only.
"""
from __future__ import annotations

import os
import signal
from collections.abc import Callable

from ..runtime.container import LifecycleError, State


class ContainerSignals:
    def __init__(self, current: Callable[[], object]):
        self.current = current

    def sigint_agent(self) -> bool:
        """SIGINT to the agent; False when no container runs."""
        container = self.current()
        if container is None or container.state is not State.RUNNING:
            return False
        try:
            container.signal(signal.SIGINT)
        except (LifecycleError, ProcessLookupError):
            pass
        return True

    def kill(self) -> None:
        """Every process of the container, now (an exchange past its grace)."""
        container = self.current()
        if container is None:
            return
        try:
            container.kill()
        except (LifecycleError, OSError):     # gone already: the session finds out how it ended
            pass

    def launcher_in_our_group(self) -> bool:
        container = self.current()
        try:
            return container is not None and os.getpgid(container.pid) == os.getpgrp()
        except (OSError, TypeError):
            return False
