"""The three processes behind one container, and what each one does.

    owner (any Python process, may have threads)
      |  fork (owner single-threaded) or exec `python -m ...launcher FD`
      v
    launcher  host namespaces, outside the cgroup; single-threaded
      |  [rootless: unshare(NEWUSER), its id map written: userns.py]
      |  unshare(NEWPID), fork
      v
    init      PID 1 of the new pid namespace
      |  bind to CPUs, unshare(NEWNS|NEWUTS|NEWIPC[|NEWNET]), mount plan,
      |  pivot_root, hostname, loopback; [the launcher puts init into the
      |  cgroup meanwhile] wait for that, unshare(NEWCGROUP); fork
      v
    workload  rlimits, drop capabilities, uid, no_new_privs, seccomp; exec

Channels, all pipes the owner creates:

    result   launcher -> owner: the command's exit code, one line, when init
             exits.  The launcher then stays until the lifeline closes.
    status   launcher/init/workload -> owner.  Each holds the write end until
             it is done with setup (the workload's copy is close-on-exec), so
             EOF means "the command is running".  A setup step that fails
             writes one JSON line {"step", "error", "errno"} and the owner
             raises it as ContainerStartError.
    lifeline owner -> launcher.  The owner keeps the write end and never
             writes.  EOF means the owner released the container or died
             (even SIGKILLed, even when the thread that spawned us is gone,
             which PR_SET_PDEATHSIG would confuse with the process dying):
             the launcher then kills what still runs and removes the cgroup
             and state directory, also after the command ended on its own.

The init dies with the launcher (PR_SET_PDEATHSIG, its parent is this
single-threaded launcher), and every process of the pid namespace dies with
the init: nothing outlives its owner.

What the workload can see of init, and of the host through it: init was
forked (from the owner, the zygote or the launcher's interpreter), so its
argv area, which /proc/1/cmdline shows to anyone, holds the owner's command
line (a kernel's connection file, a notebook's path): init writes
"sbk-init" over it, and a workload run in-process from the zygote writes
its own command over the zygote's.  Init makes itself non-dumpable before
the workload exists, so its /proc files belong to the host's root: with a
single id mapped (userns.py) the workload has init's uid, and could
otherwise raise init's oom_score_adj and have the OOM killer end the
container through init, or write init's other owner-writable /proc files.

What it is told is a LauncherConfig (launch_config.py); how the owner starts
it is spawn.py's.  Imports: launch_config, layer_holds, mount_apply, network,
safe_fs, security, syscalls and userns; nothing of the owner's side.
"""
from __future__ import annotations

import errno
import importlib
import json
import mmap
import os
import random
import runpy
import select
import signal
import sys
import time
import traceback

from . import mount_apply, network, safe_fs, security, userns
from . import syscalls as sc
from .launch_config import LauncherConfig, LauncherConfigError
from .layer_holds import hold_lower_dirs

PR_SET_DUMPABLE = 4   # linux/prctl.h
JOINED = b"j"         # launcher -> init: init is in the container's cgroup
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH)


class SetupFailed(Exception):
    def __init__(self, step: str, error: OSError | Exception):
        self.step, self.error = step, error
        super().__init__(f"{step}: {error}")


def _report(status_fd: int, step: str, error: BaseException) -> None:
    message = {"step": step, "error": str(error), "errno": getattr(error, "errno", None)}
    try:
        os.write(status_fd, (json.dumps(message) + "\n").encode())
    except OSError:
        pass  # the owner is gone; nobody is left to tell


def _step(name: str, func, *args) -> None:
    """Run one named setup step; a failure is reported with the step's name."""
    try:
        func(*args)
    except (OSError, ValueError) as error:
        raise SetupFailed(name, error) from error


# --------------------------------------------------------------------- launcher

def launcher_main(config: LauncherConfig) -> int:
    """Runs in the launcher process; returns its exit code."""
    status_fd = config.status_fd
    try:
        sc.set_process_name("sbk-launcher")
        # Our own session: a client that kills its kernel's whole process
        # group (jupyter_client does) must not kill us before we clean up.
        os.setsid()
    except OSError as error:
        _report(status_fd, "setsid", error)
        return 125
    held = hold_lower_dirs(config.plan)
    if config.userns is not None:
        # Rootless: first a user namespace, in which we hold the capabilities
        # every later step needs (for the namespaces made from it on).
        try:
            userns.enter(config.userns)
        except OSError as error:
            _report(status_fd, "user namespace", error)
            return 125
    try:
        sc.unshare(sc.CLONE_NEWPID)
    except OSError as error:
        _report(status_fd, "unshare(CLONE_NEWPID)", error)
        return 125
    joined_r, joined_w = os.pipe2(os.O_CLOEXEC)
    init_pid = os.fork()
    if init_pid == 0:
        for fd in (*held, joined_w):   # the host's record of what is in use; none of the container's
            os.close(fd)
        os._exit(_run_init(config, joined_r))
    os.close(joined_r)
    _join_cgroup(config, init_pid, joined_w)
    os.close(status_fd)
    _let_go_of_the_commands_files(config.pass_fds)
    code = _supervise(config, init_pid)
    if code is None:  # the owner is gone: nobody waits for a result
        _clean_up(config)
        return 137
    _report_exit(config.result_fd, code)
    _await_release(config.lifeline_fd)
    _clean_up(config)
    return code


def _let_go_of_the_commands_files(pass_fds: list[int]) -> None:
    """The command's stdio and passed fds are init's and the workload's now.
    We outlive the command (until release), and an owner reading a pipe or
    socket from it must see EOF when the command is gone, not when we are."""
    for fd in pass_fds:
        os.close(fd)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _supervise(config: LauncherConfig, init_pid: int) -> int | None:
    """Forward signals to init until it exits; its exit code, or None if the
    owner died first (then init and its pid namespace are killed)."""
    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, lambda s, _f: _kill_quietly(init_pid, s))
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _s, _f: None)
    lifeline = config.lifeline_fd
    while True:
        pid, status = os.waitpid(init_pid, os.WNOHANG)
        if pid:
            return _exit_code(status)
        readable, _, _ = select.select([lifeline, wake_r], [], [])
        if lifeline in readable and os.read(lifeline, 1) == b"":
            _kill_quietly(init_pid, signal.SIGKILL)  # the pid namespace dies with its init
            os.waitpid(init_pid, 0)
            return None
        if wake_r in readable:
            _drain(wake_r)


def _report_exit(result_fd: int, code: int) -> None:
    try:
        os.write(result_fd, f"{code}\n".encode())
    except OSError:
        pass  # the owner is gone; _await_release returns at once
    os.close(result_fd)


def _await_release(lifeline: int) -> None:
    """Stay until the owner destroys the container or dies: if it dies
    without destroying, the cgroup and state directory are ours to remove."""
    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    while os.read(lifeline, 1):
        pass


def _clean_up(config: LauncherConfig) -> None:
    """Remove the container's cgroup and state directory (what is left of them)."""
    deadline = time.monotonic() + 5
    for directory in config.cgroup_dirs:
        while os.path.isdir(directory) and time.monotonic() < deadline:
            try:
                os.rmdir(directory)
            except OSError:
                time.sleep(0.01)  # EBUSY until the last member is reaped
    safe_fs.remove_tree(config.state_dir)   # iterative, logs what it cannot remove


# ------------------------------------------------------------------------- init

def _run_init(config: LauncherConfig, joined_r: int) -> int:
    status_fd = config.status_fd
    os.close(config.result_fd)  # the launcher's channels, not ours
    os.close(config.lifeline_fd)
    try:
        workload = _init_setup(config, joined_r)
    except SetupFailed as failure:
        _report(status_fd, failure.step, failure.error)
        return 125
    os.close(status_fd)
    return _reap(workload)


def _init_setup(config: LauncherConfig, joined_r: int) -> int:
    """The container's setup, top to bottom, as named steps.  Returns the
    workload's pid.  The launcher puts us into the cgroup meanwhile
    (_join_cgroup): we wait for it before the cgroup namespace and the
    workload, which therefore never run outside the limits."""
    # Named first: until then ps, the tests and containers_stacking see a
    # second "sbk-launcher".
    _step("name init", sc.set_process_name, "sbk-init")
    _step("die with the launcher", sc.set_pdeathsig, signal.SIGKILL)
    if config.join_self:   # first: what init's mounts charge is the container's
        _step("join cgroup", _join_itself, config.join_files, joined_r)
    _step("bind to CPUs", _bind_to_cpus, config.cpus)
    _step("hide the owner's command line", replace_command_line, "sbk-init")
    _step("unshare namespaces", sc.unshare, _namespace_flags(config.network))
    _step("mount plan", mount_apply.apply, config.plan, config.host_mnt_ns)
    _step("pivot_root", mount_apply.pivot, config.new_root)
    _step("sethostname", sc.sethostname, config.hostname)
    _step("network " + config.network, network.setup_child, config.network)
    if not config.join_self:
        _step("join cgroup", _await_joined, joined_r)
    # after the join: the namespace's root is the container's own group
    _step("unshare the cgroup namespace", sc.unshare, sc.CLONE_NEWCGROUP)
    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)  # until the workload exists
    # before the workload exists: init's /proc files become the host root's
    # (see the module docstring); the workload takes dumpable back at once
    _step("init out of the workload's reach", sc.prctl, PR_SET_DUMPABLE, 0)
    pid = os.fork()
    if pid == 0:
        _run_workload(config)  # never returns
    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, lambda s, _f, pid=pid: _kill_quietly(pid, s))
    return pid


def _namespace_flags(policy: str) -> int:
    """All but the cgroup namespace, which init makes once it is in its group."""
    flags = sc.CLONE_NEWNS | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC
    if network.needs_new_namespace(policy):
        flags |= sc.CLONE_NEWNET
    return flags


def _join_cgroup(config: LauncherConfig, init_pid: int, joined_w: int) -> None:
    """In the launcher: move init (its host pid: our child, not reaped, so
    the number is still its) into the container's cgroup while init makes
    its mounts.  Why here: a migration waits for an RCU grace period (the
    kernel's cgroup_threadgroup_rwsem, taken for writing; 5-15 ms), which
    init's own setup overlaps (more than overlaps: it is the longer).  Not
    where init joins by itself (join_self: v1, see _join_itself).  One byte
    on ``joined_w`` says done; on a failure init is killed and sees none
    (_await_joined)."""
    if config.join_self:
        os.close(joined_w)
        return
    try:
        for path in config.join_files:
            sc.write_proc_file(path, str(init_pid))
    except OSError as error:
        _report(config.status_fd, "join cgroup", error)
        _kill_quietly(init_pid, signal.SIGKILL)
    else:
        os.write(joined_w, JOINED)
    finally:
        os.close(joined_w)


def _join_itself(paths: list[str], joined_r: int) -> None:
    """Init, single-threaded (a fork), moves its one thread, and with it
    the process, into each hierarchy by writing "0" to its ``tasks``: the
    kernel skips its global lock for a thread moving itself, and with it
    the RCU grace period a write of a pid to cgroup.procs waits for (0.4 ms
    instead of 5-15 ms for a container started on its own).  The
    launcher's channel for the join says nothing then: closed."""
    os.close(joined_r)
    for path in paths:
        sc.write_proc_file(path, "0")


def _await_joined(joined_r: int) -> None:
    try:
        done = os.read(joined_r, 1)
    finally:
        os.close(joined_r)
    if done != JOINED:
        raise OSError(errno.ECANCELED, "the launcher could not put init into the container's cgroup")


def _bind_to_cpus(cpus: list[int] | None) -> None:
    # Where no cpuset pins the container (cgroup v2 without cpuset, the null
    # driver), its cpus limit becomes our affinity here, before the workload
    # exists: every process of the container inherits it (cgroups/cpus.py)
    if cpus:
        os.sched_setaffinity(0, cpus)


def _reap(workload: int) -> int:
    """PID 1's job: reap every orphan; exit as the workload exits."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 125
        if pid == workload:
            return _exit_code(status)


# --------------------------------------------------------------------- workload

def _run_workload(config: LauncherConfig) -> None:
    status_fd = config.status_fd
    try:
        _workload_setup(config)
        if config.run_module:
            _run_module_in_process(config)  # never returns
        os.execvpe(config.command[0], config.command, config.env)
    except SetupFailed as failure:
        _report(status_fd, failure.step, failure.error)
        os._exit(125)
    except OSError as error:
        _report(status_fd, f"exec {config.command[0]}", error)
        os._exit(127 if isinstance(error, FileNotFoundError) else 126)
    finally:
        os._exit(125)  # never return into init's code, whatever was raised


def _workload_setup(config: LauncherConfig) -> None:
    # as a fork of init, undumpable; our own /proc files are the workload's
    # (an exec, or a change of uid, then decides as it does for any process)
    _step("dumpable", sc.prctl, PR_SET_DUMPABLE, 1)
    for signum in FORWARDED_SIGNALS + (signal.SIGCHLD,):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    # The OOM killer must pick the user's processes, never init (whose death
    # ends the container without a word).  Raising our score needs no
    # privilege; lowering init's would need CAP_SYS_RESOURCE, which some
    # hosts (like the CI machines) do not give even to root.
    _step("oom_score_adj", sc.write_proc_file, "/proc/self/oom_score_adj", "500")
    _step("close inherited files", _close_fds_except,
          {0, 1, 2, config.status_fd, *config.pass_fds})
    os.set_inheritable(config.status_fd, False)  # closes on a successful exec
    for fd in config.pass_fds:
        os.set_inheritable(fd, True)
    _step("chdir " + config.workdir, os.chdir, config.workdir)
    _step("drop privileges", security.harden, config.uid, config.gid,
          [tuple(r) for r in config.rlimits], config.keep_groups)


def _run_module_in_process(config: LauncherConfig) -> None:
    """``python -m MODULE ARGS`` without exec: this process is a fork of the
    zygote, the same interpreter with MODULE already imported (zygote.py says
    what else it inherits).  Everything execve would reset is reset here."""
    os.environ.clear()
    os.environ.update(config.env)
    random.seed()
    # exec would name the process after the interpreter; without it we would
    # still be "sbk-init" in ps inside, next to the real init
    sc.set_process_name(os.path.basename(config.command[0]))
    # and /proc/self/cmdline would be the zygote's command line; the
    # environ block after it is no longer anyone's (os.environ.clear()
    # unset every variable that pointed into it): the title may use it
    replace_command_line(" ".join(config.command), with_environ=True)
    name, args = config.run_module, config.module_args
    sys.argv = [name, *args]
    os.close(config.status_fd)  # as a successful exec would: we are running
    code = 1
    try:
        module = importlib.import_module(name)
        code = module.main(args) if hasattr(module, "main") else _run_as_main(name)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # noqa: B036 -- report like an interpreter would, then exit
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code if isinstance(code, int) else 0)


def _run_as_main(name: str) -> int:
    runpy.run_module(name, run_name="__main__", alter_sys=True)
    return 0


# ----------------------------------------------------------------------- helpers

def replace_command_line(title: str, with_environ: bool = False) -> None:
    """Make /proc/self/cmdline show ``title``: write it over this process's
    argv area in place, as setproctitle(3) does (moving the area's bounds
    would need PR_SET_MM, so CAP_SYS_RESOURCE).  The rest is zeroed but for
    the area's last byte: non-zero there tells the kernel to show only the
    text up to the first zero (if the title ends right before it, the
    area is exactly the title and its zero, which the kernel shows as it
    is).  ``with_environ``: the environ block right after the area is
    zeroed too and the title may run into it (only once nothing points
    into it any more: see _run_module_in_process)."""
    arg_start, arg_end, env_start, env_end = _argv_and_environ_areas()
    end = env_end if with_environ and env_start == arg_end and env_end > env_start else arg_end
    size = end - arg_start
    if size < 2:
        return   # no area (a kernel thread's), or no room for a title
    # the kernel shows one page of a title at most
    text = title.encode(errors="replace")[:min(size - 2, mmap.PAGESIZE - 1)]
    sc.fill_memory(arg_start, 0, size)
    sc.write_memory(arg_start, text)
    if arg_start + len(text) < arg_end - 1:   # else the title's own byte is there
        sc.fill_memory(arg_end - 1, ord(" "), 1)


def _argv_and_environ_areas() -> tuple[int, int, int, int]:
    """arg_start, arg_end, env_start, env_end: fields 48-51 of /proc/self/stat."""
    with open("/proc/self/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    # fields[0] is field 3 of proc(5): field N is fields[N - 3]
    return tuple(int(fields[n - 3]) for n in (48, 49, 50, 51))


def _close_fds_except(keep: set[int]) -> None:
    # os.closerange(n, n) would call close_range(n, n - 1), and for n = 0
    # that is close_range(0, UINT_MAX): every file.  Only call it on real gaps.
    low = 0
    for fd in sorted(keep):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 16)


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def _kill_quietly(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _read_config(fd: int) -> dict:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return json.loads(b"".join(chunks))


def main() -> None:
    """Entry of the exec path: ``python -m sandbox_kernel.runtime.launcher FD``."""
    data = _read_config(int(sys.argv[1]))
    try:
        config = LauncherConfig.from_dict(data)
    except LauncherConfigError as error:
        status_fd = data.get("status_fd") if isinstance(data, dict) else None
        if type(status_fd) is int:
            _report(status_fd, "launcher config", error)
        os._exit(125)
    os._exit(launcher_main(config))


if __name__ == "__main__":
    main()
