"""A full disk is not an out-of-memory death (issue 15, "Disk").

The container's writable layer (/tmp, the fresh /workspace, image writes) is
a tmpfs, and a cgroup charges its pages to the container's memory.  With the
old defaults (a 1 GiB layer under a 1 GiB memory limit) a cell that filled
/tmp filled memory first: the container was killed as out of memory, the
variables were lost, and the cell never saw ENOSPC.  Now the layer is at most
half the memory limit (runtime/rootfs.py ``layer_size``): a cell that fills
/tmp under the defaults gets OSError [Errno 28], one sentence names --disk,
the footer shows the layer's share, and the variables are kept.  When the
memory does run out while the layer holds many files, the OOM message says
how much of it was files.

Through the default sandbox kernel and jupyter_client.  Needs root
(conftest.py skips the tier otherwise).  Every loop and wait is bounded.
"""
from __future__ import annotations

import pytest

import kernel_fixtures as kf  # tests/jupyter is on pytest's pythonpath (pyproject)

NAME = "sbk-test-disk-full"
MiB = 1 << 20

# Writes /tmp in 1 MiB chunks until the write fails; bounded (4 GiB at most,
# well past any default), and the error is the cell's.
FILL_TMP = """
written = 0
with open('/tmp/fill', 'wb') as out:
    for _ in range(4096):
        out.write(b'x' * (1 << 20))
        written += 1
"""


@pytest.fixture(scope="module", autouse=True)
def kernelspecs(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("jupyter-data"))
    kf.install_kernelspec(data, NAME)     # the defaults: 1G memory, --disk 1G
    with kf.jupyter_path(data):
        yield data


@pytest.fixture
def kernel():
    with kf.kernels_of_one_test(NAME) as start:
        yield start()


def _fill_tmp(kernel) -> kf.Ran:
    ran = kernel.run(FILL_TMP, timeout=120)
    assert ran.reply["status"] == "error", "4 GiB fit in /tmp under the defaults"
    return ran


def test_a_full_tmp_is_enospc_naming_disk_and_the_variables_are_kept(kernel):
    kf.ok(kernel.run("x = 41"))
    ran = _fill_tmp(kernel)
    assert ran.reply["ename"] == "OSError", ran.reply           # not ContainerOutOfMemory
    assert "[Errno 28]" in ran.reply["evalue"], ran.reply
    notice = ran.stderr
    assert "--disk" in notice and "is full" in notice, notice
    assert "out of memory" not in notice + ran.error_text
    footer_text = [c["data"]["text/plain"] for c in ran.of("display_data") if kf.STATS_MIME in c["data"]]
    assert "disk 512 MiB / 512 MiB full (--disk)" in footer_text[-1], footer_text
    cell = ran.footers[-1]["cell"]
    assert cell["status"] == "error" and cell["oom_kills"] == 0, cell
    assert cell["disk_limit"] == 512 * MiB, cell              # half the 1 GiB memory limit
    assert cell["disk_limit"] - cell["disk_used"] < 8 * MiB, cell
    # the session keeps its variables, and the file that filled the disk
    assert kf.ok(kernel.run("x + 1")).result == "42"
    assert kf.ok(kernel.run("import os; os.path.getsize('/tmp/fill') // (1 << 20) > 400")).result == "True"


def test_an_oom_while_the_layer_holds_files_names_the_files_share(kernel):
    # a 256 MiB layer (within the classroom policy's cap), filled: 256 MiB
    # of the 1 GiB memory are files; then 900 MiB more do not fit
    kf.ok(kernel.run("%container limits --disk 256M"))
    fill = _fill_tmp(kernel)
    assert "[Errno 28]" in fill.reply["evalue"], fill.reply
    ran = kernel.run("y = b'x' * (900 << 20)", timeout=120)   # touches every page
    assert ran.reply["status"] == "error"
    assert ran.reply["ename"] == "ContainerOutOfMemory", ran.reply
    words = ran.reply["evalue"]
    assert "ran out of memory at the 1 GiB limit" in words, words
    assert "of which 256 MiB were files in the writable layer (/tmp, /workspace)" in words, words
    assert ran.footers[-1]["cell"]["status"] == "oom"
    # a fresh container: an empty layer again
    after = kf.ok(kernel.run("import os; os.path.exists('/tmp/fill')"))
    assert after.result == "False"
