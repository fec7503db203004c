"""The mount plan's instruction set and its walk: ``Op`` (one step, plain
data) and ``apply``, which runs a plan (rootfs.py makes it) once, inside
the container's new mount namespace, before ``pivot``.

What the container sees of the host's paths in /proc/self/mountinfo:
overlayfs shows its layer options as the strings it was given, and the
plan's are host paths (the state directory, the image store), so ``apply``
gives it short relative names (``neutral_overlay_options``,
``_mount_overlay``).

DANGER: every op here runs as root with all capabilities.  ``apply`` refuses
to start unless the process is already in a mount namespace other than the
host's: applied in the host's namespace, a plan would mount over the host's
own /proc and /dev.

Imports: syscalls and idmapped_mount (the runtime's bottom) only.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from . import idmapped_mount
from . import syscalls as sc


@dataclass(frozen=True)
class Op:
    """One step of the plan: ``kind`` names what ``apply`` does with it."""
    kind: str            # mkdir | mount | bind | idmap_bind | remount_ro | mask | symlink
                         # | write | chown | append_passwd | confine
    target: str
    source: str | None = None
    fstype: str | None = None
    flags: int = 0
    data: str | None = None
    mode: int = 0o755

    def __str__(self) -> str:
        parts = [self.kind, self.target]
        if self.source:
            parts.insert(1, self.source + " ->")
        if self.fstype:
            parts.append(f"({self.fstype}{', ' + self.data if self.data else ''})")
        return " ".join(parts)


class MountPlanError(OSError):
    pass


def apply(plan: list[Op], host_mnt_ns: int) -> None:
    """Walk the plan.  Only in a fresh mount namespace (see the module docstring)."""
    if os.stat("/proc/self/ns/mnt").st_ino == host_mnt_ns:
        raise MountPlanError(1, "refusing to apply a mount plan in the host's mount namespace")
    # nothing mounted below may propagate back to the host
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    for op in plan:
        _APPLY[op.kind](op)


def _mkdir(op: Op) -> None:
    if not os.path.isdir(op.target):
        os.makedirs(op.target)
        os.chmod(op.target, op.mode)  # umask would clear the sticky bit of /tmp


def _mount(op: Op) -> None:
    if op.fstype == "overlay":
        _mount_overlay(op)
    else:
        sc.mount(op.source, op.target, op.fstype, op.flags, op.data)


# overlayfs's options that name directories, and the neutral name each path gets
_OVERLAY_DIRS = {"lowerdir": "layer", "upperdir": "upper", "workdir": "work"}


def neutral_overlay_options(data: str) -> tuple[str, dict[str, str]]:
    """``data`` with each directory replaced by a short relative name, and
    {name: the directory}.  mountinfo shows overlayfs's options as the
    strings given, and the plan's are host paths (the state directory, the
    image store): a container must see "lowerdir=layer0:layer1,upperdir=upper"."""
    options, names = [], {}
    for option in data.split(","):
        key, _, value = option.partition("=")
        if key not in _OVERLAY_DIRS or not value:
            options.append(option)
            continue
        paths = value.split(":") if key == "lowerdir" else [value]
        given = []
        for index, path in enumerate(paths):
            name = _OVERLAY_DIRS[key] + (str(index) if key == "lowerdir" else "")
            names[name] = path
            given.append(name)
        options.append(f"{key}={':'.join(given)}")
    return ",".join(options), names


def _mount_overlay(op: Op) -> None:
    """Mount with the neutral names of ``neutral_overlay_options``: each a
    symlink to its directory in a scratch directory beside the upper dir
    (ours: on the tmpfs layer, or a build's work directory), which is the
    working directory while the kernel resolves them.  The overlay keeps
    the directories it resolved, not the names: the scratch goes after."""
    data, names = neutral_overlay_options(op.data or "")
    if "upper" not in names:   # nowhere of ours to put the names: mount as planned
        sc.mount(op.source, op.target, op.fstype, op.flags, op.data)
        return
    scratch = tempfile.mkdtemp(prefix=".overlay-names-", dir=os.path.dirname(names["upper"]))
    previous = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name, path in names.items():
            os.symlink(path, os.path.join(scratch, name))
        os.chdir(scratch)
        sc.mount(op.source, op.target, op.fstype, op.flags, data)
    finally:
        os.fchdir(previous)
        os.close(previous)
        for name in names:
            _unlink_if_there(os.path.join(scratch, name))
        os.rmdir(scratch)


def _unlink_if_there(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass   # a failed symlink() never made it


def _bind(op: Op) -> None:
    _make_target(op)
    sc.mount(op.source, op.target, None, sc.MS_BIND | sc.MS_REC)
    if op.flags:
        sc.mount(None, op.target, None, sc.MS_REMOUNT | sc.MS_BIND | op.flags)


def _idmap_bind(op: Op) -> None:
    """A bind whose files of the host owner show as the workload's, and whose
    new files are the owner's on the host (idmapped_mount.py), with op.flags'
    nosuid, nodev and read-only.  Where the file system (or a mount below
    the source) cannot be idmapped, a plain bind: the workload then reads
    what the host's permissions let any user read."""
    owner_uid, owner_gid, uid, gid = (int(x) for x in op.data.split(":"))
    _make_target(op)
    if not idmapped_mount.bind(op.source, op.target, (owner_uid, owner_gid), (uid, gid), op.flags):
        _bind(op)


def _make_target(op: Op) -> None:
    if os.path.isdir(op.source) and not os.path.exists(op.target):
        os.makedirs(op.target)
    elif not os.path.exists(op.target):
        os.makedirs(os.path.dirname(op.target), exist_ok=True)
        open(op.target, "a").close()


def _remount_ro(op: Op) -> None:
    if not os.path.exists(op.target):
        return
    sc.mount(op.target, op.target, None, sc.MS_BIND | sc.MS_REC)
    sc.mount(None, op.target, None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY | op.flags)


def _mask(op: Op) -> None:
    if os.path.isdir(op.target):
        sc.mount("tmpfs", op.target, "tmpfs", sc.MS_RDONLY, "size=0")
    elif os.path.exists(op.target):
        sc.mount("/dev/null", op.target, None, sc.MS_BIND)


def _symlink(op: Op) -> None:
    os.symlink(op.source, op.target)


def _write(op: Op) -> None:
    with open(op.target, "w") as handle:
        handle.write(op.data or "")


def _chown(op: Op) -> None:
    uid, gid = (int(x) for x in op.data.split(":"))
    os.chown(op.target, uid, gid)


def _append_passwd(op: Op) -> None:
    """Name the container's uid 'sandbox' unless the image already names it."""
    uid, gid = op.data.split(":")
    if os.path.exists(f"{op.target}/passwd"):   # an image may have none
        with open(f"{op.target}/passwd") as handle:
            if any(line.split(":")[2:3] == [uid] for line in handle):
                return
    lines = {"passwd": f"sandbox:x:{uid}:{gid}:sandbox:/home/sandbox:/bin/sh\n",
             "group": f"sandbox:x:{gid}:\n"}
    for name, line in lines.items():
        if op.source is None:
            with open(f"{op.target}/{name}", "a") as handle:
                handle.write(line)
        else:   # rootless: a copy on the layer, bound over the host's file
            _copy_with(f"{op.target}/{name}", f"{op.source}/{name}", line)
            _bind(Op("bind", f"{op.target}/{name}", f"{op.source}/{name}"))


def _copy_with(original: str, copy: str, line: str) -> None:
    try:
        with open(original) as handle:
            text = handle.read()
    except FileNotFoundError:
        text = ""
    with open(copy, "w") as handle:
        handle.write(text + ("" if text.endswith("\n") or not text else "\n") + line)


def _confine(op: Op) -> None:
    """Make sure no component of op.target below the root op.source is a
    symlink (an image's symlink could point anywhere on the host, and this
    runs before pivot_root): each one found is removed, which only touches
    the overlay's upper layer.  A non-directory where a directory is needed
    is removed too; missing directories are made."""
    root = op.source
    relative = os.path.relpath(op.target, root).split("/")
    if relative[0] == ".." or os.path.islink(root):
        raise MountPlanError(1, "confine: not below the root", op.target)
    path = root
    for index, name in enumerate(relative):
        path = os.path.join(path, name)
        last = index == len(relative) - 1
        if os.path.islink(path) or (not last and os.path.lexists(path) and not os.path.isdir(path)):
            os.unlink(path)
        if not last and not os.path.lexists(path):
            os.mkdir(path, 0o755)


_APPLY = {"mkdir": _mkdir, "mount": _mount, "bind": _bind, "remount_ro": _remount_ro,
          "mask": _mask, "symlink": _symlink, "write": _write, "chown": _chown,
          "append_passwd": _append_passwd, "confine": _confine, "idmap_bind": _idmap_bind}


def pivot(new_root: str) -> None:
    """Make new_root the root and detach the old one (runc's pivot_root(".", ".")
    trick: no put_old directory is left inside the container)."""
    os.chdir(new_root)
    sc.pivot_root(".", ".")
    sc.umount2(".", sc.MNT_DETACH)
    os.chdir("/")
