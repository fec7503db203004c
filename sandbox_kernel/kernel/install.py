"""``sandbox-kernel install``: the kernelspec of the sandbox kernel.

    sandbox-kernel install                                  # python3-sandbox, next to this Python
    sandbox-kernel install --user --memory 2G --cpus 2      # in ~/.local/share/jupyter/kernels
    sandbox-kernel install --name grader --display-name "Grader (512M, 30s)" \\
                           --memory 512M --timeout 30s --pids 64

writes ``kernel.json``::

    {"argv": ["/path/to/python", "-m", "sandbox_kernel.kernel", "-f", "{connection_file}",
              "--SandboxKernel.memory=2G", "--SandboxKernel.cpus=2"],
     "display_name": "Python 3 (sandbox)", "language": "python",
     "interrupt_mode": "message", "metadata": {...}}

``--systemd-scope`` (rootless, on a systemd host with cgroup v2) starts the
kernel under ``systemd-run --user --scope -p Delegate=yes``: the kernel then
runs in a cgroup of its own that systemd delegates to the user, and its
containers get real cgroup limits instead of rlimits (``sandbox-kernel
doctor`` says whether a user systemd runs).  ``systemd-run --scope`` execs
the kernel in place: the kernel keeps the pid its manager started.

The policy (session/policy.py; settings.py has its traitlets)::

    sandbox-kernel install --policy classroom --memory 1G      # the default: 1G is also the cap
    sandbox-kernel install --memory 1G --max-memory 4G         # 1G at start, up to 4G on request
    sandbox-kernel install --import-dir /srv/images --pull-registry 127.0.0.1:5000 \\
                           --build-network host                # what the author may use
    sandbox-kernel install --policy trusted --trust-output     # one person, their own machine

goes into argv as ``--SandboxPolicy.name=trusted``, ``--SandboxPolicy.max_memory=4G``,
``--SandboxPolicy.import_dirs=/srv/images`` (once per directory),
``--SandboxKernel.trust_output=True``...

Only the options given go into argv: the others keep the kernel's built-in
defaults, which a config file can change (see settings.py for the order of
precedence).  Every value is checked before anything is written; a bad one
is one line on stderr and exit status 2.

Where: ``--sys-prefix`` (the default) installs next to the Python the kernel
runs with, where the ``jupyter`` of the same environment looks, and which
goes away with the environment; ``--user`` in the user's Jupyter data
directory; ``--prefix P`` in P/share/jupyter/kernels.

``--wrap KERNELSPEC`` sandboxes another kernel (issue 18: R, bash, a plain
ipykernel...): it writes a kernelspec with the wrapped one's argv,
language, env, interrupt_mode and logos, and ``metadata.kernel_provisioner``
naming the ``sandbox-provisioner`` (sandbox_kernel/provisioner/) with the
limits and policy given::

    sandbox-kernel install --wrap ir --memory 1G --cpus 1        # "ir-sandbox", "R (sandbox)"
    sandbox-kernel install --wrap bash --name bash-class --policy classroom --max-memory 2G

Its settings: --memory, --cpus, --pids, --net, --image, --policy, --max-memory,
--max-cpus, --max-pids, --max-disk, --notebook-dir, --notebook-root (the
provisioner's, checked as it checks them); the others are the sandbox
kernel's and are refused with --wrap.

interrupt_mode is "message": the frontend asks the kernel over the control
channel, and the kernel signals itself (see kernel.py, "Interrupts").  That
works through any kernel provisioner, local or remote, since the manager
needs no process to signal.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

from ..session import options
from . import settings as kernel_settings

DEFAULT_NAME = "python3-sandbox"
DEFAULT_DISPLAY_NAME = "Python 3 (sandbox)"
INTERRUPT_MODE = "message"
KERNEL_MODULE = "sandbox_kernel.kernel"
SYSTEMD_SCOPE = ["systemd-run", "--user", "--scope", "--quiet", "--collect",
                 "-p", "Delegate=yes", "--"]


class InstallError(ValueError):
    """A value or a place the kernelspec cannot have; the message is one line."""


def kernel_argv(settings: dict, *, footer: bool | str = True, executable: str | None = None,
                systemd_scope: bool = False, policy: dict | None = None,
                trust_output: bool = False) -> list[str]:
    """The kernel's command line, carrying the given settings and policy
    options (checked_policy's) as traitlets."""
    argv = [executable or sys.executable, "-m", KERNEL_MODULE, "-f", "{connection_file}"]
    if systemd_scope:
        argv = SYSTEMD_SCOPE + argv
    for name in kernel_settings.names():
        if name in settings:
            value = settings[name]
            argv.append(f"--SandboxKernel.{name}={'none' if value is None else value}")
    if "footer" not in settings and footer not in (True, "beside"):
        # False as the old --no-footer wrote it (the kernel reads it as off)
        argv.append(f"--SandboxKernel.footer={footer}")
    if trust_output:
        argv.append("--SandboxKernel.trust_output=True")
    for name, value in (policy or {}).items():
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            argv.append(f"--SandboxPolicy.{name}={'none' if item is None else item}")
    return argv


def kernel_json(settings: dict, *, display_name: str = DEFAULT_DISPLAY_NAME, footer: bool | str = True,
                executable: str | None = None, systemd_scope: bool = False,
                policy: dict | None = None, trust_output: bool = False) -> dict:
    effective = {**kernel_settings.defaults(), **settings}
    policy = policy or {}
    return {
        "argv": kernel_argv(settings, footer=footer, executable=executable,
                            systemd_scope=systemd_scope, policy=policy, trust_output=trust_output),
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": INTERRUPT_MODE,
        "metadata": {"debugger": False,
                     "sandbox_kernel": {"settings": effective, "footer": footer,
                                        "given": sorted(settings),
                                        "policy": {"name": kernel_settings.DEFAULT_POLICY,
                                                   **{k: list(v) if isinstance(v, tuple) else v
                                                      for k, v in policy.items()}},
                                        "trust_output": trust_output}},
    }


def write_kernelspec(directory: str, spec: dict) -> str:
    """kernel.json and ipykernel's logos (when present) in ``directory``."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "kernel.json"), "w") as handle:
        json.dump(spec, handle, indent=1)
        handle.write("\n")
    try:
        import ipykernel
        resources = os.path.join(os.path.dirname(ipykernel.__file__), "resources")
        for logo in os.listdir(resources):
            if logo.startswith("logo-"):
                shutil.copy(os.path.join(resources, logo), directory)
    except (ImportError, OSError):
        pass          # the logos are a nicety: a kernelspec works without them
    return directory


def checked_settings(given: dict) -> dict:
    """The given settings (None: not given) checked by the runtime's parsers;
    InstallError naming the first bad one."""
    from ..runtime import images
    from ..runtime.spec import SpecError
    try:
        return {name: kernel_settings.check(name, value) for name, value in given.items()
                if value is not None}
    except (SpecError, images.ImageNotFound) as error:
        raise InstallError(str(error)) from None


def checked_policy(checked: dict, given: dict) -> dict:
    """The given policy options (None: not given), as they go into argv:
    import directories as real paths, registries as host[:port]; InstallError
    for a bad one, or for a setting above its cap."""
    from ..session import policy as policies
    chosen = {k: v for k, v in given.items() if v is not None and v != []}
    for key, normal in (("import_dirs", policies.real_dir), ("pull_registries", policies.normal_registry)):
        try:
            if key in chosen:
                chosen[key] = [normal(item) for item in chosen[key]]
        except ValueError as error:
            raise InstallError(str(error)) from None
    written = {k: "none" if v is None else v for k, v in checked.items()}    # as in argv
    resolved = kernel_settings.resolve(written, environ={})
    _, errors = kernel_settings.resolve_policy(resolved, written, chosen)
    if errors:
        raise InstallError(errors[0])
    return chosen


def install(settings: dict, *, name: str = DEFAULT_NAME, display_name: str = DEFAULT_DISPLAY_NAME,
            user: bool = False, prefix: str | None = None, footer: bool | str = True,
            systemd_scope: bool = False, policy: dict | None = None,
            trust_output: bool = False) -> str:
    """Check, write and install the kernelspec; returns where it went."""
    checked = checked_settings(settings)
    policy = checked_policy(checked, policy or {})
    if not display_name.strip():
        raise InstallError("invalid display name '': expected some text, e.g. 'Python 3 (sandbox)'")
    if systemd_scope and shutil.which("systemd-run") is None:
        raise InstallError("--systemd-scope needs systemd-run, which is not on PATH "
                           "(a systemd host has it; sandbox-kernel doctor tells what this host has)")
    spec = kernel_json(checked, display_name=display_name, footer=footer, systemd_scope=systemd_scope,
                       policy=policy, trust_output=trust_output)
    with tempfile.TemporaryDirectory(prefix="sbk-kernelspec-") as tmp:
        source = write_kernelspec(os.path.join(tmp, name), spec)
        return _install_dir(source, name, user=user, prefix=prefix)


# -- the command line (cli.py's ``install`` subcommand) ------------------------------


def add_arguments(parser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true",
                       help="install for this user (~/.local/share/jupyter/kernels)")
    where.add_argument("--sys-prefix", action="store_true",
                       help="install next to this Python, in sys.prefix/share/jupyter (the default)")
    where.add_argument("--prefix", metavar="P", help="install in P/share/jupyter/kernels")
    parser.add_argument("--wrap", metavar="KERNELSPEC",
                        help="sandbox another installed kernel (ir, bash, python3...): its argv in a "
                             "container through the sandbox-provisioner (jupyter kernelspec list "
                             "shows the names)")
    parser.add_argument("--name", help=f"the kernelspec's name (default: {DEFAULT_NAME}; "
                                       f"with --wrap K: K{WRAP_SUFFIX})")
    parser.add_argument("--display-name",
                        help=f"the name shown in the launcher (default: {DEFAULT_DISPLAY_NAME}; "
                             f"with --wrap: the wrapped one's, with ' (sandbox)')")
    options.add_arguments(parser, options.KERNEL)     # --memory, --cpus...: the settings
    parser.add_argument("--no-footer", action="store_true",
                        help="no stats footer under each cell, as --footer off "
                             "(%%container footer beside shows it again)")
    _add_policy_arguments(parser)
    parser.add_argument("--systemd-scope", action="store_true",
                        help="start the kernel under systemd-run --user --scope -p Delegate=yes: "
                             "a cgroup delegated to the user, for real limits without root "
                             "(cgroup v2 and a user systemd; see sandbox-kernel doctor)")


# install option -> the SandboxPolicy trait it sets
POLICY_ARGUMENTS = {"policy": "name", "max_memory": "max_memory", "max_cpus": "max_cpus",
                    "max_pids": "max_pids", "max_timeout": "max_timeout", "max_disk": "max_disk",
                    "max_sessions": "max_sessions", "import_dir": "import_dirs",
                    "pull_registry": "pull_registries", "build_network": "build_network",
                    "notebook_dir": "notebook_dir", "notebook_root": "notebook_root",
                    "may_allow": "may_allow", "max_rate": "max_rate"}


def _add_policy_arguments(parser) -> None:
    """What the notebook's author may ask of the host (session/policy.py)."""
    policy = parser.add_argument_group("policy", "what a notebook may ask of the host")
    policy.add_argument("--policy", choices=("classroom", "trusted"),
                        help=options.literal(f"{kernel_settings.POLICY_HELP['name']} (default: classroom)"))
    for cap in kernel_settings.POLICY_CAPS:
        cap_help = f"{kernel_settings.POLICY_HELP['max_' + cap]} (none: no cap)"
        policy.add_argument(f"--max-{cap}", metavar="VALUE", help=options.literal(cap_help))
    policy.add_argument("--import-dir", action="append", metavar="DIR",
                        help=options.literal(kernel_settings.POLICY_HELP["import_dirs"]))
    policy.add_argument("--pull-registry", action="append", metavar="HOST:PORT",
                        help=options.literal(kernel_settings.POLICY_HELP["pull_registries"]))
    policy.add_argument("--build-network", choices=("none", "host"),
                        help=options.literal(kernel_settings.POLICY_HELP["build_network"]))
    policy.add_argument("--notebook-dir", choices=("overlay", "ro", "rw", "none"),
                        help=options.literal(kernel_settings.POLICY_HELP["notebook_dir"]))
    policy.add_argument("--notebook-root", metavar="DIR|parent",
                        help=options.literal(kernel_settings.POLICY_HELP["notebook_root"]))
    policy.add_argument("--may-allow", metavar="NAMES",
                        help=options.literal(kernel_settings.POLICY_HELP["may_allow"]))
    policy.add_argument("--max-rate", metavar="RATE",
                        help=options.literal(kernel_settings.POLICY_HELP["max_rate"]))
    policy.add_argument("--trust-output", action="store_true",
                        help="show the container's output as it is, scripts and HTML included "
                             "(default: sanitised): only for code you trust")


def run(args) -> str:
    """Install from parsed arguments; InstallError on a bad value.  Sets
    ``args.name`` to the name installed (the default when none was given)."""
    if args.wrap:
        return run_wrap(args)
    args.name = args.name or DEFAULT_NAME
    args.display_name = DEFAULT_DISPLAY_NAME if args.display_name is None else args.display_name
    given = {name: getattr(args, name) for name in kernel_settings.names()}
    if args.no_footer and given.get("footer") not in (None, "off"):
        raise InstallError(f"--no-footer and --footer {given['footer']}: give one of them")
    policy = {trait: getattr(args, option) for option, trait in POLICY_ARGUMENTS.items()}
    prefix = args.prefix if args.prefix else (None if args.user else sys.prefix)
    return install(given, name=args.name, display_name=args.display_name, user=args.user,
                   prefix=prefix, footer=not args.no_footer, systemd_scope=args.systemd_scope,
                   policy=policy, trust_output=args.trust_output)


# -- --wrap KERNELSPEC: any kernel through the sandbox-provisioner (issue 18) ---------------

PROVISIONER_NAME = "sandbox-provisioner"
WRAP_SUFFIX = "-sandboxed"      # not "-sandbox": python3-sandbox is the sandbox kernel's name
# install option -> the provisioner's setting (sandbox_kernel/provisioner/settings.py)
WRAP_SETTINGS = {"memory": "memory", "cpus": "cpus", "pids": "pids", "net": "net", "image": "image",
                 "policy": "policy", "max_memory": "max_memory", "max_cpus": "max_cpus",
                 "max_pids": "max_pids", "max_disk": "max_disk", "notebook_dir": "notebook_dir",
                 "notebook_root": "notebook_root", "allow": "allow", "rate": "rate",
                 "may_allow": "may_allow", "max_rate": "max_rate"}


def _not_wrapped() -> list[str]:
    """The install options only the sandbox kernel has (a wrapped kernel has no
    cells the host sees, no images to manage): every setting and policy option
    the provisioner does not take, as the schema has them now."""
    names = [*kernel_settings.names(), *POLICY_ARGUMENTS, "no_footer", "trust_output", "systemd_scope"]
    return [name for name in names if name not in WRAP_SETTINGS]


def run_wrap(args) -> str:
    """``install --wrap``: from parsed arguments; InstallError on a bad value
    (an option the provisioner does not take is refused, never ignored)."""
    refused = [name for name in _not_wrapped() if getattr(args, name, None) not in (None, [], False)]
    if args.name == DEFAULT_NAME:
        raise InstallError(f"--name {DEFAULT_NAME} is the sandbox kernel's: give a wrapped kernel "
                           f"another name (default: {args.wrap}{WRAP_SUFFIX})")
    if refused:
        flag = "--" + refused[0].replace("_", "-")
        raise InstallError(f"{flag} is the sandbox kernel's, not a wrapped kernel's: --wrap takes "
                           "--memory, --cpus, --pids, --net, --allow, --rate, --image, --policy, "
                           "--max-memory, --max-cpus, --max-pids, --max-disk, --may-allow, "
                           "--max-rate, --notebook-dir, --notebook-root")
    config = {setting: getattr(args, option) for option, setting in WRAP_SETTINGS.items()
              if getattr(args, option, None) is not None}
    args.name = args.name or args.wrap + WRAP_SUFFIX
    prefix = args.prefix if args.prefix else (None if args.user else sys.prefix)
    return install_wrapped(args.wrap, config, name=args.name, display_name=args.display_name,
                           user=args.user, prefix=prefix)


def wrapped_kernel_json(wrapped: dict, config: dict, display_name: str | None = None) -> dict:
    """The wrapped kernelspec's kernel.json with the provisioner named in its metadata."""
    spec = json.loads(json.dumps(wrapped))          # a deep copy of plain JSON
    spec["display_name"] = display_name or f"{wrapped.get('display_name') or 'kernel'} (sandbox)"
    metadata = spec.setdefault("metadata", {})
    metadata["kernel_provisioner"] = {"provisioner_name": PROVISIONER_NAME, "config": dict(config)}
    metadata.pop("debugger", None)                  # the debugger's files are the host's: off
    return spec


def install_wrapped(kernelspec: str, config: dict, *, name: str, display_name: str | None = None,
                    user: bool = False, prefix: str | None = None) -> str:
    """Check the settings, then write and install the wrapping kernelspec; where it went."""
    from jupyter_client.kernelspec import KernelSpecManager
    from ..provisioner import settings as provisioner_settings
    try:
        provisioner_settings.plan(config)
    except provisioner_settings.SettingsError as error:
        raise InstallError(str(error).removeprefix("sandbox-provisioner: ")) from None
    try:
        source_dir = KernelSpecManager().find_kernel_specs()[kernelspec]
    except KeyError:
        raise InstallError(f"no kernelspec named {kernelspec!r} to wrap: jupyter kernelspec list "
                           "shows those installed") from None
    with open(os.path.join(source_dir, "kernel.json"), encoding="utf-8") as handle:
        wrapped = json.load(handle)
    _check_wrappable(kernelspec, wrapped)
    if display_name is not None and not display_name.strip():
        raise InstallError("invalid display name '': expected some text, e.g. 'R (sandbox)'")
    spec = wrapped_kernel_json(wrapped, config, display_name)
    with tempfile.TemporaryDirectory(prefix="sbk-kernelspec-") as tmp:
        target = os.path.join(tmp, name)
        _copy_resources(source_dir, target)
        write_kernelspec(target, spec)
        return _install_dir(target, name, user=user, prefix=prefix)


def _check_wrappable(name: str, spec: dict) -> None:
    provisioner = (spec.get("metadata") or {}).get("kernel_provisioner")
    if provisioner:
        raise InstallError(f"kernelspec {name!r} has a kernel provisioner already "
                           f"({provisioner.get('provisioner_name')!r}): wrap the kernelspec it wraps")
    argv = spec.get("argv") or []
    if KERNEL_MODULE in argv:
        raise InstallError(f"kernelspec {name!r} is the sandbox kernel: its cells run in containers "
                           "already (sandbox-kernel install sets its limits)")
    if not argv or not all(isinstance(arg, str) for arg in argv):
        raise InstallError(f"kernelspec {name!r} has no argv to wrap (a kernel started some other way)")


def _copy_resources(source: str, target: str) -> None:
    """The wrapped kernelspec's logos and files (not its kernel.json), one level deep."""
    os.makedirs(target)
    for entry in os.scandir(source):
        if entry.is_file(follow_symlinks=False) and entry.name != "kernel.json":
            shutil.copy(entry.path, target)


def _install_dir(source: str, name: str, *, user: bool, prefix: str | None) -> str:
    from jupyter_client.kernelspec import KernelSpecManager
    try:
        return KernelSpecManager().install_kernel_spec(source, kernel_name=name, user=user, prefix=prefix)
    except ValueError as error:       # an invalid kernel name
        raise InstallError(f"invalid name {name!r}: {error}") from None
    except OSError as error:
        raise InstallError(f"cannot write the kernelspec: {error.strerror}: "
                           f"{error.filename} (try --user, or run as root)") from None
