"""Images a container can be started from.

For now the one image is ``host``: the host's /usr and /etc and the running
interpreter, read-only under a writable layer (see rootfs.py).  The image
store (import, build, layers) is built on this name lookup.
"""
from __future__ import annotations

HOST = "host"


class ImageNotFound(LookupError):
    def __init__(self, name: str, available: list[str]):
        self.name, self.available = name, available
        super().__init__(f"no image named {name!r}; images here: {', '.join(available)}")


def available() -> list[str]:
    return [HOST]


def resolve(name: str) -> str:
    """The image's name if it exists, else ImageNotFound listing what does."""
    if name not in available():
        raise ImageNotFound(name, available())
    return name
