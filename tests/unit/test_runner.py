"""The cell runner (session/runner.py) against a fake Session and Sessions:
the order of its steps, the restart it reports, and what a failing push or
pull leaves behind.  No root, no container: the faces over it and a real
session are tests/jupyter/test_magics.py and test_kernel.py."""
from __future__ import annotations

import pytest

from sandbox_kernel.runtime.spec import Limits
from sandbox_kernel.session import runner, stats
from sandbox_kernel.session.client import CellResult, SessionBusy, VariableError
from sandbox_kernel.session.runner import Cell, CellRunner, StepFailed


def _stats(status: str, wall: float = 0.5) -> dict:
    return stats.build_stats(session="s", image="host", limits=Limits(), execution_count=1,
                             wall=wall, figures={}, status=status)


class FakeSession:
    """Records every call in the shared ``events`` list."""

    image = "host"
    notebook_dir = None

    def __init__(self, events: list, name: str):
        self.events, self.name = events, name
        self.values = {"held": 7}          # the container's variables
        self.result = CellResult({"status": "ok", "execution_count": 1}, _stats("ok"), "ok")
        self.running, self.uptime = True, 100.0      # uptime: what the old guess read
        self.push_error: Exception | None = None
        self.execute_error: Exception | None = None

    def push(self, values: dict) -> list:
        self.events.append(("push", sorted(values)))
        if self.push_error is not None:
            raise self.push_error
        self.values.update(values)
        return sorted(values)

    def execute(self, code, **kwargs):
        self.events.append(("execute", code))
        if self.execute_error is not None:
            raise self.execute_error
        kwargs["on_output"]("stream", {"name": "stdout", "text": "out\n"})
        return self.result

    def run_command(self, argv, **kwargs):
        self.events.append(("command", argv))
        return self.result

    def pull(self, names) -> dict:
        self.events.append(("pull", list(names)))
        missing = [n for n in names if n not in self.values]
        if missing:
            raise VariableError(missing[0], f"cannot pull {missing[0]!r}: name {missing[0]!r} is not defined")
        return {n: self.values[n] for n in names}

    def status(self) -> dict:
        return {"uptime": self.uptime}


class FakeSessions:
    """What the runner asks of commands.Sessions: open, sessions, footer."""

    def __init__(self, events: list):
        self.events, self.sessions, self.footer = events, {}, True

    def open(self, name, **options):
        self.events.append(("open", name, {k: v for k, v in options.items() if v is not None}))
        session = self.sessions.setdefault(name, FakeSession(self.events, name))
        return session, ["a note"] if options.get("memory") else []


class FakePanel:
    def __init__(self, events: list):
        self.events = events

    def cell_started(self, session, *, execution_count=None) -> None:
        self.events.append(("panel start", execution_count))

    def cell_finished(self, session, stats, *, footer="beside") -> None:
        self.events.append(("panel end", None if stats is None else stats["cell"]["status"]))
        self.footer_places = getattr(self, "footer_places", []) + [footer]


class FakeFace:
    def __init__(self, events: list):
        self.events, self.outputs, self.footers = events, [], []

    def opened(self, session, notes) -> None:
        self.events.append(("opened", list(notes)))

    def output(self, kind, content) -> None:
        self.outputs.append((kind, content))

    def concluded(self, run) -> None:
        self.events.append(("concluded", run.result.status))

    def stats(self, stats_, footer) -> None:
        self.events.append(("stats", stats_["cell"]["status"], footer))
        self.beside = (stats_, footer)

    def footer(self, bundle) -> None:
        self.events.append(("footer", bundle[stats.MIME_TYPE]["cell"]["status"]))
        self.footers.append(bundle)


@pytest.fixture
def events():
    return []


@pytest.fixture
def cells(events):
    return CellRunner(FakeSessions(events), FakePanel(events))


def _names(events) -> list:
    return [event[0] for event in events]


def test_push_before_execute_pull_after_the_panel_marks_around_and_the_stats_last(cells, events):
    face, namespace = FakeFace(events), {"data": [1, 2]}
    cell = Cell("total = sum(data)", session="io", options={"memory": "1G"},
                inputs=["data"], outputs=["held"], execution_count=4)
    run = cells.run(cell, face, namespace)
    assert events == [("open", "io", {"memory": "1G"}), ("opened", ["a note"]),
                      ("push", ["data"]), ("panel start", 4), ("execute", "total = sum(data)"),
                      ("panel end", "ok"), ("pull", ["held"]), ("concluded", "ok"),
                      ("stats", "ok", "beside")]
    assert namespace == {"data": [1, 2], "held": 7}
    assert face.outputs == [("stream", {"name": "stdout", "text": "out\n"})]
    assert run.session is cells.sessions.sessions["io"] and run.restarted is False


def test_by_default_the_footer_is_beside_the_outputs_never_one_of_them(cells, events):
    """Issue 17: the outputs are only what the code produced; the face gets
    the stats (the kernel's reply metadata) and the panel the place (the
    magics' footer, drawn by the labextension from the panel's cell_end)."""
    face = FakeFace(events)
    cells.run(Cell("x = 1"), face)
    assert face.footers == [] and "footer" not in _names(events)
    contract, place = face.beside
    assert place == "beside" and contract["cell"]["status"] == "ok"
    assert cells.panel.footer_places == ["beside"]


@pytest.mark.parametrize("switch, place", [
    (True, "beside"), ("beside", "beside"), ("output", "output"), (False, "off"), ("off", "off")])
def test_the_sessions_footer_says_where_it_goes(cells, events, switch, place):
    """%container footer beside|output|off, stats on|off and the kernel's
    setting all set Sessions.footer; True and False are the old switch."""
    cells.sessions.footer = switch
    face = FakeFace(events)
    cells.run(Cell("x = 1"), face)
    assert face.beside[1] == place and cells.panel.footer_places == [place]
    assert len(face.footers) == (1 if place == "output" else 0)


def test_footer_output_brings_back_the_footer_as_the_last_output(cells, events):
    cells.sessions.footer = "output"
    face = FakeFace(events)
    cells.run(Cell("x = 1"), face)
    assert _names(events)[-2:] == ["stats", "footer"]
    assert set(face.footers[0]) == {"text/plain", "text/html", stats.MIME_TYPE}


def test_a_command_runs_instead_of_the_code_and_a_failed_one_pulls_nothing(cells, events):
    session, _ = cells.sessions.open("sh")
    session.result = CellResult({"status": "ok"}, _stats("ok"), "ok", exit_code=3)
    run = cells.run(Cell("exit 3", session="sh", command=["/bin/sh", "-c", "exit 3"],
                         outputs=["held"]), FakeFace(events))
    assert ("command", ["/bin/sh", "-c", "exit 3"]) in events
    assert "execute" not in _names(events) and "pull" not in _names(events)
    assert run.failed_command and not run.succeeded


def test_no_footer_when_the_cell_or_the_sessions_say_so(cells, events):
    cells.sessions.footer = "output"
    cells.run(Cell("pass", footer=False), FakeFace(events))
    cells.sessions.footer = False
    cells.run(Cell("pass"), FakeFace(events))
    assert "footer" not in _names(events) and _names(events).count("concluded") == 2
    assert [e for e in events if e[0] == "stats"] == [("stats", "ok", "off")] * 2


def test_the_kernel_s_options_make_a_new_session_but_never_change_an_existing_one(cells, events):
    cells.sessions.open("default")
    events.clear()
    cells.run(Cell("pass", options={"memory": "2G"}, change_existing=False), FakeFace(events))
    assert "open" not in _names(events)
    cells.run(Cell("pass", options={"memory": "2G"}), FakeFace(events))
    assert ("open", "default", {"memory": "2G"}) in events


@pytest.mark.parametrize("status, restarted, uptime", [
    ("oom", True, 100.0), ("killed", True, 100.0), ("timeout", False, 1.0), ("oom", False, 1.0),
])
def test_a_restart_is_reported_as_the_session_says_not_guessed_from_the_uptime(
        cells, events, status, restarted, uptime):
    """Contract 4: CellResult.restarted; the kernel used to guess from an
    uptime shorter than the cell, which a fresh container's has."""
    session, _ = cells.sessions.open("default")
    session.uptime = uptime
    session.result = CellResult({"status": "error"}, _stats(status, wall=5.0), status,
                                restarted=restarted)
    assert cells.run(Cell("x = 1"), FakeFace(events)).restarted is restarted


def test_a_failing_push_is_one_clear_error_and_the_next_cell_runs(cells, events):
    session, _ = cells.sessions.open("default")
    session.push_error = VariableError("lock", "cannot push 'lock': cannot pickle '_thread.lock' object")
    with pytest.raises(StepFailed) as failed:
        cells.run(Cell("print(lock)", inputs=["lock"]), FakeFace(events), {"lock": object()})
    assert failed.value.step == "push" and isinstance(failed.value.error, VariableError)
    assert str(failed.value) == "cannot push 'lock': cannot pickle '_thread.lock' object"
    assert "\n" not in str(failed.value)
    # nothing ran and the panel was not left with a cell started
    assert not {"panel start", "execute", "footer"} & set(_names(events))
    session.push_error = None
    events.clear()
    cells.run(Cell("print(1)"), FakeFace(events))
    assert _names(events) == ["open", "opened", "panel start", "execute", "panel end", "concluded",
                              "stats"]


def test_an_input_not_defined_here_is_named_before_anything_is_sent(cells, events):
    with pytest.raises(StepFailed) as failed:
        cells.run(Cell("pass", inputs=["a,nope", "gone"]), FakeFace(events), {"a": 1})
    assert failed.value.step == "push"
    assert str(failed.value) == "-i: not defined in this kernel: nope, gone"
    assert "push" not in _names(events) and "panel start" not in _names(events)


def test_not_a_variable_name_is_refused_before_the_push(cells, events):
    with pytest.raises(StepFailed) as failed:
        cells.run(Cell("pass", outputs=["1x"]), FakeFace(events))
    assert failed.value.step == "names" and "'1x'" in str(failed.value)
    assert "execute" not in _names(events)


def test_an_output_the_container_does_not_have_names_it_after_the_panel_s_end(cells, events):
    namespace = {}
    with pytest.raises(StepFailed) as failed:
        cells.run(Cell("pass", outputs=["held,missing"]), FakeFace(events), namespace)
    assert failed.value.step == "pull" and failed.value.error.name == "missing"
    assert "'missing'" in str(failed.value)
    assert _names(events)[-3:] == ["execute", "panel end", "pull"]
    assert "footer" not in _names(events) and namespace == {}


def test_a_failed_cell_pulls_nothing(cells, events):
    session, _ = cells.sessions.open("default")
    session.result = CellResult({"status": "error"}, _stats("error"), "error")
    cells.run(Cell("1/0", outputs=["held"]), FakeFace(events))
    assert "pull" not in _names(events) and _names(events)[-1] == "stats"


def test_an_execute_that_raises_still_ends_the_panel_s_mark(cells, events):
    session, _ = cells.sessions.open("default")
    session.execute_error = SessionBusy("the session is running another request")
    with pytest.raises(StepFailed) as failed:
        cells.run(Cell("pass"), FakeFace(events))
    assert failed.value.step == "execute" and isinstance(failed.value.error, SessionBusy)
    assert _names(events)[-2:] == ["execute", "panel end"] and events[-1] == ("panel end", None)


def test_the_runner_imports_no_face_and_no_jupyter():
    imported = {line.split()[1] for line in open(runner.__file__).read().splitlines()
                if line.startswith(("import ", "from "))}
    assert not {name for name in imported
                if name.startswith(("..kernel", "..magics", "..panel", "IPython", "ipykernel"))}
