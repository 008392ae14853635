"""``custdata reencrypt``: move stored values to the primary key, resumably."""

from __future__ import annotations

import argparse
import importlib
import sys

from typing import Any

from .._errors import ConfigurationError, CustdataError


__all__ = ["add_database_arguments", "load_models", "register", "run"]


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--url``, ``--models`` (and friends) shared by the database commands."""
    parser.add_argument("--url", required=True, help="SQLAlchemy database URL")
    parser.add_argument(
        "--models",
        required=True,
        metavar="MODULE:BASE",
        help="the declarative base (or MetaData) whose tables to process",
    )


def load_models(spec: str) -> Any:
    """Import ``module:attribute`` and return the attribute.

    Raises:
        ConfigurationError: If it cannot be imported.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"--models takes MODULE:BASE, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot load {spec!r}: {exc}") from None


def register(commands: Any) -> None:
    """Register the ``reencrypt`` command."""
    parser = commands.add_parser(
        "reencrypt",
        help="re-encrypt stored values to the primary key (resumable)",
        description=(
            "Re-encrypt every stored value that is not under the keyring's primary key, "
            "and recompute blind indexes under the primary index key. Batches commit on "
            "their own: kill it at any point and run it again. With --plaintext, encrypt "
            "legacy plaintext values in place instead and report what is left."
        ),
    )
    parser.add_argument(
        "--keyring", required=True, metavar="PATH", help="the keyring file"
    )
    add_database_arguments(parser)
    parser.add_argument(
        "--batch-size", type=int, default=500, help="rows per transaction"
    )
    parser.add_argument(
        "--plaintext",
        action="store_true",
        help="plaintext-migration mode: encrypt legacy plaintext values in place",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="with --plaintext: stop after N values"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


class _Bar:
    """A one-line progress bar on stderr."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.current: str | None = None

    def __call__(self, table: str, done: int, total: int) -> None:
        if self.quiet:
            return
        width = 30
        filled = width if total <= 0 else min(width, width * done // max(total, 1))
        line = (
            f"\r{table:<32.32} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
        )
        sys.stderr.write(line)
        sys.stderr.flush()
        self.current = table

    def close(self) -> None:
        if not self.quiet and self.current is not None:
            sys.stderr.write("\n")
            sys.stderr.flush()


class _KeysOnly:
    """The part of a custodian the jobs use: the keyring (and no subject store)."""

    def __init__(self, keyring: Any) -> None:
        self.keyring = keyring
        self.subject_keys = None


def run(args: argparse.Namespace) -> int:
    """Run ``custdata reencrypt``."""
    from sqlalchemy import create_engine  # noqa: PLC0415 - optional layer

    from ..crypto import Keyring  # noqa: PLC0415
    from ..sqlalchemy import encrypt_plaintext_columns, reencrypt  # noqa: PLC0415

    bar = _Bar(args.quiet)
    try:
        keyring = Keyring.load(args.keyring)
        models = load_models(args.models)
        engine = create_engine(args.url, hide_parameters=True)
        try:
            keys = _KeysOnly(keyring)
            if args.plaintext:
                reports = encrypt_plaintext_columns(
                    engine,
                    keys,
                    tables=models,
                    batch_size=args.batch_size,
                    limit=args.limit,
                    progress=bar,
                )
                bar.close()
                left = 0
                for r in reports:
                    print(
                        f"{r.table}.{r.column}: encrypted {r.encrypted}, plaintext left {r.remaining}"
                    )
                    left += r.remaining
                return 1 if left else 0
            report = reencrypt(
                engine, keys, tables=models, batch_size=args.batch_size, progress=bar
            )
            bar.close()
        finally:
            engine.dispose()
    except CustdataError as exc:
        bar.close()
        print(f"custdata reencrypt: {exc}", file=sys.stderr)
        return 2
    print(
        f"scanned {report.scanned} rows: re-encrypted {report.reencrypted} values, "
        f"re-indexed {report.reindexed}, skipped {report.skipped}"
    )
    return 0
