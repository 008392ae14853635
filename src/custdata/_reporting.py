"""Reporting routes: who is told of an incident, in which order (R-INC-5).

The policy's ``[reporting]`` table is the company's escalation chain (取扱者 →
部門責任者 → 個人情報保護管理者 → PPC or the delegated ministry, the supervisory
authority, the principal) and the reminders sent before each deadline::

    [reporting]
    reminder_offsets_hours = [48, 24, 4]   # remind this long before a deadline
    principal_sla_hours = 24               # as a contractor: tell the principal within
    dpo_contact = "privacy@example.co.jp"  # GDPR Art. 33(3)(b)

    [[reporting.route]]
    id = "manager"
    recipient = "support_manager"          # a person or role id, or an authority
    label = "部門責任者"
    item = ""                              # the due item this step discharges, if any

The decisions over these routes live in :mod:`custdata.governance`.
"""

from __future__ import annotations

import datetime as dt

from collections.abc import Callable, Mapping
from typing import Any

import attrs


__all__ = ["DUE_ITEM_KEYS", "ReportingRoutes", "RouteStep", "read_reporting_routes"]

#: The keys of the due items the deadline engine produces, which a route step
#: may discharge.
DUE_ITEM_KEYS = frozenset(
    {
        "ppc_preliminary",
        "ppc_final",
        "appi_subject_notice",
        "gdpr_authority",
        "gdpr_subject_notice",
        "principal_notice",
    }
)

_DEFAULT_OFFSETS: tuple[dt.timedelta, ...] = (
    dt.timedelta(hours=24),
    dt.timedelta(hours=4),
)


@attrs.frozen(kw_only=True)
class RouteStep:
    """One step of the escalation chain.

    Attributes:
        id: The step's id, named by acknowledgements.
        recipient: Who is told: a person or role id of the policy, or an
            authority (``"ppc"``, a ministry, a supervisory authority).
        label: A human-readable name of the step (``"個人情報保護管理者"``).
        item: The key of the due item this step discharges
            (``"ppc_preliminary"``, ``"gdpr_authority"``...), or ``None`` for an
            internal step.
    """

    id: str
    recipient: str
    label: str = ""
    item: str | None = None


@attrs.frozen(kw_only=True)
class ReportingRoutes:
    """The policy's reporting routes.

    Attributes:
        steps: The escalation chain, in order.
        reminder_offsets: How long before each deadline a reminder is due.
        principal_sla_hours: As a contractor (委託先), the contract's limit for
            telling the principal (委託元), or ``None`` when none is agreed.
        dpo_contact: The contact point named in GDPR notifications.
    """

    steps: tuple[RouteStep, ...] = ()
    reminder_offsets: tuple[dt.timedelta, ...] = _DEFAULT_OFFSETS
    principal_sla_hours: int | None = None
    dpo_contact: str | None = None

    def step(self, step_id: str) -> RouteStep:
        """Return the step named *step_id*.

        Raises:
            LookupError: No step has that id.
        """
        for step in self.steps:
            if step.id == step_id:
                return step
        msg = f"no reporting route step {step_id!r}"
        raise LookupError(msg)


def _hours(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_reporting_routes(
    data: Mapping[str, Any], problem: Callable[[str, str], None]
) -> ReportingRoutes:
    """Read the policy's ``[reporting]`` table, reporting each problem found.

    Args:
        data: The table's contents (empty when the policy has none).
        problem: Called with a key path and a reason for each problem.
    """
    known = {"route", "reminder_offsets_hours", "principal_sla_hours", "dpo_contact"}
    for key in data:
        if key not in known:
            problem(f"reporting.{key}", "unknown key")
    offsets = _DEFAULT_OFFSETS
    raw_offsets = data.get("reminder_offsets_hours")
    if raw_offsets is not None:
        if isinstance(raw_offsets, list) and all(_hours(h) for h in raw_offsets):
            offsets = tuple(dt.timedelta(hours=h) for h in raw_offsets)
        else:
            problem(
                "reporting.reminder_offsets_hours",
                "expected a list of whole numbers of hours",
            )
    sla = data.get("principal_sla_hours")
    if sla is not None and not _hours(sla):
        problem("reporting.principal_sla_hours", "expected a whole number of hours")
        sla = None
    dpo = data.get("dpo_contact")
    if dpo is not None and not isinstance(dpo, str):
        problem("reporting.dpo_contact", "expected a string")
        dpo = None
    steps: list[RouteStep] = []
    raw_steps = data.get("route", [])
    if not isinstance(raw_steps, list):
        problem("reporting.route", "expected an array of tables ([[reporting.route]])")
        raw_steps = []
    seen: set[str] = set()
    for n, raw in enumerate(raw_steps):
        where = f"reporting.route[{n}]"
        if not isinstance(raw, dict):
            problem(where, "expected a table")
            continue
        for key in raw:
            if key not in {"id", "recipient", "label", "item"}:
                problem(f"{where}.{key}", "unknown key")
        sid, recipient = raw.get("id"), raw.get("recipient")
        label, item = raw.get("label", ""), raw.get("item") or None
        if not isinstance(sid, str) or not sid:
            problem(f"{where}.id", "missing required key (a string)")
            continue
        if sid in seen:
            problem(f"{where}.id", f"duplicate step id {sid!r}")
        seen.add(sid)
        if not isinstance(recipient, str) or not recipient:
            problem(f"{where}.recipient", "missing required key (a string)")
            continue
        if not isinstance(label, str) or not (item is None or isinstance(item, str)):
            problem(where, "label and item are strings")
            continue
        if item is not None and item not in DUE_ITEM_KEYS:
            choices = ", ".join(sorted(DUE_ITEM_KEYS))
            problem(f"{where}.item", f"{item!r} is not one of {choices}")
            continue
        steps.append(RouteStep(id=sid, recipient=recipient, label=label, item=item))
    return ReportingRoutes(
        steps=tuple(steps),
        reminder_offsets=offsets,
        principal_sla_hours=sla,
        dpo_contact=dpo,
    )
