"""Pure-Python wheels written by hand (no build tools, no network): for tests that
pip-install something, from a directory or from the fake internet's index."""
from __future__ import annotations

import base64
import hashlib
import os
import zipfile


def write_wheel(directory, package: str, version: str, modules: dict[str, bytes]) -> str:
    """``<package>-<version>-py3-none-any.whl`` in directory, holding ``modules``
    ({"name.py": source}) in the package; returns its path."""
    info = f"{package}-{version}.dist-info"
    files = {f"{package}/{name}": data for name, data in modules.items()}
    files[f"{info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {package.replace('_', '-')}\n"
                                 f"Version: {version}\n").encode()
    files[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: sbk-test\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n")
    record = [f"{name},sha256={_digest(data)},{len(data)}" for name, data in files.items()]
    files[f"{info}/RECORD"] = ("\n".join(record + [f"{info}/RECORD,,"]) + "\n").encode()
    path = os.path.join(str(directory), f"{package}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
