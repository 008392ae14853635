"""The ``custdata`` command.

A thin layer over the library: each command group lives in its own private
module and registers its sub-commands on the shared parser.
"""

from __future__ import annotations

import argparse
import re
import sys

from collections.abc import Sequence

from .. import __version__
from .._errors import CustdataError
from . import (
    _audit,
    _check,
    _demo,
    _docs,
    _erase,
    _incident,
    _keys,
    _provision,
    _reencrypt,
    _report,
    _request,
    _review,
    _sweep,
)


__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """Return the ``custdata`` argument parser with every command registered."""
    parser = argparse.ArgumentParser(
        prog="custdata",
        description="Customer-data management regulation as code.",
    )
    parser.add_argument(
        "--version", action="version", version=f"custdata {__version__}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (
        _demo,
        _check,
        _keys,
        _reencrypt,
        _audit,
        _sweep,
        _erase,
        _provision,
        _incident,
        _request,
        _docs,
        _review,
        _report,
    ):
        module.register(commands)
    _plain_help(parser)
    return parser


def _plain_help(parser: argparse.ArgumentParser) -> None:
    """Give every command a plain-text description.

    A command without one takes its one-line help; reStructuredText markup
    (roles, double backquotes, ``::`` blocks) that a module docstring brought in is
    turned into plain text.
    """
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walk
        if not isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            continue
        helps = {a.dest: a.help for a in action._choices_actions}  # noqa: SLF001
        for name, sub in action.choices.items():
            text = sub.description or helps.get(name) or ""
            text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
            text = text.replace("``", "'").replace("\n::\n", "\n")
            sub.description = text[:1].upper() + text[1:]
            _plain_help(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``custdata`` command and return its exit status.

    Exit status 0 means success, 1 findings or a failed check, 2 a usage or
    configuration error.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.handler(args)
    except CustdataError as exc:
        # The commands report their own errors; this is the net under them.
        print(f"custdata {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        sa_exc = sys.modules.get("sqlalchemy.exc")
        if sa_exc is not None and isinstance(exc, sa_exc.SQLAlchemyError):
            # A driver's message may quote stored values: only the kind is shown.
            print(
                f"custdata {args.command}: database error ({type(exc).__name__})",
                file=sys.stderr,
            )
            return 2
        raise
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
