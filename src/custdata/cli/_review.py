"""``custdata review``: write the dated periodic-review report (GL 10-3 ⑤).

::

    custdata review --policy PATH --out DIR [--today YYYY-MM-DD]

Writes ``DIR/review-<date>.md`` (every dated item with its status, the
findings of ``custdata check`` and what changed since the previous review)
and ``DIR/review-<date>.json`` (the snapshot the next review compares with).
The previous review is the latest ``review-*.json`` in DIR dated before today.

Exit status 0: written, nothing overdue; 1: written, with findings; 2: invalid
policy or folder (one line on stderr).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re

from pathlib import Path
from typing import Any

from custdata._errors import ConfigurationError
from custdata._policy import Policy

from ._docs import add_policy_argument
from ._options import add_json_argument, add_today_argument, chosen_date, fail


__all__ = ["register"]

_SNAPSHOT = re.compile(r"^review-(\d{4}-\d{2}-\d{2})\.json$")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``review`` command on *subparsers*."""
    parser = subparsers.add_parser(
        "review",
        help="write the dated periodic-review report; exit 1 on findings",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_policy_argument(parser)
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="the folder of review reports"
    )
    add_today_argument(parser, what="the review date")
    add_json_argument(parser)
    parser.set_defaults(handler=run)


def _previous(folder: Path, today: dt.date) -> dict[str, Any] | None:
    dated = sorted(
        (m.group(1), p)
        for p in folder.glob("review-*.json")
        if (m := _SNAPSHOT.match(p.name)) and m.group(1) < today.isoformat()
    )
    if not dated:
        return None
    try:
        loaded: dict[str, Any] = json.loads(dated[-1][1].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConfigurationError(
            "the previous review snapshot cannot be read", path=dated[-1][1]
        ) from None
    return loaded


def run(args: argparse.Namespace) -> int:
    """Run ``custdata review``."""
    from custdata.governance import register_findings, review_report  # noqa: PLC0415

    from .._check import check_policy  # noqa: PLC0415

    today = chosen_date(args)
    folder = Path(args.out)
    try:
        policy = Policy.from_toml(args.policy)
        folder.mkdir(parents=True, exist_ok=True)
        previous = _previous(folder, today)
        report, snapshot = review_report(policy, today=today, previous=previous)
        path = folder / f"review-{today.isoformat()}.md"
        path.write_text(report, encoding="utf-8")
        snapshot_path = folder / f"review-{today.isoformat()}.json"
        snapshot_path.write_text(
            json.dumps(snapshot, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )
    except ConfigurationError as exc:
        return fail(args, "review", exc)
    except OSError as exc:
        return fail(args, "review", f"cannot write to {args.out} ({exc.strerror})")
    findings = [
        *check_policy(policy, today=today),
        *register_findings(policy, today=today),
    ]
    if args.json:
        document = {
            "date": today.isoformat(),
            "report": str(path),
            "snapshot": str(snapshot_path),
            "findings": [f.as_dict() for f in findings],
        }
        print(json.dumps(document, ensure_ascii=False, indent=2))
    else:
        print(path)
    return 1 if findings else 0
