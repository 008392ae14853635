"""``custdata provision records`` and ``custdata contractors check`` (clause 6).

``provision records --subject ID`` prints every provision and receipt record
naming one subject, for a disclosure request under APPI 33条5項 (``--json`` for
the JSON handed to the person). ``contractors check`` reports the contractor
registry's overdue reviews, missing assessments, unapproved sub-contractors and
countries of handling not named in the published safety measures.

Exit status: 0 success (or no findings), 1 findings, 2 invalid input or an
unreachable database.
"""

from __future__ import annotations

import argparse
import json

from typing import Any

from .._errors import ConfigurationError
from .._policy import Policy
from ._options import add_today_argument, chosen_date, fail


def register(commands: Any) -> None:
    """Register the ``provision`` and ``contractors`` command groups."""
    provision = commands.add_parser(
        "provision",
        help="third-party provision and receipt records (APPI 29–30条, 33条5項)",
    )
    sub = provision.add_subparsers(
        dest="provision_command", metavar="COMMAND", required=True
    )
    records = sub.add_parser(
        "records",
        help="every provision and receipt record naming one subject (33条5項)",
        description=(
            "Print every provision, receipt and related-information record naming "
            "the subject, from the application's database. Exit 0 on success, 2 on "
            "invalid input or an unreachable database."
        ),
    )
    records.add_argument(
        "--subject", required=True, metavar="ID", help="the subject's id"
    )
    records.add_argument("--url", required=True, help="the application's database URL")
    records.add_argument(
        "--prefix", default="custdata_provision", help="the record tables' name prefix"
    )
    records.add_argument(
        "--json", action="store_true", help="print the disclosure as JSON"
    )
    records.set_defaults(handler=_records)

    contractors = commands.add_parser(
        "contractors", help="the contractor registry (R-TPP-5)"
    )
    csub = contractors.add_subparsers(
        dest="contractors_command", metavar="COMMAND", required=True
    )
    check = csub.add_parser(
        "check",
        help="overdue reviews, assessments, sub-contractors, uncovered countries",
        description=(
            "Check the policy's contractor registry: overdue reviews (CTR001), "
            "missing or failed assessments (CTR002), unapproved sub-contractors "
            "(CTR003), countries of handling the published safety measures do not "
            "name (CTR004). Exit 0 clean, 1 findings, 2 invalid policy."
        ),
    )
    check.add_argument(
        "--policy", required=True, metavar="PATH", help="the custdata.toml file"
    )
    add_today_argument(check, what="the date to check review deadlines against")
    check.add_argument("--json", action="store_true", help="print findings as JSON")
    check.set_defaults(handler=_contractors_check)


def _records(args: argparse.Namespace) -> int:
    from sqlalchemy import create_engine  # noqa: PLC0415 - optional layer
    from sqlalchemy.exc import ArgumentError  # noqa: PLC0415

    from ..governance import disclose_records  # noqa: PLC0415
    from ..sqlalchemy import SqlProvisionRecordStore  # noqa: PLC0415

    try:
        engine = create_engine(args.url, hide_parameters=True)
    except (ArgumentError, ValueError) as exc:
        bad_url = f"invalid database URL ({type(exc).__name__})"
        return fail(args, "provision records", bad_url)
    except ImportError as exc:
        return fail(args, "provision records", f"database driver missing ({exc.name})")
    try:
        store = SqlProvisionRecordStore(engine, prefix=args.prefix)
        disclosure = disclose_records(store, args.subject)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(disclosure, ensure_ascii=False, indent=2))
        return 0
    found = disclosure["records"]
    for rec in found:
        print(
            f"{rec['created_at']}  {rec['kind']:12} {rec['basis']:24} "
            f"{rec['counterparty_id']}  record {rec['record_id']}  "
            f"keep until {rec['retain_until']}"
        )
    print(f"{len(found)} record(s) name subject {args.subject}")
    return 0


def _contractors_check(args: argparse.Namespace) -> int:
    from ..governance import contractor_findings  # noqa: PLC0415

    today = chosen_date(args)
    try:
        policy = Policy.from_toml(args.policy)
    except ConfigurationError as exc:
        return fail(args, "contractors check", exc)
    findings = contractor_findings(policy, today=today)
    if args.json:
        print(
            json.dumps(
                {"findings": [f.as_dict() for f in findings]},
                ensure_ascii=False,
                indent=2,
            )
        )
    else:
        for f in findings:
            print(f"{args.policy}: {f.key_path}: {f.code} {f.message}")
        print(f"{len(findings)} finding(s)" if findings else "no findings")
    return 1 if findings else 0
