"""doctor's "container probe" row: the steps a container start takes, tried
for real in a throwaway child, so that what a sysctl cannot show is seen too.

The sysctl rows say whether the kernel allows unprivileged user namespaces;
a container runtime around this process (a Kubernetes pod, docker) may still
refuse them: its seccomp profile refuses unshare/mount, its AppArmor profile
refuses mount, its /proc has masked paths so that no fresh proc can be
mounted.  The child: unshare(user (when not root), mount, pid) -> make /
private -> mount a tmpfs -> fork into the new pid namespace and mount proc.
It reports the first step that fails with its errno through a pipe; nothing
outside the child changes (its mounts die with its namespace; the temp
directory is removed here).
"""
from __future__ import annotations

import errno
import os
import tempfile

from . import syscalls as sc

STEPS = ("unshare", "private", "tmpfs", "proc")
_FLAGS = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC

WHY = {
    "unshare": ("unshare(user, mount, pid namespaces) is refused ({err}): a seccomp profile "
                "(a container runtime's default one) or an LSM forbids it",
                "in a Kubernetes pod: securityContext.seccompProfile type Unconfined, or "
                "Localhost with a profile that allows unshare, clone, mount, umount2, "
                "pivot_root and setns (docs/deploy-kubernetes.md)"),
    "private": ("mount is refused inside a new user namespace ({err}): an AppArmor or "
                "SELinux profile forbids mounting",
                "in a Kubernetes pod: securityContext.appArmorProfile type Unconfined, or "
                "Localhost with a profile that allows mount and pivot_root"),
    "tmpfs": ("a tmpfs cannot be mounted inside a new user namespace ({err}): an LSM "
              "profile forbids it",
              "in a Kubernetes pod: securityContext.appArmorProfile type Unconfined, or "
              "Localhost with a profile that allows mount"),
    "proc": ("a fresh /proc cannot be mounted ({err}): this /proc has masked or read-only "
             "paths over it (a container runtime's default procMount)",
             "in a Kubernetes pod: securityContext.procMount: Unmasked (needs hostUsers: false)"),
}


def _child(report: int, scratch: str) -> None:
    """Each step in turn; the first failure goes to the pipe as 'step errno'."""
    step = "unshare"
    try:
        flags = sc.CLONE_NEWNS | sc.CLONE_NEWPID | (sc.CLONE_NEWUSER if os.geteuid() else 0)
        sc.unshare(flags)
        step = "private"
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
        step = "tmpfs"
        sc.mount("tmpfs", scratch, "tmpfs", _FLAGS, "size=64k")
        step = "proc"
        pid = os.fork()   # the first child in the new pid namespace: its pid 1
        if pid == 0:
            try:
                sc.mount("proc", scratch, "proc", _FLAGS)
                os._exit(0)
            except OSError as error:
                os._exit(min(error.errno or 1, 255))
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise OSError(os.waitstatus_to_exitcode(status), "mount proc")
    except OSError as error:
        os.write(report, f"{step} {error.errno or 0}".encode())


def probe() -> tuple[str, int] | None:
    """None if every step worked, else (the step that failed, its errno)."""
    scratch = tempfile.mkdtemp(prefix="sandbox-doctor-")
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            try:
                _child(write_end, scratch)
            finally:
                os._exit(0)
        os.close(write_end)
        write_end = -1
        answer = os.read(read_end, 128).decode()
        os.waitpid(pid, 0)
    finally:
        os.close(read_end)
        if write_end != -1:
            os.close(write_end)
        os.rmdir(scratch)
    if not answer:
        return None
    step, _, number = answer.partition(" ")
    return step, int(number)


def explain(failure: tuple[str, int]) -> tuple[str, str]:
    """(detail, fix) for doctor's row."""
    step, number = failure
    name = errno.errorcode.get(number, str(number))
    detail, fix = WHY.get(step, ("step {step} failed ({err})", ""))
    return detail.format(err=name, step=step), fix
