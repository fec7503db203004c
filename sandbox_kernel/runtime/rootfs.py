"""The container's root file system, as a plan: the mount steps that make it.

``host_image_plan`` turns a spec into a list of operations (``Op``: plain
data that can be printed, tested and taught, as bubblewrap's SetupOp list
is); mount_apply.py walks that list once, inside the container's new mount
namespace (``apply``), and idmapped_mount.py makes the idmapped binds.
Nothing here mounts anything: a plan is made on the owner's side.

The plan for the ``host`` image, with S the container's state directory:

    S/layer      tmpfs, size = the disk limit (at most half the memory limit:
                 ``layer_size``): the only writable layer
    S/root       bind of S/layer/root; becomes /
    /usr, /etc, the interpreter's prefix and venv
                 overlay: lower = the host's directory (read-only),
                 upper = S/layer/upper/<n> (so writes land on the tmpfs)
    /proc        fresh proc, with kcore/keys/... masked, sys/... read-only
    /dev         tmpfs with null, zero, full, random, urandom, tty, pts, shm
    /tmp         a directory of the tmpfs layer (mode 1777)
    /workspace   S/layer/workspace, fresh on the tmpfs layer: it counts against
                 the disk limit with everything else the workload writes; or
                 a bind of the host directory the caller named (--workspace)

The plan for a stored image (``image_plan``) is one overlay at S/root whose
lowerdirs are the image's layers (top first) and whose upper and work dirs
are on the tmpfs layer; then the same /proc, /dev, /sys, /tmp, /workspace and
identity steps, each path ``confine``d first (no symlink of the image on the way).

Rootless (``rootless=True``, the owner is not root: userns.py): the same
plan, run as root of a user namespace, with what the kernel demands there:
overlays get ``userxattr``; a bind keeps the flags the kernel locks on the
host's mount (nosuid, nodev, noexec, read-only, atime: a remount that would
clear one fails with EPERM); /sys is a read-only bind of the host's when the
network is the host's (sysfs may only be mounted fresh in a network
namespace the user namespace owns); the fresh /workspace on the tmpfs layer
also keeps files of the workload's (subordinate) uid out of any host
directory the user could not remove them from.

What the container sees of the host's paths in /proc/self/mountinfo: the
host image's directories at their own paths (the interpreter's prefix and
venv must be where the interpreter looks for them), the sources of declared
mounts and of a --workspace the caller chose (the kernel shows a bind's root
as its path in the source file system), and nothing of the state directory
or the image store: overlayfs shows its layer options as the strings it was
given, so ``apply`` gives it short relative names (mount_apply.py).

Imports: spec, syscalls and mount_apply (for ``Op``) only.
"""
from __future__ import annotations

import os
import sys

from . import syscalls as sc
from .mount_apply import Op
from .spec import ContainerSpec

# host devices bound into /dev (docs/architecture.md, "Security defaults")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
PROC_MASKED = ("kcore", "keys", "timer_list", "sched_debug", "timer_stats",
               "latency_stats", "kmsg")
PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")


LAYER_SHARE_OF_MEMORY = 0.5
"""The writable layer's most of the memory limit, when its files count as memory."""


def layer_size(disk: int, memory: int | None, files_are_memory: bool) -> int:
    """The size of the writable layer's tmpfs: ``disk`` (--disk), but at most
    half the memory limit when a cgroup charges the layer's pages to the
    container's memory (``files_are_memory``: the v1 and v2 drivers do; the
    null driver's RLIMIT_AS does not count files).  A tmpfs as big as the
    memory limit fills memory before it fills up: the cell that writes /tmp
    is then killed as out of memory, with its variables, and never sees
    ENOSPC.  Half leaves the other half to the processes, so a full disk is
    a plain ENOSPC under every memory limit (the defaults, 1G and 1G, give a
    512 MiB layer); one who needs more raises --memory with --disk."""
    if memory is None or not files_are_memory:
        return disk
    return min(disk, max(int(memory * LAYER_SHARE_OF_MEMORY), 1 << 20))


def host_image_dirs() -> list[str]:
    """Host directories the ``host`` image shows, read-only under overlays:
    /usr and /etc, plus the running interpreter's prefix, its venv, and the
    directory this package is imported from (an editable install lives
    outside the venv)."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    candidates = ["/usr", "/etc", sys.base_prefix, sys.prefix,
                  os.path.join(package_root, "sandbox_kernel")]
    dirs: list[str] = []
    for path in map(os.path.realpath, candidates):
        if os.path.isdir(path) and not any(path == d or path.startswith(d + "/") for d in dirs):
            dirs = [d for d in dirs if not d.startswith(path + "/")] + [path]
    return dirs


def host_image_plan(spec: ContainerSpec, state_dir: str, workspace: str | None,
                    rootless: bool = False, layers: tuple[str, ...] = ()) -> list[Op]:
    """``workspace`` None: a fresh one on the tmpfs layer (counted in the disk limit)."""
    layer, root = f"{state_dir}/layer", f"{state_dir}/root"
    plan = [
        Op("mount", layer, "tmpfs", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV,
           f"size={spec.limits.disk},mode=0755"),
        Op("mkdir", f"{layer}/root"), Op("mkdir", f"{layer}/upper"), Op("mkdir", f"{layer}/work"),
        Op("bind", root, f"{layer}/root"),
    ]
    plan += _skeleton(root, spec)
    nested = _mount_points() if rootless else []
    image_dirs = host_image_dirs()
    # a mount above (or at) one of the image's directories goes first, and the
    # image's overlay over it: the interpreter and venv stay the image's
    early = [m for m in spec.mounts if any(_below(d, m.target) for d in image_dirs)]
    plan += _mounts(root, spec, early, layer, rootless)
    for index, directory in enumerate(image_dirs):
        lower = ":".join([*_layers_over(layers, directory), directory])
        if lower == directory and any(p.startswith(directory + "/") for p in nested):
            plan += _read_only_bind(root + directory, directory)
        else:
            plan += _overlay(root + directory, lower, layer, index, rootless)
    plan += _proc(root) + _dev(root, rootless) + _sys(root, spec, rootless)
    plan += _binds(root, spec, _layer_workspace(layer, spec) if workspace is None else [workspace],
                   rootless, layer=layer, skip=early)
    plan += _identity(root, spec, f"{layer}/etc" if rootless else None)
    if spec.workdir != "/workspace":
        plan.append(Op("mkdir", root + spec.workdir))
    return plan


def image_plan(spec: ContainerSpec, state_dir: str, workspace: str | None, image,
               upper_dir: str | None = None, rootless: bool = False) -> list[Op]:
    """The plan for a stored image: ``image.lower_dirs`` (its layers, top
    first) stacked by one overlay at S/root, whose upper and work dirs are on
    the tmpfs layer, or in ``upper_dir`` on the host for a build (images are
    built by keeping that upper dir as a layer: image_build.py).

    The image is untrusted: a symlink it ships at /etc/hosts or /tmp would
    make the writes and mounts below land on the host (this runs as root
    before pivot_root).  Every path the plan touches is first ``confine``d:
    symlinks on the way are replaced (in the overlay's upper layer only).
    """
    if getattr(image, "base", "") == "host":   # built FROM host
        return host_image_plan(spec, state_dir, workspace, rootless=rootless,
                               layers=tuple(image.lower_dirs))
    layer, root = f"{state_dir}/layer", f"{state_dir}/root"
    upper_parent = upper_dir or layer
    plan = [] if upper_dir else [
        Op("mount", layer, "tmpfs", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV,
           f"size={spec.limits.disk},mode=0755")]
    plan += [Op("mkdir", f"{upper_parent}/upper"), Op("mkdir", f"{upper_parent}/work"),
             Op("mount", root, "overlay", "overlay", sc.MS_NOSUID,
                overlay_options(image.lower_dirs, f"{upper_parent}/upper", f"{upper_parent}/work",
                                for_build=upper_dir is not None, rootless=rootless))]
    plan += _image_skeleton(root, spec)
    plan += _proc(root) + _dev(root, rootless) + _sys(root, spec, rootless)
    plan += [Op("confine", root + m.target, root) for m in spec.mounts]
    plan += _binds(root, spec, [workspace] if workspace is not None else
                   _layer_workspace(layer, spec, own_tmpfs=upper_dir is not None), rootless,
                   layer=layer)
    plan += _identity(root, spec)
    if spec.workdir != "/workspace" and not _in_a_mount(spec):
        plan += [Op("confine", root + spec.workdir, root), Op("mkdir", root + spec.workdir)]
    return plan


def _in_a_mount(spec: ContainerSpec) -> bool:
    """Is the working directory in a declared mount (the notebook's directory)?
    Then it is the host's, there already, and ``confine`` must not walk it:
    it would remove a symlink of the host's directory (the image's symlinks
    on the way to the mount were confined before the mount)."""
    return any(_below(spec.workdir, m.target) for m in spec.mounts)


def _layers_over(layers: tuple[str, ...], directory: str) -> list[str]:
    """An image built FROM host (image_build.py) keeps, in each layer, what
    its build changed under each host directory at the same path: those
    go over the host's directory, top first."""
    return [layer + directory for layer in layers
            if os.path.isdir(layer + directory) and not os.path.islink(layer + directory)]


# the longest mount(2) data the kernel takes is one page
MOUNT_DATA_MAX = 4096


def overlay_options(lower_dirs: list[str], upper: str, work: str, for_build: bool = False,
                    rootless: bool = False) -> str:
    """lowerdir=TOP:...:BOTTOM,upperdir=...,workdir=...  A build's upper dir
    must stand alone as a layer: no metacopy (an upper file without its data)
    and no redirect_dir (a renamed directory that points into a lower layer)."""
    for path in [*lower_dirs, upper, work]:
        if "," in path or ":" in path:
            raise ValueError(f"overlay cannot take the path {path!r}: it has a ',' or ':'")
    data = f"lowerdir={':'.join(lower_dirs)},upperdir={upper},workdir={work}"
    if for_build:
        data += ",index=off,metacopy=off,redirect_dir=off"
    if rootless:   # trusted.* xattrs need CAP_SYS_ADMIN on the host: use user.overlay.*
        data += ",userxattr"
    if len(data) >= MOUNT_DATA_MAX:
        raise ValueError(f"this image has too many layers ({len(lower_dirs)}) for one overlay "
                         f"mount of these paths: its options exceed {MOUNT_DATA_MAX} bytes")
    return data


def _image_skeleton(root: str, spec: ContainerSpec) -> list[Op]:
    """The directories the plan mounts on or writes into, made safe and made."""
    plan = []
    for path, mode in (("/proc", 0o755), ("/dev", 0o755), ("/sys", 0o755), ("/tmp", 0o1777),
                       ("/workspace", 0o755), ("/etc", 0o755), ("/home/sandbox", 0o755)):
        plan += [Op("confine", root + path, root), Op("mkdir", root + path, mode=mode)]
    plan += [Op("confine", f"{root}/etc/{name}", root) for name in ("hosts", "hostname", "passwd", "group")]
    uid, gid = spec.user
    plan.append(Op("chown", f"{root}/home/sandbox", data=f"{uid}:{gid}"))
    return plan


def _layer_workspace(layer: str, spec: ContainerSpec, own_tmpfs: bool = False) -> list:
    """A fresh /workspace on the tmpfs layer, owned by the workload's user.
    ``own_tmpfs`` (a build: S/layer is then a host directory, the uppers
    being kept on disk): a tmpfs of its own, so that /workspace's mountinfo
    line names no host path."""
    uid, gid = spec.user
    workspace = f"{layer}/workspace"
    plan = [Op("mkdir", workspace)]
    if own_tmpfs:
        plan.append(Op("mount", workspace, "tmpfs", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV,
                       f"size={spec.limits.disk},mode=0755"))
    return plan + [Op("chown", workspace, data=f"{uid}:{gid}"), workspace]


def _binds(root: str, spec: ContainerSpec, workspace: list, rootless: bool = False,
           layer: str | None = None, skip=()) -> list[Op]:
    """/workspace and the declared mounts (read-only where asked), but those
    in ``skip`` (planned already).  ``workspace`` is the steps that make it
    (if any), then its path."""
    *plan, source = workspace
    nosuid_nodev = sc.MS_NOSUID | sc.MS_NODEV
    plan.append(Op("bind", root + "/workspace", source,
                   flags=nosuid_nodev | _locked_flags(source, rootless)))
    return plan + _mounts(root, spec, [m for m in spec.mounts if m not in skip], layer, rootless)


def _mounts(root: str, spec: ContainerSpec, mounts, layer: str | None, rootless: bool) -> list[Op]:
    """The declared mounts, parents first (a parent bound after its child would hide it)."""
    plan = []
    for mount in sorted(mounts, key=lambda m: m.target.count("/")):
        index = spec.mounts.index(mount)
        if mount.overlay and layer is not None:
            plan += _overlay_mount(root + mount.target, mount, layer, index, spec.user, rootless)
        else:
            plan += _bind_mount(root + mount.target, mount, spec.user, rootless)
    return plan


def _bind_mount(target: str, mount, user: tuple[int, int], rootless: bool,
                read_only: bool | None = None) -> list[Op]:
    """A bind of ``mount.source`` at ``target``: idmapped where the mount asks
    for its owner to be the workload's (as root), read-only where asked."""
    read_only = mount.read_only if read_only is None else read_only
    flags = sc.MS_NOSUID | sc.MS_NODEV | _locked_flags(mount.source, rootless)
    if mount.map_owner is not None and not rootless:
        return [Op("idmap_bind", target, mount.source, flags=flags | (sc.MS_RDONLY if read_only else 0),
                   data=idmap_data(mount.map_owner, user))]
    plan = [Op("bind", target, mount.source, flags=flags)]
    if read_only:
        plan.append(Op("remount_ro", target, flags=flags))
    return plan


def idmap_data(owner: tuple[int, int], user: tuple[int, int]) -> str:
    """'OWNER_UID:OWNER_GID:UID:GID': the host owner's files show as the workload's."""
    return f"{owner[0]}:{owner[1]}:{user[0]}:{user[1]}"


def _overlay_mount(target: str, mount, layer: str, index: int, user: tuple[int, int],
                   rootless: bool) -> list[Op]:
    """The host directory as the read-only lower layer of an overlay whose
    upper layer is on the tmpfs: writes stay in the container.  The lower is
    first bound (idmapped as root) on the layer under a name of ours, which
    overlayfs's option string can always hold.  Rootless, a directory with
    mounts below it cannot be a lower layer (see _read_only_bind): it is
    bound read-only instead."""
    if rootless and any(p.startswith(mount.source.rstrip("/") + "/") for p in _mount_points()):
        return _bind_mount(target, mount, user, rootless, read_only=True)
    lower, upper, work = (f"{layer}/{kind}/m{index}" for kind in ("lower", "upper", "work"))
    plan = [Op("mkdir", lower)] + _bind_mount(lower, mount, user, rootless, read_only=True)
    plan += [Op("mkdir", upper, mode=_mode_of(mount.source)), Op("mkdir", work), Op("mkdir", target)]
    owner = _upper_owner(mount, user, rootless)
    if owner is not None:
        # the overlay's top directory is its upper dir: owned as the lower's shows
        plan.append(Op("chown", upper, data=f"{owner[0]}:{owner[1]}"))
    data = f"lowerdir={lower},upperdir={upper},workdir={work}" + (",userxattr" if rootless else "")
    return plan + [Op("mount", target, "overlay", "overlay", sc.MS_NOSUID | sc.MS_NODEV, data)]


def _mode_of(path: str) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o755


def _upper_owner(mount, user: tuple[int, int], rootless: bool) -> tuple[int, int] | None:
    """Who the overlay's top directory belongs to: the workload when the host
    directory is the mapped owner's (idmapped, as root: the lower shows it as
    the workload's) or, rootless, the user's own (where the workload is a
    subordinate id, it may then at least add files at the top, as writes
    stay in the container anyway); else None: root's."""
    owner = os.getuid() if rootless else (mount.map_owner or (None,))[0]
    try:
        st = os.stat(mount.source)
    except OSError:
        return None
    return user if owner is not None and st.st_uid == owner else None


def _below(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


# statvfs's ST_* bits and the mount flags a remount must repeat to keep them
_STATVFS_TO_MS = ((os.ST_RDONLY, sc.MS_RDONLY), (os.ST_NOSUID, sc.MS_NOSUID),
                  (os.ST_NODEV, sc.MS_NODEV), (os.ST_NOEXEC, sc.MS_NOEXEC),
                  (os.ST_NOATIME, sc.MS_NOATIME), (os.ST_NODIRATIME, sc.MS_NODIRATIME),
                  (os.ST_RELATIME, sc.MS_RELATIME))


def _locked_flags(source: str | None, rootless: bool) -> int:
    """In a user namespace the kernel locks the flags of every mount that came
    from the host: a bind remount must repeat them (EPERM otherwise).  As
    root nothing is locked, and nothing changes."""
    if not rootless or source is None or not source.startswith("/"):
        return 0
    try:
        mounted = os.statvfs(source).f_flag
    except OSError:
        return 0   # the bind itself will say what is wrong with the source
    flags = 0
    for st_bit, ms_bit in _STATVFS_TO_MS:
        if mounted & st_bit:
            flags |= ms_bit
    if not flags & (sc.MS_NOATIME | sc.MS_RELATIME):
        flags |= sc.MS_STRICTATIME
    return flags


def _skeleton(root: str, spec: ContainerSpec) -> list[Op]:
    plan = [Op("mkdir", f"{root}/{name}") for name in
            ("proc", "dev", "sys", "run", "var", "home", "workspace", "mnt")]
    plan += [Op("mkdir", f"{root}/tmp", mode=0o1777), Op("mkdir", f"{root}/var/tmp", mode=0o1777),
             Op("mkdir", f"{root}/root", mode=0o711)]
    # merged-/usr hosts have /bin -> usr/bin: keep the same links
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        if os.path.islink(f"/{name}"):
            plan.append(Op("symlink", f"{root}/{name}", os.readlink(f"/{name}")))
    uid, gid = spec.user
    plan += [Op("mkdir", f"{root}/home/sandbox", mode=0o755),
             Op("chown", f"{root}/home/sandbox", data=f"{uid}:{gid}")]
    return plan


def _overlay(target: str, lower: str, layer: str, index: int, rootless: bool = False) -> list[Op]:
    upper, work = f"{layer}/upper/{index}", f"{layer}/work/{index}"
    data = f"lowerdir={lower},upperdir={upper},workdir={work}" + (",userxattr" if rootless else "")
    return [Op("mkdir", upper), Op("mkdir", work), Op("mkdir", target),
            Op("mount", target, "overlay", "overlay", sc.MS_NOSUID, data)]


def _mount_points(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    with open(mountinfo, encoding="utf-8") as handle:
        return [line.split()[4] for line in handle]


def _read_only_bind(target: str, source: str) -> list[Op]:
    """Rootless, a host directory with mounts below it: overlayfs refuses it
    as a lower dir ("failed to clone lowerpath": in a user namespace those
    mounts are locked to it), so it is shown read-only as it is, without a
    writable layer (writes there fail with EROFS instead of landing on the tmpfs)."""
    flags = sc.MS_RDONLY | sc.MS_NOSUID | _locked_flags(source, True)
    return [Op("mkdir", target), Op("bind", target, source, flags=flags)]


def _proc(root: str) -> list[Op]:
    proc = f"{root}/proc"
    plan = [Op("mount", proc, "proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)]
    plan += [Op("mask", f"{proc}/{name}") for name in PROC_MASKED]
    plan += [Op("remount_ro", f"{proc}/{name}", flags=sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
             for name in PROC_READ_ONLY]
    return plan


def _dev(root: str, rootless: bool = False) -> list[Op]:
    dev = f"{root}/dev"
    plan = [Op("mount", dev, "tmpfs", "tmpfs", sc.MS_NOSUID | sc.MS_NOEXEC, "size=64k,mode=0755")]
    for name in DEVICES:
        flags = sc.MS_NOSUID | sc.MS_NOEXEC | _locked_flags(f"/dev/{name}", rootless)
        plan += [Op("write", f"{dev}/{name}", data=""),
                 Op("bind", f"{dev}/{name}", f"/dev/{name}", flags=flags)]
    plan += [Op("mkdir", f"{dev}/pts"),
             Op("mount", f"{dev}/pts", "devpts", "devpts", sc.MS_NOSUID | sc.MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=0620"),
             Op("symlink", f"{dev}/ptmx", "pts/ptmx"),
             Op("mkdir", f"{dev}/shm", mode=0o1777),
             Op("mount", f"{dev}/shm", "shm", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
                "mode=1777,size=64m"),
             Op("symlink", f"{dev}/fd", "/proc/self/fd")]
    plan += [Op("symlink", f"{dev}/{name}", f"/proc/self/fd/{fd}")
             for fd, name in enumerate(("stdin", "stdout", "stderr"))]
    return plan


def _sys(root: str, spec: ContainerSpec | None = None, rootless: bool = False) -> list[Op]:
    # read-only sysfs: CPU topology for numpy and friends, nothing writable
    flags = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
    if rootless and spec is not None and spec.network == "host":
        # sysfs may be mounted fresh only in a network namespace our user
        # namespace owns; on the host's network, bind the host's read-only
        # (recursively: the kernel refuses to split off locked submounts), and
        # cover the host's cgroups, which the user may own (a delegated subtree)
        return [Op("bind", f"{root}/sys", "/sys", flags=flags | _locked_flags("/sys", True)),
                Op("mask", f"{root}/sys/fs/cgroup")]
    return [Op("mount", f"{root}/sys", "sysfs", "sysfs", flags)]


def _identity(root: str, spec: ContainerSpec, via: str | None = None) -> list[Op]:
    """The unprivileged user, and a hosts file that knows the hostname.
    Writes to /etc land in its overlay's upper layer, never on the host.
    ``via`` (rootless, host image): the host's /etc files belong to a uid the
    user namespace does not map, so even its root may not write them; the new
    files are written in ``via`` on the tmpfs layer and bound over them."""
    uid, gid = spec.user
    hosts = f"127.0.0.1\tlocalhost {spec.hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    files = {"hosts": hosts, "hostname": spec.hostname + "\n"}
    if via is None:
        plan = [Op("write", f"{root}/etc/{name}", data=text) for name, text in files.items()]
    else:
        plan = [Op("mkdir", via)]
        for name, text in files.items():
            plan += [Op("write", f"{via}/{name}", data=text),
                     Op("bind", f"{root}/etc/{name}", f"{via}/{name}")]
    return plan + [Op("append_passwd", f"{root}/etc", via, data=f"{uid}:{gid}")]


# moved to mount_apply.py; the launcher's callers and tests still read them here
from .mount_apply import (  # noqa: E402,F401 -- moved; tests and image_build still import them here
    _APPLY, MountPlanError, _confine, _write, apply, neutral_overlay_options, pivot)
