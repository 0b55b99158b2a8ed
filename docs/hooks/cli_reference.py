"""MkDocs hook: the command-line reference, generated from ``sdnet.cli.build_parser()``.

``docs/cli.md`` holds the prose; the marker line ``<!-- cli-reference -->`` is replaced at build
time by one section per subcommand (usage, then a table of its arguments with their defaults
and help), so the reference cannot drift from ``sdnet --help``.
"""

from __future__ import annotations

import argparse
from typing import Any

MARKER = "<!-- cli-reference -->"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _names(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`" + (" ..." if action.nargs == "+" else "")
    names = list(action.option_strings)
    if isinstance(action, argparse.BooleanOptionalAction):
        return " / ".join(f"`{n}`" for n in names)
    if action.nargs == 0:
        return ", ".join(f"`{n}`" for n in names)
    metavar = action.metavar or (
        "{" + ",".join(map(str, action.choices)) + "}" if action.choices else action.dest.upper()
    )
    suffix = " ..." if action.nargs in ("+", "*") else ""
    return ", ".join(f"`{n} {metavar}`" for n in names) + suffix


def _default(action: argparse.Action) -> str:
    if not action.option_strings or action.default in (None, argparse.SUPPRESS):
        return ""
    if action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction):
        return ""  # a flag such as --no-download: its name says it
    return f"`{action.default!r}`"


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=100)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _table(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| argument | default | meaning |", "|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        help_ = (action.help or "").replace(" (default: %(default)s)", "")
        help_ = help_ % {"default": action.default} if "%(" in help_ else help_
        rows.append(f"| {_names(action)} | {_cell(_default(action))} | {_cell(help_)} |")
    return rows


def render(parser: argparse.ArgumentParser | None = None) -> str:
    """The reference of every subcommand of ``parser`` (default: the ``sdnet`` command)."""
    if parser is None:
        from sdnet.cli import build_parser

        parser = build_parser()
    out = ["```", _usage(parser), "```", ""]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    for name, child in sub.choices.items():
        out += [f"## `sdnet {name}`", "", _cell(helps.get(name) or child.description or ""), ""]
        out += ["```", _usage(child), "```", ""]
        rows = _table(child)
        out += (rows + [""]) if len(rows) > 2 else []
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if page.file.src_path == "cli.md":
        if MARKER not in markdown:
            raise ValueError(f"docs/cli.md lost its {MARKER} line")
        return markdown.replace(MARKER, render())
    return markdown
