"""What a SandboxProvisioner's containers are: its settings (the
kernelspec's ``metadata.kernel_provisioner.config``, or
``c.SandboxProvisioner.memory = "2G"`` in a jupyter_server config file),
checked by the session layer's one parser (session/options.py) and
policy (session/policy.py), and the ContainerSpec of one launch.

    setting        example          default
    memory         "1G", "none"     1G    (the sandbox kernel's defaults: options.KERNEL)
    cpus           "1.5", "none"    1
    pids           "256", "none"    256
    disk           "1G"             1G    (the writable layer: /tmp, /workspace)
    net            "none", "host"   none
    image          "host", NAME     host  (the host's / read-only: its R, its venv)
    policy         "classroom"      classroom (the limits are also the caps; the
                   | "trusted"      notebook's directory is an overlay: writes stay inside)
    max_memory...  "4G"             the policy's caps (max_memory, max_cpus, max_pids, max_disk)
    notebook_dir   overlay|ro|rw|none   the policy's (classroom: overlay, trusted: rw)
    notebook_root  DIR | parent

There is no per-cell time limit (a provisioner sees no cells) and the
notebook cannot ask for anything: the installer's settings are the
kernel's.  A bad value is SettingsError, one line naming the setting.

Imports: runtime.spec, session.options and session.policy.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..runtime.spec import DEFAULT_DISK, DEFAULT_USER, ContainerSpec, Limits, Mount, SpecError
from ..session import options
from ..session import policy as policies

LIMIT_SETTINGS = ("memory", "cpus", "pids")          # "none" lifts them (options.KERNEL)
SETTINGS = (*LIMIT_SETTINGS, "disk", "net", "allow", "rate", "image")
POLICY_SETTINGS = ("policy", "max_memory", "max_cpus", "max_pids", "max_disk",
                   "notebook_dir", "notebook_root", "may_allow", "max_rate")
DEFAULTS = {**{name: options.defaults(options.KERNEL).get(name) for name in ("memory", "cpus", "pids",
                                                                           "net", "image")},
            "disk": None, "policy": policies.CLASSROOM}
KERNEL_DIR = "/run/jupyter-kernel"    # where the connection directory shows inside


class SettingsError(ValueError):
    """A provisioner setting that is not valid, or that its policy refuses; one line."""


@dataclass(frozen=True)
class Plan:
    """The checked settings of one kernel."""
    limits: Limits
    network: str
    image: str
    policy: policies.Policy
    allow: tuple[str, ...] = ()       # --net bridge only (runtime.spec.parse_allow)
    rate: int | None = None


def plan(config: Mapping) -> Plan:
    """The plan from the given settings (None or missing: the default)."""
    given = {name: config.get(name) for name in (*SETTINGS, *POLICY_SETTINGS)}
    unknown = sorted(set(config) - set(given))
    if unknown:
        raise SettingsError(f"unknown sandbox-provisioner setting {unknown[0]!r}: expected one of "
                            f"{', '.join((*SETTINGS, *POLICY_SETTINGS))}")
    text = {name: given[name] if given[name] is not None else DEFAULTS.get(name) for name in given}
    try:
        limits = _limits(text)
        network = options.parse("net", text["net"], options.KERNEL)
        allow = options.parse("allow", text["allow"], options.KERNEL) or ()
        rate = options.parse("rate", text["rate"], options.KERNEL)
        if network != "bridge" and (allow or rate):
            raise SpecError("allow" if allow else "rate", text["allow"] or text["rate"],
                            f"--net bridge with it (the network is {network})")
        image = options.parse("image", text["image"], options.KERNEL)
        policy = _policy(text, limits, network, allow, rate)
        policy.check_limits({"memory": limits.memory, "cpus": limits.cpus, "pids": limits.pids,
                             "disk": limits.disk})
        policy.check_network(network)
        policy.check_egress(network, allow, rate)
        policy.check_image(image)
    except (SpecError, policies.PolicyRefused) as error:
        raise SettingsError(f"sandbox-provisioner: {error}") from None
    except LookupError as error:     # images.ImageNotFound is a LookupError
        raise SettingsError(f"sandbox-provisioner: {error}") from None
    return Plan(limits, network, image, policy, allow, rate)


def _limits(text: Mapping) -> Limits:
    parsed = {name: options.parse(name, text[name], options.KERNEL) for name in LIMIT_SETTINGS}
    disk = options.parse("disk", text["disk"], options.RUN) if text["disk"] is not None else DEFAULT_DISK
    return Limits(**parsed, disk=disk)


def _policy(text: Mapping, limits: Limits, network: str, allow=(), rate=None) -> policies.Policy:
    caps = {"memory": limits.memory, "cpus": limits.cpus, "pids": limits.pids, "disk": limits.disk}
    policy = policies.preset(str(text["policy"]).strip(), caps, network, allow, rate)
    return policies.with_overrides(policy, {name: text[name] for name in POLICY_SETTINGS
                                            if name != "policy"})


def container_spec(plan: Plan, command, *, cwd: str | None, env: Mapping[str, str],
                   kernel_dir: str, labels: Mapping[str, str]) -> ContainerSpec:
    """One launch: the kernelspec's command in the plan's container, the
    connection directory ``kernel_dir`` (host) at KERNEL_DIR, the notebook's
    directory as the policy says (its working directory, or a fresh /workspace)."""
    notebook = plan.policy.notebook_mount(cwd)
    mounts = [Mount(kernel_dir, KERNEL_DIR, on_path=False)]
    if notebook.mount is not None:
        mounts.append(notebook.mount)
    return ContainerSpec(
        command=tuple(command), limits=plan.limits, network=plan.network, image=plan.image,
        **({"allow": plan.allow, "rate": plan.rate} if plan.network == "bridge" else {}),
        mounts=tuple(mounts), env=tuple(env.items()), workdir=notebook.workdir or "/workspace",
        user=workload_user(), labels=tuple((k, str(v)) for k, v in labels.items() if v))


def workload_user() -> tuple[int, int]:
    """Who the kernel is.  As root: the runtime's unprivileged default (65532),
    who gets the connection directory (connection.py).  Rootless: root of the
    container's user namespace, which is this user on the host, so that the
    kernel can use the connection directory this user made (0700)."""
    if os.geteuid() == 0:
        return DEFAULT_USER
    return (0, 0)
