"""``custdata erase``: erase one data subject (APPI 35条, GDPR Art. 17)."""

from __future__ import annotations

import argparse
import json

from typing import Any

from .._context import acting_as, purpose
from .._errors import ConfigurationError, CustdataError
from ._options import (
    add_database_arguments,
    add_disposal_arguments,
    disposal_custodian,
    fail,
    iso_time,
    operator,
    warn_unrecorded,
)


__all__ = ["register", "run"]

_REASONS = ("erasure_request", "operator_request")


def register(commands: Any) -> None:
    """Register the ``erase`` command."""
    parser = commands.add_parser(
        "erase",
        help="erase one data subject (a request to erase, 35条 / GDPR 17)",
        description=(
            "Find every row about SUBJECT (its subject-key columns, foreign keys "
            "and declared references to them) and dispose of it through the "
            "retention actions: the request ends every purpose's period, what a "
            "statutory minimum still requires is kept and reported with the day it "
            "ends, and a legal hold keeps everything. Rows are deleted or their "
            "values erased; when no value under the subject's own key is left, the "
            "key is crypto-shredded and its blind-index entries cleared. Each table "
            "is recorded as one retention.expire event naming --actor, before it "
            "commits. --dry-run prints what would be done and changes nothing. The "
            "recipients of earlier provisions are listed, to be told (GDPR 19). "
            "Exit 0 done, 2 on a usage or configuration error."
        ),
    )
    parser.add_argument("subject", metavar="SUBJECT", help="the subject's id")
    add_database_arguments(parser)
    add_disposal_arguments(parser)
    parser.add_argument(
        "--role", required=True, help="the role of --actor (it must grant --purpose)"
    )
    parser.add_argument(
        "--purpose",
        required=True,
        help="the purpose acted for: one the policy marks may_erase",
    )
    parser.add_argument(
        "--reason",
        choices=_REASONS,
        default="erasure_request",
        help="the reason recorded (default erasure_request)",
    )
    parser.add_argument(
        "--request-id", metavar="ID", help="the data-subject request answered"
    )
    parser.add_argument(
        "--log", metavar="FILE", help="append the deletion log here (keep it apart)"
    )
    parser.add_argument(
        "--now",
        type=iso_time,
        default=None,
        metavar="ISO-8601",
        help="decide as of this aware instant (default: now)",
    )
    parser.add_argument("--dry-run", action="store_true", help="report; change nothing")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``custdata erase``."""
    from sqlalchemy.orm import Session  # noqa: PLC0415 - optional layer

    from ..sqlalchemy import erase_subject, locate_subject  # noqa: PLC0415

    try:
        with (
            disposal_custodian(args) as (custodian, engine, models),
            custodian.activate(),
            Session(engine) as session,
            acting_as(operator(args), role=args.role),
            purpose(args.purpose),
        ):
            try:
                footprint = locate_subject(session, args.subject, tables=models)
            except (TypeError, ValueError) as exc:
                if isinstance(exc, CustdataError):
                    raise
                raise ConfigurationError(
                    "SUBJECT is not a subject id of these tables"
                ) from None
            result = erase_subject(
                session,
                footprint,
                reason=args.reason,
                request_id=args.request_id,
                dry_run=args.dry_run,
                tables=models,
                log=args.log,
                now=args.now,
            )
            if not args.dry_run:
                # Said once the erasure is done: a refused one changed nothing.
                warn_unrecorded("erase", args, "customer data was erased")
    except CustdataError as exc:
        return fail(args, "erase", exc)
    _print(result, as_json=args.json)
    return 0


def _print(result: Any, *, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {
                    "erasure_id": result.erasure_id,
                    "subject": str(result.subject),
                    "request_id": result.request_id,
                    "dry_run": result.dry_run,
                    "counts": [
                        {
                            "table": c.table,
                            "field": c.field,
                            "action": c.action,
                            "count": c.count,
                        }
                        for c in result.counts
                    ],
                    "kept": [
                        {
                            "table": k.table,
                            "field": k.field,
                            "reason": k.reason,
                            "count": k.count,
                            "rule": k.rule,
                            "until": None if k.until is None else k.until.isoformat(),
                        }
                        for k in result.kept
                    ],
                    "shredded": result.shredded,
                    "index_entries_cleared": result.index_entries_cleared,
                    "recipients": list(result.recipients),
                },
                indent=2,
            )
        )
        return
    for c in result.counts:
        where = c.table if c.field == "*" else f"{c.table}.{c.field}"
        print(f"{where}: {c.action} {c.count}")
    for k in result.kept:
        why = k.reason
        if k.rule is not None:
            until = (
                "its anchor event" if k.until is None else k.until.date().isoformat()
            )
            why = f"{why} ({k.rule}, until {until})"
        print(f"{k.table}.{k.field}: kept {k.count}: {why}")
    if result.shredded:
        print("subject key: crypto-shredded")
    for recipient in result.recipients:
        print(f"tell recipient {recipient} of the erasure (GDPR Art. 19)")
    what = "would erase" if result.dry_run else "erased"
    done = sum(c.count for c in result.counts if c.action in {"delete_row", "erase"})
    state = "complete" if result.complete else "partial: values kept, see above"
    print(f"{what} {done} rows and values of {result.subject}; {state}")
