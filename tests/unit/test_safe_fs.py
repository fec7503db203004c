"""safe_fs: resolving beneath a root without symlinks, and removing trees a
container wrote (symlinks, any depth, no permission bits) without recursion.
Everything happens in a throwaway temp directory."""
from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess

import pytest

from sandbox_kernel.runtime import safe_fs


@pytest.fixture(params=["openat2", "walk"])
def resolver(request, monkeypatch):
    """Both ways of resolving beneath a root: the kernel's and the dirfd walk."""
    if request.param == "openat2" and not safe_fs._have_openat2():
        pytest.skip("this kernel has no openat2 (before 5.6)")
    monkeypatch.setattr(safe_fs, "_openat2_works", request.param == "openat2")
    return request.param


@pytest.fixture
def victim(tmp_path):
    """A directory outside the root with files that must not change."""
    directory = tmp_path / "victim"
    directory.mkdir()
    for name in ("hosts", "hostname", "passwd"):
        (directory / name).write_text(f"victim {name}\n")
    (directory / "sub").mkdir()
    (directory / "sub" / "keep").write_text("keep\n")
    return directory


def snapshot(directory) -> dict:
    """Every entry under directory: content, inode and mtime."""
    seen = {}
    for path in sorted(directory.rglob("*")):
        info = path.lstat()
        seen[str(path)] = (info.st_ino, info.st_mtime_ns, info.st_mode,
                           path.read_bytes() if path.is_file() else None)
    return seen


def make_deep(top, depth: int, name: str = "d") -> None:
    """depth nested directories under top, built with dirfds (no long paths)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        with open(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as leaf:
            leaf.write("leaf\n")
    finally:
        os.close(fd)


@pytest.fixture
def scratch(tmp_path):
    """A directory for trees; removed by rm -rf too if remove_tree failed."""
    top = tmp_path / "scratch"
    top.mkdir()
    yield top
    if top.exists():
        subprocess.run(["chmod", "-R", "u+rwx", str(top)], check=False)
        subprocess.run(["rm", "-rf", "--one-file-system", str(top)], check=False)


# --- open_beneath

def test_open_beneath_opens_plain_paths(tmp_path, resolver):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root\n")
    for root in (str(tmp_path), os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)):
        fd = safe_fs.open_beneath(root, "etc/passwd")
        with os.fdopen(fd) as handle:
            assert handle.read() == "root\n"
    fd = safe_fs.open_beneath(tmp_path, "etc/new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    assert stat.S_IMODE((tmp_path / "etc" / "new").stat().st_mode) == 0o600
    fd = safe_fs.open_beneath(tmp_path, "", os.O_RDONLY | os.O_DIRECTORY)
    assert "etc" in os.listdir(fd)
    os.close(fd)


THROUGH = {"etc": ["etc/hosts", "etc/passwd", "etc"], "etc/hosts": ["etc/hosts"],
           "home": ["home/sandbox", "home/sandbox/x"], "home/sandbox": ["home/sandbox", "home/sandbox/x"]}


@pytest.mark.parametrize("planted", sorted(THROUGH))
def test_open_beneath_refuses_a_symlink_at_any_component(tmp_path, victim, resolver, planted):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hosts").write_text("setup")
    (root / "home" / "sandbox").mkdir(parents=True)
    before = snapshot(victim)
    link = root / planted
    (shutil.rmtree if link.is_dir() else os.unlink)(link)
    link.symlink_to(victim / "hosts" if planted == "etc/hosts" else victim)
    for relpath in THROUGH[planted]:
        for flags in (os.O_WRONLY | os.O_TRUNC, os.O_RDONLY | os.O_DIRECTORY, os.O_PATH):
            with pytest.raises(OSError) as caught:
                os.close(safe_fs.open_beneath(root, relpath, flags))
            assert caught.value.errno == errno.ELOOP, caught.value
            assert caught.value.filename.startswith(str(root))
        assert safe_fs.read_beneath(root, relpath) is None
    info = safe_fs.lstat_beneath(root, planted)
    assert stat.S_ISLNK(info.st_mode)
    assert safe_fs.lstat_beneath(root, planted + "/passwd") is None
    assert snapshot(victim) == before


@pytest.mark.parametrize("relpath", ["/etc/passwd", "../victim/passwd", "etc/../../victim/passwd", "a/.."])
def test_open_beneath_refuses_leaving_the_root(tmp_path, victim, resolver, relpath):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    with pytest.raises(OSError) as caught:
        os.close(safe_fs.open_beneath(root, relpath))
    assert caught.value.errno == errno.EXDEV


def test_open_beneath_refuses_an_absolute_symlink_and_a_proc_magic_link(tmp_path, victim, resolver):
    root = tmp_path / "root"
    root.mkdir()
    (root / "abs").symlink_to("/")
    (root / "fd").symlink_to("/proc/self/cwd")
    for relpath in ("abs/tmp", "fd", "abs"):
        with pytest.raises(OSError) as caught:
            os.close(safe_fs.open_beneath(root, relpath))
        assert caught.value.errno == errno.ELOOP


def test_read_beneath_does_not_block_on_a_fifo_nor_read_a_directory(tmp_path, resolver):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_bytes(b"x" * 10)
    assert safe_fs.read_beneath(tmp_path, "fifo") is None
    assert safe_fs.read_beneath(tmp_path, "dir") is None
    assert safe_fs.read_beneath(tmp_path, "missing/file") is None
    assert safe_fs.read_beneath(tmp_path, "file", limit=4) == b"xxxx"


def test_parent_beneath_gives_the_dirfd_and_the_name(tmp_path, resolver):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hosts").write_text("h")
    with safe_fs.parent_beneath(tmp_path, "etc/hosts") as (fd, name):
        assert name == "hosts"
        os.unlink(name, dir_fd=fd)
    assert not (tmp_path / "etc" / "hosts").exists()


# --- remove_tree

def test_remove_tree_unlinks_symlinks_at_every_level_and_follows_none(scratch, victim, resolver):
    before = snapshot(victim)
    top = scratch / "state"
    level = top
    for depth in range(6):
        level.mkdir()
        (level / "to-victim").symlink_to(victim)
        (level / "to-victim-file").symlink_to(victim / "passwd")
        (level / "file").write_text("x")
        level = level / f"level{depth}"
    assert safe_fs.remove_tree(str(top)) == []
    assert not top.exists()
    assert snapshot(victim) == before


def test_remove_tree_of_a_symlink_removes_the_link_only(scratch, victim):
    before = snapshot(victim)
    (scratch / "link").symlink_to(victim)
    assert safe_fs.remove_tree(str(scratch / "link")) == []
    assert not os.path.lexists(scratch / "link")
    assert snapshot(victim) == before


def test_remove_tree_of_nothing_is_fine(scratch):
    assert safe_fs.remove_tree(str(scratch / "missing")) == []
    assert safe_fs.remove_tree(str(scratch / "missing" / "below")) == []


@pytest.mark.parametrize("depth", [3000, 20000])
def test_remove_tree_removes_deep_trees_with_few_fds(scratch, resolver, depth):
    """shutil.rmtree raises RecursionError at ~1000 levels (not an OSError:
    ignore_errors does not help); remove_tree neither recurses nor keeps an
    fd per level."""
    top = scratch / "deep"
    top.mkdir()
    make_deep(top, depth)
    fds_before = len(os.listdir("/proc/self/fd"))
    assert safe_fs.remove_tree(str(top)) == []
    assert not top.exists()
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_remove_tree_deep_tree_with_wide_levels_and_a_small_fd_cap(scratch, resolver, monkeypatch):
    monkeypatch.setattr(safe_fs, "FD_CAP", 3)
    top = scratch / "wide"
    top.mkdir()
    level = top
    for depth in range(40):
        for sibling in ("a", "c", "e"):
            (level / sibling).mkdir()
            (level / sibling / "f").write_text("f")
            (level / f"{sibling}.txt").write_text("t")
        level = level / "c"
    assert safe_fs.remove_tree(str(top)) == []
    assert not top.exists()


def test_remove_tree_opens_directories_without_permission_bits(scratch, resolver):
    top = scratch / "locked"
    (top / "a" / "b").mkdir(parents=True)
    (top / "a" / "b" / "file").write_text("x")
    (top / "r-x").mkdir()
    (top / "r-x" / "file").write_text("x")
    os.chmod(top / "r-x", 0o500)
    os.chmod(top / "a" / "b", 0)
    os.chmod(top / "a", 0)
    assert safe_fs.remove_tree(str(top)) == []
    assert not top.exists()


def test_remove_tree_by_dirfd_and_name(scratch):
    (scratch / "x" / "y").mkdir(parents=True)
    fd = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert safe_fs.remove_tree("x", dir_fd=fd) == []
        with pytest.raises(OSError):
            safe_fs.remove_tree("x/y", dir_fd=fd)
    finally:
        os.close(fd)
    assert not (scratch / "x").exists()


def test_remove_tree_reports_what_it_cannot_remove_and_goes_on(scratch, monkeypatch, caplog):
    """One entry that cannot go does not stop the rest: it is reported
    (logged and returned), its parents stay, its siblings go."""
    top = scratch / "state"
    (top / "bad").mkdir(parents=True)
    (top / "bad" / "stuck").write_text("x")
    (top / "good" / "deep").mkdir(parents=True)
    (top / "z.txt").write_text("x")
    real_unlink = os.unlink

    def unlink(name, *, dir_fd=None):
        if name == "stuck":
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return real_unlink(name, dir_fd=dir_fd)

    monkeypatch.setattr(safe_fs.os, "unlink", unlink)
    left = safe_fs.remove_tree(str(top))
    assert [(entry.path, entry.reason) for entry in left] == \
        [(str(top / "bad" / "stuck"), "Operation not permitted")]
    assert "could not remove" in caplog.text and "stuck" in caplog.text
    assert sorted(os.listdir(top)) == ["bad"]


def test_walk_is_os_walk_sorted_without_following_symlinks(tmp_path, victim, resolver):
    root = tmp_path / "root"
    (root / "b" / "c").mkdir(parents=True)
    (root / "a").mkdir()
    (root / "a" / "f").write_text("x")
    (root / "link").symlink_to(victim)
    seen = [(rel, names) for rel, fd, names in safe_fs.walk(str(root))]
    expected = []
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        expected.append((os.path.relpath(directory, root).replace(".", "", 1 if directory == str(root) else 0),
                         sorted(dirs + files)))
    assert seen == expected


def test_walk_goes_3000_deep(scratch, resolver):
    make_deep(scratch, 3000)
    count = 0
    for rel, fd, names in safe_fs.walk(str(scratch)):
        count += 1
    assert count == 3001
    assert names == ["leaf"] and rel.count("/") == 2999
    assert safe_fs.remove_tree(str(scratch / "d")) == []


def test_remove_tree_as_an_unprivileged_owner_opens_0000_and_0500_dirs():
    """Root reads any directory, so only an owner without privileges meets
    EACCES (a rootless state dir, a layer's 0500 dirs): it gives itself rwx
    first.  As root, a forked child that is nobody (65534) plays the owner."""
    import tempfile
    top = tempfile.mkdtemp(prefix="sbk-test-safe-fs-", dir="/tmp")
    try:
        if os.geteuid() == 0:
            os.chown(top, 65534, 65534)
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                if os.geteuid() == 0:
                    os.setgroups([])
                    os.setresgid(65534, 65534, 65534)
                    os.setresuid(65534, 65534, 65534)
                tree = os.path.join(top, "tree")
                os.makedirs(os.path.join(tree, "a", "b"))
                os.makedirs(os.path.join(tree, "r-x"))
                for directory in ("a/b", "r-x"):
                    with open(os.path.join(tree, directory, "file"), "w") as handle:
                        handle.write("x")
                os.chmod(os.path.join(tree, "r-x"), 0o500)
                os.chmod(os.path.join(tree, "a", "b"), 0)
                os.chmod(os.path.join(tree, "a"), 0)
                left = safe_fs.remove_tree(tree)
                status = 0 if not left and not os.path.lexists(tree) else 2
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", top], check=False, capture_output=True)
        subprocess.run(["rm", "-rf", top], check=False)
