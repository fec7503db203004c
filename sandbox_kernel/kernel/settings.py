"""The sandbox kernel's settings: the container's limits, network and image,
where each comes from, and how a value is checked.

    setting  install option  traitlets config                 environment
    memory   --memory 2G     c.SandboxKernel.memory = "2G"    SANDBOX_KERNEL_MEMORY=2G
    cpus     --cpus 1.5      c.SandboxKernel.cpus = "1.5"     SANDBOX_KERNEL_CPUS=1.5
    pids     --pids 128      c.SandboxKernel.pids = "128"     SANDBOX_KERNEL_PIDS=128
    timeout  --timeout 1m    c.SandboxKernel.timeout = "1m"   SANDBOX_KERNEL_TIMEOUT=1m
    net      --net host      c.SandboxKernel.net = "host"     SANDBOX_KERNEL_NET=host
    image    --image NAME    c.SandboxKernel.image = "NAME"   SANDBOX_KERNEL_IMAGE=NAME
    footer   --footer output c.SandboxKernel.footer = "output" SANDBOX_KERNEL_FOOTER=output
             --no-footer     c.SandboxKernel.footer = False   SANDBOX_KERNEL_FOOTER=off

The footer: beside (the default: the stats go in the execute_reply's
metadata and the labextension draws them under the cell; the outputs are
only the code's), output (today's display_data after the outputs, for
frontends without the extension: nbconvert, VS Code...) or off.  True/on
is beside and False/off is off, as the old switch had them.

Precedence, lowest first (a later source wins):

    1. the built-in defaults (DEFAULTS): 1G memory, 1 cpu, 256 pids, no time
       limit, no network, the host image, the footer beside the cell;
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
pids and timeout.  The settings, their help, defaults and parsers are the
KERNEL face of session/options.py, where each option is declared once for
every face; a value is checked there (options.parse, the runtime's parsers);
a bad one names its source, so that the kernel can say which file or
variable to fix.

The policy (session/policy.py): what the notebook's author may ask of the
host.  The settings above are both the defaults and, in the classroom
preset, the caps; the policy's own options::

    install option             traitlets config
    --policy trusted           c.SandboxPolicy.name = "trusted"        (default: classroom)
    --max-memory 4G            c.SandboxPolicy.max_memory = "4G"       (also cpus, pids,
                                                                        timeout, disk, sessions)
    --import-dir /srv/images   c.SandboxPolicy.import_dirs = ["/srv/images"]
    --pull-registry HOST:PORT  c.SandboxPolicy.pull_registries = ["127.0.0.1:5000"]
    --build-network host       c.SandboxPolicy.build_network = "host"
    --notebook-dir rw          c.SandboxPolicy.notebook_dir = "rw"     (overlay, ro, rw, none)
    --notebook-root /srv/c     c.SandboxPolicy.notebook_root = "/srv/c" (or "parent")
                               c.SandboxPolicy.build_bases = ["debian:12"]
                               c.SandboxPolicy.images = ["host", "debian:12"]
    --trust-output             c.SandboxKernel.trust_output = True

with the same order for these (defaults < config files < kernelspec argv),
and no environment variable: the environment of a launch may come from
further away (a gateway passes a client's variables to kernels), and the
policy is the installer's alone.  For the same reason the caps are the
limits of the defaults, config files and kernelspec, not the environment's:
SANDBOX_KERNEL_MEMORY may set a launch's memory below its cap, and a value
above it stops the kernel.
Nothing the notebook sends reaches any of this: its ``%container`` lines
only ask the policy (there is no ``%config`` on the host: a cell's
``%config`` runs in the container's IPython).  A bad value stops the kernel's
every cell with one line, as a bad setting does: it fails closed.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..runtime import images
from ..session import options
from ..session import policy as policies
from ..runtime.spec import SpecError

# The settings are the options of the KERNEL face of session/options.py, which
# declares each once (its parser, help, default): read at call time below, and
# kept here as names for the kernel (kernel.py, config.py) and the installer.
SETTINGS = options.names(options.KERNEL)                 # memory cpus pids timeout net image footer
LIMITS = options.limit_names(options.KERNEL)             # those "none" lifts
DEFAULTS = options.defaults(options.KERNEL)
ENV_PREFIX = "SANDBOX_KERNEL_"
FOOTER_ENV = ENV_PREFIX + "FOOTER"
NO_LIMIT = options.NO_LIMIT
HELP = {name: options.help_for(name, options.KERNEL, with_default=False) for name in SETTINGS}


def names() -> tuple[str, ...]:
    """The settings, as options.py has them now."""
    return options.names(options.KERNEL)


def defaults() -> dict:
    return options.defaults(options.KERNEL)


def env_name(setting: str) -> str:
    return ENV_PREFIX + setting.upper()


def check(setting: str, value) -> str | None:
    """The value as the kernel keeps it (a string, or None: no limit);
    SpecError (or ImageNotFound, for an image) when it is not valid."""
    if setting not in names():
        raise KeyError(f"unknown setting {setting!r}: one of {', '.join(names())}")
    text = None if value is None else str(value).strip()
    parsed = options.parse(setting, text, options.KERNEL)
    if parsed is None and setting in options.limit_names(options.KERNEL):
        return None
    return parsed if setting in ("net", "footer") else text


def setting_traits() -> dict:
    """name -> the traitlets trait of each setting (``c.SandboxKernel.NAME``,
    ``--SandboxKernel.NAME``): a string or a number, None when not set."""
    from traitlets import Float, Int, Unicode, Union
    return {name: Union([Unicode(), Int(), Float()], default_value=None, allow_none=True,
                        help=options.help_for(name, options.KERNEL, with_default=False)
                        ).tag(config=True)
            for name in names()}


@dataclass
class Resolved:
    """The settings in force, where each came from, and what was wrong."""
    values: dict = field(default_factory=dict)     # setting -> str or None (no limit)
    sources: dict = field(default_factory=dict)    # setting -> "default", "config", ...
    errors: list = field(default_factory=list)     # one line each
    footer: bool | str = "beside"                  # "beside", "output", or False: off (as the old Bool)


def resolve(configured: Mapping, *, from_command_line=(), environ: Mapping = os.environ,
            footer: bool | str | None = None) -> Resolved:
    """Apply the precedence above.  ``configured`` holds the traitlets'
    values (None: not set), which already rank kernelspec argv over config
    files; ``from_command_line`` names those that came from argv.  The
    footer's place is ``Resolved.footer``, not one of ``values`` (the
    container's); ``footer`` is the kernel's own trait where it has one."""
    resolved = Resolved()
    builtin = defaults()
    given = configured.get("footer")
    resolved.footer = _footer(footer if given is None else given, environ, resolved.errors)
    for name in names():
        if name == "footer":
            continue
        value, source = builtin[name], "default"
        if configured.get(name) is not None:
            value = configured[name]
            source = "kernelspec" if name in from_command_line else "config"
        if environ.get(env_name(name)) is not None:
            value, source = environ[env_name(name)], env_name(name)
        try:
            resolved.values[name] = check(name, value)
        except (SpecError, images.ImageNotFound) as error:
            resolved.values[name] = builtin[name]
            resolved.errors.append(f"{error} (from {_source_words(name, source)})")
        resolved.sources[name] = source
    return resolved


def _footer(configured, environ: Mapping, errors: list) -> bool | str:
    """The footer's place: the environment's, else the configured (a Bool
    or a word), else beside; False when off (what the old Bool said)."""
    mode = "beside"
    for value, source in ((configured, "c.SandboxKernel.footer / --SandboxKernel.footer"),
                          (environ.get(FOOTER_ENV), f"the environment variable {FOOTER_ENV}")):
        if value is None:
            continue
        try:
            mode = options.parse_footer(value)
        except SpecError as error:
            errors.append(f"{error} (from {source})")
    return False if mode == "off" else mode


def _source_words(name: str, source: str) -> str:
    if source == "kernelspec":
        return f"--SandboxKernel.{name} in the kernelspec's argv (sandbox-kernel install --{name})"
    if source == "config":
        return f"c.SandboxKernel.{name} in a config file"
    if source == "default":
        return "the built-in default"
    return f"the environment variable {source}"


# ---------------------------------------------------------------------------
# The policy


# the caps: of each option with one (options.py), and of how many sessions
POLICY_CAPS = (*(option.name for option in options.OPTIONS if option.cap), "sessions")
POLICY_LISTS = ("import_dirs", "pull_registries", "build_bases", "images")
POLICY_OPTIONS = ("name", *(f"max_{c}" for c in POLICY_CAPS), *POLICY_LISTS, "build_network",
                  "notebook_dir", "notebook_root", "may_allow", "max_rate")
DEFAULT_POLICY = policies.CLASSROOM
POLICY_HELP = {
    "name": "the policy's preset: classroom (caps, no imports, pulls or host-network builds) or "
            "trusted (everything allowed: one person on their own machine)",
    "max_memory": "the cap of a session's memory (default: the kernel's --memory)",
    "max_cpus": "the cap of a session's cpus (default: the kernel's --cpus)",
    "max_pids": "the cap of a session's pids (default: the kernel's --pids)",
    "max_timeout": "the cap of a cell's time limit (default: the kernel's --timeout)",
    "max_disk": "the cap of a writable layer's size (default: 1G)",
    "max_sessions": "how many sessions (containers) a notebook may run (default: 1)",
    "import_dirs": "a directory %container image import may read below (repeatable; default: none)",
    "pull_registries": "a registry HOST[:PORT] %container image pull may contact (repeatable; "
                       "default: none)",
    "build_network": "the network of %container image build: none (the default) or host",
    "may_allow": "with --net bridge: the names a notebook may --allow, comma separated (and their "
                 "subdomains); '*': any, open egress too (default: the kernel's own --allow)",
    "max_rate": "with --net bridge: the cap of a session's --rate, e.g. 10mbit (default: the "
                "kernel's own --rate; none: no cap)",
    "build_bases": "the images a build may start from (default: stored images not on the host)",
    "images": "the images a session may run (default: all there are)",
    "notebook_dir": "the notebook's directory, the cells' working directory at the same path: "
                    "overlay (read-only, writes stay in the container; the classroom default), "
                    "ro, rw (writes reach the host; the trusted default) or none (a fresh /workspace)",
    "notebook_root": "a directory mounted whole (as --notebook-dir says) when the notebook's "
                     "directory is below it, so that ../images and ../data resolve; parent: the "
                     "notebook's directory's parent (default: the notebook's directory alone)",
}


def notebook_directory(environ: Mapping = os.environ, *, trust_environment: bool = True) -> str | None:
    """The notebook's directory, learned as ipykernel has it: the working
    directory the server started the kernel in (jupyter_server and nbclient
    start it in the notebook's directory).  Only where that is not a
    directory a container may have (the root, a system directory: a kernel
    started from elsewhere), the directory of JPY_SESSION_NAME when the
    server set it to the notebook's absolute path, and only where the
    launch's environment is trusted (``trust_environment``: not under the
    classroom policy, for the reason no environment variable sets the
    policy: a gateway may pass a client's variables, which would then name
    any host directory).  The cwd comes first: a kernel started from inside
    another notebook's kernel inherits that notebook's JPY_SESSION_NAME."""
    try:
        cwd = os.path.realpath(os.getcwd())
    except FileNotFoundError:
        cwd = None
    if cwd is not None and policies.unsafe_directory(cwd) is None:
        return cwd
    name = (environ.get("JPY_SESSION_NAME") or "") if trust_environment else ""
    if os.path.isabs(name) and os.path.isdir(os.path.dirname(name)):
        return os.path.realpath(os.path.dirname(name))
    return cwd


def resolve_policy(resolved: Resolved, settings: Mapping, configured: Mapping) -> tuple:
    """(Policy or None, errors): the preset for ``configured["name"]`` with the
    installer's limits (``settings``: SandboxKernel's traits, from config files
    and the kernelspec, else the defaults) as its caps, then the installer's
    explicit choices (``configured``: SandboxPolicy's traits); the limits in
    force (``resolved``, the environment included) must be within the caps."""
    name = configured.get("name") or DEFAULT_POLICY
    try:
        installed = {s: policies.parse_limit(s, _installed(settings, s)) for s in LIMITS}
        net = check("net", _installed(settings, "net"))
        egress = {name: check(name, _installed(settings, name)) for name in ("allow", "rate")}
    except SpecError as error:
        return None, [f"{error} (in the kernelspec or a config file, whose limits are the "
                      f"policy's caps)"]
    try:
        policy = policies.preset(name, installed, net, egress["allow"], egress["rate"])
        policy = policies.with_overrides(policy, {k: v for k, v in configured.items() if k != "name"})
    except (SpecError, images.ImageError) as error:
        return None, [f"{error} (from c.SandboxPolicy / --SandboxPolicy in the kernelspec: "
                      f"sandbox-kernel install --policy, --max-*, --import-dir, --pull-registry)"]
    errors = []
    _defaults_down_to_caps(resolved, policy)
    in_force = {s: policies.parse_limit(s, resolved.values.get(s)) for s in LIMITS}
    for check_it, value in ((policy.check_limits, in_force),
                            (policy.check_network, resolved.values["net"]),
                            (lambda v: policy.check_egress(*v), _egress_in_force(resolved)),
                            (policy.check_image, resolved.values["image"])):
        try:
            check_it(value)
        except policies.PolicyRefused as refused:
            errors.append(f"the kernel's own settings break its policy: {refused}")
    return (policy if not errors else None), errors


def _egress_in_force(resolved: Resolved) -> tuple:
    """(network, allow, rate) of the kernel's own session, parsed."""
    values = resolved.values
    return (options.parse("net", values["net"], options.KERNEL),
            options.parse("allow", values.get("allow"), options.KERNEL) or (),
            options.parse("rate", values.get("rate"), options.KERNEL))


def _defaults_down_to_caps(resolved: Resolved, policy) -> None:
    """A built-in default above a cap the installer gave (--max-timeout 1m,
    and no --timeout) becomes the cap: the installer asked for no more."""
    for name in LIMITS:
        cap = policy.cap(name)
        if cap is None or resolved.sources.get(name) != "default":
            continue
        value = policies.parse_limit(name, resolved.values.get(name))
        if value is None or value > cap:
            resolved.values[name] = f"{cap:g}" if isinstance(cap, float) else str(cap)


def _installed(settings: Mapping, name: str):
    value = settings.get(name)
    return DEFAULTS[name] if value is None else value
