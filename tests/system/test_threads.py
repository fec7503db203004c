"""A kernel touches one container from several threads: the main thread runs
cells, the control thread shuts down and answers usage_request, the side
panel's ticker reads stats.  Each descriptor must be closed exactly once: a
second close of a number the process has reused meanwhile closes someone
else's file (in a kernel, ZeroMQ's: libzmq then aborts in its signaler)."""
from __future__ import annotations

import os
import subprocess
import threading

import pytest

from sandbox_kernel.runtime import syscalls, zygote
from sandbox_kernel.runtime.cgroups.base import CgroupError
from sandbox_kernel.runtime.container import Container, LifecycleError
from sandbox_kernel.runtime.spec import ContainerSpec

pytestmark = pytest.mark.usefixtures("no_leftovers")

ROUNDS = 8


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def _target(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def _sleeper() -> Container:
    box = Container(ContainerSpec(command=("/bin/sleep", "30")), stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    box.start()
    box.stats()                     # opens and keeps the cgroup's stats files
    return box


def _descriptors_after_a_first_container() -> set[int]:
    """What this process keeps open anyway: its fork server's socket (a
    threaded owner starts containers through it; it stays, by design) and
    whatever the first container's start caches."""
    zygote.shared()
    _sleeper().destroy()
    return _open_fds()


def _at_once(*actions) -> list[BaseException]:
    """Run the actions in threads released together; the errors they raised."""
    gate, errors = threading.Barrier(len(actions)), []

    def run(action):
        gate.wait(10)
        try:
            action()
        except BaseException as error:  # noqa: B036 -- reported by the test
            errors.append(error)

    threads = [threading.Thread(target=run, args=(a,)) for a in actions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def test_destroy_from_two_threads_closes_each_descriptor_once(monkeypatch):
    before = _descriptors_after_a_first_container()
    real_open, real_close, real_openat2 = os.open, os.close, syscalls.openat2
    for _ in range(ROUNDS):
        box = _sleeper()
        lock, held, closed_twice = threading.Lock(), _open_fds(), []

        def tracked(opener):
            def tracking_open(*args, **kwargs):
                fd = opener(*args, **kwargs)
                with lock:
                    held.add(fd)
                return fd
            return tracking_open

        def tracking_close(fd):
            with lock:
                if fd not in held:      # already closed, and not opened again since
                    closed_twice.append(fd)
                held.discard(fd)
            real_close(fd)

        # the state dir's removal opens beneath it with openat2, not os.open
        monkeypatch.setattr(os, "open", tracked(real_open))
        monkeypatch.setattr(syscalls, "openat2", tracked(real_openat2))
        monkeypatch.setattr(os, "close", tracking_close)
        try:
            errors = _at_once(box.destroy, box.destroy)
        finally:
            monkeypatch.setattr(os, "open", real_open)
            monkeypatch.setattr(syscalls, "openat2", real_openat2)
            monkeypatch.setattr(os, "close", real_close)
        assert errors == []
        assert closed_twice == [], f"closed twice: {closed_twice}"
    left = {fd: _target(fd) for fd in _open_fds() - before}
    assert left == {}, f"descriptors left open: {left}"


def test_stats_read_while_another_thread_destroys_never_touch_a_closed_file():
    before = _descriptors_after_a_first_container()
    for _ in range(ROUNDS):
        box = _sleeper()
        done = threading.Event()

        def read_stats():
            for _ in range(200):
                if done.is_set():
                    return
                try:
                    box.stats()
                except (CgroupError, LifecycleError):
                    return          # the group is gone: what a reader should see

        def destroy():
            try:
                box.destroy()
            finally:
                done.set()

        errors = _at_once(read_stats, destroy)
        assert errors == [], errors
    left = {fd: _target(fd) for fd in _open_fds() - before}
    assert left == {}, f"descriptors left open: {left}"
