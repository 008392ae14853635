"""Options shared by the commands that open a keyring or write the audit trail.

Every command that opens a keyring file takes the same key-encryption-key
options (one argument group, defined here once), and every command that
decrypts stored values or operates on keys takes ``--audit`` to record what it
does in the application's audit trail.

Times and dates are read here too, by one rule for every command
(:func:`iso_time`, :func:`iso_date`): a time is ISO 8601 with its UTC offset
(``2026-12-01T09:30+09:00``, or ``Z`` for UTC); a date alone
(``2026-12-01``) is the start of that day in UTC; a date-time without an
offset is refused, since the machine's zone and UTC would both be a guess.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import getpass
import importlib
import json
import os
import re
import sys

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .._errors import ConfigurationError


__all__ = [
    "JobKeys",
    "add_audit_arguments",
    "add_database_arguments",
    "add_disposal_arguments",
    "add_holds_table_argument",
    "add_json_argument",
    "add_kek_arguments",
    "add_subject_key_arguments",
    "add_today_argument",
    "chosen_date",
    "count_int",
    "disposal_custodian",
    "fail",
    "iso_date",
    "iso_time",
    "key_provider",
    "load_keyring",
    "load_models",
    "open_audit",
    "open_subject_keys",
    "operator",
    "positive_int",
    "print_result",
    "warn_unrecorded",
]

_DEFAULT_SUBJECT_KEY_TABLE = "custdata_subject_keys"


def count_int(text: str) -> int:
    """An argparse type: a whole number, zero or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number, one or more."""
    value = count_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def iso_time(text: str) -> dt.datetime:
    """An argparse type: an instant, ISO 8601 with its UTC offset; aware.

    ``2026-12-01T09:30+09:00`` and ``2026-12-01T00:30Z`` name the same instant;
    a date alone, ``2026-12-01``, is midnight UTC at its start. A date-time
    without an offset is refused.
    """
    text = text.strip()
    if _DATE_ONLY.fullmatch(text):
        return dt.datetime.combine(iso_date(text), dt.time(), tzinfo=dt.timezone.utc)
    iso = text[:-1] + "+00:00" if text[-1:] in {"Z", "z"} else text
    try:
        value = dt.datetime.fromisoformat(iso)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (like 2026-12-01T09:30+09:00)"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} needs a time zone: Z for UTC, or a UTC offset like +09:00"
        )
    return value


def iso_date(text: str) -> dt.date:
    """An argparse type: a calendar date, ``YYYY-MM-DD``."""
    text = text.strip()
    if not _DATE_ONLY.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (like 2026-12-01)")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date: {text!r} (no such day)"
        ) from None


_DATE_ONLY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def add_today_argument(parser: Any, *, what: str) -> None:
    """Add ``--today YYYY-MM-DD``, the date *what* is computed for (default: today)."""
    parser.add_argument(
        "--today",
        type=iso_date,
        default=None,
        metavar="YYYY-MM-DD",
        help=f"{what} (default: today, UTC)",
    )


def chosen_date(args: argparse.Namespace) -> dt.date:
    """The ``--today`` date, or today's date in UTC."""
    value: dt.date | None = args.today
    return value or dt.datetime.now(dt.timezone.utc).date()


def add_json_argument(parser: Any) -> None:
    """Add ``--json``: print the command's result as one JSON document on stdout."""
    parser.add_argument(
        "--json", action="store_true", help="print the result as one JSON document"
    )


def add_database_arguments(parser: Any, *, required: bool = True) -> None:
    """Add ``--url`` and ``--models``, shared by the database commands.

    *parser* is a parser or an argument group.
    """
    parser.add_argument("--url", required=required, help="SQLAlchemy database URL")
    parser.add_argument(
        "--models",
        required=required,
        metavar="MODULE:BASE",
        help="the declarative base (or MetaData) whose tables to process; "
        "MODULE is imported from the current folder or the Python path",
    )


def add_subject_key_arguments(parser: Any) -> None:
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

    The current folder is searched first, as ``python -m`` does, so
    ``--models examples.shop.models:Base`` works from a project's root.

    Raises:
        ConfigurationError: If it cannot be imported, or a declaration in it is
            invalid (then naming the module's file and the attribute).
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"--models takes MODULE:BASE, got {spec!r}")
    here = str(Path.cwd())
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except ConfigurationError as exc:
        if exc.path is not None:
            raise
        raise ConfigurationError(
            exc.reason, path=_module_file(module_name), key_path=exc.key_path
        ) from None
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot load {spec!r}: {exc}") from None


def _module_file(module_name: str) -> str:
    """The file a module is imported from (its name if that cannot be told)."""
    import importlib.util  # noqa: PLC0415

    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    origin = None if spec is None else spec.origin
    return origin if origin and origin != "built-in" else module_name


def add_kek_arguments(
    parser: argparse.ArgumentParser,
    *,
    create: bool = False,
    kek_file_aliases: Sequence[str] = (),
) -> None:
    """Add the key-encryption-key options (``--kek-file``, ``--kek-env``, AWS KMS).

    Args:
        parser: The command's parser.
        create: ``--kek-file`` may name a file to create (``keys init``).
        kek_file_aliases: Older spellings of ``--kek-file`` a command keeps.
    """
    group = parser.add_argument_group(
        "key-encryption key",
        "The key-encryption key the keyring's keys are wrapped under (at most one "
        "of these); without one, the keyring's keys are stored in the clear in "
        "its 0600 file.",
    )
    exclusive = group.add_mutually_exclusive_group()
    exclusive.add_argument(
        "--kek-file",
        *kek_file_aliases,
        dest="kek_file",
        metavar="FILE",
        help="a local KEK file (base64 of 32 bytes, mode 0600)"
        + ("; created if missing" if create else ""),
    )
    exclusive.add_argument(
        "--kek-env",
        metavar="VAR",
        help="an environment variable holding the KEK (base64)",
    )
    exclusive.add_argument(
        "--aws-kms-key-id", metavar="KEY", help="an AWS KMS key id, ARN or alias"
    )
    group.add_argument(
        "--aws-region", metavar="REGION", help="the AWS region for --aws-kms-key-id"
    )
    group.add_argument(
        "--aws-endpoint-url",
        metavar="URL",
        help="a KMS endpoint URL for --aws-kms-key-id",
    )


def key_provider(args: argparse.Namespace, *, create: bool = False) -> Any:
    """Return the key provider the KEK options name, or ``None``.

    Raises:
        ConfigurationError: The KEK file cannot be read, or the variable is unset.
        KeyManagementError: The provider cannot be set up.
    """
    from ..crypto import (  # noqa: PLC0415 - keep ``custdata --help`` light
        AwsKmsKeyProvider,
        EnvKeyProvider,
        LocalKeyProvider,
    )

    if (args.aws_region or args.aws_endpoint_url) and not args.aws_kms_key_id:
        raise ConfigurationError(
            "--aws-region and --aws-endpoint-url go with --aws-kms-key-id"
        )
    if args.kek_file:
        if create and not Path(args.kek_file).exists():
            return LocalKeyProvider.create_file(args.kek_file)
        return LocalKeyProvider.from_file(args.kek_file)
    if args.kek_env:
        return EnvKeyProvider(args.kek_env)
    if args.aws_kms_key_id:
        return AwsKmsKeyProvider(
            args.aws_kms_key_id,
            region_name=args.aws_region,
            endpoint_url=args.aws_endpoint_url,
        )
    return None


def load_keyring(path: str, args: argparse.Namespace) -> Any:
    """Load the keyring file *path* with the key provider the options name.

    Raises:
        ConfigurationError: The file is missing, not private, not a keyring, or
            needs another key-encryption key; the message names the file.
    """
    from ..crypto import Keyring  # noqa: PLC0415

    return Keyring.load(path, provider=key_provider(args))


def add_audit_arguments(parser: argparse.ArgumentParser, *, actor: bool = True) -> None:
    """Add ``--audit PATH|URL``, ``--audit-prefix`` and (unless *actor* is false) ``--actor``."""
    group = parser.add_argument_group(
        "audit trail",
        "Record what the command does in the application's audit trail, chained "
        "and keyed by the keyring's audit root key like the application's own "
        "events.",
    )
    group.add_argument(
        "--audit",
        metavar="PATH|URL",
        help="a JSON-lines audit file, or a database URL (the SQL sink's tables)",
    )
    group.add_argument(
        "--audit-prefix",
        default="custdata_audit",
        metavar="NAME",
        help="the audit tables' prefix with a database URL (default custdata_audit)",
    )
    if actor:
        group.add_argument(
            "--actor",
            metavar="ID",
            help="the operator recorded for key operations (default: the login name)",
        )


def operator(args: argparse.Namespace) -> str:
    """The actor id recorded for the command's key operations."""
    if args.actor:
        return str(args.actor)
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (a container without passwd)
        return f"cli:uid-{os.getuid()}" if hasattr(os, "getuid") else "cli"


def open_audit(args: argparse.Namespace, keyring: Any) -> Any:
    """Return an audit trail writing where ``--audit`` says, or ``None``.

    The trail is the application's kind (:class:`custdata.audit.AuditTrail`)
    keyed by *keyring*; close it when the command ends.

    Raises:
        ConfigurationError: The file or database cannot be opened.
    """
    if not args.audit:
        return None
    from ..audit import AuditTrail, JsonLinesSink, SqlSink  # noqa: PLC0415

    target: str = args.audit
    try:
        sink: Any
        if "://" in target:
            sink = SqlSink(target, prefix=args.audit_prefix)
        else:
            sink = JsonLinesSink(target)
    except Exception as exc:  # noqa: BLE001 - any driver or file error
        raise ConfigurationError(
            f"cannot open the audit trail ({type(exc).__name__})",
            path=_shown(target),
        ) from None
    return AuditTrail(
        keyring, sinks=[sink], service="custdata-cli", checkpoint_interval=None
    )


def _shown(target: str) -> str:
    """A path as given, or a database URL without its password."""
    if "://" not in target:
        return target
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - optional layer

    try:
        return make_url(target).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL after all: show no part of it
        return "the --audit URL"


class JobKeys:
    """What the database jobs use of a custodian: keyring, subject keys, audit trail."""

    def __init__(
        self, keyring: Any, subject_keys: Any = None, audit: Any = None
    ) -> None:
        self.keyring = keyring
        self.subject_keys = subject_keys
        self.audit = audit


def warn_unrecorded(command: str, args: argparse.Namespace, what: str) -> None:
    """Say on stderr that *what* happens without ``--audit``, so nothing records it."""
    if not args.audit:
        print(
            f"custdata {command}: warning: {what} with no audit trail recording it; "
            "pass --audit PATH|URL",
            file=sys.stderr,
        )


@contextlib.contextmanager
def disposal_custodian(args: argparse.Namespace) -> Iterator[tuple[Any, Any, Any]]:
    """The custodian of a job that disposes of data (``sweep``, ``erase``).

    Built from ``--policy``, ``--keyring`` (with the KEK options), ``--audit``,
    ``--subject-keys`` and the legal-hold table ``--holds-table`` of the
    ``--url`` database when it exists. Yields ``(custodian, engine, models)``;
    the engines and the audit trail are closed when the block ends.

    Raises:
        ConfigurationError: A file, the models or a database cannot be opened.
    """
    from sqlalchemy import create_engine, inspect  # noqa: PLC0415 - optional layer

    from .._custodian import Custodian  # noqa: PLC0415
    from .._policy import Policy  # noqa: PLC0415
    from ..governance import LegalHolds  # noqa: PLC0415
    from ..sqlalchemy import SqlHoldStore  # noqa: PLC0415

    trail = None
    store_engine = None
    try:
        policy = Policy.from_toml(args.policy)
        keyring = load_keyring(args.keyring, args) if args.keyring else None
        if args.audit and keyring is None:
            raise ConfigurationError("--audit needs --keyring (its audit root key)")
        models = load_models(args.models)
        trail = open_audit(args, keyring) if keyring is not None else None
        opened = open_subject_keys(args)
        store, store_engine = opened if opened is not None else (None, None)
        engine = create_engine(args.url, hide_parameters=True)
        try:
            holds = None
            if inspect(engine).has_table(args.holds_table):
                holds = SqlHoldStore(engine, table_name=args.holds_table)
            custodian = Custodian(
                policy=policy,
                keyring=keyring,
                audit=trail,
                subject_keys=store,
                holds=LegalHolds(holds) if holds is not None else None,
            )
            yield custodian, engine, models
        finally:
            engine.dispose()
    finally:
        if store_engine is not None:
            store_engine.dispose()
        if trail is not None:
            trail.close()


def fail(
    args: argparse.Namespace, command: str, message: object, *, status: int = 2
) -> int:
    """Report that ``custdata`` *command* failed with *message* and return *status*.

    *command* is the command's words after ``custdata`` (``"keys show"``), or
    ``""`` for the program itself.

    The message always goes to stderr as ``custdata COMMAND: MESSAGE``. With
    ``--json`` the same error is also printed on stdout as one JSON document,
    ``{"command": …, "error": …, "status": …}``, so a script that reads the
    command's JSON output gets a document on failure too. *message* must name
    what failed, never a stored value (the library's errors never carry one).
    """
    text = str(message)
    if getattr(args, "json", False):
        error = {"command": command, "error": text, "status": status}
        print(json.dumps(error, ensure_ascii=False, indent=2, sort_keys=True))
    print(
        f"custdata {command}: {text}" if command else f"custdata: {text}",
        file=sys.stderr,
    )
    return status


def print_result(args: argparse.Namespace, data: Any, text: str) -> None:
    """Print a command's result: *data* as one JSON document with ``--json``, else *text*."""
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True))
    else:
        print(text)


def add_holds_table_argument(parser: Any) -> None:
    """``--holds-table``: the legal-hold table ``disposal_custodian`` reads."""
    parser.add_argument(
        "--holds-table",
        default="custdata_legal_hold",
        metavar="NAME",
        help="the legal-hold table in the --url database (used if it exists)",
    )


def add_disposal_arguments(parser: argparse.ArgumentParser) -> None:
    """The options :func:`disposal_custodian` builds a custodian from.

    ``--policy``, ``--keyring`` with its KEK options, ``--subject-keys``,
    ``--audit`` with ``--actor`` and ``--holds-table`` (``sweep``, ``erase``).
    """
    parser.add_argument(
        "--policy", required=True, metavar="PATH", help="the custdata.toml file"
    )
    parser.add_argument(
        "--keyring",
        metavar="PATH",
        help="the keyring file: needed for --audit and to crypto-shred subject keys",
    )
    add_kek_arguments(parser)
    add_subject_key_arguments(parser)
    add_audit_arguments(parser)
    add_holds_table_argument(parser)
