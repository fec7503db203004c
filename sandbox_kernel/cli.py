"""The ``sandbox-kernel`` command.

    sandbox-kernel run --memory 256M --pids 64 -- python3 -c 'print("hi")'
    sandbox-kernel run --timeout 5s --report -- /bin/sh -c 'while :; do :; done'
    sandbox-kernel doctor
    sandbox-kernel install --user --memory 2G --cpus 2
    sandbox-kernel images import busybox.tar --name busybox
    sandbox-kernel run --image busybox -- /bin/sh -c 'cat /etc/os-release'
    sandbox-kernel delegate alice --memory 4G --cpus 2 --pids 1024
    sandbox-kernel top --json

Bad input gets one line on stderr and exit status 2.  The options of ``run``
and ``install`` come from session/options.py.

Imports session.options; the runtime, kernel.install and images_cli inside
the functions that use them (``--help`` loads no container code).
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import signal
import sys

from .session import options


# The options of ``run`` (their help, defaults, parsers) are declared once in
# session/options.py, with those of %%container, %container limits and the
# kernel's settings.  The pids default protects the host: a container must not
# be able to use up its pids (kernel.pid_max is often 32768, below a root's
# RLIMIT_NPROC), the same default as the kernel's.
DEFAULT_RUN_PIDS = options.get("pids").defaults[options.RUN]


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is one line (and exit 2), not usage + error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _run_parser(sub) -> None:
    run = sub.add_parser(
        "run", help="run a command in a container, like docker run",
        description="Run CMD in a fresh container with limits; exit with its exit code "
                    "(128+N if killed by signal N).",
        epilog="example: sandbox-kernel run --memory 256M --cpus 0.5 -- python3 -c 'print(1)'")
    options.add_arguments(run, options.RUN)
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="sandbox-kernel", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True, parser_class=_OneLineParser)
    _run_parser(sub)
    doctor = sub.add_parser("doctor", help="what this host supports, and how to fix what it lacks")
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    from .kernel import install
    install.add_arguments(sub.add_parser(
        "install", help="install the kernelspec of the sandbox kernel, or --wrap another kernel",
        description="Install the Jupyter kernel 'Python 3 (sandbox)': every cell runs in a container; "
                    "or, with --wrap KERNELSPEC, another kernel (R, bash...) whole in a container "
                    "through the sandbox-provisioner (docs/provisioner.md).",
        epilog="examples: sandbox-kernel install --user --memory 2G --cpus 2 --timeout 5m; "
               "sandbox-kernel install --wrap ir --memory 1G"))
    from . import images_cli
    images_cli.add_arguments(sub)
    _grade_parser(sub)
    from . import admin_cli
    admin_cli.add_arguments(sub)
    return parser


def _grade_parser(sub) -> None:
    from .grade import cli as grade_cli
    grade_cli.add_arguments(sub.add_parser(
        "grade", help="run a class's notebooks, each in a fresh sandbox kernel, with a verdict per cell",
        description="Run each NOTEBOOK top to bottom in a fresh sandbox kernel of its own "
                    "(classroom policy, no network, an empty workspace); a verdict per cell.",
        epilog="example: sandbox-kernel grade subs/*.ipynb --memory 512M -j 2 --report grades.json"))


def _runtime_modules():
    """(images, container, spec) of the runtime, imported with the cyclic
    collector off: the imports make ~20,000 objects, none of them garbage,
    and its passes over them cost a run ~5 ms.  The collector is on again
    before any container exists (a forked launcher inherits its state)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        from .runtime import container, images, spec
    finally:
        if collecting:
            gc.enable()
    return images, container, spec


def cmd_run(args, parser) -> int:
    images, container, spec_module = _runtime_modules()
    SpecError = spec_module.SpecError   # noqa: N806 -- the class, as the rest of the code names it
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        limits = options.limits(vars(args), options.RUN)     # "none" lifts --pids here
        spec = spec_module.ContainerSpec.from_strings(
            command, net=args.net, mounts=args.mount, env=args.env, workdir=args.workdir,
            allow=options.parse("allow", args.allow, options.RUN),
            rate=options.parse("rate", args.rate, options.RUN),
            workspace=args.workspace, image=images.resolve(args.image))
        spec = dataclasses.replace(spec, limits=limits)
    except (SpecError, images.ImageNotFound) as error:
        parser.exit(2, f"sandbox-kernel run: {error}\n")
    with container.Container(spec) as box:
        try:
            box.start()
        except container.ContainerStartError as error:
            parser.exit(127 if error.errno == 2 else 125, f"sandbox-kernel run: {error}\n")
        except SpecError as error:   # what this host cannot keep (a rootless bridge's allowlist)
            parser.exit(2, f"sandbox-kernel run: {error}\n")
        except OSError as error:     # the host refused a part: a cgroup, the bridge network
            parser.exit(125, f"sandbox-kernel run: {error}\n")
        result = _wait_forwarding_signals(box)
    _write_reports(args, result)
    return result.exit_code if result.exit_code is not None else 128 + (result.signal or 9)


def _wait_forwarding_signals(box):
    # The container runs in a session of its own, so a terminal's ^C reaches
    # only us: pass it (and TERM, HUP, QUIT) on, as docker run does.
    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    previous = {signum: signal.signal(signum, lambda s, _f: box.signal(s)) for signum in forwarded}
    try:
        return box.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def isolate_report(result) -> str:
    """``--report``: how the command ended, one ``key: value`` line each,
    isolate-style; n/a for a figure this host cannot give."""
    stats = result.stats
    seconds = lambda value: None if value is None else f"{value:.3f}"  # noqa: E731
    lines = {
        "status": result.status if result.status != "exit" else f"exit {result.exit_code}",
        "exit-code": result.exit_code, "signal": result.signal,
        "time-wall": f"{result.wall:.3f}",
        "time-user": seconds(stats.cpu_user), "time-system": seconds(stats.cpu_system),
        "memory-peak": stats.memory_peak, "pids-peak": stats.pids_peak,
        "oom-kills": stats.oom_kills, "io-read": stats.io_read, "io-write": stats.io_write,
    }
    return "".join(f"{key}: {'n/a' if value is None else value}\n" for key, value in lines.items())


def _write_reports(args, result) -> None:
    if args.report:
        sys.stderr.write(isolate_report(result))
    if args.report_json:
        with open(args.report_json, "w") as handle:
            json.dump(result.as_dict(), handle, indent=1)


def cmd_install(args, parser) -> int:
    from .kernel import install
    try:
        where = install.run(args)
    except install.InstallError as error:
        parser.exit(2, f"sandbox-kernel install: {error}\n")
    print(f"installed kernelspec {args.name} in {where}")
    return 0


def _run_only_parser() -> argparse.ArgumentParser:
    """The parser of ``run`` alone: ``sandbox-kernel run`` loads none of the
    other commands' modules (install, grade, images: ~40 ms of imports)."""
    parser = _OneLineParser(prog="sandbox-kernel", description=__doc__.split("\n\n")[0])
    _run_parser(parser.add_subparsers(dest="action", required=True, parser_class=_OneLineParser))
    return parser


def _exit_at_once(code: int) -> None:
    """End the process now: tearing the interpreter down (its ~140 modules'
    objects freed one by one) cost a `run -- true` ~10 ms after the
    container was gone.  What an exit must still do is done here: the
    atexit handlers run (coverage's, say) and the standard streams are
    flushed.  A thread still alive (it would be joined), or a stream that
    cannot be flushed (a closed pipe: Python reports it), takes the
    normal exit."""
    import atexit
    import threading
    if threading.active_count() != 1 or not _flushed():
        return
    atexit._run_exitfuncs()   # and forgets them: a normal exit after this runs none twice
    if _flushed():            # what the handlers wrote
        os._exit(code)


def _flushed() -> bool:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):   # ValueError: a stream closed by the caller
        return False
    return True


def main(argv=None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    parser = _run_only_parser() if words[:1] == ["run"] else build_parser()
    args = parser.parse_args(argv)
    if args.action == "run":
        if not args.command or args.command == ["--"]:
            parser.exit(2, "sandbox-kernel run: missing command: give it after --, "
                           "e.g. sandbox-kernel run -- /bin/true\n")
        code = cmd_run(args, parser)
        if argv is None:   # this process's own command line: nothing runs after us
            _exit_at_once(code)
        return code
    if args.action == "install":
        return cmd_install(args, parser)
    if args.action == "grade":
        from .grade import cli as grade_cli
        return grade_cli.main(args, parser)
    if args.action in ("delegate", "top"):
        from . import admin_cli
        return admin_cli.main(args, parser)
    if args.action == "images":
        from . import images_cli
        return images_cli.main(args, parser)
    from .runtime import doctor
    return doctor.main(["--json"] if args.json else [])


if __name__ == "__main__":
    sys.exit(main())
