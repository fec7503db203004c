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

Only the options given go into argv: the others keep the kernel's built-in
defaults, which a config file can change (see settings.py for the order of
precedence).  Every value is checked before anything is written; a bad one
is one line on stderr and exit status 2.

Where: ``--sys-prefix`` (the default) installs next to the Python the kernel
runs with, where the ``jupyter`` of the same environment looks, and which
goes away with the environment; ``--user`` in the user's Jupyter data
directory; ``--prefix P`` in P/share/jupyter/kernels.

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

from . import settings as kernel_settings

DEFAULT_NAME = "python3-sandbox"
DEFAULT_DISPLAY_NAME = "Python 3 (sandbox)"
INTERRUPT_MODE = "message"
KERNEL_MODULE = "sandbox_kernel.kernel"
SYSTEMD_SCOPE = ["systemd-run", "--user", "--scope", "--quiet", "--collect",
                 "-p", "Delegate=yes", "--"]


class InstallError(ValueError):
    """A value or a place the kernelspec cannot have; the message is one line."""


def kernel_argv(settings: dict, *, footer: bool = True, executable: str | None = None,
                systemd_scope: bool = False) -> list[str]:
    """The kernel's command line, carrying the given settings as traitlets."""
    argv = [executable or sys.executable, "-m", KERNEL_MODULE, "-f", "{connection_file}"]
    if systemd_scope:
        argv = SYSTEMD_SCOPE + argv
    for name in kernel_settings.SETTINGS:
        if name in settings:
            value = settings[name]
            argv.append(f"--SandboxKernel.{name}={'none' if value is None else value}")
    if not footer:
        argv.append("--SandboxKernel.footer=False")
    return argv


def kernel_json(settings: dict, *, display_name: str = DEFAULT_DISPLAY_NAME, footer: bool = True,
                executable: str | None = None, systemd_scope: bool = False) -> dict:
    effective = {**kernel_settings.DEFAULTS, **settings}
    return {
        "argv": kernel_argv(settings, footer=footer, executable=executable,
                            systemd_scope=systemd_scope),
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": INTERRUPT_MODE,
        "metadata": {"debugger": False,
                     "sandbox_kernel": {"settings": effective, "footer": footer,
                                        "given": sorted(settings)}},
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


def install(settings: dict, *, name: str = DEFAULT_NAME, display_name: str = DEFAULT_DISPLAY_NAME,
            user: bool = False, prefix: str | None = None, footer: bool = True,
            systemd_scope: bool = False) -> str:
    """Check, write and install the kernelspec; returns where it went."""
    from jupyter_client.kernelspec import KernelSpecManager
    checked = checked_settings(settings)
    if not display_name.strip():
        raise InstallError("invalid display name '': expected some text, e.g. 'Python 3 (sandbox)'")
    if systemd_scope and shutil.which("systemd-run") is None:
        raise InstallError("--systemd-scope needs systemd-run, which is not on PATH "
                           "(a systemd host has it; sandbox-kernel doctor tells what this host has)")
    spec = kernel_json(checked, display_name=display_name, footer=footer, systemd_scope=systemd_scope)
    with tempfile.TemporaryDirectory(prefix="sbk-kernelspec-") as tmp:
        source = write_kernelspec(os.path.join(tmp, name), spec)
        try:
            return KernelSpecManager().install_kernel_spec(source, kernel_name=name, user=user,
                                                           prefix=prefix)
        except ValueError as error:       # an invalid kernel name
            raise InstallError(f"invalid name {name!r}: {error}") from None
        except OSError as error:
            raise InstallError(f"cannot write the kernelspec: {error.strerror}: "
                               f"{error.filename} (try --user, or run as root)") from None


# -- the command line (cli.py's ``install`` subcommand) ------------------------------


def add_arguments(parser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true",
                       help="install for this user (~/.local/share/jupyter/kernels)")
    where.add_argument("--sys-prefix", action="store_true",
                       help="install next to this Python, in sys.prefix/share/jupyter (the default)")
    where.add_argument("--prefix", metavar="P", help="install in P/share/jupyter/kernels")
    parser.add_argument("--name", default=DEFAULT_NAME, help="the kernelspec's name (default: %(default)s)")
    parser.add_argument("--display-name", default=DEFAULT_DISPLAY_NAME,
                        help="the name shown in the launcher (default: %(default)s)")
    for setting in kernel_settings.SETTINGS:
        default = kernel_settings.DEFAULTS[setting]
        parser.add_argument(f"--{setting}", help=f"{kernel_settings.HELP[setting]} "
                                                 f"(default: {default or 'none'})")
    parser.add_argument("--no-footer", action="store_true",
                        help="no stats footer under each cell (%%container stats on shows it again)")
    parser.add_argument("--systemd-scope", action="store_true",
                        help="start the kernel under systemd-run --user --scope -p Delegate=yes: "
                             "a cgroup delegated to the user, for real limits without root "
                             "(cgroup v2 and a user systemd; see sandbox-kernel doctor)")


def run(args) -> str:
    """Install from parsed arguments; InstallError on a bad value."""
    given = {name: getattr(args, name) for name in kernel_settings.SETTINGS}
    prefix = args.prefix if args.prefix else (None if args.user else sys.prefix)
    return install(given, name=args.name, display_name=args.display_name, user=args.user,
                   prefix=prefix, footer=not args.no_footer, systemd_scope=args.systemd_scope)
