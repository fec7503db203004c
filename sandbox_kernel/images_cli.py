"""``sandbox-kernel images``: the image store from the command line.

    sandbox-kernel images                                  list them (also: images list)
    sandbox-kernel images import busybox.tar --name busybox
    sandbox-kernel images import ./rootfs-dir --name mine  rootfs dir/tar, OCI layout, docker save
    sandbox-kernel images inspect busybox [--json]
    sandbox-kernel images rm busybox                        layers no other image uses go too
    sandbox-kernel images build tools --from busybox --run "echo hi > /hello"
    sandbox-kernel images build mine --from host --mount $PWD/wheels:/wheels:ro \
        --run "pip install --no-index /wheels/*.whl"     layers over the host's /usr, venv...
    sandbox-kernel images pull 127.0.0.1:5000/busybox:latest [--platform linux/arm64]

Bad input (a missing file, a corrupt blob, an unknown media type, a name in
use, a registry that redirects out of http/https or more than 5 times, an
image or build layer past $SANDBOX_KERNEL_STORE_QUOTA) is one line on stderr
and exit status 2; a failed build script exit 1.  Every command, listing
included, first sweeps the work directories that killed imports, pulls and
builds of this user left in the store.
The store is /var/lib/sandbox-kernel as root, else the XDG data dir, or
$SANDBOX_KERNEL_IMAGES.

Imports runtime.images, sandbox_kernel.progress (the terminal's bars) and
session.options (the actions' help, shared with ``%container image``).
"""
from __future__ import annotations

import json
import sys

from .progress import terminal_progress
from .runtime import images
from .session import options


def add_arguments(sub) -> None:
    """The ``images`` subparser of the sandbox-kernel command; the actions'
    help is options.py's, shared with ``%container image``."""
    helps, arguments = options.IMAGE_ACTIONS, options.IMAGE_ARGUMENTS
    parser = sub.add_parser("images", help="list, import, inspect, remove, build and pull images",
                            description=__doc__.split("\n\n")[0],
                            epilog="example: sandbox-kernel images import busybox.tar --name busybox")
    actions = parser.add_subparsers(dest="images_action", metavar="ACTION",
                                    parser_class=type(parser))
    actions.add_parser("list", aliases=["ls"], help=helps["ls"])
    imp = actions.add_parser("import", help=helps["import"])
    imp.add_argument("path", help=arguments["path"])
    imp.add_argument("--name", help="the image's name (default: from the archive or file name)")
    imp.add_argument("--allow-setuid", action="store_true",
                     help="keep setuid/setgid bits (dropped by default)")
    inspect = actions.add_parser("inspect", help=helps["inspect"])
    inspect.add_argument("name")
    inspect.add_argument("--json", action="store_true", help="print it as JSON")
    actions.add_parser("rm", help=helps["rm"]).add_argument("name")
    build = actions.add_parser("build", help=helps["build"])
    build.add_argument("name")
    build.add_argument("--from", dest="base", required=True, help=arguments["base"])
    build.add_argument("--run", required=True, help=arguments["script"])
    build.add_argument("--mount", action="append", default=[], metavar="SRC:DST[:ro]",
                       help="bind a host path for the build only (not kept), e.g. ./wheels:/wheels:ro")
    build.add_argument("--net", default="host", choices=("host", "none"),
                       help="the build's network (default: host)")
    pull = actions.add_parser("pull", help=helps["pull"])
    pull.add_argument("reference", help=arguments["reference"])
    pull.add_argument("--name", help="store it under this name (default: the reference)")
    pull.add_argument("--platform", help="OS/ARCH[/VARIANT] (default: this machine's)")


def main(args, parser) -> int:
    action = args.images_action or "list"
    try:
        return _ACTIONS[action](args)
    except (images.ImageError, images.ImageNotFound, ValueError) as error:
        parser.exit(2, f"sandbox-kernel images {action}: {_one_line(error)}\n")
    except RuntimeError as error:   # image_build.BuildError, a container that failed to start
        parser.exit(1, f"sandbox-kernel images {action}: {_one_line(error)}\n")


def _one_line(error: BaseException) -> str:
    text = str(error.args[0]) if isinstance(error, LookupError) and error.args else str(error)
    return " ".join(text.split())


def _list(args) -> int:
    rows = [(r["name"], r["id"], str(r["layers"]), images.format_size(r["size"]) if r["size"] is not None
             else "-", r["created"], r["source"]) for r in images.listing()]
    print(table(("NAME", "ID", "LAYERS", "SIZE", "CREATED", "SOURCE"), rows))
    return 0


def table(columns, rows) -> str:
    lines = [tuple(columns)] + [tuple(r) for r in rows]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(columns))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines)


def _import(args) -> int:
    image = images.import_image(args.path, args.name, progress=terminal_progress(),
                                allow_setuid=args.allow_setuid)
    print(f"imported {image.name} ({len(image.layers)} layer(s), {image.id[:19]})")
    return 0


def _inspect(args) -> int:
    info = images.inspect(args.name)
    if args.json:
        json.dump(info, sys.stdout, indent=1)
        print()
        return 0
    print(images.describe(info))
    return 0


def _rm(args) -> int:
    removed = images.remove(args.name)
    print(f"removed {args.name}" + (f" and {len(removed)} layer(s) no other image used" if removed else ""))
    return 0


def _build(args) -> int:
    def show(text):
        sys.stdout.write(text)
        sys.stdout.flush()
    image = images.build(args.name, args.base, args.run, on_output=show, mounts=args.mount,
                         network=args.net)
    print(f"built {image.name}: {args.base} + layer {image.layers[-1][:19]}")
    return 0


def _pull(args) -> int:
    image = images.pull(args.reference, args.name, platform_name=args.platform,
                        progress=terminal_progress())
    print(f"pulled {image.name} ({len(image.layers)} layer(s), {image.id[:19]})")
    return 0


_ACTIONS = {"list": _list, "ls": _list, "import": _import, "inspect": _inspect, "rm": _rm,
            "build": _build, "pull": _pull}
