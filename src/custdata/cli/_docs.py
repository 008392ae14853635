"""``custdata docs render``: the regulation's documents from the policy.

::

    custdata docs render --policy PATH --out DIR [--lang ja|en]
                         [--format md|html] [--models MODULE:BASE]
                         [--provision-records URL]

Writes ``regulation``, ``notice``, ``ledger`` and ``ropa`` as
``<document>.<lang>.<md|html>`` (both languages unless ``--lang`` picks one)
and ``fideslang.yml`` (a fideslang manifest in JSON, which is valid YAML).
With ``--models`` the ledger lists where each field is stored and the
generated technical safety measures name the encrypted fields. With
``--provision-records`` the ledger and the record of processing list the
provision records (法29条) kept in that database, by recipient.

Exit status 0: written; 2: invalid policy, models or output folder (one line
on stderr).
"""

from __future__ import annotations

import argparse
import json

from pathlib import Path
from typing import Any

from custdata._errors import ConfigurationError
from custdata._policy import Policy

from ._options import add_json_argument, fail, load_models


__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``docs`` command group on *subparsers*."""
    docs = subparsers.add_parser(
        "docs",
        help="render the regulation's documents",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = docs.add_subparsers(
        dest="docs_command", metavar="COMMAND", required=True
    )
    render = commands.add_parser(
        "render",
        help="write the regulation, notice, ledger, ROPA and fideslang export",
    )
    add_policy_argument(render)
    render.add_argument(
        "--out", required=True, metavar="DIR", help="the folder to write to"
    )
    render.add_argument(
        "--lang",
        choices=("ja", "en"),
        default=None,
        help="one language (default: both)",
    )
    render.add_argument(
        "--format",
        choices=("md", "html"),
        default="md",
        dest="fmt",
        help="Markdown (default) or standalone HTML pages",
    )
    add_models_argument(render)
    add_records_argument(render)
    add_json_argument(render)
    render.set_defaults(handler=run_render)


def add_policy_argument(parser: Any) -> None:
    """Add ``--policy PATH`` (the policy file), required."""
    parser.add_argument(
        "--policy", required=True, metavar="PATH", help="the custdata.toml file"
    )


def add_models_argument(parser: Any) -> None:
    """Add ``--models MODULE:BASE`` (the mapped models to take fields from)."""
    parser.add_argument(
        "--models",
        metavar="MODULE:BASE",
        help="a SQLAlchemy declarative base whose customer-data fields to list",
    )


def load_fields(spec: str | None) -> tuple[Any, ...]:
    """The field inventory of ``--models``, or nothing without it.

    Raises:
        ConfigurationError: The models cannot be loaded.
    """
    if not spec:
        return ()
    from custdata.sqlalchemy import field_inventory  # noqa: PLC0415 - optional layer

    return field_inventory(load_models(spec))


def add_records_argument(parser: Any) -> None:
    """Add ``--provision-records URL`` (the database holding provision records)."""
    parser.add_argument(
        "--provision-records",
        dest="provision_records",
        metavar="URL",
        help="a database URL whose provision records (custdata_provision tables) "
        "the ledger and the record of processing list",
    )


def load_records(url: str | None) -> tuple[Any, ...] | None:
    """The provision records kept in the database at *url*, or ``None`` without one.

    A database without the provision tables holds no record.

    Raises:
        ConfigurationError: The database or its records cannot be read (the
            URL is not repeated: it may hold a password).
    """
    if not url:
        return None
    from sqlalchemy import MetaData, create_engine, inspect  # noqa: PLC0415

    from custdata.sqlalchemy import SqlProvisionRecordStore  # noqa: PLC0415

    try:
        engine = create_engine(url, hide_parameters=True)
    except Exception as exc:  # noqa: BLE001 - a bad URL is a usage error
        msg = f"cannot open the --provision-records URL ({type(exc).__name__})"
        raise ConfigurationError(msg) from None
    try:
        metadata = MetaData()
        store = SqlProvisionRecordStore(engine, metadata=metadata)
        present = inspect(engine)
        if not all(present.has_table(name) for name in metadata.tables):
            return ()  # no table, no record
        return tuple(store.all())
    except Exception as exc:  # noqa: BLE001 - any read failure is one line
        msg = f"cannot read the provision records ({type(exc).__name__})"
        raise ConfigurationError(msg) from None
    finally:
        engine.dispose()


def run_render(args: argparse.Namespace) -> int:
    """Run ``custdata docs render``."""
    from custdata.governance import render_documents  # noqa: PLC0415

    try:
        policy = Policy.from_toml(args.policy)
        fields = load_fields(args.models)
        records = load_records(args.provision_records)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for lang in (args.lang,) if args.lang else ("ja", "en"):
            docs = render_documents(
                policy, lang=lang, fmt=args.fmt, fields=fields, records=records
            )
            for name, text in docs.items():
                (out / name).write_text(text, encoding="utf-8")
                written.append(name)
    except ConfigurationError as exc:
        return fail(args, "docs render", exc)
    except OSError as exc:
        return fail(args, "docs render", f"cannot write to {args.out} ({exc.strerror})")
    if args.json:
        files = [str(out / name) for name in dict.fromkeys(written)]
        print(json.dumps({"out": str(out), "files": files}, indent=2))
        return 0
    for name in dict.fromkeys(written):
        print(out / name)
    return 0
