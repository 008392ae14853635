"""Every command has plain help text: a description, and no reStructuredText markup."""

from __future__ import annotations

import argparse

from collections.abc import Iterator

from custdata.cli import build_parser


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _parsers(sub, (*path, name))


def test_every_command_describes_itself_in_plain_text() -> None:
    found = list(_parsers(build_parser()))
    assert len(found) >= 15
    for path, parser in found:
        name = " ".join(path)
        text = parser.format_help()
        assert parser.description, f"custdata {name} has no description"
        assert "``" not in text, f"custdata {name}: reStructuredText in its help"
        assert "\n::\n" not in text, f"custdata {name}: reStructuredText in its help"
        assert ":func:`" not in text, f"custdata {name}: reStructuredText in its help"
        assert ":class:`" not in text, f"custdata {name}: reStructuredText in its help"
