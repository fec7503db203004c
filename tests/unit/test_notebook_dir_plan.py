"""The notebook's directory in the container (issue 25, cause 1) and the
container's PATH (cause 6), as data: the mount plan's ops, the policy's
choice, where the kernel learns the directory, and the PATH filter."""
from __future__ import annotations

import os
import sys

import pytest

from sandbox_kernel.kernel import install, settings as kernel_settings
from sandbox_kernel.runtime import rootfs, syscalls as sc
from sandbox_kernel.runtime.container import DEFAULT_PATH, inside_path
from sandbox_kernel.runtime.spec import ContainerSpec, Limits, Mount, SpecError
from sandbox_kernel.session import commands, policy as policies, stats as stats_contract
from sandbox_kernel.session.commands import Sessions

STATE = "/run/sbk-x"
ROOT = STATE + "/root"
WORKLOAD = (65532, 65532)


def plan_for(*mounts, rootless=False):
    spec = ContainerSpec(command=("sh",), limits=Limits(disk=32 << 20), mounts=tuple(mounts),
                         workdir=mounts[0].target if mounts else "/workspace")
    return rootfs.host_image_plan(spec, STATE, None, rootless=rootless)


def ops_at(plan, target):
    """The ops at ``target``, but the working directory's closing mkdir (a no-op there)."""
    return [op for op in plan if op.target == target and not (op.kind == "mkdir" and op is plan[-1])]


# -- the plan's ops -------------------------------------------------------------------


def test_an_overlay_mount_has_the_host_dir_read_only_below_a_layer_in_the_container(tmp_path):
    source = str(tmp_path)
    plan = plan_for(Mount(source, source, overlay=True, map_owner=(os.geteuid(), os.getegid())))
    lower = f"{STATE}/layer/lower/m0"
    staged = ops_at(plan, lower)
    assert [op.kind for op in staged] == ["mkdir", "idmap_bind"]
    assert staged[1].source == source and staged[1].flags & sc.MS_RDONLY
    assert staged[1].data == f"{os.geteuid()}:{os.getegid()}:65532:65532"
    overlay = [op for op in ops_at(plan, ROOT + source) if op.kind == "mount"]
    assert len(overlay) == 1 and overlay[0].fstype == "overlay"
    assert overlay[0].data == (f"lowerdir={lower},upperdir={STATE}/layer/upper/m0,"
                               f"workdir={STATE}/layer/work/m0")
    assert overlay[0].flags & sc.MS_NOSUID and overlay[0].flags & sc.MS_NODEV
    # the overlay's top directory is the workload's, as the lower's shows through the idmap
    chown = [op for op in ops_at(plan, f"{STATE}/layer/upper/m0") if op.kind == "chown"]
    assert [op.data for op in chown] == ["65532:65532"]


def test_a_read_write_mount_is_an_idmapped_bind_without_read_only(tmp_path):
    source = str(tmp_path)
    (op,) = ops_at(plan_for(Mount(source, source, map_owner=(1000, 1001))), ROOT + source)
    assert op.kind == "idmap_bind" and op.data == "1000:1001:65532:65532"
    assert not op.flags & sc.MS_RDONLY and op.flags & sc.MS_NOSUID and op.flags & sc.MS_NODEV


def test_a_read_only_mount_without_an_owner_is_a_bind_remounted_read_only(tmp_path):
    source = str(tmp_path)
    kinds = [op.kind for op in ops_at(plan_for(Mount(source, source, read_only=True)), ROOT + source)]
    assert kinds == ["bind", "remount_ro"]


def test_rootless_never_asks_for_an_idmap(tmp_path):
    source = str(tmp_path)
    for mount in (Mount(source, source, map_owner=(0, 0)),
                  Mount(source, source, overlay=True, map_owner=(0, 0))):
        plan = plan_for(mount, rootless=True)
        assert not [op for op in plan if op.kind == "idmap_bind"]
        assert any(op.source == source for op in plan)


def test_a_mount_above_the_image_dirs_goes_first_and_the_image_over_it():
    venv = os.path.realpath(sys.prefix)
    parent = os.path.dirname(venv)
    plan = plan_for(Mount(parent, parent, read_only=True))
    first_bind = next(i for i, op in enumerate(plan) if op.target == ROOT + parent)
    image_overlay = next(i for i, op in enumerate(plan)
                         if op.fstype == "overlay" and op.target == ROOT + venv)
    assert first_bind < image_overlay


def test_a_mount_below_an_image_dir_comes_after_its_overlay(tmp_path):
    plan = plan_for(Mount("/usr/share", "/usr/share", read_only=True))
    usr = next(i for i, op in enumerate(plan) if op.fstype == "overlay" and op.target == ROOT + "/usr")
    mine = next(i for i, op in enumerate(plan) if op.target == ROOT + "/usr/share")
    assert usr < mine


def test_mounts_are_planned_parents_first(tmp_path):
    child = tmp_path / "a"
    child.mkdir()
    plan = plan_for(Mount(str(child), str(child)), Mount(str(tmp_path), str(tmp_path)))
    order = [op.target for op in plan if op.kind in ("bind", "idmap_bind")]
    assert order.index(ROOT + str(tmp_path)) < order.index(ROOT + str(child))


def test_a_stored_images_plan_never_confines_inside_the_notebook_mount(tmp_path):
    from types import SimpleNamespace
    lesson = tmp_path / "lessons" / "one"
    lesson.mkdir(parents=True)
    spec = ContainerSpec(command=("sh",), mounts=(Mount(str(tmp_path), str(tmp_path)),),
                         workdir=str(lesson))
    image = SimpleNamespace(lower_dirs=["/store/layer0"], base="")
    plan = rootfs.image_plan(spec, STATE, None, image)
    confined = [op.target for op in plan if op.kind == "confine"]
    assert ROOT + str(tmp_path) in confined              # the way to the mount: the image's
    assert not any(t.startswith(ROOT + str(tmp_path) + "/") for t in confined)


def test_the_idmap_bind_is_an_op_apply_knows():
    assert "idmap_bind" in rootfs._APPLY
    assert rootfs.idmap_data((1, 2), (3, 4)) == "1:2:3:4"


# -- the policy -----------------------------------------------------------------------


@pytest.mark.parametrize("mode, read_only, overlay, words", [
    ("overlay", False, True, "read-only; writes stay in the container"),
    ("ro", True, False, "(read-only)"),
    ("rw", False, False, "(read-write)"),
])
def test_the_policy_says_how_the_directory_is_mounted(tmp_path, mode, read_only, overlay, words):
    policy = policies.with_overrides(policies.trusted(), {"notebook_dir": mode})
    notebook = policy.notebook_mount(str(tmp_path))
    mount, text = notebook.mount, notebook.words
    real = os.path.realpath(tmp_path)
    assert notebook.workdir == real
    assert (mount.source, mount.target, mount.read_only, mount.overlay) == (real, real, read_only, overlay)
    assert mount.map_owner == (os.geteuid(), os.getegid())
    assert text.startswith(real) and words in text


def test_the_presets_classroom_overlay_and_trusted_read_write():
    assert policies.classroom({}).notebook_dir == "overlay"
    assert policies.trusted().notebook_dir == "rw"
    assert "notebook dir read-only; writes stay in the container" in policies.classroom({}).describe()


def test_none_mounts_nothing_and_says_so(tmp_path):
    policy = policies.with_overrides(policies.classroom({}), {"notebook_dir": "none"})
    notebook = policy.notebook_mount(str(tmp_path))
    mount, text = notebook.mount, notebook.words
    assert mount is None and notebook.workdir is None and "notebook_dir none" in text and "/workspace" in text


@pytest.mark.parametrize("path", ["/", "/etc", "/etc/ssh", "/usr", "/usr/local/lib", "/tmp", "/home",
                                  "/proc/1", "/sys/fs", "/dev", "/run/user", "/root", "/var"])
def test_the_root_and_system_dirs_are_never_a_notebook_dir(path):
    for policy in (policies.trusted(), policies.classroom({})):
        notebook = policy.notebook_mount(path)
        mount, text = notebook.mount, notebook.words
        assert mount is None and text.startswith("not mounted:") and "/workspace" in text


def test_a_home_directory_itself_is_never_mounted_but_a_folder_in_it_is(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    notebook = policies.trusted().notebook_mount(str(tmp_path))
    assert notebook.mount is None and "a home directory" in notebook.words
    (tmp_path / "course").mkdir()
    assert policies.trusted().notebook_mount(str(tmp_path / "course")).mount is not None


def test_a_symlink_to_a_system_dir_is_judged_by_where_it_leads(tmp_path):
    link = tmp_path / "etc"
    link.symlink_to("/etc")
    notebook = policies.trusted().notebook_mount(str(link))
    assert notebook.mount is None and "/etc is a system directory" in notebook.words


def test_a_notebook_root_is_mounted_whole_and_the_working_directory_stays(tmp_path):
    course = tmp_path / "course"
    lesson = course / "lessons" / "one"
    lesson.mkdir(parents=True)
    policy = policies.with_overrides(policies.classroom({}), {"notebook_root": str(course)})
    notebook = policy.notebook_mount(str(lesson))
    assert notebook.mount.source == notebook.mount.target == os.path.realpath(course)
    assert notebook.mount.overlay and notebook.workdir == os.path.realpath(lesson)
    assert f"in {os.path.realpath(course)}, mounted whole" in notebook.words
    # a notebook elsewhere: its directory alone
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert policy.notebook_mount(str(elsewhere)).mount.source == os.path.realpath(elsewhere)


def test_the_parent_root_is_taken_only_where_it_is_safe(tmp_path, monkeypatch):
    lesson = tmp_path / "examples" / "kernel"
    lesson.mkdir(parents=True)
    policy = policies.with_overrides(policies.trusted(), {"notebook_root": "parent"})
    assert policy.notebook_mount(str(lesson)).mount.source == os.path.realpath(tmp_path / "examples")
    monkeypatch.setenv("HOME", str(tmp_path / "examples"))      # the parent is a home: not it
    assert policy.notebook_mount(str(lesson)).mount.source == os.path.realpath(lesson)


@pytest.mark.parametrize("root", ["/", "/etc", "relative/dir", "/nonexistent-sbk", "/tmp"])
def test_a_bad_notebook_root_is_one_line(root):
    with pytest.raises(SpecError, match="notebook root"):
        policies.with_overrides(policies.classroom({}), {"notebook_root": root})


def test_the_magics_take_the_notebook_dir_from_the_users_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SANDBOX_KERNEL_NOTEBOOK_DIR", "overlay")
    assert Sessions(factory=FakeSession).notebook_mount().mount.overlay
    monkeypatch.setenv("SANDBOX_KERNEL_NOTEBOOK_DIR", "sideways")
    with pytest.raises(commands.UsageError, match="SANDBOX_KERNEL_NOTEBOOK_DIR"):
        Sessions(factory=FakeSession).notebook_mount()
    # the classroom's installer decides, never a launch's environment
    classroom = Sessions(factory=FakeSession, policy=policies.classroom({}))
    assert classroom.notebook_mount().mount.overlay
    monkeypatch.setenv("SANDBOX_KERNEL_NOTEBOOK_DIR", "rw")
    assert classroom.notebook_mount().mount.overlay


def test_a_bad_notebook_dir_mode_is_one_line():
    with pytest.raises(SpecError, match="overlay .* ro .* rw .* none"):
        policies.with_overrides(policies.classroom({}), {"notebook_dir": "writable"})


# -- where the kernel learns the directory ---------------------------------------------------


def test_the_kernel_takes_its_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    # an inherited JPY_SESSION_NAME (a kernel started from another notebook) loses to the cwd
    found = kernel_settings.notebook_directory({"JPY_SESSION_NAME": str(other / "n.ipynb")})
    assert found == os.path.realpath(tmp_path)


def test_from_the_root_the_kernel_takes_jpy_session_name(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    found = kernel_settings.notebook_directory({"JPY_SESSION_NAME": str(tmp_path / "n.ipynb")})
    assert found == os.path.realpath(tmp_path)
    assert kernel_settings.notebook_directory({"JPY_SESSION_NAME": "n.ipynb"}) == "/"
    # the classroom does not take a directory from the launch's environment
    assert kernel_settings.notebook_directory({"JPY_SESSION_NAME": str(tmp_path / "n.ipynb")},
                                              trust_environment=False) == "/"


def test_install_writes_the_notebook_dir_option_and_refuses_a_bad_one(tmp_path):
    policy = install.checked_policy({}, {"notebook_dir": "rw", "notebook_root": str(tmp_path)})
    argv = install.kernel_argv({}, policy=policy)
    assert "--SandboxPolicy.notebook_dir=rw" in argv
    assert f"--SandboxPolicy.notebook_root={tmp_path}" in argv
    with pytest.raises(install.InstallError, match="notebook root"):
        install.checked_policy({}, {"notebook_root": "/"})
    with pytest.raises(install.InstallError, match="notebook dir"):
        install.checked_policy({}, {"notebook_dir": "writable"})


# -- sessions, status and footer ----------------------------------------------------------------


class FakeSession:
    def __init__(self, name, image="host", limits=None, network="none"):
        self.name, self.image, self.limits, self.network = name, image, limits, network

    def start_soon(self, delay=0.0):   # as Session.start_soon (a refill waits for the reply first)
        pass

    def label_container(self):       # as Session: its card says the session's name
        pass

    def set_limits(self, **given):
        return {"changed": [], "restart_needed": []}

    def stop(self):
        pass


def test_a_new_session_gets_the_notebook_dir_and_the_pool_must_match(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sessions = Sessions(factory=FakeSession)
    sessions.warm_up(1)
    warm = sessions.pool[0]
    assert warm.notebook_dir.target == os.path.realpath(tmp_path)
    session, _ = sessions.open("a")
    assert session is warm                       # same directory: the warm one is taken
    assert commands.footer_dir(session) == f"{os.path.realpath(tmp_path)} rw"
    other = Sessions(factory=FakeSession, notebook_dir=str(tmp_path))
    other.warm_up(1)
    (tmp_path / "elsewhere").mkdir()
    other.notebook_dir = str(tmp_path / "elsewhere")
    fresh, _ = other.open("b")
    assert fresh is not None and fresh.notebook_dir.target.endswith("/elsewhere") and not other.pool


def test_the_footer_names_the_directory_and_how():
    stats = stats_contract.with_notebook_dir({"cell": {}, "limits": {}}, "/srv/course ro+overlay")
    assert "dir /srv/course ro+overlay" in stats_contract.footer_text(stats)
    assert "dir" not in [label for label, _ in stats_contract.footer_parts({"cell": {}})]
    bundle = stats_contract.footer_bundle(stats)
    assert "dir /srv/course ro+overlay" in bundle["text/plain"] and "/srv/course" in bundle["text/html"]
    assert "notebook_dir" not in bundle[stats_contract.MIME_TYPE]     # not the contract's


# -- PATH ---------------------------------------------------------------------------------------


def test_path_keeps_host_entries_seen_inside_in_order_then_the_defaults(tmp_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    spec = ContainerSpec(command=("sh",), mounts=(Mount(str(tmp_path), str(tmp_path)),))
    host = f"{tools}:/nonexistent-sbk/bin:{tmp_path}/missing:.::relative/bin:/usr/bin:{tools}"
    entries = _owners(inside_path(host, spec))
    assert entries[:2] == [str(tools), "/usr/bin"]
    assert not any(e.startswith("/nonexistent") or "missing" in e or not e.startswith("/")
                   for e in entries)
    assert len(entries) == len(set(entries))
    assert entries[2:] == [e for e in DEFAULT_PATH.split(":") if e not in entries[:2]]


def _owners(path: str) -> list[str]:
    """PATH without the host image's venv bin, which comes first (python3 and pip
    inside are the kernel's interpreter, as in an activated venv)."""
    entries = path.split(":")
    if sys.prefix != sys.base_prefix:
        assert entries[0] == os.path.join(sys.prefix, "bin"), path
        entries = entries[1:]
    return entries


def test_path_drops_a_host_dir_no_mount_shows(tmp_path):
    spec = ContainerSpec(command=("sh",))
    assert str(tmp_path) not in inside_path(f"{tmp_path}:/usr/bin", spec)


def test_path_follows_a_host_symlink_to_where_it_is_seen(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    spec = ContainerSpec(command=("sh",), mounts=(Mount(str(real), "/opt/tools"),))
    assert _owners(inside_path(str(link), spec))[0] == "/opt/tools"


def test_path_of_a_mount_at_another_target_is_the_target_path(tmp_path):
    (tmp_path / "bin").mkdir()
    spec = ContainerSpec(command=("sh",), mounts=(Mount(str(tmp_path), "/data"),))
    # the host path itself is not inside; its real path lies below the mount's source
    assert _owners(inside_path(f"{tmp_path}/bin", spec))[0] == "/data/bin"


def test_path_is_never_looked_up_in_a_mount_the_runtime_made_for_itself():
    """An image without python borrows the host's /usr at /opt/sandbox-kernel/usr,
    off PATH: the host's /usr/bin must not come through there."""
    borrowed = Mount("/usr", "/opt/sandbox-kernel/usr", read_only=True, on_path=False)
    spec = ContainerSpec(command=("sh",), image="busybox-like", mounts=(borrowed,))
    entries = inside_path("/usr/bin:/usr/local/bin", spec, image_path="/bin:/sbin").split(":")
    assert not any(e.startswith("/opt/sandbox-kernel") for e in entries)
    assert entries == ["/bin", "/sbin"]
