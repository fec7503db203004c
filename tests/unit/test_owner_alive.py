"""A container's owner counts as alive only while it can still clean up."""
import os
import time

from sandbox_kernel.runtime.cleanup import owner_alive


def test_a_running_process_is_alive():
    assert owner_alive(os.getpid())


def test_a_zombie_owner_is_not_alive():
    # killed with its user's ceiling, unreaped by its parent: it never removes anything again
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while owner_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not owner_alive(pid)
        os.kill(pid, 0)   # still there: a zombie, not gone
    finally:
        os.waitpid(pid, 0)
    assert not owner_alive(pid)
