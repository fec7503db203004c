"""A Jupyter data directory put first on JUPYTER_PATH for a block, then the
variable as it was: the course's and the kernels' tests (and the course's
--write, run as a script) share it."""
from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def jupyter_path(data_dir: str):
    """JUPYTER_PATH with DATA_DIR first, for this block."""
    before = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [data_dir, before]))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = before
