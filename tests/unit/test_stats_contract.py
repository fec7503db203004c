"""The stats contract and its footer: shape, deltas, and nulls that stay null."""
from __future__ import annotations

import json

import pytest

from sandbox_kernel.runtime.spec import Limits
from sandbox_kernel.session import stats

MiB = 1 << 20


def counters(**values):
    base = dict.fromkeys(("memory_current", "memory_peak", "memory_limit", "pids_current",
                          "pids_peak", "pids_limit", "cpu_user", "cpu_system", "io_read",
                          "io_write", "oom_kills", "throttled_time", "net_rx", "net_tx"))
    base.update(values)
    return base


def contract(figures, status="ok", limits=Limits(memory=256 * MiB, timeout=30.0)):
    return stats.build_stats(session="s", image="host", limits=limits, execution_count=3,
                             wall=0.25, figures=figures, status=status)


def test_the_shape_is_the_design_contract():
    result = contract(stats.cell_figures(counters(), counters(), peaks_reset=True))
    assert set(result) == {"session", "image", "limits", "cell"}
    assert set(result["limits"]) == {"memory", "cpus", "pids", "timeout"}
    assert set(result["cell"]) == set(stats.CELL_FIELDS)
    assert result["limits"] == {"memory": 256 * MiB, "cpus": None, "pids": None, "timeout": 30.0}
    assert result["cell"]["execution_count"] == 3 and result["cell"]["status"] == "ok"


def test_cumulative_counters_become_the_cells_own_figures():
    before = counters(cpu_user=1.0, cpu_system=0.5, io_read=100, io_write=10, oom_kills=0,
                      throttled_time=0.0, net_rx=5, net_tx=7)
    after = counters(cpu_user=1.75, cpu_system=0.5, io_read=4196, io_write=10, oom_kills=1,
                     throttled_time=0.25, net_rx=5, net_tx=8, memory_current=50 * MiB,
                     memory_peak=80 * MiB, memory_limit=256 * MiB, pids_current=2, pids_peak=4)
    cell = stats.cell_figures(before, after, peaks_reset=True)
    assert cell["cpu_user"] == pytest.approx(0.75)
    assert cell["cpu_system"] == 0
    assert (cell["io_read"], cell["io_write"]) == (4096, 0)
    assert (cell["oom_kills"], cell["throttled_time"]) == (1, 0.25)
    assert (cell["net_rx"], cell["net_tx"]) == (0, 1)
    assert (cell["memory_current"], cell["memory_peak"], cell["pids_peak"]) == (50 * MiB, 80 * MiB, 4)


def test_unknown_figures_stay_null_never_zero():
    before = counters(cpu_user=1.0, io_read=None)
    after = counters(cpu_user=None, io_read=4096, memory_peak=80 * MiB)
    cell = contract(stats.cell_figures(before, after, peaks_reset=True))["cell"]
    for key in ("cpu_user", "io_read", "cpu_system", "net_rx", "net_tx", "oom_kills",
                "pids_current", "memory_current", "throttled_time"):
        assert cell[key] is None, key
    bundle = stats.footer_bundle(contract(stats.cell_figures(None, None, peaks_reset=False)))
    assert all(value is None for key, value in bundle[stats.MIME_TYPE]["cell"].items()
               if key not in ("execution_count", "wall", "status"))
    assert " 0 B" not in bundle["text/plain"] and "n/a" in bundle["text/plain"]


def test_peaks_that_were_not_reset_are_null():
    after = counters(memory_peak=80 * MiB, pids_peak=4)
    cell = stats.cell_figures(counters(), after, peaks_reset=False)
    assert cell["memory_peak"] is None and cell["pids_peak"] is None


def test_a_counter_that_went_backwards_counts_from_zero():
    # the container was replaced during the cell: the new one's counters start at 0
    assert stats.delta(10.0, 2.0) == 2.0
    assert stats.delta(None, 2.0) is None


def test_status_must_be_one_of_the_contracts():
    with pytest.raises(ValueError, match="crashed"):
        contract({}, status="crashed")
    assert contract({}, status=None)["cell"]["status"] is None


def test_the_footer_has_three_mime_types_one_line_each_and_is_json():
    figures = stats.cell_figures(counters(cpu_user=0.0), counters(
        cpu_user=0.5, memory_current=50 * MiB, memory_peak=80 * MiB, memory_limit=256 * MiB,
        pids_current=2, oom_kills=1, cpu_system=0.1), peaks_reset=True)
    bundle = stats.footer_bundle(contract(figures, status="oom"))
    assert set(bundle) == {"text/plain", "text/html", stats.MIME_TYPE}
    assert "\n" not in bundle["text/plain"] and "\n" not in bundle["text/html"]
    assert "peak 80 MiB" in bundle["text/plain"] and "256 MiB" in bundle["text/plain"]
    assert "oom" in bundle["text/plain"]
    json.dumps(bundle[stats.MIME_TYPE], allow_nan=False)


def test_the_html_footer_escapes_the_session_name():
    result = stats.build_stats(session="<script>x</script>", image="host", limits=Limits(),
                               execution_count=1, wall=0.1, figures={}, status="ok")
    assert "<script>" not in stats.footer_html(result)
    assert "&lt;script&gt;" in stats.footer_html(result)


def test_the_html_footer_wraps_to_its_width_instead_of_running_past_it():
    """Issue 17, "the footer overflows": it was nowrap with a scrollbar."""
    result = stats.with_notebook_dir(contract({}), "/home/student/" + "deep/" * 40 + " ro+overlay")
    markup = stats.footer_html(result)
    assert "nowrap" not in markup and "overflow-x" not in markup
    assert "white-space:normal" in markup and "overflow-wrap:anywhere" in markup


def test_beside_is_the_reply_metadata_the_contract_the_place_and_the_dir():
    """Contract 2: {"sandbox_kernel": beside(...)} in the execute_reply's metadata."""
    result = stats.with_notebook_dir(contract({"cpu_user": float("nan")}), "/course ro+overlay")
    entry = stats.beside(result, "beside")
    assert entry == {"stats": stats.json_safe(contract({})), "footer": "beside",
                     "notebook_dir": "/course ro+overlay"}
    assert "notebook_dir" not in entry["stats"] and entry["stats"]["cell"]["cpu_user"] is None
    assert stats.beside(contract({}), "off") == {"stats": stats.json_safe(contract({})),
                                                 "footer": "off"}
    assert stats.REPLY_KEY == "sandbox_kernel"
    json.dumps(entry, allow_nan=False)


def test_non_finite_numbers_become_null_in_the_json():
    result = contract({"cpu_user": float("nan")})
    assert stats.footer_bundle(result)[stats.MIME_TYPE]["cell"]["cpu_user"] is None


@pytest.mark.parametrize("n, text", [(None, "n/a"), (0, "0 B"), (1536, "1.5 KiB"),
                                     (256 * MiB, "256 MiB"), (3 << 30, "3 GiB")])
def test_format_bytes(n, text):
    assert stats.format_bytes(n) == text


def test_the_writable_layers_figures_are_levels_at_the_cells_end_and_null_when_unknown():
    # disk_used/disk_limit (issue 15): the layer's bytes at the end and its size
    before = counters(disk_used=100 * MiB, disk_limit=512 * MiB)
    after = counters(disk_used=300 * MiB, disk_limit=512 * MiB)
    cell = contract(stats.cell_figures(before, after, peaks_reset=True))["cell"]
    assert (cell["disk_used"], cell["disk_limit"]) == (300 * MiB, 512 * MiB)
    unknown = contract(stats.cell_figures(None, counters(), peaks_reset=True))["cell"]
    assert unknown["disk_used"] is None and unknown["disk_limit"] is None
    assert "disk" not in stats.footer_text(contract(stats.cell_figures(None, counters(), peaks_reset=True)))
    assert "disk 300 MiB / 512 MiB" in stats.footer_text(contract(
        stats.cell_figures(before, after, peaks_reset=True)))


def test_forks_refused_at_the_pids_limit_are_the_cells_own_and_shown():
    before = counters(pids_refused=5)
    after = counters(pids_refused=11)
    cell = stats.cell_figures(before, after, peaks_reset=True)
    assert cell["pids_refused"] == 6
    assert stats.cell_figures(before, counters(pids_refused=None), peaks_reset=True)["pids_refused"] is None
    contract = stats.build_stats(session="s", image="host", limits=Limits(pids=64), execution_count=1,
                                 wall=1.0, figures=cell, status="error")
    assert "6 refused at the limit" in dict(stats.footer_parts(contract))["pids"]


# -- SessionSnapshot: what Session.snapshot() returns and the panel reads -----------

def test_a_session_snapshot_is_frozen_and_has_the_contracts_fields():
    import dataclasses
    snapshot = stats.SessionSnapshot(
        name="s", image="host", network="none", limits=Limits(memory=256 * MiB), state="running",
        uptime=1.5, execution_count=2, counters=counters(memory_current=MiB), trust_output=False,
        warnings=("pids not enforced",))
    assert [f.name for f in dataclasses.fields(stats.SessionSnapshot)] == [
        "name", "image", "network", "limits", "state", "uptime", "execution_count", "counters",
        "trust_output", "warnings"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.state = "stopped"
    assert stats.limits_dict(snapshot.limits)["memory"] == 256 * MiB


def test_the_stats_contract_imports_nothing_of_the_project():
    """The panel imports this module and only this one of the project: what
    it imports, the panel would too."""
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(stats))
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                if node.level or (node.module or "").startswith("sandbox_kernel")]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names if alias.name.startswith("sandbox_kernel")]
    assert imported == []
