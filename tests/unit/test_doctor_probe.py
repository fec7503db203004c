"""doctor's container probe: each step a container start takes, tried in a
child; a refused step is named with the fix for a pod (seccomp, AppArmor,
procMount).  The refusals are simulated by making the step's call fail in
the child (the parent forks it with the patched module)."""
from __future__ import annotations

import errno

import pytest

from sandbox_kernel.runtime import doctor, doctor_probe
from sandbox_kernel.runtime import syscalls as sc


def test_on_this_host_every_step_works():
    assert doctor_probe.probe() is None
    assert doctor.check_container_probe(0).ok


def _refuse(monkeypatch, fstype=None, call="mount", number=errno.EPERM):
    real = getattr(sc, call)

    def refused(*args, **kwargs):
        if call == "unshare" or (args[2] if len(args) > 2 else None) == fstype:
            raise OSError(number, f"{call} refused")
        return real(*args, **kwargs)
    monkeypatch.setattr(sc, call, refused)


@pytest.mark.parametrize("call, fstype, step, words", [
    ("unshare", None, "unshare", "seccompProfile"),
    ("mount", None, "private", "appArmorProfile"),
    ("mount", "tmpfs", "tmpfs", "appArmorProfile"),
    ("mount", "proc", "proc", "procMount: Unmasked"),
])
def test_a_refused_step_is_named_with_its_fix(monkeypatch, call, fstype, step, words):
    _refuse(monkeypatch, fstype, call)
    assert doctor_probe.probe() == (step, errno.EPERM)
    check = doctor.check_container_probe(1000)
    assert not check.ok and check.required
    assert "EPERM" in check.detail and words in check.fix
