"""``custdata reencrypt``: move stored values to the primary key, resumably."""

from __future__ import annotations

import argparse
import importlib
import sys

from typing import Any

from .._errors import ConfigurationError, CustdataError


__all__ = [
    "add_database_arguments",
    "add_subject_key_arguments",
    "load_models",
    "open_subject_keys",
    "register",
    "run",
]

_DEFAULT_SUBJECT_KEY_TABLE = "custdata_subject_keys"


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--url``, ``--models`` (and friends) shared by the database commands."""
    parser.add_argument("--url", required=True, help="SQLAlchemy database URL")
    parser.add_argument(
        "--models",
        required=True,
        metavar="MODULE:BASE",
        help="the declarative base (or MetaData) whose tables to process",
    )


def add_subject_key_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--subject-keys [URL]`` and ``--subject-keys-table`` (the SQL subject key store)."""
    parser.add_argument(
        "--subject-keys",
        nargs="?",
        const="",
        default=None,
        metavar="URL",
        help=(
            "the database of the per-subject key store (SqlSubjectKeyStore); "
            "without URL, the --url database"
        ),
    )
    parser.add_argument(
        "--subject-keys-table",
        default=_DEFAULT_SUBJECT_KEY_TABLE,
        metavar="NAME",
        help=f"the per-subject key table (default {_DEFAULT_SUBJECT_KEY_TABLE})",
    )


def open_subject_keys(args: argparse.Namespace) -> tuple[Any, Any] | None:
    """Return ``(store, engine)`` for ``--subject-keys``, or ``None`` if not given.

    The caller disposes of the engine.

    Raises:
        ConfigurationError: If the table does not exist in that database.
    """
    if args.subject_keys is None:
        return None
    from sqlalchemy import create_engine, inspect  # noqa: PLC0415 - optional layer

    from ..sqlalchemy import SqlSubjectKeyStore  # noqa: PLC0415

    engine = create_engine(args.subject_keys or args.url, hide_parameters=True)
    try:
        if not inspect(engine).has_table(args.subject_keys_table):
            raise ConfigurationError(  # noqa: TRY301 - disposed below
                f"--subject-keys: no table {args.subject_keys_table!r} in that database"
            )
    except BaseException:
        engine.dispose()
        raise
    return SqlSubjectKeyStore(engine, table_name=args.subject_keys_table), engine


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
            "their own: kill it at any point and run it again. With --subject-keys, also "
            "re-wrap the per-subject keys under the primary data key, in batches. With "
            "--plaintext, encrypt legacy plaintext values in place instead and report "
            "what is left. Exit 0 when nothing is left under older keys, 1 when the "
            "models use per-subject keys but --subject-keys was not given, 2 on a "
            "configuration error."
        ),
    )
    parser.add_argument(
        "--keyring", required=True, metavar="PATH", help="the keyring file"
    )
    add_database_arguments(parser)
    add_subject_key_arguments(parser)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=500,
        help="rows (or subject keys) per transaction",
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
        if self.current is not None and table != self.current:
            sys.stderr.write("\n")  # keep the finished table's bar
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
    """The part of a custodian the jobs use: the keyring and the subject key store."""

    def __init__(self, keyring: Any, subject_keys: Any = None) -> None:
        self.keyring = keyring
        self.subject_keys = subject_keys


def run(args: argparse.Namespace) -> int:
    """Run ``custdata reencrypt``."""
    from sqlalchemy import create_engine  # noqa: PLC0415 - optional layer

    from ..crypto import Keyring  # noqa: PLC0415
    from ..sqlalchemy import encrypt_plaintext_columns, reencrypt  # noqa: PLC0415

    bar = _Bar(args.quiet)
    store_engine = None
    try:
        keyring = Keyring.load(args.keyring)
        models = load_models(args.models)
        opened = open_subject_keys(args)
        store, store_engine = opened if opened is not None else (None, None)
        engine = create_engine(args.url, hide_parameters=True)
        try:
            keys = _KeysOnly(keyring, store)
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
                engine,
                keys,
                tables=models,
                batch_size=args.batch_size,
                progress=bar,
                rewrap_subject_keys=True if store is not None else None,
            )
            bar.close()
        finally:
            engine.dispose()
            if store_engine is not None:
                store_engine.dispose()
    except CustdataError as exc:
        bar.close()
        if store_engine is not None:
            store_engine.dispose()
        print(f"custdata reencrypt: {exc}", file=sys.stderr)
        return 2
    summary = (
        f"scanned {report.scanned} rows: re-encrypted {report.reencrypted} values, "
        f"re-indexed {report.reindexed}, skipped {report.skipped}"
    )
    if store is not None:
        summary += f"; re-wrapped {report.rewrapped} subject keys"
    print(summary)
    if report.subject_keys_pending:
        print(
            "custdata reencrypt: the models use per-subject keys, which were not "
            "re-wrapped; pass --subject-keys so the old data key can be retired",
            file=sys.stderr,
        )
        return 1
    return 0
