"""The ``custdata`` command.

A thin layer over the library: each command group lives in its own private
module and registers its sub-commands on the shared parser.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from collections.abc import Sequence
from typing import NoReturn

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
from ._options import fail


__all__ = ["main"]


class _UsageError(Exception):
    """A usage error the parser found, carried to :func:`main` to be reported."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.command = prog.removeprefix("custdata").strip()


class _Parser(argparse.ArgumentParser):
    """The argument parser of every command: a usage error is handed to :func:`main`.

    It prints the usage line as argparse does; :func:`main` then reports the
    error by the one rule (a JSON document as well with ``--json``) and exits 2.
    """

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise _UsageError(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    """Return the ``custdata`` argument parser with every command registered."""
    parser = _Parser(
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
    configuration error (``audit verify`` adds 3, a crash-truncated tail). No
    traceback reaches the shell: an error the command did not report itself is
    named by its kind here (exit 2), and an unexpected one as an internal error
    (exit 2; ``CUSTDATA_DEBUG=1`` in the environment re-raises it with its
    traceback, for a bug report).
    """
    parser = build_parser()
    words = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(words)
    except _UsageError as exc:
        wants_json = argparse.Namespace(json="--json" in words)
        raise SystemExit(fail(wants_json, exc.command, f"error: {exc}")) from None
    try:
        status: int = args.handler(args)
    except CustdataError as exc:
        # The commands report their own errors; this is the net under them.
        return fail(args, args.command, exc)
    except Exception as exc:
        sa_exc = sys.modules.get("sqlalchemy.exc")
        if sa_exc is not None and isinstance(exc, sa_exc.SQLAlchemyError):
            # A driver's message may quote stored values: only the kind is shown.
            return fail(args, args.command, f"database error ({type(exc).__name__})")
        if isinstance(exc, OSError):
            where = f": {exc.filename}" if exc.filename else ""
            return fail(
                args, args.command, f"{exc.strerror or type(exc).__name__}{where}"
            )
        if os.environ.get("CUSTDATA_DEBUG"):
            raise
        # Only the kind: an unexpected message might quote anything.
        internal = (
            f"internal error ({type(exc).__name__}); please report it, with the "
            "traceback shown when CUSTDATA_DEBUG=1 is set"
        )
        return fail(args, args.command, internal)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
