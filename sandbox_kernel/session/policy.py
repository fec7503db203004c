"""What the author of a notebook may ask of the host: the sandbox kernel's policy.

In the sandbox kernel the notebook's author is not trusted (a student, an
LLM agent, whoever shared the notebook), yet its ``%container`` lines run on
the host: they set limits, start sessions, import, pull, build and remove
images.  Whoever installs the kernelspec sets a policy, and every one of
those host-side actions asks it first (``check_*``); the notebook cannot
change it (it reaches the host only through ``%container`` lines, and none
of them touches the policy or the kernel's configuration).

Two presets:

    rule                    classroom (the sandbox kernel's default)      trusted
    limits                  capped: the kernel's own limits are the caps    no caps
                            (or --max-memory/--max-cpus/--max-pids/
                            --max-timeout/--max-disk); no "no limit"
    sessions                one: the kernel's own (--max-sessions)          any number
    session network         none, or the kernel's own --net                 none, host or bridge
    session --allow         (--net bridge) names within the kernel's own    any names, or '*'
                            --allow (--may-allow NAMES), subdomains too;
                            '*' only if the kernel's is '*'
    session --rate          (--net bridge) at most the kernel's own --rate  any rate, or none
                            (--max-rate); none only if it has none
    session image           any image there is                              any image
    image ls, inspect       allowed                                         allowed
    image import            only from the --import-dir directories          from anywhere
                            (none by default)
    image pull              only from the --pull-registry registries        from anywhere
                            (none by default); each connection is asked,    (http/https only)
                            redirects and token realms too
    image build             net none (--build-network host allows host);   net host (as before)
                            from stored images whose files are not the
                            host's (the build runs as uid 0)
    image rm                only images this kernel made                    any image
    new image names         NAME[:TAG] of a-z 0-9 . _ -: no '/'             the store's rule
    the notebook's dir      read-only, writes stay in the container         read-write
                            (--notebook-dir overlay|ro|rw|none; --notebook-root DIR|parent
                            mounts DIR whole when the notebook's is below it)

Every refusal is ``PolicyRefused``: one line that names the rule, and who
can change it and how.  A refusal happens before anything is done on the
host: no file read, no socket opened, no container started.

``%%container`` in an ordinary kernel runs ``trusted``: there the notebook's
author is the host user.

The parts::

    policy.py           Policy: the rules and their checks, the presets, the installer's overrides
    policy_notebook.py  the notebook's directory in a container: which one, how mounted
    policy_values.py    limits, registries, image names and directories as typed, and shown
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace

from ..runtime import images
from ..runtime.spec import DEFAULT_DISK, SpecError, parse_network
from . import options, stats as stats_contract
from .policy_notebook import (  # noqa: F401 -- moved; commands, settings and tests use policy's names
    NOTEBOOK_DIR_MODES, NOTEBOOK_DIR_WORDS, SYSTEM_DIRS, SYSTEM_TREES, NotebookDir, home_directories,
    notebook_dir_for, parse_notebook_dir, parse_notebook_root, unsafe_directory)
from .policy_values import (  # noqa: F401 -- moved; commands, settings and tests use policy's names
    DOCKER_HUB_ALIASES, NO_LIMIT, below, check_reference, normal_registry, on_host, parse_limit,
    real_dir, show, typed)

CLASSROOM, TRUSTED = "classroom", "trusted"
PRESETS = (CLASSROOM, TRUSTED)
BUILD_NETWORKS = ("none", "host")
CAPPED = tuple(option.name for option in options.OPTIONS if option.cap)   # the schema says which
INSTALL = "sandbox-kernel install"
# a new image's name in the classroom: one path component, Docker's NAME[:TAG]
_NEW_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?$")


class PolicyRefused(ValueError):
    """The policy refuses an action; the message is one line for the user (a
    ValueError: the magics show those as one line too)."""

    def __init__(self, policy: str, rule: str, fix: str):
        self.policy, self.rule, self.fix = policy, rule, fix
        super().__init__(f"refused by the {policy} policy: {rule}; {fix}")


@dataclass(frozen=True)
class Policy:
    """The rules; None means "no cap" for a cap and "any" for a list."""
    name: str = TRUSTED
    max_memory: int | None = None          # bytes
    max_cpus: float | None = None
    max_pids: int | None = None
    max_timeout: float | None = None       # seconds
    max_disk: int | None = None            # bytes of a writable layer
    max_sessions: int | None = None
    networks: tuple | None = None          # a session's networks
    may_allow: tuple | None = None         # names a bridged session may --allow, with their
                                           # subdomains (None: any; ("*",): any and '*' itself)
    max_rate: int | None = None            # bits/s: a bridged session's --rate at most
    images: tuple | None = None            # images a session may run (None: all there are)
    import_dirs: tuple | None = None       # real paths an import may read below
    pull_registries: tuple | None = None   # host[:port] a pull may contact
    build_networks: tuple = ("host", "none")   # the first is a build's default
    build_bases: tuple | None = None       # None: see host_builds
    host_builds: bool = True               # with build_bases None: may a build start on the host?
    remove_any: bool = True                # False: rm only what this kernel made
    strict_names: bool = False             # new images: NAME[:TAG], no '/'
    notebook_dir: str = "rw"               # the notebook's directory: overlay | ro | rw | none
    notebook_root: str | None = None       # bound instead when the notebook's dir is below it:
                                           # a real path, or "parent"; None: the dir alone

    # -- limits ------------------------------------------------------------------

    def cap(self, setting: str):
        return getattr(self, f"max_{setting}")

    def check_limits(self, limits: dict) -> None:
        """``limits``: parsed values (None: no limit) of memory, cpus, pids,
        timeout, disk, those that are being set; each must be within its cap."""
        for setting, value in limits.items():
            cap = self.cap(setting) if setting in CAPPED else None
            if cap is None:
                continue
            if value is None:
                self._refuse(f"no {setting} limit is above the cap of {show(setting, cap)}",
                             "sets the caps", f"{INSTALL} --max-{setting} none")
            if value > cap:
                self._refuse(f"{setting} {show(setting, value)} is above the cap of "
                             f"{show(setting, cap)}", "sets the caps",
                             f"{INSTALL} --max-{setting} {typed(setting, value)}")

    def check_limit_strings(self, strings: dict) -> dict:
        """What a user typed (``--memory 2G``), parsed and checked; the parsed
        values.  SpecError for a value that is not one."""
        parsed = {setting: parse_limit(setting, text) for setting, text in strings.items()
                  if setting in CAPPED and text is not None}
        self.check_limits(parsed)
        return parsed

    def build_limits(self, limits):
        """A build's limits: the caps, where there are (a build never runs unbounded
        in a policy with caps); runtime.spec.Limits."""
        given = {s: self.cap(s) for s in CAPPED if self.cap(s) is not None}
        return replace(limits, **given)

    def check_sessions(self, existing: int) -> None:
        """A new session when ``existing`` run already."""
        if self.max_sessions is not None and existing >= self.max_sessions:
            self._refuse(f"a new session would make {existing + 1}, above the cap of "
                         f"{self.max_sessions} (use the kernel's own session: no --name)",
                         "sets the caps", f"{INSTALL} --max-sessions 2")

    def check_network(self, net: str) -> str:
        network = parse_network(net)
        if self.networks is not None and network not in self.networks:
            self._refuse(f"a session's network may be {' or '.join(self.networks)}, not {network}",
                         "sets the kernel's network", f"{INSTALL} --net host")
        return network

    def check_egress(self, network: str, allow=(), rate=None) -> None:
        """A bridged session's egress (``allow``: runtime.spec.parse_allow's
        tuple; ``rate``: bits/s or None) within the policy's: every name
        allowed covered by may_allow (a name covers its subdomains, as the
        resolver matches them), the rate at most max_rate.  Other networks
        have no egress to check: none has none, host is the host's (check_network)."""
        if network != "bridge":
            return
        allow = options.parse_allow_option(allow or "")      # the names as the resolver has them
        outside = [name for name in allow if not covered(name, self.may_allow)]
        if outside:
            wider = ",".join(dict.fromkeys((*(self.may_allow or ()), *outside)))
            self._refuse(f"a session may --allow {_names(self.may_allow)}, not {', '.join(outside)}",
                         "lists the names", f"{INSTALL} --may-allow {wider}")
        if self.max_rate is not None and (rate is None or rate > self.max_rate):
            asked = "no rate limit" if rate is None else f"--rate {stats_contract.format_rate(rate)}"
            self._refuse(f"{asked} is above the cap of {stats_contract.format_rate(self.max_rate)}",
                         "sets the caps", f"{INSTALL} --max-rate {typed_rate(rate)}")

    # -- images ------------------------------------------------------------------

    def check_image(self, name: str) -> str:
        """An image a session may run."""
        check_reference(name)
        if self.images is not None and name not in self.images:
            self._refuse(f"sessions may run the images {', '.join(self.images)}, not {name!r}",
                         "lists them", "c.SandboxPolicy.images in a config file")
        return name

    def check_new_name(self, name: str) -> str:
        """The name of an image this kernel is about to make."""
        images.check_name(name)           # the store's rule: ImageError, also for 'host'
        if self.strict_names and not _NEW_NAME.match(name):
            raise PolicyRefused(self.name, f"invalid image name {name!r}: a new image's name is "
                                f"NAME[:TAG] of a-z, 0-9, . _ - (no '/'), e.g. mytools:1",
                                "choose another name (give --name to import or pull)")
        return name

    def check_import(self, path: str) -> str:
        """The real path an import may read: below one of import_dirs; no
        '..', no symlink that leads out.  Nothing is opened here."""
        if self.import_dirs is None:
            return path
        if ".." in path.split(os.sep):
            self._refuse(f"the import path {path!r} has '..': give a path below "
                         f"{self._dirs()}", "lists the directories", f"{INSTALL} --import-dir DIR")
        real = os.path.realpath(path)
        if not any(below(real, allowed) for allowed in self.import_dirs):
            where = real if real == os.path.abspath(path) else f"{real} (where {path!r} leads)"
            self._refuse(f"import reads only below {self._dirs()}, not {where}",
                         "lists the directories", f"{INSTALL} --import-dir DIR")
        return real

    def _dirs(self) -> str:
        return ", ".join(self.import_dirs) if self.import_dirs else "listed directories (none is)"

    def check_pull(self, reference: str) -> str:
        """The registry a pull would contact, before any socket is opened."""
        from ..runtime import registry
        registry_name = normal_registry(registry.parse_reference(reference).registry)
        if self.pull_registries is not None and registry_name not in self.pull_registries:
            allowed = ", ".join(self.pull_registries) or "listed registries (none is)"
            self._refuse(f"pull contacts only {allowed}, not {registry_name}",
                         "lists the registries", f"{INSTALL} --pull-registry HOST:PORT")
        return registry_name

    def check_contact(self, host: str, port: int) -> None:
        """Asked by a pull before EVERY connection it opens: the registry's
        first request, each redirect hop and the token realm, so that a
        listed registry cannot send the kernel elsewhere.  An entry HOST:PORT
        allows that port; HOST alone allows 443 and 80."""
        if self.pull_registries is None:
            return
        name = f"[{host}]" if ":" in host else host
        address = normal_registry(f"{name}:{port}")
        default_port = port in (80, 443) and normal_registry(name) in self.pull_registries
        if address in self.pull_registries or default_port:
            return
        allowed = ", ".join(self.pull_registries) or "listed registries (none is)"
        self._refuse(f"pull contacts only {allowed}, not {address}, where the registry sent it "
                     f"(a redirect or its token service; registries serving blobs from a CDN or "
                     f"tokens from an auth host need those hosts listed too)",
                     "lists the hosts", f"{INSTALL} --pull-registry HOST:PORT for each")

    def build_network(self, requested: str | None) -> str:
        network = parse_build_network(requested) if requested else self.build_networks[0]
        if network not in self.build_networks:
            self._refuse(f"a build's network may be {' or '.join(self.build_networks)}, not {network}",
                         "sets it", f"{INSTALL} --build-network host")
        return network

    def check_build_base(self, base: str) -> str:
        check_reference(base)
        if self.build_bases is not None:
            if base not in self.build_bases:
                self._refuse(f"builds may start from {', '.join(self.build_bases) or 'no image'}, "
                             f"not {base!r}", "lists them", "c.SandboxPolicy.build_bases in a config file")
            return base
        self.check_image(base)
        if not self.host_builds and on_host(base):
            self._refuse(f"a build runs as uid 0 and may not start on the host's files ({base!r} is "
                         f"{'the host image' if base == images.HOST else 'built on the host'}): "
                         f"start from a stored image", "may allow it",
                         "c.SandboxPolicy.build_bases = ['host'] in a config file")
        return base

    def check_remove(self, name: str, made: set) -> str:
        check_reference(name)
        if not self.remove_any and name not in made:
            mine = ", ".join(sorted(made)) or "none yet"
            self._refuse(f"rm removes only images this kernel made ({mine}), not {name!r}",
                         "may lift it", f"{INSTALL} --policy trusted")
        return name

    # -- the notebook's directory ---------------------------------------------------

    def notebook_mount(self, path: str | None) -> NotebookDir:
        """How the notebook's directory ``path`` (the kernel's working
        directory) is in the container under this policy's notebook_dir and
        notebook_root (policy_notebook.notebook_dir_for says how)."""
        return notebook_dir_for(path, mode=self.notebook_dir, root=self.notebook_root,
                                policy_name=self.name)

    # -- what it says ------------------------------------------------------------

    def caps_text(self) -> str:
        caps = [f"{s} {show(s, self.cap(s)) if self.cap(s) is not None else 'no cap'}" for s in CAPPED]
        caps.append(f"sessions {self.max_sessions if self.max_sessions is not None else 'no cap'}")
        return ", ".join(caps)

    def describe(self) -> str:
        """One line for %container status."""
        return f"{self.name} (caps: {self.caps_text()}; {'; '.join(self.rules())})"

    def rules(self) -> list[str]:
        def listed(values, none_word):
            return "any" if values is None else (", ".join(values) or none_word)
        if self.build_bases is not None:
            bases = listed(self.build_bases, "no image")
        else:
            bases = "any image" if self.host_builds else "stored images not on the host"
        return [f"net {listed(self.networks, 'none')}",
                f"allow {_names(self.may_allow)}",
                f"rate {'no cap' if self.max_rate is None else stats_contract.format_rate(self.max_rate)}",
                f"import from {listed(self.import_dirs, 'no directory')}",
                f"pull from {listed(self.pull_registries, 'no registry')}",
                f"build net {'/'.join(self.build_networks)} from {bases}",
                f"rm {'any image' if self.remove_any else 'images this kernel made'}",
                f"notebook dir {NOTEBOOK_DIR_WORDS[self.notebook_dir]}"
                + (f" (root {self.notebook_root})" if self.notebook_root else "")]

    def as_dict(self) -> dict:
        """For the side panel: plain JSON."""
        return {"name": self.name,
                "caps": {s: self.cap(s) for s in (*CAPPED, "sessions")},
                "networks": _list(self.networks), "images": _list(self.images),
                "may_allow": _list(self.may_allow), "max_rate": self.max_rate,
                "import_dirs": _list(self.import_dirs), "pull_registries": _list(self.pull_registries),
                "build_networks": list(self.build_networks), "build_bases": _list(self.build_bases),
                "host_builds": self.host_builds, "remove_any": self.remove_any,
                "notebook_dir": self.notebook_dir, "notebook_root": self.notebook_root,
                "text": self.describe()}

    def _refuse(self, rule: str, does: str, how: str) -> None:
        """PolicyRefused: the rule, then who can change it and how (the notebook cannot)."""
        raise PolicyRefused(self.name, rule, f"the kernel's installer {does}: {how}")


# ---------------------------------------------------------------------------
# Presets


def trusted() -> Policy:
    """Today's behaviour: one person on their own machine."""
    return Policy(name=TRUSTED)


def classroom(limits: dict, net: str = "none", allow=(), rate=None) -> Policy:
    """The kernel's own limits (parsed; None: no limit) are the caps; its
    network and none are the sessions' networks, its --allow the names a
    session may allow (none by default) and its --rate the rate's cap;
    nothing is imported or pulled; builds run with net none, from stored
    images not on the host."""
    return Policy(name=CLASSROOM, max_memory=limits.get("memory"), max_cpus=limits.get("cpus"),
                  max_pids=limits.get("pids"), max_timeout=limits.get("timeout"),
                  max_disk=limits.get("disk", DEFAULT_DISK), max_sessions=1,
                  networks=tuple(dict.fromkeys(("none", parse_network(net)))),
                  may_allow=options.parse_allow_option(allow or ""),
                  max_rate=options.parse_rate_option(rate), import_dirs=(),
                  pull_registries=(), build_networks=("none",), host_builds=False,
                  remove_any=False, strict_names=True, notebook_dir="overlay")


def preset(name: str, limits: dict, net: str = "none", allow=(), rate=None) -> Policy:
    if name == CLASSROOM:
        return classroom(limits, net, allow, rate)
    if name == TRUSTED:
        return trusted()
    raise SpecError("policy", name, " or ".join(PRESETS))


def with_overrides(policy: Policy, overrides: dict) -> Policy:
    """``policy`` with the installer's explicit choices (None: not given):
    max_* as typed ("2G", "none": no cap), lists of strings, a build network,
    may_allow (names as --allow takes them, a string or a list) and max_rate."""
    fields = {}
    for setting in (*CAPPED, "sessions"):
        text = overrides.get(f"max_{setting}")
        if text is not None:
            fields[f"max_{setting}"] = parse_limit(setting, text)
    if overrides.get("import_dirs") is not None:
        fields["import_dirs"] = tuple(real_dir(d) for d in overrides["import_dirs"])
    if overrides.get("pull_registries") is not None:
        fields["pull_registries"] = tuple(normal_registry(r) for r in overrides["pull_registries"])
    if overrides.get("build_network"):
        network = parse_build_network(overrides["build_network"])
        fields["build_networks"] = tuple(dict.fromkeys((network, "none")))
    for key in ("images", "build_bases"):
        if overrides.get(key) is not None:
            fields[key] = tuple(check_reference(n) for n in overrides[key])
    if overrides.get("may_allow") is not None:
        fields["may_allow"] = options.parse_allow_option(_joined(overrides["may_allow"]))
    if overrides.get("max_rate") is not None:
        fields["max_rate"] = options.parse_rate_option(overrides["max_rate"])
    if overrides.get("notebook_dir"):
        fields["notebook_dir"] = parse_notebook_dir(overrides["notebook_dir"])
    if overrides.get("notebook_root"):
        fields["notebook_root"] = parse_notebook_root(overrides["notebook_root"])
    return replace(policy, **fields)


def _list(values):
    return None if values is None else list(values)


def parse_build_network(text) -> str:
    """A build's network: none or host (a build runs no session: no bridge,
    no allowlist for it to keep)."""
    network = parse_network(text)
    if network not in BUILD_NETWORKS:
        raise SpecError("build network", text, " or ".join(BUILD_NETWORKS))
    return network


def covered(name: str, may_allow: tuple | None) -> bool:
    """Whether ``may_allow`` covers the name: itself or a parent domain is
    listed ("pypi.org" covers "files.pypi.org", not "evilpypi.org"), or
    "*" is; "*" (open egress) only by "*"."""
    if may_allow is None or "*" in may_allow:
        return True
    return name != "*" and any(name == cap or name.endswith("." + cap) for cap in may_allow)


def _names(may_allow: tuple | None) -> str:
    if may_allow is None:
        return "any names"
    return "any destination ('*')" if "*" in may_allow else (", ".join(may_allow) or "no name")


def _joined(values) -> str:
    return values if isinstance(values, str) else ",".join(map(str, values))


def typed_rate(bits) -> str:
    """A rate as --rate and --max-rate take it: 10mbit, 1500kbit, none."""
    if bits is None:
        return "none"
    for unit, scale in (("gbit", 10 ** 9), ("mbit", 10 ** 6), ("kbit", 10 ** 3)):
        if bits % scale == 0:
            return f"{bits // scale}{unit}"
    return str(bits)
