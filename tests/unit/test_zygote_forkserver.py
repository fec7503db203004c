"""The fork server is never shared across users (runtime/forkserver.py): its
directory must be this uid's and 0700 (checked on an O_NOFOLLOW fd), its
socket this uid's, and SO_PEERCRED is checked both ways.  Anything else:
the owner falls back to a private zygote, and a start never fails for it.

The other uid is ``nobody``; its processes run through setpriv and only
touch the test's own temporary directory."""
from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

from sandbox_kernel.runtime import forkserver, zygote

NOBODY = 65534
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid: root")


def as_nobody(code: str, *args: str, **keywords) -> subprocess.Popen:
    return subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                             "--clear-groups", sys.executable, "-c", code, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **keywords)


@pytest.fixture
def reachable(tmp_path):
    """A directory nobody can pass (pytest's tmp_path is root's, 0700)."""
    path = tempfile.mkdtemp(prefix="forkserver-test-")
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


def private(path) -> str:
    os.mkdir(path, 0o700)
    return str(path)


@root_only
def test_a_directory_of_another_uid_is_refused(tmp_path):
    planted = private(tmp_path / "planted")
    os.chown(planted, NOBODY, NOBODY)
    with pytest.raises(forkserver.ForkServerUnusable, match="owned by uid 65534"):
        forkserver.open_private_dir(planted)


def test_a_directory_others_may_enter_is_refused(tmp_path):
    os.mkdir(tmp_path / "open", 0o700)
    os.chmod(tmp_path / "open", 0o711)
    with pytest.raises(forkserver.ForkServerUnusable, match="mode 711"):
        forkserver.open_private_dir(str(tmp_path / "open"))


def test_a_link_to_a_good_directory_is_refused(tmp_path):
    good = private(tmp_path / "good")
    os.symlink(good, tmp_path / "link")
    with pytest.raises(forkserver.ForkServerUnusable, match="open .*link"):
        forkserver.open_private_dir(str(tmp_path / "link"))


@root_only
def test_a_socket_of_another_uid_in_the_directory_is_refused(tmp_path):
    fd = forkserver.open_private_dir(private(tmp_path / "dir"))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as planted:
            planted.bind(str(tmp_path / "dir" / "name"))
            os.chown(tmp_path / "dir" / "name", NOBODY, NOBODY)
            with pytest.raises(forkserver.ForkServerUnusable, match="not this uid's socket"):
                forkserver._connect_once(fd, "name")
    finally:
        os.close(fd)


LISTEN_AS_NOBODY = r'''
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.bind(sys.argv[1]); s.listen(); print("listening", flush=True)
conn, _ = s.accept(); conn.recv(1)
'''


@root_only
def test_a_daemon_of_another_uid_is_refused_by_the_owner(reachable):
    """SO_PEERCRED, owner side: a socket this uid owns (renamed and chowned
    in) whose listener runs as another uid."""
    tmp_path = reachable
    shared_dir = tmp_path / "open"
    os.mkdir(shared_dir)
    os.chmod(shared_dir, 0o777)
    listener = as_nobody(LISTEN_AS_NOBODY, str(shared_dir / "s"))
    try:
        assert listener.stdout.readline().strip() == "listening", listener.stderr.read()
        ours = private(tmp_path / "ours")
        os.rename(shared_dir / "s", os.path.join(ours, "name"))
        os.chown(os.path.join(ours, "name"), 0, 0)
        fd = forkserver.open_private_dir(ours)
        try:
            with pytest.raises(forkserver.ForkServerUnusable, match="runs as uid 65534"):
                forkserver._connect_once(fd, "name")
        finally:
            os.close(fd)
    finally:
        listener.kill()
        listener.wait()


CONNECT_AS_NOBODY = r'''
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1]); print("answer", s.recv(64), flush=True)
'''


@root_only
def test_the_daemon_refuses_a_client_of_another_uid(reachable):
    """SO_PEERCRED, daemon side: no zygote is forked for it, it is closed."""
    path = str(reachable / "s")
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as listener:
        listener.bind(path)
        os.chmod(path, 0o777)
        listener.listen()
        client = as_nobody(CONNECT_AS_NOBODY, path)
        try:
            forked = []
            assert forkserver._accept(listener, [], lambda conn, rest: forked.append(conn)) is None
            assert forked == []
            out, err = client.communicate(timeout=60)
            assert out.strip() == "answer b''", err
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()


@root_only
def test_an_unusable_directory_falls_back_to_a_private_zygote(tmp_path, monkeypatch):
    planted = private(tmp_path / "planted")
    os.chown(planted, NOBODY, NOBODY)
    monkeypatch.setattr(forkserver, "socket_dir", lambda environ=None: planted)
    monkeypatch.setenv(forkserver.ENV_IDLE, "600")
    started = zygote._start(("json",))
    try:
        assert type(started) is zygote.Zygote and started.alive()
        assert os.listdir(planted) == []
    finally:
        started.close()


def test_the_runtime_dir_is_used_only_when_it_is_the_users_and_0700(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 4321)
    runtime = tmp_path / "xdg"
    os.mkdir(runtime, 0o700)
    if os.stat(runtime).st_uid != 4321:
        if os.getuid() != 0:
            pytest.skip("needs root to chown")
        os.chown(runtime, 4321, 4321)
    assert forkserver.socket_dir({"XDG_RUNTIME_DIR": str(runtime)}) == \
        str(runtime / "sandbox-kernel-forkserver")
    os.chmod(runtime, 0o755)
    fallback = forkserver.socket_dir({"XDG_RUNTIME_DIR": str(runtime)})
    assert fallback.endswith("/sandbox-kernel-forkserver-4321")
    assert not os.path.basename(fallback).startswith("sbk-")


def test_the_idle_setting_turns_the_daemon_off_and_a_bad_one_is_said(capsys):
    assert forkserver.idle_seconds({forkserver.ENV_IDLE: "0"}) == 0
    assert forkserver.idle_seconds({forkserver.ENV_IDLE: "2.5"}) == 2.5
    assert forkserver.idle_seconds({}) == forkserver.DEFAULT_IDLE
    assert forkserver.idle_seconds({forkserver.ENV_IDLE: "soon"}) == forkserver.DEFAULT_IDLE
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 1 and "SANDBOX_KERNEL_FORKSERVER_IDLE='soon'" in said[0]


def test_the_key_changes_with_what_decides_the_zygote():
    base = zygote._what_the_zygote_is(("json",))
    assert forkserver.key(base) == forkserver.key(zygote._what_the_zygote_is(("json",)))
    for change in ({"preload": ["csv"]}, {"cwd": "/elsewhere"}, {"executable": "/other"},
                   {"environment": [("PYTHONPATH", "/x")]}):
        assert forkserver.key({**base, **change}) != forkserver.key(base), change


def test_a_daemon_that_hangs_up_before_forking_our_zygote_gives_a_private_one():
    """The first request was sent before the hello: it goes again, to a
    private zygote, and the start does not fail."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.close()                                    # the daemon died
    shared = zygote.SharedZygote(("json",), ours)
    assert not shared.alive()                         # shared() would replace it
    try:
        assert shared._exchange(b"{}", [0, 1, 2, 0, 0, 0]) != b""   # answered (an error)
        assert type(shared.process) is subprocess.Popen and shared.alive()
    finally:
        shared.close()


def test_a_move_into_the_v2_leaf_keeps_the_owners_daemon():
    """cgroup v2: the driver moves the owner's group, daemon included, into
    its leaf at the first container; the next owner must find that daemon."""
    from sandbox_kernel.runtime.cgroups import v2
    assert forkserver.V2_LEAF == v2.LEAF
    assert forkserver.owners_cgroup("0::/user.slice/s.scope/" + v2.LEAF) == "0::/user.slice/s.scope"
    assert forkserver.owners_cgroup("0::/user.slice/s.scope") == "0::/user.slice/s.scope"
    assert forkserver.owners_cgroup("4:memory:/a/b") == "4:memory:/a/b"
