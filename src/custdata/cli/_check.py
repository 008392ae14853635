"""``custdata check``: lint the policy and the mapped models, for CI."""

from __future__ import annotations

import argparse
import datetime as dt
import json

from typing import Any

from .._check import Finding, check_policy
from .._errors import ConfigurationError
from .._lifecycle import compare_policies
from .._policy import Policy
from ..governance import contractor_findings
from ._options import add_today_argument, chosen_date, fail, load_models
from ._published import published_findings, register_findings
from ._request import add_requests_url_arguments, read_requests


def register(commands: Any) -> None:
    """Register the ``check`` command."""
    parser = commands.add_parser(
        "check",
        help="lint the policy (and models); exit 1 on findings",
        description=(
            "Validate the policy file and report what the regulation still requires: "
            "published texts, owners, responsible persons, timely review, consent "
            "for special-care data, contractor reviews and countries of handling, "
            "the registers (overdue reviews, training, prohibitions); with "
            "--published, drift from the published notice; with --models, also "
            "untagged or unencrypted customer-data columns; with --previous, purpose "
            "changes against the previous policy; with --requests-url, data-subject "
            "requests overdue (REQ001) or due soon (REQ002). Exit 0 clean, 1 findings, 2 "
            "invalid input."
        ),
    )
    parser.add_argument(
        "--policy", required=True, metavar="PATH", help="the custdata.toml file"
    )
    parser.add_argument(
        "--models",
        metavar="MODULE:BASE",
        help="a SQLAlchemy declarative base to check, e.g. myapp.models:Base",
    )
    parser.add_argument(
        "--previous",
        metavar="OLD.toml",
        help=(
            "the previous (published) policy: flag purposes changed without a new "
            "version and changes that need consent or notification"
        ),
    )
    parser.add_argument(
        "--published",
        metavar="PATH",
        help="a published privacy notice (Markdown, HTML or text) to compare "
        "with the rendering; drift is a finding (PUB001-PUB003)",
    )
    add_requests_url_arguments(
        parser,
        what="open ones past their due date (REQ001) or due within "
        "[requests] due_soon_days (REQ002)",
    )
    parser.add_argument("--json", action="store_true", help="print findings as JSON")
    add_today_argument(parser, what="the date to check review deadlines against")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``custdata check``."""
    today = chosen_date(args)
    try:
        policy = Policy.from_toml(args.policy)
        findings = check_policy(policy, today=today)
        findings.extend(contractor_findings(policy, today=today))
        if args.previous:
            findings.extend(compare_policies(Policy.from_toml(args.previous), policy))
        findings.extend(register_findings(policy, today=today))
        if args.published:
            findings.extend(published_findings(policy, args.published))
        if args.requests_url:
            findings.extend(_request_findings(policy, args, today))
        if args.models:
            from ..sqlalchemy import check_models  # noqa: PLC0415 - optional layer

            findings.extend(check_models(load_models(args.models), policy))
    except ConfigurationError as exc:
        return fail(args, "check", exc)
    _print(findings, as_json=args.json, source=args.policy)
    return 1 if findings else 0


def _request_findings(
    policy: Policy, args: argparse.Namespace, today: dt.date
) -> list[Finding]:
    """The REQ findings of the requests in the database, judged at the start of *today*."""
    from ..governance import request_findings  # noqa: PLC0415

    settings = policy.requests
    # A request due today is not yet overdue on the day itself.
    now = dt.datetime.combine(today, dt.time(), tzinfo=settings.zone)
    requests = read_requests(args.requests_url, args.requests_prefix)
    return request_findings(requests, settings=settings, now=now)


def _print(findings: list[Finding], *, as_json: bool, source: str) -> None:
    if as_json:
        print(
            json.dumps(
                {"findings": [f.as_dict() for f in findings]},
                ensure_ascii=False,
                indent=2,
            )
        )
        return
    for f in findings:
        print(f"{source}: {f.key_path}: {f.code} {f.message}")
    print(f"{len(findings)} finding(s)" if findings else "no findings")
