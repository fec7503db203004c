"""One-line usage errors for the %container line and its parsers.

``OneLineParser`` is argparse that raises instead of printing and exiting:
a mistake is a ``UsageError`` whose message is one line, what was wrong
then what is accepted (``unknown subcommand 'frobnicate'; usage: %container
status|limits|... ...``), and ``-h`` is ``HelpRequested`` carrying the help.

Imports nothing of the project.
"""
from __future__ import annotations

import argparse
import re


class UsageError(Exception):
    """A command line that cannot be run; the message is for the user as is."""


class HelpRequested(Exception):
    """-h: the message is the help text (shown, not an error)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that raises instead of printing and exiting: one line, what
    was wrong and what is accepted (``-h`` still shows the whole help)."""

    def parse_known_args(self, args=None, namespace=None):
        self.given = list(args or [])          # what this (sub)command was given, for error()
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        unknown = [word for word in getattr(self, "given", []) if word.startswith("-")
                   and word != "--" and word.split("=")[0] not in self._option_string_actions]
        if unknown and message.startswith(_REQUIRED):     # the likelier mistake comes first
            message = f"unrecognized arguments: {' '.join(unknown)}"
        raise UsageError(f"{self.prog}: {_plain(self, message)}")

    def exit(self, status: int = 0, message: str | None = None):
        raise UsageError(f"{self.prog}: {' '.join((message or 'cannot read this line').split())}; "
                         f"usage: {one_line_usage(self)}")

    def print_help(self, file=None):
        raise HelpRequested(self.format_help())


_REQUIRED = "the following arguments are required: "
_NEEDS_VALUE = re.compile(r"^argument (\S+?)(?:/\S+)?: expected one argument$")
_BAD_CHOICE = re.compile(r"^argument (\S+): invalid choice: (.*?) \(choose from .*\)$")
_NOUNS = {"command": "subcommand", "action": "action", "switch": "switch"}


def _plain(parser: argparse.ArgumentParser, message: str) -> str:
    """argparse's message in plain words, with the usage as what is accepted:
    one line (argparse's own is the usage, a newline, then the message)."""
    usage = one_line_usage(parser)
    if message.startswith(_REQUIRED):
        missing = message[len(_REQUIRED):]
        if missing in ("SUBCOMMAND", "ACTION"):
            return f"no {missing.lower()} given; usage: {usage}"
        named = {name: _usage_part(a).strip("[]").removesuffix("...") for a in parser._actions
                 for name in (a.option_strings[:1] or [a.metavar or a.dest])}
        return f"missing {', '.join(named.get(m, m) for m in missing.split(', '))}; usage: {usage}"
    needs_value = _NEEDS_VALUE.match(message)
    if needs_value:
        option = needs_value.group(1)
        action = next((a for a in parser._actions if option in a.option_strings), None)
        if action is None or not action.help:
            return f"{option} needs a value; usage: {usage}"
        return f"{option} needs a value: {parser._get_formatter()._expand_help(action)}"
    bad_choice = _BAD_CHOICE.match(message)
    if bad_choice:
        dest = next((a.dest for a in parser._actions
                     if a.choices and bad_choice.group(1) in (a.metavar, a.dest)), "")
        return f"unknown {_NOUNS.get(dest, 'value')} {bad_choice.group(2)}; usage: {usage}"
    if message.startswith("unrecognized arguments: "):
        return f"{unexpected(message.split(': ', 1)[1].split())}; usage: {usage}"
    return f"{message}; usage: {usage}"


def one_line_usage(parser: argparse.ArgumentParser) -> str:
    """``%container limits [--name NAME] [--memory MEMORY] ...``: the
    accepted forms on one line, choices spelled out (a|b), without -h."""
    parts = [parser.prog]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        parts.append(_usage_part(action))
    return " ".join(parts)


def _usage_part(action: argparse.Action) -> str:
    if isinstance(action, argparse._SubParsersAction):
        return "|".join(action.choices) + " ..."
    shown = "|".join(action.choices) if action.choices else (action.metavar or action.dest.upper())
    if not action.option_strings:
        if action.nargs == argparse.REMAINDER:
            return f"{shown} [ARGS...]"
        if action.nargs == "+":
            return f"{shown}..."
        return f"[{shown}]" if action.nargs == "?" else shown
    if action.nargs == 0:
        form = action.option_strings[0]
    else:
        form = f"{action.option_strings[0]} {shown}"
    return form if action.required else f"[{form}]"


def unexpected(extra: list[str]) -> str:
    options = [item for item in extra if item.startswith("-")]
    if options:
        return f"unknown option{'s' if len(options) > 1 else ''} {', '.join(options)}"
    return f"unexpected {'arguments' if len(extra) > 1 else 'argument'} {', '.join(map(repr, extra))}"


def split_names(items) -> list[str]:
    """["a,b", "c"] -> ["a", "b", "c"]; UsageError for what is not a name."""
    names = [n for item in items for n in str(item).split(",") if n.strip()]
    names = [n.strip() for n in names]
    bad = [n for n in names if not n.isidentifier()]
    if bad or not names:
        raise UsageError(f"not variable names: {', '.join(map(repr, bad)) or 'none given'}")
    return names


def one_line(text: str) -> str:
    """A message of several lines (a build's error, say) as one line."""
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())

