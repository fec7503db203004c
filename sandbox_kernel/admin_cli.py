"""``sandbox-kernel delegate`` and ``sandbox-kernel top``: the machine's admin.

    sandbox-kernel delegate alice --memory 4G --cpus 2 --pids 1024
    sandbox-kernel delegate alice --remove
    sandbox-kernel top            # like top; --json: one snapshot

Imports the runtime's parsers and delegation, and top.py, inside the
functions that use them (``--help`` loads no container code).
"""
from __future__ import annotations


def add_arguments(sub) -> None:
    delegate = sub.add_parser(
        "delegate", help="give a user a ceiling of memory, CPU and pids (root)",
        description="Delegate a cgroup subtree to USER with a ceiling no container, kernel or "
                    "process of theirs can lift (their rootless containers are made inside it). "
                    "Again with other figures: the ceiling changes live.",
        epilog="example: sandbox-kernel delegate alice --memory 4G --cpus 2 --pids 1024")
    delegate.add_argument("user", help="a login name or uid")
    delegate.add_argument("--memory", help="memory ceiling, swap included, e.g. 4G")
    delegate.add_argument("--cpus", help="CPU ceiling in cores, e.g. 2")
    delegate.add_argument("--pids", help="most processes and threads, e.g. 1024")
    delegate.add_argument("--remove", action="store_true",
                          help="take the ceiling away: kill what runs in it, remove its groups")
    top = sub.add_parser("top", help="every container on this machine, with limits and ceilings",
                         description="Every container on this machine (root: every user's): "
                                     "user, session, kernel, image, memory/cpu/pids against "
                                     "limits and ceilings, uptime, network bytes.")
    top.add_argument("--json", action="store_true", help="print one snapshot as JSON and exit")
    top.add_argument("-d", "--delay", type=float, default=2.0,
                     help="seconds between refreshes (default 2)")
    top.add_argument("-n", "--iterations", type=int, default=0,
                     help="stop after N refreshes (default: until ^C)")


def main(args, parser) -> int:
    if args.action == "top":
        from . import top
        return top.main(args)
    return _delegate(args, parser)


def _sweep_state_dirs(user: str) -> None:
    """What the user's containers killed with the ceiling could not remove."""
    import pwd
    from .runtime import cleanup
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return
    for path in cleanup.reap_state_dirs_of(uid):
        print(f"removed {path}, left by a container of {user}")


def _delegate(args, parser) -> int:
    from .runtime.cgroups import delegation
    from .runtime.spec import SpecError, parse_cpus, parse_pids, parse_size
    if args.remove:
        if any(v is not None for v in (args.memory, args.cpus, args.pids)):
            parser.exit(2, "sandbox-kernel delegate: --remove takes no --memory, --cpus or --pids\n")
        try:
            removed = delegation.remove(args.user)
        except delegation.DelegationError as error:
            parser.exit(1, f"sandbox-kernel delegate: {error.strerror}\n")
        _sweep_state_dirs(args.user)
        print(f"removed the ceiling of {args.user}" if removed else f"{args.user} had no ceiling")
        return 0
    try:
        figures = {"memory": parse_size(args.memory), "cpus": parse_cpus(args.cpus),
                   "pids": parse_pids(args.pids)}
    except SpecError as error:
        parser.exit(2, f"sandbox-kernel delegate: {error}\n")
    try:
        ceiling = delegation.delegate(args.user, **figures)
    except delegation.DelegationError as error:
        status = 2 if error.errno in (2, 22) else 1   # no such user, root: the input was wrong
        parser.exit(status, f"sandbox-kernel delegate: {error.strerror}\n")
    print(describe(ceiling))
    return 0


def describe(ceiling) -> str:
    """One line: the ceiling and where it is."""
    memory = "no limit" if ceiling.memory is None else f"{ceiling.memory / (1 << 20):g} MiB"
    cpus = "no limit" if ceiling.cpus is None else f"{ceiling.cpus:g}"
    pids = "no limit" if ceiling.pids is None else str(ceiling.pids)
    where = next(iter(ceiling.groups.values()))
    return (f"{ceiling.user} (uid {ceiling.uid}): memory {memory}, cpus {cpus}, pids {pids} "
            f"(cgroup {ceiling.version}, {where})")
