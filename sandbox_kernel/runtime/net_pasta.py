"""Rootless ``--net bridge`` through pasta (Debian's ``passt`` package), or
one line that says why not.

Without root there is no host bridge, no veth, no nftables of the host and
no tc: pasta gives the container's network namespace a tap device whose
packets become ordinary sockets of the pasta process, which runs as the
user.  What that can and cannot keep:

    --allow '*'        open egress, as the user's own programs have it: yes
    --allow NAMES      no: pasta has no per-destination filter, and the
                       resolver and the nftables set that keep an allowlist
                       (net_filter.py, net_resolver.py) need root on the host
    no --allow         nothing leaves: that is --net none, said plainly
    --rate             no: there is no host-side veth for tc to shape

So rootless, ``--net bridge`` runs only with ``--allow '*'`` and no
``--rate``; every other case refuses with one line (``check``) before
anything starts.  It never gives open egress that was not asked for.

The options pasta gets, and why:

    --config-net       addresses, routes and the tap brought up in the namespace
    -t none -u none    no port of the host forwarded into the container
    -T none -U none    the container's own loopback ports are not the host's:
                       pasta's default (auto) would let a cell reach what
                       listens on the host's 127.0.0.1 (the Jupyter server)
    --no-map-gw        nor is the gateway's address the host's loopback
    -f -q -P FILE      in the foreground (its owner stops it with the container),
                       quiet, and FILE written once it is ready

pasta also quits by itself when the namespace's last process is gone.

Imports: runtime.spec (SpecError) only.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

from .spec import SpecError

TUN = "/dev/net/tun"          # pasta's device: it must be the user's to open (0666 on Debian)
READY_SECONDS = 10.0          # a start that takes longer is a failure, said in one line
STOP_SECONDS = 2.0
ISOLATING_OPTIONS = ("--config-net", "-t", "none", "-u", "none", "-T", "none", "-U", "none",
                     "--no-map-gw")


class RootlessNetRefused(SpecError):
    """Rootless, ``--net bridge`` cannot keep what was asked: one line saying
    what cannot be enforced and what can be done instead."""

    def __init__(self, reason: str, instead: str):
        self.field, self.value, self.accepted = "net", "bridge", instead
        ValueError.__init__(self, f"rootless --net bridge refused: {reason}; {instead}")


def pasta_path() -> str | None:
    """The pasta program, or None where passt is not installed."""
    return shutil.which("pasta")


def check(allow: tuple[str, ...], rate: int | None, *, path: str | None = None,
          tun: str = TUN) -> str:
    """The pasta program a rootless bridge with this ``allow`` and ``rate``
    would run; RootlessNetRefused when pasta cannot keep them, is missing,
    or cannot open the tun device."""
    if rate is not None:
        raise RootlessNetRefused("--rate needs a host veth for tc, which only root can make",
                                 "run as root, or leave out --rate")
    if tuple(allow) != ("*",):
        asked = "no --allow (nothing may leave)" if not allow else f"--allow {','.join(allow)}"
        raise RootlessNetRefused(f"{asked} cannot be enforced without root (pasta has no "
                                 f"per-destination filter)",
                                 "run as root for an allowlist, use --net none for no egress, "
                                 "or --allow '*' for open egress through pasta")
    program = path or pasta_path()
    if program is None:
        raise RootlessNetRefused("pasta is not installed",
                                 "install Debian's passt package, or run as root")
    if not os.access(tun, os.R_OK | os.W_OK):
        raise RootlessNetRefused(f"pasta cannot open {tun} as this user ({_mode(tun)})",
                                 "the machine's admin can make it mode 0666 (Debian's default), "
                                 "or run as root")
    return program


def _mode(path: str) -> str:
    try:
        info = os.stat(path)
    except OSError as error:
        return f"{error.strerror.lower()}"
    return f"mode {info.st_mode & 0o7777:04o}, owner uid {info.st_uid}"


def pasta_argv(program: str, pid: int, pid_file: str) -> list[str]:
    """pasta's command line to give the namespaces of ``pid`` their network."""
    return [program, *ISOLATING_OPTIONS, "-f", "-q", "-P", pid_file, str(pid)]


class Pasta:
    """One pasta process serving one container's network namespace."""

    def __init__(self, process: subprocess.Popen, workdir: str):
        self.process = process
        self._workdir = workdir

    @classmethod
    def attach(cls, pid: int, program: str) -> "Pasta":
        """pasta for the user and network namespaces of ``pid`` (the
        container's init), once it is ready; OSError naming the step, the
        pid and pasta's own words when it is not."""
        workdir = tempfile.mkdtemp(prefix="sbk-pasta-")
        pid_file = os.path.join(workdir, "pid")
        process = subprocess.Popen(pasta_argv(program, pid, pid_file), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   close_fds=True)
        pasta = cls(process, workdir)
        try:
            pasta._await_ready(pid_file, pid)
        except BaseException:
            pasta.stop()
            raise
        return pasta

    def _await_ready(self, pid_file: str, pid: int) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while not os.path.exists(pid_file):
            if self.process.poll() is not None:
                words = " ".join(self.process.stderr.read().decode(errors="replace").split())
                raise OSError(f"pasta for the network of pid {pid} exited with "
                              f"{self.process.returncode}: {words or 'no message'}")
            if time.monotonic() > deadline:
                raise OSError(f"pasta for the network of pid {pid} was not ready after "
                              f"{READY_SECONDS:g} s")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop pasta (it also quits by itself once the namespace is gone)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
        shutil.rmtree(self._workdir, ignore_errors=True)
