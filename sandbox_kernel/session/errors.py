"""The errors a session raises to its callers (the magics, the kernel, the
CLI), in one place so that every part of session/ can raise them.

Imports nothing of the project.
"""
from __future__ import annotations


class SessionError(RuntimeError):
    """A request the session could not carry out; the message says why."""


class SessionBusy(SessionError):
    """Another request of this session is running (one at a time)."""


class VariableError(SessionError):
    """push or pull failed for one variable; ``name`` is it."""

    def __init__(self, name: str | None, message: str):
        self.name = name
        super().__init__(message)
