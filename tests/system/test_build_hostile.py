"""A build script is hostile to the host that keeps its layer: it runs as
root in the container and can plant symlinks where the host, after the
build, removes the setup's residue (/etc/hosts, /etc/hostname, the sandbox
line of /etc/passwd and /etc/group, the empty /home/sandbox, /tmp,
/workspace...).  Each symlink here points at a throwaway host directory
holding files of those names: after the build they are byte for byte as
they were, and the next container starts.  (Issue 14, item 2.)"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from sandbox_kernel.runtime import images, safe_fs
import image_archives as archives   # tests/ is on pytest's pythonpath

pytestmark = pytest.mark.usefixtures("no_leftovers")

if not os.path.exists("/bin/busybox"):
    pytest.skip("no /bin/busybox: apt-get install busybox-static (scripts/install does)",
                allow_module_level=True)
if os.geteuid() != 0:
    pytest.skip("builds keep layers in trusted.* xattrs: they need root", allow_module_level=True)


SANDBOX_PASSWD = "sandbox:x:0:0:sandbox:/home/sandbox:/bin/sh\n"   # what the build's setup appends


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A store of the test's own, removed with remove_tree (a deep layer would
    stop pytest's own rmtree), and by rm -rf if that left anything."""
    root = tmp_path / "store"
    monkeypatch.setenv(images.STORE_ENV, str(root))
    yield images.Store(str(root))
    if safe_fs.remove_tree(str(root)):
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)


@pytest.fixture
def busybox(store, tmp_path):
    images.import_image(archives.busybox_rootfs(str(tmp_path / "busybox")), "busybox")
    return "busybox"


@pytest.fixture
def hostdir(tmp_path):
    """The victim: a host directory with the setup's file and directory names."""
    victim = tmp_path / "hostdir"
    victim.mkdir()
    (victim / "hosts").write_text("127.0.0.1 victim\n")
    (victim / "hostname").write_text("victim\n")
    (victim / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n" + SANDBOX_PASSWD + "victim:x:1:1::/:/\n")
    (victim / "group").write_text("root:x:0:\nsandbox:x:0:\nvictim:x:1:\n")
    for name in ("sandbox", "home", "tmp", "workspace", "proc", "dev", "sys"):
        (victim / name).mkdir()
        (victim / "etc" / name).mkdir(parents=True)
    (victim / "etc" / "hosts").write_text("127.0.0.1 victim-etc\n")
    (victim / "etc" / "passwd").write_text(SANDBOX_PASSWD)
    return victim


def snapshot(directory: pathlib.Path) -> dict:
    """Every entry under directory and the directory itself: inode, mode,
    mtime and content."""
    seen = {}
    for path in [directory, *sorted(directory.rglob("*"))]:
        info = path.lstat()
        seen[str(path)] = (info.st_ino, info.st_mode, info.st_mtime_ns,
                           path.read_bytes() if path.is_file() else None)
    return seen


HOSTILE = {
    "etc": "rm -rf /etc && ln -s {host} /etc",
    "etc-files": "cd /etc && rm -f hosts hostname passwd group && ln -s {host}/hosts hosts "
                 "&& ln -s {host}/hostname hostname && ln -s {host}/passwd passwd && ln -s {host}/group group",
    "etc-through-two-links": "mkdir -p /x && rm -rf /etc && ln -s {host}/etc /x/etc && ln -s x/etc /etc",
    "etc-relative": "rm -rf /etc && ln -s ../../../../../../../../../../../../..{host} /etc",
    "home": "rm -rf /home && ln -s {host} /home",
    "home-sandbox": "rm -rf /home/sandbox && ln -s {host}/sandbox /home/sandbox",
    "tmp": "rm -rf /tmp/* ; rmdir /tmp && ln -s {host}/tmp /tmp || true",
    "workspace": "rmdir /workspace && ln -s {host}/workspace /workspace || true",
    "everything": "rm -rf /etc /home && ln -s {host} /etc && ln -s {host} /home "
                  "&& (rmdir /tmp /workspace; ln -s {host} /tmp; ln -s {host} /workspace) ; true",
}


@pytest.mark.parametrize("variant", sorted(HOSTILE))
def test_a_build_that_plants_symlinks_changes_nothing_on_the_host(busybox, store, hostdir, variant):
    before = snapshot(hostdir)
    image = images.build(f"hostile-{variant}", busybox, HOSTILE[variant].format(host=hostdir),
                         network="none")
    assert image.name == f"hostile-{variant}"
    assert snapshot(hostdir) == before
    assert_containers_start(busybox, image.name)
    assert snapshot(hostdir) == before


def assert_containers_start(*names: str) -> None:
    """The next container on the base starts; one on the built image starts
    too, or fails with a clear error, and neither touches the host."""
    base = subprocess.run(["sandbox-kernel", "run", "--image", names[0], "--", "cat", "/etc/os-release"],
                          capture_output=True, text=True, timeout=120, env=_cli_env())
    assert base.returncode == 0 and "sbk busybox" in base.stdout, base.stderr
    for name in names[1:]:
        built = subprocess.run(["sandbox-kernel", "run", "--image", name, "--", "true"],
                               capture_output=True, text=True, timeout=120, env=_cli_env())
        assert built.returncode == 0 or "Traceback" not in built.stderr, built.stderr


def _cli_env() -> dict:
    return {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}"}


def test_the_setup_residue_is_still_removed(busybox, store):
    """Without symlinks the cleanup does what it did: the layer holds the
    script's file, and none of the setup's files or empty mount points."""
    image = images.build("plain", busybox, "echo made > /made.txt", network="none")
    layer = os.path.join(store.layer_dir(image.layers[-1]), "root")
    found = {directory: names for directory, _, names in safe_fs.walk(layer)}
    assert found == {"": ["etc", "made.txt"], "etc": []}   # etc: copied up by the setup, left empty


DEEP_SCRIPT = ("python3 -c \"import os\nos.chdir('/usr/local')\nfor _ in range(3000):\n"
               "    os.mkdir('deep'); os.chdir('deep')\nopen('leaf', 'w').write('leaf')\"")


def test_a_build_of_a_3000_deep_tree_is_walked_without_recursion(store):
    """os.walk (recursive in Python 3.11) raised RecursionError in _sanitize
    and layer_digest; safe_fs.walk does not."""
    image = images.build("deep", "host", DEEP_SCRIPT, network="none")
    ran = subprocess.run(["sandbox-kernel", "run", "--image", "deep", "--", "python3", "-c",
                          "import os\nos.chdir('/usr/local')\nn = 0\nwhile os.path.isdir('deep'):\n"
                          "    os.chdir('deep'); n += 1\nprint(n, open('leaf').read())"],
                         capture_output=True, text=True, timeout=300, env=_cli_env())
    assert image.layers and ran.stdout.split() == ["3000", "leaf"], ran.stderr


def test_a_build_scripts_fork_bomb_meets_a_pids_limit(busybox):
    """A build has no pids option of its own; without a default a fork bomb in
    the script could take every pid of the host (RLIMIT_NPROC is above
    kernel.pid_max).  Bounded: 400 sleepers at most, killed with the container.
    busybox's sh stops the script at the first fork it cannot make."""
    from sandbox_kernel.runtime import image_build
    script = "i=0; while [ $i -lt 400 ]; do sleep 30 & i=$((i+1)); done; echo all started"
    with pytest.raises(images.BuildError, match="can't fork"):
        image_build.build("bomb", busybox, script, network="none")
    assert images.Store().image("bomb") is None


def test_a_build_layer_past_the_store_quota_is_refused_and_nothing_is_kept(busybox, store, monkeypatch):
    """The layer a script wrote was committed whatever its size: a build
    could fill the store past SANDBOX_KERNEL_STORE_QUOTA.  It is charged as
    an import is; past the quota, one line, and the store is as it was."""
    monkeypatch.setenv(images.QUOTA_ENV, "4M")            # busybox itself holds about 2 MiB
    layers_before = store.layers()
    write = "/bin/busybox dd if=/dev/zero of=/big bs=1048576 count={} 2>/dev/null"
    with pytest.raises(images.ImageError) as refused:
        images.build("big", busybox, write.format(8), network="none")
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and "past the store quota" in message, message
    assert "SANDBOX_KERNEL_STORE_QUOTA=4.0 MiB" in message and "nothing was kept" in message
    assert store.image("big") is None and store.layers() == layers_before
    assert [n for n in os.listdir(os.path.join(store.root, "tmp")) if n.startswith("sbk-")] == []
    small = images.build("small", busybox, write.format(1), network="none")   # room for 1 MiB
    assert store.layer_info(small.layers[-1])["charged"] >= 1 << 20
