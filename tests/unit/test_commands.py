"""%container's parsing, and the subcommands against a stand-in session (no
container): usage errors are clean UsageErrors, never SystemExit."""
from __future__ import annotations

import sys

import pytest

from sandbox_kernel.runtime.spec import Limits
from sandbox_kernel.session import commands
from sandbox_kernel.session.commands import HelpRequested, Sessions, UsageError


def test_commands_does_not_import_ipython():
    assert "IPython" not in {name.split(".")[0] for name in commands.__dict__
                             if isinstance(getattr(commands, name), type(sys))}
    import ast, inspect
    tree = ast.parse(inspect.getsource(commands))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(name.startswith("IPython") for name in imported)


# a bad line -> words its one line must have: what was wrong, and what is accepted
BAD_LINES = {
    "": ["no subcommand given", "status|limits|"],
    "frobnicate": ["unknown subcommand 'frobnicate'", "usage: %container status|limits|restart"],
    "--bogus": ["unknown option --bogus", "status|limits|"],
    "exec": ["%container exec: no command given", "-- CMD", "e.g. %container exec -- ps aux"],
    "exec --": ["%container exec: no command given", "-- CMD"],
    "exec --name": ["--name needs a value", "the session"],
    "status --bogus": ["%container status: unknown option --bogus", "[--name NAME]"],
    "status extra": ["unexpected argument 'extra'", "usage: %container status [--name NAME]"],
    "status --name a b": ["unexpected argument 'b'"],
    "restart --name": ["%container restart: --name needs a value"],
    "stop --force": ["%container stop: unknown option --force", "[--name NAME]"],
    "limits --memory": ["%container limits: --memory needs a value", "512M"],
    "limits --cpus": ["--cpus needs a value", "0.5"],
    "limits --image": ["--image needs a value", "%container images"],
    "limits --swap 1G": ["unknown option --swap", "--memory MEMORY", "--cpus CPUS"],
    "stats maybe": ["unknown switch 'maybe'", "[on|off]"],
    "stats on off": ["unexpected argument 'off'"],
    "push": ["%container push: missing NAMES", "usage: %container push"],
    "pull": ["%container pull: missing NAMES"],
    "push 1abc": ["not variable names: '1abc'", "NAMES"],
    "sessions extra": ["%container sessions: unexpected argument 'extra'"],
    "on --bogus": ["%container on: unknown option --bogus"],
    "off now": ["%container off: unexpected argument 'now'"],
    "images --all": ["%container images: unknown option --all"],
    "image": ["%container image: no action given", "ls|import|inspect|rm|pull|build"],
    "image frob": ["unknown action 'frob'", "usage: %container image ls|import|inspect|rm|pull|build"],
    "image import": ["%container image import: missing PATH", "[--name IMAGE_NAME]"],
    "image import p --bogus": ["%container image import: unknown option --bogus"],
    "image inspect": ["%container image inspect: missing IMAGE"],
    "image rm": ["%container image rm: missing IMAGE"],
    "image pull": ["%container image pull: missing REFERENCE"],
    "image build": ["missing IMAGE, --from BASE, --run SCRIPT"],
    "image build x --from y": ["missing --run SCRIPT", "--net NET"],
    "status 'unclosed": ["no closing quotation", "quote each argument whole"],
}


@pytest.mark.parametrize("line", sorted(BAD_LINES))
def test_a_bad_line_is_one_line_saying_what_was_wrong_and_what_is_accepted(line):
    with pytest.raises(UsageError) as caught:
        commands.parse(line)
    message = str(caught.value)
    assert "\n" not in message, message
    assert "error:" not in message and "[-h]" not in message, message    # no argparse block
    for words in BAD_LINES[line]:
        assert words in message, (words, message)


@pytest.mark.parametrize("line, words", [
    ("limits --memory lots", ["invalid memory 'lots'", "512M"]),
    ("limits --cpus many", ["invalid cpus 'many'", "0.5"]),
    ("limits --pids -3", ["invalid pids '-3'", "256"]),
    ("limits --timeout forever", ["invalid timeout 'forever'", "30s"]),
    ("limits --disk x", ["invalid disk 'x'", "512M"]),
    ("limits --net wifi", ["invalid net 'wifi'", "none", "host"]),
    ("status --name nope", ["no session named 'nope'", "default"]),
])
def test_a_bad_value_is_one_line_too(line, words):
    from sandbox_kernel.session.client import Session
    sessions = Sessions(factory=Session)       # never started: values are checked first
    sessions.open("default")
    with pytest.raises(UsageError) as caught:
        commands.run(line, sessions)
    message = str(caught.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, (word, message)


def test_a_several_line_error_of_a_command_becomes_one_line():
    assert commands.one_line("build failed:\n  step 2\n\n exit 1\n") == "build failed:; step 2; exit 1"


def test_help_is_text_not_an_exit():
    with pytest.raises(HelpRequested, match="status"):
        commands.parse("-h")
    with pytest.raises(HelpRequested, match="--memory"):
        commands.parse("limits -h")


@pytest.mark.parametrize("line, words", [("?", "status"), ("limits?", "--memory"),
                                          ("limits ?", "--memory"), ("image rm ?", "image")])
def test_a_question_mark_is_the_whole_help(line, words):
    with pytest.raises(HelpRequested) as shown:
        commands.parse(line)
    assert words in str(shown.value) and "usage:" in str(shown.value)
    assert commands.run(line, Sessions(factory=FakeSession)).text.count("\n") > 2


def test_exec_passes_a_question_mark_to_the_program():
    assert commands.parse("exec -- ls ?").argv == ["ls", "?"]


def test_parsing():
    args = commands.parse("limits --name x --memory 1G --cpus 2 --net host")
    assert (args.command, args.name, args.memory, args.cpus, args.net) == ("limits", "x", "1G", "2", "host")
    assert commands.parse("status").name == "default"
    assert commands.parse("push a,b c").names == ["a", "b", "c"]
    assert commands.parse("exec --name n -- ps aux --forest").argv == ["ps", "aux", "--forest"]
    assert commands.parse("exec -- sh -c 'echo hi'").argv == ["sh", "-c", "echo hi"]
    assert commands.parse("stats off").switch == "off"


class FakeSession:
    """What commands.run needs of a Session, recorded."""

    def __init__(self, name, image="host", limits=Limits(), network="none"):
        self.name, self.image, self.limits, self.network = name, image, limits, network
        self.cell_history = []
        self.calls = []
        self.pushed = {}

    def status(self):
        return {"name": self.name, "image": self.image, "network": self.network, "state": "running",
                "container": "sbk-1-ab", "pid": 7, "uptime": 1.5, "cells": 0, "execution_count": 0,
                "limits": {}, "stats": {"memory_current": 1 << 20, "memory_peak": None,
                                        "pids_current": 2, "cpu_user": None, "cpu_system": 0.1,
                                        "oom_kills": 0}}

    def set_limits(self, **strings):
        self.calls.append(("set_limits", strings))
        return {"changed": ["memory"], "restart_needed": ["net"] if strings.get("net") else []}

    def push(self, values):
        self.pushed.update(values)

    def pull(self, names):
        return {n: f"value of {n}" for n in names}

    def exec_command(self, argv, on_output=None):
        self.calls.append(("exec", argv))
        return 3, "out\n"

    def restart(self):
        self.calls.append(("restart",))

    def stop(self):
        self.calls.append(("stop",))


@pytest.fixture
def sessions():
    registry = Sessions(factory=FakeSession)
    registry.open("default", memory="256M")
    return registry


def test_open_creates_with_limits_then_changes_them(sessions):
    session = sessions.sessions["default"]
    assert session.limits.memory == 256 << 20
    same, notes = sessions.open("default", net="host")
    assert same is session and any("restart" in n for n in notes)
    with pytest.raises(ValueError, match="memory"):
        sessions.open("other", memory="lots")


def test_status_and_sessions_tables(sessions):
    out = commands.run("status", sessions)
    assert "running" in out.text and "sbk-1-ab" in out.text and "n/a" in out.text
    assert out.html.startswith("<table")
    assert "default" in commands.run("sessions", sessions).text


def test_unknown_session_names_the_ones_there_are(sessions):
    with pytest.raises(UsageError, match="default"):
        commands.run("status --name nope", sessions)


def test_push_reads_the_namespace_and_pull_returns_values(sessions):
    out = commands.run("push a,b", sessions, namespace={"a": 1, "b": [2]})
    assert sessions.sessions["default"].pushed == {"a": 1, "b": [2]}
    with pytest.raises(UsageError, match="missing"):
        commands.run("push missing", sessions, namespace={})
    out = commands.run("pull x y", sessions)
    assert out.values == {"x": "value of x", "y": "value of y"}


def test_exec_reports_a_failing_exit_code(sessions):
    out = commands.run("exec -- false --flag", sessions)
    assert sessions.sessions["default"].calls[-1] == ("exec", ["false", "--flag"])
    assert "exited with code 3" in out.text


def test_switches(sessions):
    commands.run("on --name default", sessions)
    assert sessions.auto == "default"
    commands.run("off", sessions)
    assert sessions.auto is None
    commands.run("stats off", sessions)
    assert sessions.footer is False
    assert "no cells yet" in commands.run("stats", sessions).text


def test_footer_says_where_the_footer_goes_and_stats_on_brings_it_back_there(sessions):
    """Issue 17: %container footer beside|output|off for the kernel's
    sessions; stats off|on as before, on bringing back the last place."""
    assert "output after each cell" in commands.run("footer output", sessions).text
    assert sessions.footer == "output"
    commands.run("stats off", sessions)
    assert sessions.footer is False
    commands.run("stats on", sessions)
    assert sessions.footer == "output"
    commands.run("footer off", sessions)
    assert sessions.footer is False
    commands.run("stats on", sessions)
    assert sessions.footer == "output"
    commands.run("footer beside", sessions)
    assert sessions.footer == "beside"
    with pytest.raises(UsageError) as bad:
        commands.run("footer sideways", sessions)
    assert "'sideways'" in str(bad.value) and "beside|output|off" in str(bad.value)
    assert "\n" not in str(bad.value)
    assert "beside" in commands.run("footer -h", sessions).text


@pytest.mark.parametrize("line", ["?", "??", "-h", "--help", "footer?", "limits??"])
def test_every_help_form_shows_the_help(sessions, line):
    text = commands.run(line, sessions).text
    assert text.startswith("usage: %container")
    if line in ("?", "??", "-h", "--help"):
        assert "footer" in text and "Examples" in text and "%%container" in text


def test_stats_table_shows_nulls_as_na(sessions):
    from sandbox_kernel.session import stats
    entry = stats.build_stats(session="default", image="host", limits=Limits(), execution_count=1,
                              wall=0.5, figures={}, status="ok")
    sessions.sessions["default"].cell_history.append(entry)
    out = commands.run("stats", sessions)
    assert "n/a" in out.text and "ok" in out.text and "<table" in out.html


def test_images_lists_host():
    assert "host" in commands.run("images", Sessions(factory=FakeSession)).text


def test_close_all_stops_every_session(sessions):
    session = sessions.sessions["default"]
    sessions.close_all()
    assert ("stop",) in session.calls and sessions.sessions == {}


# ---------------------------------------------------------------------------
# What pull hands back: the restricted unpickler and the checks on agent frames


import base64  # noqa: E402
import collections  # noqa: E402
import datetime  # noqa: E402
import decimal  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402

from sandbox_kernel.session import client, figures, outputs, unpickle  # noqa: E402
from sandbox_kernel.session.protocol import ProtocolError  # noqa: E402


def _pulled(name, value, protocol=pickle.DEFAULT_PROTOCOL):
    text = base64.b64encode(pickle.dumps({name: value}, protocol=protocol)).decode()
    return unpickle.unpickle_pulled(name, text)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_data_and_numpy_arrays_unpickle(protocol):
    np = pytest.importorskip("numpy")
    value = {"a": [1, 2.5, "x", None, True, b"raw", (1,), {3}, frozenset({4}), complex(1, 2)],
             "o": collections.OrderedDict(k=1), "d": collections.defaultdict(list, k=[1]),
             "when": datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc),
             "dec": decimal.Decimal("1.10"), "r": range(3), "ba": bytearray(b"x"),
             "arr": np.arange(6, dtype="float32").reshape(2, 3), "scalar": np.float64(2.5),
             "rec": np.zeros(2, dtype=[("x", "i4"), ("y", "f8")]),
             "objects": np.array([1, "two", None], dtype=object)}
    back = _pulled("v", value, protocol)
    assert back["a"] == value["a"] and back["when"] == value["when"] and back["dec"] == value["dec"]
    assert back["d"]["k"] == [1] and back["r"] == range(3)
    assert (back["arr"] == value["arr"]).all() and back["arr"].dtype == np.float32
    assert back["scalar"] == 2.5 and back["rec"].dtype == value["rec"].dtype
    assert list(back["objects"]) == [1, "two", None]


Point = collections.namedtuple("Point", "x")


class Sneaky:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("value, needs", [
    (Sneaky(), "os.system" if os.name != "posix" else "posix.system"),
    (print, "builtins.print"),
    (Point(1), "Point"),
])
def test_anything_else_is_refused_naming_the_variable_and_the_type(value, needs):
    with pytest.raises(client.VariableError) as caught:
        _pulled("loot", value)
    assert caught.value.name == "loot"
    assert "'loot'" in str(caught.value) and needs in str(caught.value)


def test_a_pickle_that_calls_eval_through_builtins_is_refused():
    evil = b"cbuiltins\neval\n(S'1+1'\ntR."      # protocol 0: builtins.eval('1+1')
    with pytest.raises(client.VariableError, match="builtins.eval"):
        unpickle.unpickle_pulled("x", base64.b64encode(evil).decode())


def test_a_reply_with_other_names_is_refused():
    text = base64.b64encode(pickle.dumps({"other": 1})).decode()
    with pytest.raises(client.VariableError, match="other names"):
        unpickle.unpickle_pulled("x", text)


def test_output_frames_are_rebuilt_field_by_field():
    content = outputs.clean_output({"type": "stream", "id": 1, "name": "stdout", "text": "hi",
                                   "extra": "dropped"})
    assert content == {"name": "stdout", "text": "hi"}
    assert outputs.clean_output({"type": "display_data", "data": {"text/plain": "x"}})["metadata"] == {}
    for bad in ({"type": "stream", "name": "stdin", "text": "x"},
                {"type": "stream", "name": "stdout", "text": 5},
                {"type": "error", "ename": "E", "evalue": "", "traceback": [1]},
                {"type": "execute_result", "execution_count": True, "data": {}, "metadata": {}}):
        with pytest.raises(ProtocolError):
            outputs.clean_output(bad)


def test_net_dev_leaves_loopback_out():
    text = ("Inter-|   Receive                                                |  Transmit\n"
            " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets\n"
            "    lo:    1000      10    0    0    0     0          0         0     1000      10 0 0 0 0 0 0\n"
            "  eth0:     300       3    0    0    0     0          0         0      700       7 0 0 0 0 0 0\n")
    assert figures.parse_net_dev(text) == {"net_rx": 300, "net_tx": 700}


@pytest.mark.parametrize("argv", [[], "ps aux", ["ps", 1], [b"ps"]])
def test_a_command_that_is_not_a_list_of_str_is_refused_before_any_container_starts(argv):
    session = client.Session()
    try:
        with pytest.raises(ValueError, match="a non-empty list of str"):
            session.run_command(argv)
        assert not session.running and not session.used
    finally:
        session.stop()      # one wrongly started must not outlive the test


def _every_subcommand(parser=None, words=()):
    """(words, parser) of every subcommand and image action, from the parser itself."""
    import argparse
    parser = parser or commands.build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield words, parser
    for sub in subs:
        for name, child in sub.choices.items():
            yield from _every_subcommand(child, (*words, name))


def _generated_bad_lines():
    """For every subcommand: an unknown option, each option without its value,
    and the subcommand without its required arguments."""
    for words, parser in _every_subcommand():
        head = " ".join(words)
        yield f"{head} --no-such-option", ["unknown option --no-such-option", "usage: %container"]
        for action in parser._actions:
            if action.option_strings and action.nargs != 0 and action.dest != "help":
                option = action.option_strings[0]
                yield f"{head} {option}", [f"{option} needs a value"]
        if any(a.required or (not a.option_strings and a.nargs in (None, "+"))
               for a in parser._actions if a.dest != "help") and words[0] != "exec":
            yield head, ["missing", "usage: %container"]


@pytest.mark.parametrize("line, words", list(_generated_bad_lines()))
def test_every_subcommand_says_one_line_for_a_bad_option_or_a_missing_argument(line, words):
    with pytest.raises(UsageError) as caught:
        commands.parse(line)
    message = str(caught.value)
    assert "\n" not in message and "error:" not in message, message
    assert message.startswith(f"%container {line.split()[0]}"), message
    for word in words:
        assert word in message, (word, message)


def test_an_unknown_session_says_how_to_make_one_in_the_face_at_hand(sessions):
    with pytest.raises(UsageError, match=r"a %%container cell creates one$"):
        commands.run("status --name nope", sessions)
    sessions.new_session_hint = "every cell runs in the session 'default': leave out --name"
    with pytest.raises(UsageError, match="leave out --name$"):
        commands.run("restart --name nope", sessions)
