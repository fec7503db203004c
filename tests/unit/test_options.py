"""session/options.py is the one place an option is declared: each face's
parser and help (sandbox-kernel run, %%container, %container limits, the
kernel's settings and install) comes from it, and a limit is parsed by
options.parse alone (issue 16)."""
from __future__ import annotations

import argparse
import dataclasses
import pathlib

import pytest

from sandbox_kernel import cli
from sandbox_kernel.kernel import install, settings
from sandbox_kernel.runtime.spec import SpecError
from sandbox_kernel.session import commands, options, policy, registry


def _flat(text: str) -> str:
    return " ".join(text.split())


def _subparser(parser: argparse.ArgumentParser, *words: str) -> argparse.ArgumentParser:
    for word in words:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[word]
    return parser


def _cell_parser() -> argparse.ArgumentParser:
    """%%container's options as the magics declare them (options.arguments)."""
    parser = argparse.ArgumentParser(prog="%%container")
    for flags, kwargs in options.arguments(options.CELL):
        parser.add_argument(*flags, **kwargs)
    return parser


FACE_PARSERS = {
    options.RUN: lambda: _subparser(cli.build_parser(), "run"),
    options.LIMITS: lambda: _subparser(commands.build_parser(), "limits"),
    options.KERNEL: lambda: _subparser(cli.build_parser(), "install"),
    options.CELL: _cell_parser,
}


@pytest.mark.parametrize("face", options.FACES)
def test_every_option_is_in_the_help_of_each_face_it_applies_to(face):
    shown = _flat(FACE_PARSERS[face]().format_help())
    for option in options.for_face(face):
        assert option.flag in shown, (face, option.name)
        assert _flat(options.help_for(option, face)) in shown, (face, option.name, shown)


@pytest.mark.parametrize("face", options.FACES)
def test_a_face_has_no_option_the_schema_does_not_give_it(face):
    """The container options a face takes are exactly the schema's for it."""
    parser = FACE_PARSERS[face]()
    given = {a.option_strings[-1]: _flat(a.help or "") for a in parser._actions if a.option_strings}
    for option in options.OPTIONS:
        if face in option.faces:
            assert given[option.flag] == _flat(options.help_for(option, face).replace("%", "%%"))
        else:        # absent, or another option of that face's own (install --name: the kernelspec's)
            assert _flat(option.help) not in given.get(option.flag, ""), (face, option.name)


def test_the_kernels_settings_are_the_schemas():
    assert settings.SETTINGS == options.names(options.KERNEL)
    assert settings.LIMITS == ("memory", "cpus", "pids", "timeout")
    assert settings.DEFAULTS == {"memory": "1G", "cpus": "1", "pids": "256", "timeout": None,
                                 "net": "none", "allow": None, "rate": None, "image": "host",
                                 "idle_pause": None,
                                 "footer": "beside"}
    for name in settings.SETTINGS:
        assert settings.HELP[name] == options.help_for(name, options.KERNEL, with_default=False)
        assert settings.setting_traits()[name].help == settings.HELP[name]
    assert not hasattr(settings, "check_all")          # dead code, gone


SWAP = options.Option("swap", "size", "swap beyond the memory limit, e.g. 1G", options.FACES,
                      lambda text: options.parse_size(text, "swap"), {options.KERNEL: "2G"},
                      lifts=(options.KERNEL,))


@pytest.fixture
def swap_option(monkeypatch):
    """A new option, added to the schema only."""
    monkeypatch.setattr(options, "OPTIONS", (*options.OPTIONS, SWAP))
    return SWAP


def test_an_option_added_to_the_schema_only_shows_up_in_every_face(swap_option):
    run = cli.build_parser().parse_args(["run", "--swap", "1G", "--", "true"])
    assert run.swap == "1G"
    assert commands.parse("limits --swap 1G").swap == "1G"
    assert "--swap" in _flat(_subparser(commands.build_parser(), "limits").format_help())
    assert _cell_parser().parse_args(["--swap", "3G"]).swap == "3G"
    installed = cli.build_parser().parse_args(["install", "--swap", "4G"])
    assert installed.swap == "4G"
    assert "swap" in settings.names() and "swap" in settings.setting_traits()
    assert "--SandboxKernel.swap=4G" in install.kernel_argv({"swap": "4G"})
    resolved = settings.resolve({}, environ={"SANDBOX_KERNEL_SWAP": "3G"})
    assert (resolved.values["swap"], resolved.sources["swap"]) == ("3G", "SANDBOX_KERNEL_SWAP")
    assert settings.resolve({}, environ={}).values["swap"] == "2G"
    bad = settings.resolve({}, environ={"SANDBOX_KERNEL_SWAP": "lots"})
    assert bad.errors and "invalid swap 'lots'" in bad.errors[0] and "SANDBOX_KERNEL_SWAP" in bad.errors[0]


@pytest.mark.parametrize("name, text, face, value", [
    ("memory", "512M", options.LIMITS, 512 << 20),
    ("memory", "none", options.KERNEL, None),
    ("memory", " Unlimited ", options.KERNEL, None),
    ("pids", "none", options.RUN, None),
    ("pids", "64", options.RUN, 64),
    ("cpus", "0.5", options.CELL, 0.5),
    ("timeout", "2m", options.KERNEL, 120.0),
    ("net", "HOST", options.RUN, "host"),
])
def test_a_value_is_parsed_by_the_one_function(name, text, face, value):
    assert options.parse(name, text, face) == value


@pytest.mark.parametrize("name, text, face", [
    ("memory", "none", options.RUN),        # as before: only --pids none lifts in run
    ("memory", "none", options.LIMITS),     # a session's limit is lifted by the kernel's settings
    ("cpus", "unlimited", options.RUN),
    ("pids", "-3", options.KERNEL),
    ("timeout", "soon", options.LIMITS),
    ("net", "wifi", options.KERNEL),
])
def test_a_bad_value_or_a_none_where_none_does_not_lift_is_a_spec_error(name, text, face):
    with pytest.raises(SpecError, match=f"invalid {name} "):
        options.parse(name, text, face)


def test_every_face_parses_limits_through_options_parse(monkeypatch):
    """The CLI, the sessions and the kernel's settings all call options.parse."""
    seen = []
    real = options.parse

    def recorded(name, text, face):
        seen.append((name, face))
        return real(name, text, face)
    monkeypatch.setattr(options, "parse", recorded)
    registry.parse_limits({"memory": "1G"})
    assert ("memory", options.LIMITS) in seen
    settings.check("memory", "1G")
    assert ("memory", options.KERNEL) in seen
    spec = _cli_run_spec(monkeypatch, ["--pids", "none", "--memory", "64M"])
    assert ("pids", options.RUN) in seen
    assert spec.limits.pids is None and spec.limits.memory == 64 << 20


def test_the_cli_keeps_its_defaults(monkeypatch):
    spec = _cli_run_spec(monkeypatch, [])
    assert (spec.limits.pids, spec.limits.memory, spec.limits.disk) == (256, None, 1 << 30)
    assert (spec.network, spec.image, spec.workdir) == ("none", "host", "/workspace")


def _cli_run_spec(monkeypatch, run_options):
    """The spec `sandbox-kernel run` builds, with a stand-in container."""
    from sandbox_kernel.runtime import container
    built = []

    class FakeContainer:
        def __init__(self, spec):
            built.append(spec)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def start(self):
            pass

        def wait(self):
            return type("Result", (), {"exit_code": 0, "signal": None})()

    monkeypatch.setattr(container, "Container", FakeContainer)
    assert cli.main(["run", *run_options, "--", "true"]) == 0
    return built[0]


def test_each_cap_is_a_field_of_the_policy():
    fields = {f.name for f in dataclasses.fields(policy.Policy)}
    for option in options.OPTIONS:
        if option.cap:
            assert option.cap == f"max_{option.name}" and option.cap in fields
    assert settings.POLICY_CAPS == ("memory", "cpus", "pids", "timeout", "disk", "sessions")


def test_the_subcommands_and_image_actions_have_one_help_for_every_face():
    container = _flat(commands.build_parser().format_help())
    for name, text in options.SUBCOMMANDS.items():
        assert _flat(text) in container, name
    in_container = _flat(_subparser(commands.build_parser(), "image").format_help())
    in_cli = _flat(_subparser(cli.build_parser(), "images").format_help())
    for action, text in options.IMAGE_ACTIONS.items():
        assert _flat(text) in in_container and _flat(text) in in_cli, action


def test_commands_still_exports_what_others_import_there():
    for name in ("Sessions", "UsageError", "HelpRequested", "pool_size", "MAX_POOL", "DEFAULT_SESSION",
                 "parse", "run", "Output", "split_names", "footer_dir", "one_line", "PolicyRefused",
                 "NotebookProgress", "parse_limits", "build_parser"):
        assert hasattr(commands, name), name
    assert commands.Sessions is registry.Sessions


def test_the_modules_of_the_option_schema_are_short():
    root = pathlib.Path(cli.__file__).parent
    for path in ("cli.py", "images_cli.py", "session/commands.py", "session/options.py",
                 "session/registry.py", "session/usage.py", "kernel/settings.py", "kernel/install.py"):
        assert len((root / path).read_text().splitlines()) <= 500, path


def test_the_cell_face_builds_ipythons_magic_arguments(swap_option):
    """%%container's options as IPython's @argument decorators take them
    (what the magics apply, in the schema's order), a new option included."""
    magic_arguments = pytest.importorskip("IPython.core.magic_arguments")

    def cell_arguments(magic):
        for flags, kwargs in reversed(options.arguments(options.CELL)):
            magic = magic_arguments.argument(*flags, **kwargs)(magic)
        return magic

    @magic_arguments.magic_arguments(name="%%container")
    @cell_arguments
    def container_cell(line, cell):
        """Run this cell in a container."""
    args = magic_arguments.parse_argstring(container_cell, "--swap 1G -i a,b -i c --shell")
    assert (args.swap, args.input, args.shell, args.name) == ("1G", ["a,b", "c"], True, "default")
    usage = _flat(container_cell.parser.format_usage())
    assert usage.index("--name") < usage.index("--memory") < usage.index("--swap")


@pytest.mark.parametrize("given, place", [
    ("beside", "beside"), ("output", "output"), ("off", "off"), (" Output ", "output"),
    (True, "beside"), (False, "off"), ("True", "beside"), ("False", "off"), ("on", "beside"),
    ("1", "beside"), ("0", "off")])
def test_the_footer_option_takes_its_places_and_the_old_switch(given, place):
    assert options.parse("footer", given, options.KERNEL) == place
    assert settings.check("footer", given) == place


def test_a_bad_footer_is_one_line_naming_what_is_accepted():
    with pytest.raises(SpecError) as bad:
        options.parse("footer", "sideways", options.KERNEL)
    assert str(bad.value) == "invalid footer 'sideways': expected beside, output or off"


@pytest.mark.parametrize("configured, environ, footer", [
    ({}, {}, "beside"), ({"footer": "output"}, {}, "output"), ({"footer": False}, {}, False),
    ({"footer": True}, {}, "beside"), ({"footer": "off"}, {"SANDBOX_KERNEL_FOOTER": "output"}, "output"),
    ({"footer": "output"}, {"SANDBOX_KERNEL_FOOTER": "off"}, False)])
def test_the_kernels_footer_setting_in_order_of_precedence(configured, environ, footer):
    """c.SandboxKernel.footer (Bool as before, or a place) < SANDBOX_KERNEL_FOOTER; off is False."""
    resolved = settings.resolve(configured, environ=environ)
    assert resolved.footer == footer and type(resolved.footer) is type(footer)
    assert "footer" not in resolved.values and resolved.errors == []


def test_a_bad_footer_setting_names_its_source():
    resolved = settings.resolve({}, environ={"SANDBOX_KERNEL_FOOTER": "loud"})
    assert resolved.footer == "beside"
    assert resolved.errors == ["invalid footer 'loud': expected beside, output or off "
                               "(from the environment variable SANDBOX_KERNEL_FOOTER)"]


@pytest.mark.parametrize("footer, argv_tail", [
    (True, []), ("beside", []), (False, ["--SandboxKernel.footer=False"]),
    ("output", ["--SandboxKernel.footer=output"]), ("off", ["--SandboxKernel.footer=off"])])
def test_install_writes_the_footer_into_argv(footer, argv_tail):
    argv = install.kernel_argv({}, footer=footer, executable="py")
    assert argv[5:] == argv_tail


def test_install_takes_footer_from_the_schema():
    parser = argparse.ArgumentParser()
    install.add_arguments(parser)
    args = parser.parse_args(["--footer", "output"])
    assert install.checked_settings({"footer": args.footer}) == {"footer": "output"}
    assert install.kernel_argv({"footer": "output"}, executable="py")[5:] == [
        "--SandboxKernel.footer=output"]
