"""The sandbox kernel's settings: the container's limits, network and image,
where each comes from, and how a value is checked.

    setting  install option  traitlets config                 environment
    memory   --memory 2G     c.SandboxKernel.memory = "2G"    SANDBOX_KERNEL_MEMORY=2G
    cpus     --cpus 1.5      c.SandboxKernel.cpus = "1.5"     SANDBOX_KERNEL_CPUS=1.5
    pids     --pids 128      c.SandboxKernel.pids = "128"     SANDBOX_KERNEL_PIDS=128
    timeout  --timeout 1m    c.SandboxKernel.timeout = "1m"   SANDBOX_KERNEL_TIMEOUT=1m
    net      --net host      c.SandboxKernel.net = "host"     SANDBOX_KERNEL_NET=host
    image    --image NAME    c.SandboxKernel.image = "NAME"   SANDBOX_KERNEL_IMAGE=NAME
    footer   --no-footer     c.SandboxKernel.footer = False   SANDBOX_KERNEL_FOOTER=off

Precedence, lowest first (a later source wins):

    1. the built-in defaults (DEFAULTS): 1G memory, 1 cpu, 256 pids, no time
       limit, no network, the host image, the footer on;
    2. traitlets config files: ``c.SandboxKernel.memory = "2G"`` in
       ipython_kernel_config.py (IPYTHONDIR/profile_default/,
       sys.prefix/etc/ipython/ or /etc/ipython/): every sandbox kernel of
       that user, environment or site;
    3. the kernelspec: ``sandbox-kernel install --memory 2G`` writes
       ``--SandboxKernel.memory=2G`` into kernel.json's argv, and traitlets
       lets the command line beat config files: one installed kernel;
    4. the environment, SANDBOX_KERNEL_MEMORY=2G and friends: one launch
       (a spawner, a CI job, a test).

From the general to the particular: two kernelspecs installed side by side
("sandbox, 1G" and "sandbox, 8G") each keep their own limits whatever a
site-wide config file says, and an environment variable overrides both.
``%container limits`` then changes a running kernel's limits.

"none" (or "unlimited", or an empty string) lifts a limit: memory, cpus,
pids and timeout.  Values are checked by the runtime's parsers
(runtime/spec.py); a bad one names its source, so that the kernel can say
which file or variable to fix.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..runtime import images
from ..runtime.spec import SpecError, parse_cpus, parse_duration, parse_network, parse_pids, \
    parse_size

SETTINGS = ("memory", "cpus", "pids", "timeout", "net", "image")
LIMITS = ("memory", "cpus", "pids", "timeout")
DEFAULTS = {"memory": "1G", "cpus": "1", "pids": "256", "timeout": None, "net": "none",
            "image": images.HOST}
ENV_PREFIX = "SANDBOX_KERNEL_"
FOOTER_ENV = ENV_PREFIX + "FOOTER"
NO_LIMIT = ("", "none", "unlimited")
HELP = {
    "memory": "memory limit of the container, swap included, e.g. 512M, 2G (none: no limit)",
    "cpus": "CPU time of the container, in cores, e.g. 0.5, 2 (none: no limit)",
    "pids": "most processes and threads in the container, e.g. 256 (none: no limit)",
    "timeout": "time limit of each cell, e.g. 30s, 5m: interrupted, then killed (none: no limit)",
    "net": "network: none (loopback only) or host",
    "image": "the container's image (sandbox-kernel images lists them)",
}


def env_name(setting: str) -> str:
    return ENV_PREFIX + setting.upper()


def check(setting: str, value) -> str | None:
    """The value as the kernel keeps it (a string, or None: no limit);
    SpecError (or ImageNotFound, for an image) when it is not valid."""
    if setting in LIMITS and (value is None or str(value).strip().lower() in NO_LIMIT):
        return None
    text = str(value).strip()
    if setting == "memory":
        parse_size(text, "memory")
    elif setting == "cpus":
        parse_cpus(text)
    elif setting == "pids":
        parse_pids(text)
    elif setting == "timeout":
        parse_duration(text, "timeout")
    elif setting == "net":
        text = parse_network(text)
    elif setting == "image":
        images.resolve(text)
    else:
        raise KeyError(f"unknown setting {setting!r}: one of {', '.join(SETTINGS)}")
    return text


def check_all(values: Mapping) -> dict:
    """Every given setting checked; the first bad one raises."""
    return {name: check(name, value) for name, value in values.items() if value is not None}


@dataclass
class Resolved:
    """The settings in force, where each came from, and what was wrong."""
    values: dict = field(default_factory=dict)     # setting -> str or None (no limit)
    sources: dict = field(default_factory=dict)    # setting -> "default", "config", ...
    errors: list = field(default_factory=list)     # one line each
    footer: bool = True


def resolve(configured: Mapping, *, from_command_line=(), environ: Mapping = os.environ,
            footer: bool = True) -> Resolved:
    """Apply the precedence above.  ``configured`` holds the traitlets'
    values (None: not set), which already rank kernelspec argv over config
    files; ``from_command_line`` names those that came from argv."""
    resolved = Resolved(footer=footer)
    for name in SETTINGS:
        value, source = DEFAULTS[name], "default"
        if configured.get(name) is not None:
            value = configured[name]
            source = "kernelspec" if name in from_command_line else "config"
        if environ.get(env_name(name)) is not None:
            value, source = environ[env_name(name)], env_name(name)
        try:
            resolved.values[name] = check(name, value)
        except (SpecError, images.ImageNotFound) as error:
            resolved.values[name] = DEFAULTS[name]
            resolved.errors.append(f"{error} (from {_source_words(name, source)})")
        resolved.sources[name] = source
    switch = environ.get(FOOTER_ENV)
    if switch is not None:
        if switch.strip().lower() in ("on", "1", "true", "yes"):
            resolved.footer = True
        elif switch.strip().lower() in ("off", "0", "false", "no"):
            resolved.footer = False
        else:
            resolved.errors.append(f"invalid {FOOTER_ENV} {switch!r}: expected on or off")
    return resolved


def _source_words(name: str, source: str) -> str:
    if source == "kernelspec":
        return f"--SandboxKernel.{name} in the kernelspec's argv (sandbox-kernel install --{name})"
    if source == "config":
        return f"c.SandboxKernel.{name} in a config file"
    if source == "default":
        return "the built-in default"
    return f"the environment variable {source}"
