"""What this host supports for containers, and how to fix what it lacks.

Each check reads a file under /proc or /sys and, when it fails, says how to fix
the host, the way nsjail's errors do.  Both roots can be passed in, so the
checks run in the unit tests against a fake host written into a temp dir::

    $ sandbox-kernel doctor
    check                  status   detail
    root                   ok       euid 0
    namespaces             ok       mnt uts ipc net pid cgroup user
    cgroups                ok       hybrid: v1 controllers, and cgroup2 at /sys/fs/cgroup/unified
    overlayfs              missing  not in /proc/filesystems
                                    fix: modprobe overlay
    ...

A *required* check that fails means no container can start here; an optional
one costs a feature: resource limits (no cgroups: the null driver), swap
accounting, or the rootless mode.

As a user (rootless), each piece a rootless container stands on is its own
row with its fix: unprivileged user namespaces (kernel.unprivileged_userns_clone,
user.max_user_namespaces, Ubuntu's kernel.apparmor_restrict_unprivileged_userns),
newuidmap/newgidmap and the user's subordinate ids (a range of ids inside,
else one), a delegated cgroup (else rlimits only, and the first cell says
so), the per-user ceiling over it (``sandbox-kernel delegate``), whether ``systemd-run --user --scope -p Delegate=yes`` could give one,
and which networks work (none and host; a bridge needs root).

This module reads mountinfo itself rather than importing the cgroup drivers:
the doctor must work on exactly the hosts where those drivers would fail.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pwd
import re
import shutil
from dataclasses import asdict, dataclass, field

from .doctor_ceiling import read_text

NAMESPACES = ("mnt", "uts", "ipc", "net", "pid", "cgroup")
# the kernel option behind each namespace (the mount and cgroup ones have none of their own)
NS_CONFIG = {"mnt": "CONFIG_NAMESPACES", "uts": "CONFIG_UTS_NS", "ipc": "CONFIG_IPC_NS",
             "net": "CONFIG_NET_NS", "pid": "CONFIG_PID_NS", "cgroup": "CONFIG_CGROUPS",
             "user": "CONFIG_USER_NS"}
V1_CONTROLLERS = frozenset({"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls",
                            "net_prio", "blkio", "perf_event", "hugetlb", "pids", "rdma", "misc"})
LIMIT_CONTROLLERS = ("memory", "cpu", "pids")     # the limits a container spec can set
WANTED_CONTROLLERS = {"v1": ("memory", "cpu", "cpuacct", "pids", "blkio", "freezer"),
                      "v2": ("memory", "cpu", "pids", "io")}   # v2: freezer and cpuacct are built in


@dataclass(frozen=True)
class Check:
    """One thing the host has or lacks; ``fix`` says how to give it to the host."""
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    required: bool = True


@dataclass(frozen=True)
class CgroupMount:
    """One line of /proc/self/mountinfo whose type is cgroup or cgroup2."""
    version: int                      # 1 or 2
    path: str                         # mount point, as the host sees it
    root: str                         # the directory of the hierarchy mounted there
    controllers: tuple[str, ...] = ()  # v1 only, from the super options


@dataclass(frozen=True)
class CgroupLayout:
    """Which cgroup hierarchies the host has, and where this process sits in them."""
    version: str                      # "v2", "v1", "hybrid" or "none"
    mounts: tuple[CgroupMount, ...] = ()
    dirs: dict[str, str] = field(default_factory=dict)  # controller -> this process's directory
    unified: str | None = None        # this process's cgroup2 directory, if cgroup2 is mounted

    def v1_dirs(self) -> dict[str, str]:
        return {c: d for c, d in self.dirs.items() if d != self.unified}


# ---- reading the host ---------------------------------------------------------------

_read = read_text   # a file's text, or None when absent or unreadable: a doctor never raises


def _sysctl(proc_root: str, name: str) -> str | None:
    text = _read(os.path.join(proc_root, "sys", *name.split(".")))
    return None if text is None else text.strip()


def _status(proc_root: str) -> dict[str, str]:
    """/proc/self/status as a dict: "Uid" -> "0\t0\t0\t0", "Seccomp" -> "0"."""
    text = _read(os.path.join(proc_root, "self", "status")) or ""
    return dict((k, v.strip()) for k, _, v in (line.partition(":") for line in text.splitlines()))


def _euid(status: dict[str, str]) -> int:
    fields = status.get("Uid", "").split()
    return int(fields[1]) if len(fields) > 1 else os.geteuid()


def _unescape(path: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """The cgroup and cgroup2 mounts of a /proc/<pid>/mountinfo text."""
    mounts = []
    for line in text.splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        version = 2 if tail[0] == "cgroup2" else 1
        controllers = tuple(o for o in tail[2].split(",") if o in V1_CONTROLLERS)
        mounts.append(CgroupMount(version, _unescape(fields[4]), _unescape(fields[3]),
                                  controllers if version == 1 else ()))
    return mounts


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/self/cgroup as controller -> path; the cgroup2 line ("0::/x") has the key ""."""
    paths = {}
    for line in text.splitlines():
        _, _, rest = line.partition(":")
        names, _, path = rest.partition(":")
        for name in names.split(",") if names else [""]:
            paths[name] = path
    return paths


def cgroup_version(mounts: list[CgroupMount]) -> str:
    """v2, v1, hybrid (v1 controllers plus a cgroup2 mount, usually empty) or none."""
    v1 = any(m.version == 1 and m.controllers for m in mounts)
    v2 = any(m.version == 2 for m in mounts)
    return "hybrid" if v1 and v2 else "v1" if v1 else "v2" if v2 else "none"


def _on_host(path: str, sys_root: str) -> str:
    """A mount point as seen from ``sys_root`` (the unit tests' fake /sys)."""
    if path == "/sys" or path.startswith("/sys/"):
        return sys_root + path[len("/sys"):]
    return path


def _own_dir(mount: CgroupMount, own: dict[str, str], sys_root: str) -> str:
    """This process's directory in one hierarchy (the mount's root when it is outside it,
    as in a cgroup namespace that was entered after the mount)."""
    key = "" if mount.version == 2 else mount.controllers[0]
    path, root = own.get(key, mount.root), mount.root
    inside = path == root or path.startswith(root.rstrip("/") + "/")
    rel = os.path.relpath(path, root) if inside else "."
    return os.path.normpath(os.path.join(_on_host(mount.path, sys_root), rel))


def cgroup_layout(proc_root: str = "/proc", sys_root: str = "/sys") -> CgroupLayout:
    """The host's cgroup hierarchies, from /proc/self/mountinfo and /proc/self/cgroup."""
    mounts = parse_mountinfo(_read(os.path.join(proc_root, "self", "mountinfo")) or "")
    own = parse_proc_cgroup(_read(os.path.join(proc_root, "self", "cgroup")) or "")
    dirs, unified = {}, None
    for m in (m for m in mounts if m.version == 1 and m.controllers):
        for c in m.controllers:
            dirs.setdefault(c, _own_dir(m, own, sys_root))
    v2 = next((m for m in mounts if m.version == 2), None)
    if v2 is not None:
        unified = _own_dir(v2, own, sys_root)
        text = (_read(os.path.join(unified, "cgroup.controllers"))
                or _read(os.path.join(_on_host(v2.path, sys_root), "cgroup.controllers")) or "")
        for c in text.split():
            dirs.setdefault(c, unified)
    return CgroupLayout(cgroup_version(mounts), tuple(mounts), dirs, unified)


# ---- the checks ---------------------------------------------------------------------

def check_root(euid: int) -> Check:
    if euid == 0:
        return Check("root", True, "euid 0", required=False)
    return Check("root", True, f"euid {euid}: rootless, every container starts with a user "
                 "namespace (the rows below say what this user has for it)", required=False)


def check_userns(proc_root: str, euid: int) -> Check:
    """Unprivileged user namespaces: what rootless containers stand on."""
    problems, fixes = [], []
    if not os.path.exists(os.path.join(proc_root, "self", "ns", "user")):
        problems.append("no user namespaces in this kernel")
        fixes.append("rebuild the kernel with CONFIG_USER_NS=y")
    for name, bad, good in (("kernel.unprivileged_userns_clone", "0", "1"),
                            ("user.max_user_namespaces", "0", "15000"),
                            ("kernel.apparmor_restrict_unprivileged_userns", "1", "0")):
        if _sysctl(proc_root, name) == bad:
            problems.append(f"{name}={bad}")
            fixes.append(f"sysctl -w {name}={good}")
    if fixes:
        fixes.append("to keep it after a reboot, put it in /etc/sysctl.d/99-userns.conf")
        return Check("user namespaces", False, "; ".join(problems), "; ".join(fixes),
                     required=euid != 0)
    limit = _sysctl(proc_root, "user.max_user_namespaces")
    detail = "unprivileged user namespaces allowed" + (f" (max {limit})" if limit else "")
    return Check("user namespaces", True, detail, required=euid != 0)


def check_namespaces(proc_root: str) -> Check:
    found = [ns for ns in (*NAMESPACES, "user")
             if os.path.exists(os.path.join(proc_root, "self", "ns", ns))]
    missing = [ns for ns in NAMESPACES if ns not in found]
    if not missing:
        return Check("namespaces", True, " ".join(found))
    options = " ".join(f"{NS_CONFIG[ns]}=y" for ns in missing)
    return Check("namespaces", False, f"missing: {' '.join(missing)}",
                 f"rebuild the kernel with CONFIG_NAMESPACES=y {options}")


def check_cgroups(layout: CgroupLayout) -> Check:
    paths = sorted({m.path for m in layout.mounts})
    v2_path = next((m.path for m in layout.mounts if m.version == 2), "")
    if layout.version == "none":
        return Check("cgroups", False, "no cgroup mount: containers run without limits",
                     "mount -t cgroup2 none /sys/fs/cgroup", required=False)
    if layout.version == "hybrid":
        return Check("cgroups", True, f"hybrid: v1 controllers, and cgroup2 at {v2_path}",
                     required=False)
    where = v2_path if layout.version == "v2" else os.path.commonpath(paths)
    return Check("cgroups", True, f"{layout.version} at {where}", required=False)


def check_controllers(layout: CgroupLayout) -> Check:
    wanted = WANTED_CONTROLLERS["v2" if layout.version == "v2" else "v1"]
    have = [c for c in wanted if c in layout.dirs]
    missing = [c for c in wanted if c not in layout.dirs]
    detail = " ".join(have) + (f" (no {' '.join(missing)})" if missing else "")
    lacking = [c for c in LIMIT_CONTROLLERS if c not in layout.dirs]
    if not lacking:
        return Check("cgroup controllers", True, detail, required=False)
    if layout.version == "v2":
        parent = os.path.dirname(layout.unified or "/sys/fs/cgroup")
        fix = " && ".join(f"echo +{c} > {parent}/cgroup.subtree_control" for c in lacking)
    else:
        fix = ("mount each: " + "; ".join(f"mkdir -p /sys/fs/cgroup/{c} && mount -t cgroup "
                                          f"-o {c} cgroup /sys/fs/cgroup/{c}" for c in lacking))
        if "memory" in lacking:
            fix += " (memory may need cgroup_enable=memory on the kernel command line)"
    return Check("cgroup controllers", False, detail + ": no limit on " + " ".join(lacking),
                 fix, required=False)


def _swap_file(layout: CgroupLayout, sys_root: str) -> str | None:
    """The file that exists only with swap accounting, in a cgroup that has memory files
    (v2's root cgroup has none, so look in this process's cgroup, then the root's children)."""
    if layout.dirs["memory"] != layout.unified:
        return os.path.join(layout.dirs["memory"], "memory.memsw.limit_in_bytes")
    top = next(_on_host(m.path, sys_root) for m in layout.mounts if m.version == 2)
    children = sorted(e.path for e in os.scandir(top) if e.is_dir()) if os.path.isdir(top) else []
    for d in (layout.unified, *children):
        if d and os.path.exists(os.path.join(d, "memory.max")):
            return os.path.join(d, "memory.swap.max")
    return None


def check_swap(layout: CgroupLayout, proc_root: str, sys_root: str) -> Check:
    fix = "add swapaccount=1 to the kernel command line (GRUB_CMDLINE_LINUX) and reboot"
    path = _swap_file(layout, sys_root)
    if path is None:      # no cgroup to look in: only the kernel command line can tell
        off = "swapaccount=0" in (_read(os.path.join(proc_root, "cmdline")) or "")
        detail = "off (swapaccount=0)" if off else "assumed on (no cgroup with memory files)"
        return Check("swap accounting", not off, detail, fix if off else None, required=False)
    if os.path.exists(path):
        return Check("swap accounting", True, os.path.basename(path), required=False)
    return Check("swap accounting", False,
                 f"no {os.path.basename(path)}: a container can swap beyond its memory limit",
                 fix, required=False)


def check_cgroup_writable(layout: CgroupLayout, euid: int) -> Check:
    """Can this process make child cgroups?  v2 needs a writable cgroup.subtree_control too
    (delegation); v1 has no safe delegation to users."""
    if layout.version == "v2":
        paths = [layout.unified, os.path.join(layout.unified, "cgroup.subtree_control")]
    else:
        paths = sorted({d for c, d in layout.v1_dirs().items() if c in LIMIT_CONTROLLERS})
    denied = [p for p in paths if not os.access(p, os.W_OK)]
    if not denied:
        return Check("cgroup writable", True, ", ".join(paths), required=False)
    null = ("; without it limits are rlimits only (memory as address space, processes "
            "per user namespace, no cpu limit) and the first cell's footer says so")
    if euid != 0 and layout.version == "v2":
        fix = ("run under a delegated cgroup: systemd-run --user --scope -p Delegate=yes <command>, "
               "or install the kernel with sandbox-kernel install --systemd-scope" + null)
    elif euid != 0:
        fix = ("run as root, or boot with cgroup v2 alone (systemd.unified_cgroup_hierarchy=1) "
               "and delegate a subtree: cgroup v1 cannot be delegated to a user safely" + null)
    else:
        fix = ("mount -o remount,rw the cgroup file systems (in a container: run it with "
               "--privileged or --cgroupns=private)")
    return Check("cgroup writable", False, "not writable: " + ", ".join(denied), fix,
                 required=False)


def check_overlayfs(proc_root: str) -> Check:
    text = _read(os.path.join(proc_root, "filesystems")) or ""
    if "overlay" in (line.split()[-1] for line in text.splitlines() if line.strip()):
        return Check("overlayfs", True, "in /proc/filesystems")
    return Check("overlayfs", False, "not in /proc/filesystems: no image layers",
                 "modprobe overlay (and add overlay to /etc/modules to load it at boot)")


def check_seccomp(proc_root: str, status: dict[str, str]) -> Check:
    fix = "rebuild the kernel with CONFIG_SECCOMP=y and CONFIG_SECCOMP_FILTER=y"
    if "Seccomp" not in status:
        return Check("seccomp", False, "no Seccomp field in /proc/self/status", fix)
    actions = _sysctl(proc_root, "kernel.seccomp.actions_avail")
    if actions is not None and "errno" not in actions.split():
        return Check("seccomp", False, f"filters cannot return errno (actions: {actions})", fix)
    return Check("seccomp", True, f"mode {status['Seccomp']}, actions: {actions or 'unknown'}")


def check_pyroute2() -> Check:
    try:
        module = importlib.import_module("pyroute2")
    except ImportError as e:
        return Check("pyroute2", False, f"cannot import: {e}", "pip install pyroute2")
    return Check("pyroute2", True, f"version {getattr(module, '__version__', 'unknown')}")


def check_idmap_tools(euid: int) -> Check:
    """newuidmap/newgidmap (setuid, from the uidmap package) map a user's subordinate ids.
    Without them a rootless container maps one id: it still runs (optional)."""
    missing = [t for t in ("newuidmap", "newgidmap") if shutil.which(t) is None]
    if not missing:
        return Check("newuidmap/newgidmap", True, shutil.which("newuidmap"), required=False)
    return Check("newuidmap/newgidmap", False, "not on PATH: " + " ".join(missing) +
                 (": a rootless container maps one id (its workload is root of its user "
                  "namespace, with no capability)" if euid != 0 else ""),
                 "apt-get install uidmap (dnf install shadow-utils)", required=False)


def _user_name(euid: int) -> str:
    try:
        return pwd.getpwuid(euid).pw_name
    except KeyError:
        return str(euid)


def check_subordinate_ids(euid: int, etc_root: str = "/etc") -> Check:
    """The user's ranges in /etc/subuid and /etc/subgid (what newuidmap may map)."""
    from .userns import subordinate_range
    name = _user_name(euid)
    found = {f: subordinate_range(os.path.join(etc_root, f), name, euid) for f in ("subuid", "subgid")}
    missing = [f"/etc/{f}" for f, r in found.items() if r is None]
    if not missing:
        start, count = found["subuid"]
        return Check("subordinate ids", True, f"{name}: {start}+{count}; the workload runs as "
                     "uid 65532 inside" if count >= 65533 else f"{name}: {start}+{count}",
                     required=False)
    return Check("subordinate ids", False, f"no range for {name} in {' '.join(missing)}: "
                 "one id is mapped (the workload is root of its user namespace)",
                 f"as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name}",
                 required=False)


def check_systemd_scope(euid: int, layout: CgroupLayout, run_root: str = "/run") -> Check:
    """Can ``systemd-run --user --scope -p Delegate=yes`` give this user a cgroup?"""
    name = "systemd user scope"
    if shutil.which("systemd-run") is None:
        return Check(name, False, "no systemd-run on PATH", "a systemd host has it (systemd package)",
                     required=False)
    if layout.version != "v2":
        return Check(name, False, f"cgroups are {layout.version}: systemd delegates only on cgroup v2",
                     "boot with systemd.unified_cgroup_hierarchy=1 (the default on current "
                     "distributions)", required=False)
    manager = os.path.join(run_root, "user", str(euid), "systemd", "private")
    if not os.path.exists(manager):
        return Check(name, False, f"no user systemd running ({manager} is missing)",
                     f"log in through a session that starts systemd --user, or as root: "
                     f"loginctl enable-linger {_user_name(euid)}", required=False)
    return Check(name, True, "possible: sandbox-kernel install --systemd-scope starts the kernel "
                 "in a delegated cgroup", required=False)


def check_ceiling(layout: CgroupLayout, euid: int) -> Check | None:
    """The per-user ceiling root set (sandbox-kernel delegate) over this process, if any:
    every container started from here shares it.  None for root outside any ceiling."""
    from .doctor_ceiling import ceiling_row
    row = ceiling_row(layout.dirs, euid, _user_name(euid))
    return None if row is None else Check("ceiling", *row, required=False)


def check_container_probe(euid: int) -> Check:
    """Namespaces and mounts tried for real (doctor_probe.py): what a container runtime
    around this process (a pod's seccomp, AppArmor, procMount) may refuse."""
    from .doctor_probe import explain, probe
    failure = probe()
    if failure is None:
        users = "user, " if euid else ""
        return Check("container probe", True, f"{users}mount and pid namespaces, tmpfs and proc work")
    detail, fix = explain(failure)
    return Check("container probe", False, detail, fix)


def check_rootless_network() -> Check:
    return Check("rootless network", True, "none (loopback only) and host work; a bridge needs "
                 "root (a veth pair and NAT in the host's network namespace)", required=False)


def diagnose(proc_root: str = "/proc", sys_root: str = "/sys", etc_root: str = "/etc",
             run_root: str = "/run") -> list[Check]:
    """Every check, in the order a container needs them."""
    status = _status(proc_root)
    euid = _euid(status)
    layout = cgroup_layout(proc_root, sys_root)
    checks = [check_root(euid), check_userns(proc_root, euid), check_namespaces(proc_root),
              check_cgroups(layout)]
    if layout.version != "none":
        checks.append(check_controllers(layout))
        if "memory" in layout.dirs:
            checks.append(check_swap(layout, proc_root, sys_root))
        checks.append(check_cgroup_writable(layout, euid))
        ceiling = check_ceiling(layout, euid)
        checks += [ceiling] if ceiling is not None else []
    checks += [check_overlayfs(proc_root), check_seccomp(proc_root, status)]
    if proc_root == "/proc":   # the real host: try the steps (a fake one in the unit tests cannot)
        checks.append(check_container_probe(euid))
    checks += [check_pyroute2(), check_idmap_tools(euid)]
    if euid != 0:
        checks += [check_subordinate_ids(euid, etc_root), check_systemd_scope(euid, layout, run_root),
                   check_rootless_network()]
    return checks


def can_run_containers(checks: list[Check]) -> bool:
    return all(c.ok for c in checks if c.required)


# ---- output -------------------------------------------------------------------------

def _status_word(check: Check) -> str:
    return "ok" if check.ok else "missing" if check.required else "missing (optional)"


def render(checks: list[Check]) -> str:
    """A table for a terminal; each fix on its own line under the check it fixes."""
    rows = [("check", "status", "detail")] + [(c.name, _status_word(c), c.detail) for c in checks]
    w0, w1 = (max(len(r[i]) for r in rows) for i in (0, 1))
    lines = [f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows]
    for i, check in reversed(list(enumerate(checks, start=1))):
        if not check.ok and check.fix:
            lines.insert(i + 1, " " * (w0 + w1 + 4) + "fix: " + check.fix)
    lines.append("")
    lines.append(_summary(checks))
    return "\n".join(lines)


def _summary(checks: list[Check]) -> str:
    if not can_run_containers(checks):
        missing = ", ".join(c.name for c in checks if c.required and not c.ok)
        return f"Containers cannot run on this host: fix {missing}."
    optional = ", ".join(c.name for c in checks if not c.ok)
    return "Containers can run on this host." + (f" Missing but optional: {optional}."
                                                 if optional else "")


def main(argv: list[str] | None = None) -> int:
    """Check what this host supports; exit 0 if containers can run here, else 1.

    Example::

        sandbox-kernel doctor           # a table, with how to fix each missing piece
        sandbox-kernel doctor --json    # [{"name": ..., "ok": ..., "fix": ...}, ...]
    """
    parser = argparse.ArgumentParser(prog="sandbox-kernel doctor", description=main.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the checks as a JSON list")
    args = parser.parse_args(argv)
    checks = diagnose()
    print(json.dumps([asdict(c) for c in checks], indent=2) if args.json else render(checks))
    return 0 if can_run_containers(checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
