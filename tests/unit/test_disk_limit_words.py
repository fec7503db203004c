"""Disk and memory told apart (issue 15, "Disk"): the writable layer's size,
the words a cell gets when the layer is full or when its files filled memory,
the footer's disk share, and the shmem figure of memory.stat.  Pure
functions: nothing here starts a container (tests/jupyter/test_disk_full.py
does)."""
from __future__ import annotations

import types

import pytest

from sandbox_kernel.runtime import rootfs
from sandbox_kernel.runtime.spec import DEFAULT_DISK, Limits
from sandbox_kernel.runtime.stats import parse_shmem, v1_stats, v2_stats
from sandbox_kernel.session import stats, verdicts
from sandbox_kernel.session.exchange import Ending, Outcome

MiB, GiB = 1 << 20, 1 << 30
ENOSPC_REPLY = {"status": "error", "ename": "OSError",
                "evalue": "[Errno 28] No space left on device"}
DEFAULTS = Limits(memory=GiB)    # the sandbox kernel's: 1G memory, --disk 1G


# -- the layer's size ------------------------------------------------------------

@pytest.mark.parametrize("disk, memory, size", [
    (DEFAULT_DISK, GiB, 512 * MiB),         # the defaults: the bad case, now half
    (DEFAULT_DISK, 8 * GiB, GiB),           # room enough: --disk as asked
    (2 * GiB, 256 * MiB, 128 * MiB),        # more disk than memory: capped
    (64 * MiB, GiB, 64 * MiB),              # a small disk stays small
    (DEFAULT_DISK, None, DEFAULT_DISK),     # no memory limit: nothing to fill
])
def test_the_layer_is_at_most_half_the_memory_its_files_count_against(disk, memory, size):
    assert rootfs.layer_size(disk, memory, files_are_memory=True) == size


def test_without_a_cgroup_the_files_are_not_memory_and_the_layer_is_disk():
    # the null driver: RLIMIT_AS does not count tmpfs pages, so only ENOSPC
    assert rootfs.layer_size(2 * GiB, 256 * MiB, files_are_memory=False) == 2 * GiB


def test_a_tiny_memory_limit_still_gives_a_usable_layer_never_more_than_disk():
    assert rootfs.layer_size(DEFAULT_DISK, 1 * MiB, files_are_memory=True) == MiB
    assert rootfs.layer_size(64 << 10, 1 * MiB, files_are_memory=True) == 64 << 10


# -- a full layer names --disk -------------------------------------------------------

def test_enospc_on_a_full_layer_names_disk_and_its_size():
    figures = {"disk_used": 1024 * MiB - 4096, "disk_limit": 1024 * MiB}
    words = verdicts.disk_note(ENOSPC_REPLY, figures, Limits(memory=4 * GiB, disk=GiB))
    assert words == ("the container's disk (its writable layer: /tmp, /workspace and image "
                     "writes) is full at the 1 GiB --disk limit; free space or raise it with "
                     "%container limits --disk 2G")


def test_a_layer_capped_by_memory_says_so_and_what_to_raise():
    figures = {"disk_used": 512 * MiB, "disk_limit": 512 * MiB}
    words = verdicts.disk_note(ENOSPC_REPLY, figures, DEFAULTS)
    assert "is full at 512 MiB (--disk 1 GiB is capped at half the memory limit" in words
    assert words.endswith("%container limits --memory 2G --disk 1G")
    assert "out of memory" not in words


def test_a_full_layer_is_named_even_when_the_cell_did_not_raise():
    # a subprocess (pip, dd) hit ENOSPC and the cell went on: the layer is full
    figures = {"disk_used": 256 * MiB, "disk_limit": 256 * MiB}
    words = verdicts.disk_note({"status": "ok"}, figures, Limits(memory=GiB, disk=256 * MiB))
    assert "is full at the 256 MiB --disk limit" in words


def test_enospc_with_room_left_or_unknown_figures_still_names_disk():
    # the cell deleted its partial file after the error, or the layer could not be looked at
    with_room = verdicts.disk_note(ENOSPC_REPLY, {"disk_used": 3 * MiB, "disk_limit": 512 * MiB},
                                  DEFAULTS)
    assert with_room.startswith("the cell got ENOSPC (no space left on device)")
    assert "--disk" in with_room and "3 MiB in use now" in with_room
    unknown = verdicts.disk_note(ENOSPC_REPLY, None, Limits(memory=4 * GiB, disk=GiB))
    assert "the 1 GiB --disk limit" in unknown and "in use now" not in unknown


def test_no_words_when_the_disk_is_not_the_matter():
    figures = {"disk_used": 10 * MiB, "disk_limit": 512 * MiB}
    other_error = {"status": "error", "ename": "OSError", "evalue": "[Errno 2] No such file"}
    assert verdicts.disk_note(other_error, figures, DEFAULTS) is None
    assert verdicts.disk_note({"status": "ok"}, figures, DEFAULTS) is None
    assert verdicts.disk_note({"status": "ok"}, None, DEFAULTS) is None


def test_size_arguments_are_what_one_types():
    assert verdicts.size_arg(2 * GiB) == "2G"
    assert verdicts.size_arg(768 * MiB) == "768M"
    assert verdicts.size_arg(768 * MiB + 1) == "769M"


# -- an OOM names the files' share ------------------------------------------------------

def test_an_oom_names_the_memory_the_layers_files_held():
    words = verdicts.files_share({"disk_used": 700 * MiB}, DEFAULTS)
    assert words == (", of which 700 MiB were files in the writable layer (/tmp, /workspace), "
                     "which are held in memory")


def test_the_cgroups_shmem_stands_in_when_the_layer_could_not_be_looked_at():
    words = verdicts.files_share({"disk_used": None, "memory_shmem": 300 * MiB}, DEFAULTS)
    assert "300 MiB were files in the writable layer" in words


def test_a_few_files_or_unknown_figures_are_not_named():
    assert verdicts.files_share({"disk_used": 40 * MiB}, DEFAULTS) == ""   # under a tenth
    assert verdicts.files_share({"disk_used": None, "memory_shmem": None}, DEFAULTS) == ""
    assert verdicts.files_share(None, DEFAULTS) == ""


def test_a_death_by_oom_says_how_much_of_it_was_files():
    outcome = Outcome(Ending.DIED)
    result = types.SimpleNamespace(status="oom", signal=9, exit_code=None)
    after = {"oom_kills": 1, "memory_peak": GiB, "disk_used": 512 * MiB, "disk_limit": 512 * MiB}
    status, words = verdicts.judge_death(outcome, result, {"oom_kills": 0}, after, None,
                                         limits=DEFAULTS, timeout_grace=2.0, interrupt_grace=5.0,
                                         last_words="")
    assert status == "oom"
    assert words.startswith("the cell ran out of memory at the 1 GiB limit (peak 1 GiB), "
                            "of which 512 MiB were files in the writable layer")
    assert words.endswith("its variables are lost")


def test_a_reply_after_enospc_keeps_its_status_and_gets_the_disk_words():
    outcome = Outcome(Ending.REPLY, reply=ENOSPC_REPLY)
    after = {"oom_kills": 0, "disk_used": 512 * MiB, "disk_limit": 512 * MiB}
    status, words = verdicts.judge_reply(outcome, {"oom_kills": 0}, after, None, DEFAULTS)
    assert status == "error" and "--disk" in words and "is full" in words


def test_a_process_killed_by_oom_while_the_container_lives_names_the_files_too():
    outcome = Outcome(Ending.REPLY, reply={"status": "error", "ename": "CalledProcessError",
                                              "evalue": "died of SIGKILL"})
    after = {"oom_kills": 1, "disk_used": 400 * MiB, "disk_limit": 512 * MiB}
    status, words = verdicts.judge_reply(outcome, {"oom_kills": 0}, after, None, DEFAULTS)
    assert status == "oom" and "400 MiB were files in the writable layer" in words


# -- the footer ---------------------------------------------------------------------------

def _footer(**cell):
    return stats.footer_text({"session": "s", "image": "host", "limits": {}, "cell": cell})


def test_the_footer_shows_the_layers_share_and_names_disk_when_full():
    assert "disk 12 MiB / 512 MiB" in _footer(disk_used=12 * MiB, disk_limit=512 * MiB)
    full = _footer(disk_used=512 * MiB, disk_limit=512 * MiB)
    assert "disk 512 MiB / 512 MiB full (--disk)" in full
    assert "disk n/a / 512 MiB" in _footer(disk_used=None, disk_limit=512 * MiB)
    assert "disk" not in _footer()       # no figure at all: nothing to show


def test_disk_full_needs_both_figures():
    assert stats.disk_full(512 * MiB - 4096, 512 * MiB)
    assert not stats.disk_full(500 * MiB, 512 * MiB)
    assert not stats.disk_full(None, 512 * MiB) and not stats.disk_full(5, None)


# -- memory.stat's shmem -------------------------------------------------------------------

V2_MEMORY_STAT = "anon 1048576\nfile 536870912\nshmem 536870912\nfile_mapped 0\n"
V1_MEMORY_STAT = ("cache 536870912\nrss 1048576\nshmem 4096\nmapped_file 0\n"
                  "total_cache 536870912\ntotal_shmem 536870912\n")


def test_shmem_is_read_from_memory_stat_on_v1_and_v2():
    assert parse_shmem(V2_MEMORY_STAT) == 512 * MiB
    assert parse_shmem(V1_MEMORY_STAT, v1=True) == 512 * MiB     # the total: children too
    assert parse_shmem("cache 0\nrss 0\n", v1=True) is None        # an old kernel: unknown
    assert v2_stats({"memory.stat": V2_MEMORY_STAT}).memory_shmem == 512 * MiB
    assert v1_stats({"memory.stat": V1_MEMORY_STAT}).memory_shmem == 512 * MiB
    assert v2_stats({}).memory_shmem is None and v1_stats({}).memory_shmem is None
