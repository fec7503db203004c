"""The sandbox kernel's configurable traits: its settings (limits, network,
image: ``c.SandboxKernel.*``, settings.setting_traits) and ``SandboxPolicy``
(``c.SandboxPolicy.*``).  Their meaning, precedence and help: settings.py.

May import: traitlets, kernel/settings.py.  Nothing of the session, the
magics or kernel.py.
"""
from __future__ import annotations

from traitlets import Float, Int, List, Unicode, Union
from traitlets.config import Configurable

from . import settings as kernel_settings


def _cap(name: str):
    return Union([Unicode(), Int(), Float()], default_value=None, allow_none=True,
                 help=kernel_settings.POLICY_HELP[name]).tag(config=True)


def _names(name: str):
    return List(Unicode(), default_value=None, allow_none=True,
                help=kernel_settings.POLICY_HELP[name]).tag(config=True)


class SandboxPolicy(Configurable):
    """What the notebook's author may ask of the host (session/policy.py):
    ``c.SandboxPolicy.*`` in a config file, ``--SandboxPolicy.*`` in the
    kernelspec's argv (sandbox-kernel install --policy, --max-memory...).
    Read once, as the kernel starts; nothing a notebook sends changes it."""

    name = Unicode(None, allow_none=True, help=kernel_settings.POLICY_HELP["name"]).tag(config=True)
    max_memory, max_cpus, max_pids, max_timeout, max_disk, max_sessions = map(_cap, (
        "max_memory", "max_cpus", "max_pids", "max_timeout", "max_disk", "max_sessions"))
    import_dirs, pull_registries, build_bases, images = map(_names, (
        "import_dirs", "pull_registries", "build_bases", "images"))
    build_network = Unicode(None, allow_none=True, help=kernel_settings.POLICY_HELP["build_network"]
                            ).tag(config=True)
    notebook_dir = Unicode(None, allow_none=True, help=kernel_settings.POLICY_HELP["notebook_dir"]
                           ).tag(config=True)
    notebook_root = Unicode(None, allow_none=True, help=kernel_settings.POLICY_HELP["notebook_root"]
                            ).tag(config=True)
    may_allow = Unicode(None, allow_none=True, help=kernel_settings.POLICY_HELP["may_allow"]
                        ).tag(config=True)
    max_rate = Unicode(None, allow_none=True, help=kernel_settings.POLICY_HELP["max_rate"]
                       ).tag(config=True)

    def options(self) -> dict:
        return {name: getattr(self, name) for name in kernel_settings.POLICY_OPTIONS}
