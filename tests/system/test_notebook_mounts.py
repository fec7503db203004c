"""A host directory at the same path inside, as the notebook's directory is
mounted (issue 25, cause 1): read-write, read-only, or read-only with a
writable overlay whose writes stay in the container; idmapped as root so
that the kernel's user's files (here root's, in a 0700 directory, as
mkdtemp makes them) are the workload's own.

Before, a Mount had no overlay and no owner: the container's user (65532)
could not even read a 0700 directory of the kernel's user.
"""
from __future__ import annotations

import os

import pytest

from sandbox_kernel.runtime.spec import Mount
import image_archives as archives   # tests/ is on pytest's pythonpath

pytestmark = pytest.mark.usefixtures("no_leftovers")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="idmapped mounts need root; rootless, "
                                "the workload reads what the host's modes let others read")

PROBE = ("cd {d} && cat data/x.csv && echo written > new.txt && cat new.txt && "
         "echo changed > data/x.csv && cat data/x.csv && stat -c %u new.txt")


@pytest.fixture
def notebook_dir(tmp_path):
    directory = tmp_path / "course"
    (directory / "data").mkdir(parents=True)
    (directory / "data" / "x.csv").write_text("a,b\n")
    directory.chmod(0o700)
    (directory / "data").chmod(0o700)
    return str(directory)


def _mount(path, **how):
    return Mount(path, path, map_owner=(os.geteuid(), os.getegid()), **how)


@needs_root
def test_read_write_the_host_sees_the_writes_as_the_kernels_users(run, notebook_dir):
    ran = run(PROBE.format(d=notebook_dir), mounts=(_mount(notebook_dir),), workdir=notebook_dir)
    assert ran.result.status == "ok", ran.stderr
    assert ran.stdout.split() == ["a,b", "written", "changed", "65532"]   # the workload's, inside
    with open(os.path.join(notebook_dir, "new.txt")) as handle:
        assert handle.read() == "written\n"
    assert os.stat(os.path.join(notebook_dir, "new.txt")).st_uid == os.geteuid()   # the owner's, outside


@needs_root
def test_overlay_writes_stay_in_the_container(run, notebook_dir):
    ran = run(PROBE.format(d=notebook_dir), mounts=(_mount(notebook_dir, overlay=True),),
              workdir=notebook_dir)
    assert ran.result.status == "ok", ran.stderr
    assert ran.stdout.split()[:3] == ["a,b", "written", "changed"]
    assert sorted(os.listdir(notebook_dir)) == ["data"]
    with open(os.path.join(notebook_dir, "data", "x.csv")) as handle:
        assert handle.read() == "a,b\n"


@needs_root
def test_read_only_refuses_writes_and_reads(run, notebook_dir):
    ran = run(f"cd {notebook_dir} && cat data/x.csv && (echo x > new.txt) 2>&1; pwd",
              mounts=(_mount(notebook_dir, read_only=True),), workdir=notebook_dir)
    assert ran.result.status == "ok", ran.stderr
    assert "a,b" in ran.stdout and "Read-only file system" in ran.stdout
    assert ran.stdout.strip().endswith(notebook_dir)
    assert sorted(os.listdir(notebook_dir)) == ["data"]


@needs_root
def test_a_symlink_in_the_directory_resolves_inside_the_container(run, notebook_dir):
    os.symlink("/etc/hostname", os.path.join(notebook_dir, "name"))
    ran = run(f"cat {notebook_dir}/name", mounts=(_mount(notebook_dir),))
    assert ran.result.status == "ok", ran.stderr
    assert ran.stdout.strip() == "sandbox"     # the container's /etc/hostname, not the host's


def test_rootless_or_not_a_readable_directory_is_read_and_overlay_writes_stay_inside(run, tmp_path):
    """Rootless no mount is idmapped: files readable by others (the usual
    644 and 755) are read, and new files at the overlay's top stay inside."""
    directory = tmp_path / "course"
    (directory / "data").mkdir(parents=True)
    (directory / "data" / "x.csv").write_text("a,b\n")
    for path in (tmp_path, directory, directory / "data"):
        path.chmod(0o755)
    d = str(directory)
    ran = run(f"cd {d} && cat data/x.csv && echo mine > new.txt && cat new.txt",
              mounts=(Mount(d, d, overlay=True, map_owner=(os.geteuid(), os.getegid())),), workdir=d)
    assert ran.result.status == "ok", ran.stderr
    assert ran.stdout.split() == ["a,b", "mine"]
    assert sorted(os.listdir(d)) == ["data"]


@pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="no /bin/busybox (scripts/install "
                    "installs busybox-static)")
def test_on_a_stored_image_the_directory_and_its_path_entries_are_there(run, tmp_path, monkeypatch):
    from sandbox_kernel.runtime import images
    monkeypatch.setenv(images.STORE_ENV, str(tmp_path / "store"))
    images.import_image(archives.busybox_rootfs(str(tmp_path / "busybox")), "busybox")
    course = tmp_path / "course"
    (course / "bin").mkdir(parents=True)
    (course / "bin" / "sbk-tool").write_text("#!/bin/sh\necho tool\n")
    (course / "bin" / "sbk-tool").chmod(0o755)
    for path in (tmp_path, course, course / "bin"):
        path.chmod(0o755)
    d = str(course)
    monkeypatch.setenv("PATH", f"{d}/bin:/usr/bin:/nonexistent-sbk")
    ran = run("pwd; sbk-tool; echo $PATH", image="busybox", workdir=d,
              mounts=(Mount(d, d, overlay=True, map_owner=(os.geteuid(), os.getegid())),))
    assert ran.result.status == "ok", ran.stderr
    cwd, said, path = ran.stdout.split()
    assert (cwd, said) == (d, "tool")
    entries = path.split(":")
    assert entries[0] == f"{d}/bin" and "/nonexistent-sbk" not in entries
    # the host's /usr/bin is not the image's: it comes from the image's own PATH, after
    assert entries.index("/usr/bin") > 0
