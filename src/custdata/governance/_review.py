"""Periodic review and the register checks of ``custdata check`` (R-GOV-2, R-GOV-3, R-GOV-5).

:func:`review_items` lists everything in the policy that carries a review date
(the policy itself, purposes and retention rules that state one, the published
notice, safety measures, handlers' role grants) with its status on a day.
:func:`register_findings` turns overdue items, expired training, safety-measure
gaps and prohibition rules into :class:`custdata._check.Finding` values for
``custdata check``. :func:`review_report` writes the dated review report of
``custdata review``, with what changed since the previous one
(:func:`review_snapshot` is what is compared).
"""

from __future__ import annotations

import datetime as dt

from collections.abc import Mapping
from typing import Any

import attrs

from custdata._check import Finding
from custdata._policy import Policy
from custdata._registers import MeasureCategory


__all__ = [
    "DUE_SOON_DAYS",
    "ReviewItem",
    "register_findings",
    "review_items",
    "review_report",
    "review_snapshot",
]

#: An item whose review date is this close is reported as due soon.
DUE_SOON_DAYS = 30


@attrs.frozen(kw_only=True)
class ReviewItem:
    """One thing that must be reviewed by a date.

    Attributes:
        key_path: Where it is in the policy (``measures.training``).
        what: A short description (``safety measure 'training'``).
        next_review: When it must next be reviewed.
        status: ``"overdue"``, ``"due soon"`` (within :data:`DUE_SOON_DAYS`)
            or ``"ok"`` on the day asked.
    """

    key_path: str
    what: str
    next_review: dt.date
    status: str


def review_items(policy: Policy, *, today: dt.date) -> list[ReviewItem]:
    """Return every dated review item of *policy* with its status on *today*.

    Sorted by review date, then key path.
    """
    dated: list[tuple[str, str, dt.date | None]] = [
        ("policy.next_review", "the regulation (policy)", policy.next_review),
        (
            "notice.next_review",
            "the published notice",
            policy.registers.notice.next_review,
        ),
    ]
    for pid, purpose in policy.purposes.items():
        dated.append(
            (
                f"purposes.{pid}.next_review",
                f"purpose {pid!r}",
                purpose.next_review,
            )
        )
    for rid, rule in policy.retention_rules.items():
        dated.append(
            (
                f"retention.{rid}.next_review",
                f"retention rule {rid!r}",
                rule.next_review,
            )
        )
    for mid, measure in policy.registers.measures.items():
        dated.append(
            (
                f"measures.{mid}.next_review",
                f"safety measure {mid!r}",
                measure.next_review,
            )
        )
    for aid, handler in policy.registers.handlers.handlers.items():
        dated.append(
            (
                f"handlers.{aid}.next_review",
                f"role grants of handler {aid!r}",
                handler.next_review,
            )
        )
    items = []
    soon = today + dt.timedelta(days=DUE_SOON_DAYS)
    for key_path, what, due in dated:
        if due is None:
            continue
        status = "overdue" if due < today else "due soon" if due <= soon else "ok"
        items.append(
            ReviewItem(key_path=key_path, what=what, next_review=due, status=status)
        )
    return sorted(items, key=lambda i: (i.next_review, i.key_path))


def register_findings(policy: Policy, *, today: dt.date) -> list[Finding]:
    """Return the findings about the policy's registers on *today*.

    The codes:

    * ``REV001`` a review date has passed (the policy's own is ``POL003``);
    * ``REG001`` strict handler mode, and a handler's training has expired or
      was never recorded;
    * ``REG002`` a safety-measure category of the guideline has no entry
      (technical entries are generated, so never missing);
    * ``REG003`` a prohibition rule is broken by a purpose of the policy;
    * ``REG004`` a handler's registration has ended but it is still listed
      with roles (remove it or its roles).
    """
    findings: list[Finding] = [
        Finding(
            code="REV001",
            key_path=item.key_path,
            message=f"the review of {item.what} due on "
            f"{item.next_review.isoformat()} is overdue",
        )
        for item in review_items(policy, today=today)
        if item.status == "overdue" and item.key_path != "policy.next_review"
    ]
    register = policy.registers.handlers
    for aid in sorted(register.handlers):
        handler = register.handlers[aid]
        if register.strict and register.training_valid_for is not None:
            expires = handler.training_expires(register.training_valid_for)
            if expires is None or expires < today:
                findings.append(
                    Finding(
                        code="REG001",
                        key_path=f"handlers.{aid}.trained_on",
                        message=f"handler {aid!r} has no valid training; "
                        "strict mode refuses it until it is trained",
                    )
                )
        if handler.effective_until is not None and handler.effective_until < today:
            findings.append(
                Finding(
                    code="REG004",
                    key_path=f"handlers.{aid}.effective_until",
                    message=f"handler {aid!r} left on "
                    f"{handler.effective_until.isoformat()} but still holds roles",
                )
            )
    declared = {m.category for m in policy.registers.measures.values()}
    findings.extend(
        Finding(
            code="REG002",
            key_path="measures",
            message=f"no safety measure of the {category.value!r} category "
            "is registered (GL 10)",
        )
        for category in MeasureCategory
        if category is not MeasureCategory.TECHNICAL and category not in declared
    )
    for rid in sorted(policy.registers.prohibitions):
        rule = policy.registers.prohibitions[rid]
        for pid, key in rule.violations(policy):
            reason = f": {rule.reason}" if rule.reason else ""
            findings.append(
                Finding(
                    code="REG003",
                    key_path=f"purposes.{pid}.categories",
                    message=f"prohibition {rid!r} forbids category {key!r} for "
                    f"purpose {pid!r}{reason}",
                )
            )
    return findings


def review_snapshot(policy: Policy, *, today: dt.date) -> dict[str, Any]:
    """Return what a review records of *policy*, JSON-ready, for the next comparison."""
    return {
        "date": today.isoformat(),
        "policy_version": policy.version,
        "purposes": {
            pid: {
                "version": p.version,
                "text_ja": p.text_ja,
                "text_en": p.text_en,
                "categories": list(p.categories),
                "consent_required": p.consent_required,
            }
            for pid, p in sorted(policy.purposes.items())
        },
        "retention": {
            rid: f"{r.period} from {r.anchor.value}, then {r.action.value}"
            for rid, r in sorted(policy.retention_rules.items())
        },
        "roles": {rid: list(r.purposes) for rid, r in sorted(policy.roles.items())},
        "handlers": {
            aid: {
                "roles": list(h.roles),
                "trained_on": h.trained_on.isoformat() if h.trained_on else None,
                "effective_until": h.effective_until.isoformat()
                if h.effective_until
                else None,
            }
            for aid, h in sorted(policy.registers.handlers.handlers.items())
        },
        "measures": {
            mid: m.text_en for mid, m in sorted(policy.registers.measures.items())
        },
    }


def _changes(
    before: Mapping[str, Any], after: Mapping[str, Any]
) -> list[tuple[str, str, str]]:
    """(section, id, "added" | "removed" | "changed") between two snapshots."""
    out = []
    for section in ("purposes", "retention", "roles", "handlers", "measures"):
        old = before.get(section, {})
        new = after.get(section, {})
        for key in sorted(set(old) | set(new)):
            if key not in old:
                out.append((section, key, "added"))
            elif key not in new:
                out.append((section, key, "removed"))
            elif old[key] != new[key]:
                out.append((section, key, "changed"))
    return out


def review_report(
    policy: Policy,
    *,
    today: dt.date,
    previous: Mapping[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Write the review report of *today* (GL 10-3 ⑤) and the snapshot to keep.

    Args:
        policy: The policy under review.
        today: The review date.
        previous: The snapshot kept by the previous review, if any.

    Returns:
        The report (Markdown) and this review's snapshot.
    """
    from custdata._check import check_policy  # noqa: PLC0415 - same layer, late

    snapshot = review_snapshot(policy, today=today)
    items = review_items(policy, today=today)
    findings = [
        *check_policy(policy, today=today),
        *register_findings(policy, today=today),
    ]
    lines = [
        f"# Review of the customer-data regulation — {today.isoformat()}",
        "",
        f"- Business: {policy.organisation}",
        f"- Policy version: {policy.version}",
        f"- Previous review: {previous['date'] if previous else 'none recorded'}",
        "",
        "## Items checked",
        "",
        "| Item | Where | Review due | Status |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {i.what} | `{i.key_path}` | {i.next_review.isoformat()} | {i.status} |"
        for i in items
    ]
    lines += ["", "## Findings", ""]
    lines += [f"- `{f.code}` `{f.key_path}`: {f.message}" for f in findings] or [
        "- none"
    ]
    lines += ["", "## Changes since the previous review", ""]
    if previous is None:
        lines.append("- no previous review: this report is the baseline")
    else:
        changes = _changes(previous, snapshot)
        lines += [f"- {section} `{key}` {kind}" for section, key, kind in changes] or [
            "- none"
        ]
    lines.append("")
    return "\n".join(lines), snapshot
