"""``custdata reencrypt``: move stored values to the primary key, resumably."""

from __future__ import annotations

import argparse
import json
import sys

from typing import Any

import attrs

from .._errors import CustdataError
from ._options import (
    JobKeys,
    add_audit_arguments,
    add_database_arguments,
    add_kek_arguments,
    add_subject_key_arguments,
    count_int,
    fail,
    load_keyring,
    load_models,
    open_audit,
    open_subject_keys,
    positive_int,
    warn_unrecorded,
)
from ._progress import Progress


__all__ = ["register", "run"]


def register(commands: Any) -> None:
    """Register the ``reencrypt`` command."""
    parser = commands.add_parser(
        "reencrypt",
        help="re-encrypt stored values to the primary key (resumable)",
        description=(
            "Re-encrypt every stored value that is not under the keyring's primary key, "
            "and recompute every blind-index entry under the primary index key, in one "
            "run. Batches commit on their own: kill it at any point and run it again. "
            "Rows locked by another transaction are retried (--retries) and counted. "
            "With --subject-keys, also re-wrap the per-subject keys under the primary "
            "data key, in batches. With --plaintext, encrypt legacy plaintext values "
            "in place instead, each read as its column's Python type, and report what "
            "is left. With --json, the report is one JSON object on stdout. "
            "With --audit, every batch of decrypted values is recorded first. "
            "Exit 0 when nothing is left under older keys (or as plaintext), 1 when "
            "something is (locked or unreadable rows, or per-subject keys not "
            "re-wrapped because --subject-keys was not given), 2 on a configuration "
            "error."
        ),
    )
    parser.add_argument(
        "--keyring", required=True, metavar="PATH", help="the keyring file"
    )
    add_kek_arguments(parser)
    add_database_arguments(parser)
    add_subject_key_arguments(parser)
    add_audit_arguments(parser)
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=500,
        help="rows (or subject keys) per transaction",
    )
    parser.add_argument(
        "--retries",
        type=count_int,
        default=3,
        help="how many more times to try rows that were locked (default 3)",
    )
    parser.add_argument(
        "--retry-wait",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="the pause before each retry (default 1)",
    )
    parser.add_argument(
        "--plaintext",
        action="store_true",
        help="plaintext-migration mode: encrypt legacy plaintext values in place",
    )
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help="with --plaintext: stop after N values",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON on stdout (problems stay on stderr)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``custdata reencrypt``."""
    from sqlalchemy import create_engine  # noqa: PLC0415 - optional layer

    from ..sqlalchemy import encrypt_plaintext_columns, reencrypt  # noqa: PLC0415

    bar = Progress(args.quiet)
    store_engine = None
    trail = None
    try:
        keyring = load_keyring(args.keyring, args)
        models = load_models(args.models)
        trail = open_audit(args, keyring)
        opened = open_subject_keys(args)
        store, store_engine = opened if opened is not None else (None, None)
        engine = create_engine(args.url, hide_parameters=True)
        try:
            keys = JobKeys(keyring, store, trail)
            if not args.plaintext:
                warn_unrecorded("reencrypt", args, "stored values are decrypted")
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
                if args.json:
                    print(json.dumps({"columns": [attrs.asdict(r) for r in reports]}))
                    return 1 if any(r.remaining for r in reports) else 0
                left = 0
                for r in reports:
                    failed = (
                        f" ({r.failed} unreadable as the column's type)"
                        if r.failed
                        else ""
                    )
                    print(
                        f"{r.table}.{r.column}: encrypted {r.encrypted}, "
                        f"plaintext left {r.remaining}{failed}"
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
                retries=args.retries,
                retry_wait=args.retry_wait,
            )
            bar.close()
        finally:
            engine.dispose()
    except CustdataError as exc:
        bar.close()
        return fail(args, "reencrypt", exc)
    finally:
        if store_engine is not None:
            store_engine.dispose()
        if trail is not None:
            trail.close()
    return _summary(report, store is not None, as_json=args.json)


def _summary(report: Any, rewrapped: bool, *, as_json: bool = False) -> int:
    if as_json:
        print(json.dumps({**attrs.asdict(report), "complete": report.complete}))
    else:
        summary = (
            f"scanned {report.scanned} rows: re-encrypted {report.reencrypted} values, "
            f"re-indexed {report.reindexed}, skipped {report.skipped}"
        )
        if rewrapped:
            summary += f"; re-wrapped {report.rewrapped} subject keys"
        print(summary)
    problems = []
    if report.locked:
        problems.append(
            f"{report.locked} rows stayed locked by other transactions; run it again"
        )
    if report.failed:
        problems.append(
            f"{report.failed} stored values could not be decrypted and were left as they are"
        )
    if report.remaining:
        problems.append(f"{report.remaining} values are still under older data keys")
    if report.subject_keys_pending:
        problems.append(
            "the models use per-subject keys, which were not re-wrapped; pass "
            "--subject-keys so the old data key can be retired"
        )
    for problem in problems:
        print(f"custdata reencrypt: {problem}", file=sys.stderr)
    return 1 if problems else 0
