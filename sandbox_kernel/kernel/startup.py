"""What the sandbox kernel says when no container can start (doctor's
findings), and how it describes its settings in the banner.

May import: sandbox_kernel.runtime.doctor, kernel/cells.py (the colours).
Nothing of the magics or kernel.py.  Doctor is imported when a start failed,
not with the kernel (its checks are not on a working kernel's way).
"""
from __future__ import annotations

from .cells import BOLD, RED, RESET


def doctor_error(checks) -> tuple:
    from ..runtime import doctor
    missing = ", ".join(c.name for c in checks if c.required and not c.ok)
    evalue = f"containers cannot run on this host: fix {missing} (sandbox-kernel doctor)"
    lines = [f"{RED}{BOLD}ContainersUnavailable{RESET}: {evalue}", ""] + doctor.render(checks).splitlines()
    return "ContainersUnavailable", evalue, lines


def start_failure(error: BaseException) -> tuple:
    """The error a cell answers with when its container could not start:
    doctor's findings when the host lacks something, else the error and them."""
    from ..runtime import doctor
    checks = doctor.diagnose()
    if not doctor.can_run_containers(checks):
        return doctor_error(checks)
    ename = type(error).__name__
    lines = [f"{RED}{BOLD}{ename}{RESET}: {error}", "",
             "sandbox-kernel doctor finds nothing missing on this host:", ""]
    return ename, str(error), lines + doctor.render(checks).splitlines()


def describe(values: dict) -> str:
    return ", ".join([
        f"memory {values['memory'] or 'unlimited'}", f"cpus {values['cpus'] or 'unlimited'}",
        f"pids {values['pids'] or 'unlimited'}", f"timeout {values['timeout'] or 'none'}",
        "no network" if values["net"] == "none" else f"net {values['net']}",
        f"image {values['image']}"])
