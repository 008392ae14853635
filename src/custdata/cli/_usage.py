"""``custdata keys usage``: count stored values (and subject keys) per key id."""

from __future__ import annotations

import argparse
import json

from typing import Any

from .._errors import CustdataError
from ._options import (
    add_database_arguments,
    add_subject_key_arguments,
    fail,
    load_models,
    open_subject_keys,
)


__all__ = ["register_usage", "run"]


def register_usage(keys_commands: Any) -> None:
    """Register ``usage`` under the ``keys`` command group."""
    parser = keys_commands.add_parser(
        "usage",
        help="count stored values per key id",
        description=(
            "Count the stored values of every encrypted column per key id, read from "
            "the fixed-offset key id in each envelope header (no keys needed). With "
            "--subject-keys, also count the live per-subject keys per data key that "
            "wraps them: a data key can be retired once nothing uses it."
        ),
    )
    add_database_arguments(parser)
    add_subject_key_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``custdata keys usage``."""
    from sqlalchemy import create_engine  # noqa: PLC0415 - optional layer

    from ..sqlalchemy import key_usage  # noqa: PLC0415

    try:
        models = load_models(args.models)
        opened = open_subject_keys(args)
        store, store_engine = opened if opened is not None else (None, None)
        engine = create_engine(args.url, hide_parameters=True)
        try:
            usage = key_usage(engine, tables=models, subject_keys=store)
        finally:
            engine.dispose()
            if store_engine is not None:
                store_engine.dispose()
    except CustdataError as exc:
        return fail(args, "keys usage", exc)
    if args.json:
        rows = [
            {
                "table": u.table,
                "column": u.column,
                "algorithm": u.algorithm,
                "key_id": u.key_id,
                "count": u.count,
                "kind": u.kind,
            }
            for u in usage
        ]
        print(json.dumps({"usage": rows}, indent=2))
        return 0
    for u in usage:
        what = "subject keys" if u.kind == "subject_key" else f"algorithm {u.algorithm}"
        print(f"{u.table}.{u.column}\t{what}\tkey {u.key_id}\t{u.count}")
    if not usage:
        print("no stored values")
    return 0
