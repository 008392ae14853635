"""``custdata sweep``: dispose of expired customer data; replay a deletion log."""

from __future__ import annotations

import argparse
import json
import sys

from typing import Any

from .._errors import CustdataError
from ._options import (
    add_database_arguments,
    add_disposal_arguments,
    disposal_custodian,
    fail,
    iso_time,
    positive_int,
    warn_unrecorded,
)
from ._progress import Progress


__all__ = ["register", "run"]


def register(commands: Any) -> None:
    """Register the ``sweep`` command."""
    parser = commands.add_parser(
        "sweep",
        help="dispose of expired customer data (the retention sweep)",
        description=(
            "Resolve the retention of every customer-data value of the tables that "
            "declare retention anchors and dispose of what has expired: rows whose "
            "every value has expired are deleted (their subject keys crypto-shredded "
            "where the rule says so), expired values of rows that are kept are "
            "erased. Subjects under a legal hold are skipped. Batches commit on their "
            "own, each recorded as one retention.expire event and logged to --log "
            "first: kill it at any point and run it again. --dry-run prints the "
            "counts per table, field and action and changes nothing. --replay LOG "
            "applies a deletion log again to a database restored from a backup. "
            "Exit 0 done, 2 on a configuration error."
        ),
    )
    add_database_arguments(parser)
    add_disposal_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="count; change nothing")
    parser.add_argument(
        "--log", metavar="FILE", help="append the deletion log here (keep it apart)"
    )
    parser.add_argument(
        "--replay", metavar="LOG", help="re-apply a deletion log to a restored backup"
    )
    parser.add_argument(
        "--now",
        type=iso_time,
        default=None,
        metavar="ISO-8601",
        help="decide as of this aware instant (default: now)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=500, help="rows per transaction"
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="workers sweeping at once (SKIP LOCKED on PostgreSQL, MySQL 8, MariaDB 10.6)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``custdata sweep``."""
    from ..sqlalchemy import replay_deletions, sweep  # noqa: PLC0415 - optional layer

    bar = Progress(args.quiet or args.json)
    try:
        with disposal_custodian(args) as (custodian, engine, models):
            if args.replay is not None:
                changed = replay_deletions(
                    engine, args.replay, tables=models, custodian=custodian
                )
                if args.json:
                    print(json.dumps({"replayed": args.replay, "applied": changed}))
                else:
                    print(f"replayed {args.replay}: {changed} entries applied")
                return 0
            if not args.dry_run:
                warn_unrecorded("sweep", args, "customer data is disposed of")
            report = sweep(
                engine,
                custodian,
                tables=models,
                now=args.now,
                dry_run=args.dry_run,
                batch_size=args.batch_size,
                log=args.log,
                workers=args.workers,
                progress=bar,
            )
            bar.close()
    except CustdataError as exc:
        bar.close()
        return fail(args, "sweep", exc)
    _print(report, as_json=args.json)
    return 0


def _print(report: Any, *, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {
                    "sweep_id": report.sweep_id,
                    "dry_run": report.dry_run,
                    "scanned": report.scanned,
                    "batches": report.batches,
                    "counts": [
                        {
                            "table": c.table,
                            "field": c.field,
                            "action": c.action,
                            "count": c.count,
                        }
                        for c in report.counts
                    ],
                    "unanchored": list(report.unanchored),
                },
                indent=2,
            )
        )
        return
    what = "would dispose of" if report.dry_run else "disposed of"
    for c in report.counts:
        where = c.table if c.field == "*" else f"{c.table}.{c.field}"
        print(f"{where}: {c.action} {c.count}")
    done = report.total("delete_row") + report.total("erase")
    print(f"scanned {report.scanned} rows: {what} {done} rows and values")
    for name in report.unanchored:
        print(
            f"custdata sweep: {name} declares no retention anchors; its values "
            "were not examined",
            file=sys.stderr,
        )
