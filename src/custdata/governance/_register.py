"""The incident register: one place to open, classify and follow an incident.

:class:`IncidentRegister` records everything on the incident's append-only
timeline (:class:`IncidentStore`): the classification with the rule packs it
used, the facts the reports need, notifications, acknowledgements along the
reporting routes and the decision on an encryption-exemption candidate. It
answers the questions that follow: the due items and reminders, the reports,
the state of each reporting-route step, and whether a subject may demand
利用停止・消去 because of a reportable incident (法35条5項).
"""

from __future__ import annotations

import datetime as dt
import functools

from collections.abc import Mapping
from typing import Any

import attrs

from custdata._errors import IncidentError
from custdata._reporting import DUE_ITEM_KEYS, ReportingRoutes
from custdata._taxonomy import Taxonomy

from ._deadlines import DueItem, Reminder, deadlines, reminders
from ._incidents import (
    Incident,
    IncidentStore,
    TimelineAction,
    TimelineEntry,
    latest_facts,
)
from ._packs import rule_pack, rule_packs
from ._reports import IncidentReport, ReportKind, ReportStage, build_report
from ._triage import (
    AppiAssessment,
    Classification,
    KeyCustody,
    Reportability,
    classify,
)


__all__ = ["IncidentRegister", "RouteStatus"]


@attrs.frozen(kw_only=True)
class RouteStatus:
    """Where one reporting-route step stands.

    Attributes:
        step: The step's id.
        recipient: Who is told.
        item: The due item the step discharges, if any.
        notified_at: When the item was recorded as done, if it was.
        acknowledged_at: When the recipient acknowledged, if they did.
        acknowledged_by: Who acknowledged.
    """

    step: str
    recipient: str
    item: str | None
    notified_at: dt.datetime | None
    acknowledged_at: dt.datetime | None
    acknowledged_by: str | None


def _now(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.timezone.utc)
    if now.tzinfo is None:
        raise ValueError("now must be a time-zone aware datetime")
    return now


class IncidentRegister:
    """The incident register: opens incidents and records what happens to them.

    Every method that records takes an explicit ``now=`` (the current time
    when omitted) and the acting person.

    Args:
        store: Where incidents are kept.
        taxonomy: The policy's taxonomy (the built-in one when omitted).
        routes: The policy's reporting routes.
        organisation: The business, named in reports.
    """

    def __init__(
        self,
        store: IncidentStore,
        *,
        taxonomy: Taxonomy | None = None,
        routes: ReportingRoutes | None = None,
        organisation: str = "",
    ) -> None:
        self.store = store
        self.taxonomy = taxonomy if taxonomy is not None else Taxonomy.default()
        self.routes = routes if routes is not None else ReportingRoutes()
        self.organisation = organisation

    def __repr__(self) -> str:
        return f"<IncidentRegister {self.store!r}>"

    def open(
        self, incident: Incident, *, actor: str, now: dt.datetime | None = None
    ) -> Incident:
        """Record a new incident; its timeline starts with ``opened``.

        Raises:
            IncidentError: An incident with that id already exists, or its
                scope names a category the taxonomy does not declare.
        """
        unknown = [k for k in incident.scope.categories if k not in self.taxonomy]
        if unknown:
            msg = f"unknown categories in the scope: {', '.join(unknown)}"
            raise IncidentError(msg)
        self.store.add(incident, at=_now(now), actor=actor)
        return incident

    def record(
        self,
        incident_id: str,
        action: TimelineAction,
        detail: Mapping[str, Any] | None = None,
        *,
        actor: str,
        now: dt.datetime | None = None,
    ) -> TimelineEntry:
        """Append an entry to an incident's timeline.

        Raises:
            UnknownIncidentError: No incident has that id.
            IncidentError: *detail* is not JSON-serialisable, or the action is
                unknown or ``opened`` (only :meth:`open` records it).
        """
        try:
            action = TimelineAction(action)
        except ValueError:
            msg = f"{action!r} is not a timeline action"
            raise IncidentError(msg) from None
        if action is TimelineAction.OPENED:
            raise IncidentError("an incident is opened only once, by open()")
        return self.store.append(
            incident_id, at=_now(now), actor=actor, action=action, detail=detail or {}
        )

    def record_fact(
        self,
        incident_id: str,
        item: str,
        text: str,
        *,
        actor: str,
        now: dt.datetime | None = None,
    ) -> TimelineEntry:
        """Record what is known for one report item (``"recurrence_prevention"``).

        A later fact for the same item supersedes an earlier one in the
        reports; both stay in the timeline.
        """
        if not text.strip():
            raise IncidentError("a fact has text")
        if item not in _report_item_keys():
            msg = f"{item!r} is not a report item of any rule pack"
            raise IncidentError(msg)
        return self.record(
            incident_id,
            TimelineAction.FACT,
            {"item": item, "text": text},
            actor=actor,
            now=now,
        )

    def notified(
        self,
        incident_id: str,
        item: str,
        *,
        actor: str,
        recipient: str,
        now: dt.datetime | None = None,
    ) -> TimelineEntry:
        """Record that the due item *item* was done (a report sent, a notice given).

        Raises:
            IncidentError: *item* is not a due item's key.
        """
        if item not in DUE_ITEM_KEYS:
            msg = f"{item!r} is not a due item"
            raise IncidentError(msg)
        return self.record(
            incident_id,
            TimelineAction.NOTIFIED,
            {"item": item, "recipient": recipient},
            actor=actor,
            now=now,
        )

    def acknowledge(
        self,
        incident_id: str,
        step: str,
        *,
        actor: str,
        now: dt.datetime | None = None,
    ) -> TimelineEntry:
        """Record that the recipient of a reporting-route step acknowledged it.

        Raises:
            IncidentError: The policy's routes have no such step.
        """
        if step not in {s.id for s in self.routes.steps}:
            msg = f"the reporting routes have no step {step!r}"
            raise IncidentError(msg)
        return self.record(
            incident_id,
            TimelineAction.ACKNOWLEDGED,
            {"step": step},
            actor=actor,
            now=now,
        )

    def decide_exemption(
        self,
        incident_id: str,
        *,
        confirmed: bool,
        reason: str,
        actor: str,
        now: dt.datetime | None = None,
    ) -> TimelineEntry:
        """Record a person's decision on an encryption-exemption candidate."""
        action = (
            TimelineAction.EXEMPTION_CONFIRMED
            if confirmed
            else TimelineAction.EXEMPTION_REJECTED
        )
        return self.record(
            incident_id, action, {"reason": reason}, actor=actor, now=now
        )

    def facts(self, incident_id: str) -> dict[str, str]:
        """The latest recorded text of each report item."""
        return latest_facts(self.store.timeline(incident_id))

    def done_items(self, incident_id: str) -> frozenset[str]:
        """The due items recorded as done."""
        return frozenset(
            str(e.detail.get("item"))
            for e in self.store.timeline(incident_id)
            if e.action is TimelineAction.NOTIFIED
        )

    def acknowledged_steps(self, incident_id: str) -> dict[str, TimelineEntry]:
        """The reporting-route steps acknowledged, with their entries."""
        return {
            str(e.detail.get("step")): e
            for e in self.store.timeline(incident_id)
            if e.action is TimelineAction.ACKNOWLEDGED
        }

    def exemption_decision(self, incident_id: str) -> bool | None:
        """The latest decision on the encryption exemption, or ``None``."""
        decision: bool | None = None
        for e in self.store.timeline(incident_id):
            if e.action is TimelineAction.EXEMPTION_CONFIRMED:
                decision = True
            elif e.action is TimelineAction.EXEMPTION_REJECTED:
                decision = False
        return decision

    # -- classification ------------------------------------------------------

    def classify(
        self,
        incident_id: str,
        *,
        actor: str,
        custody: KeyCustody | None = None,
        now: dt.datetime | None = None,
    ) -> Classification:
        """Classify the incident and record the result with its packs' ids.

        Raises:
            UnknownIncidentError: No incident has that id.
            IncidentError: The scope names a category the taxonomy lacks.
        """
        result = classify(
            self.store.get(incident_id), taxonomy=self.taxonomy, custody=custody
        )
        detail = result.as_dict()
        # The evidence the decision rested on, so that it replays identically.
        detail["custody"] = None if custody is None else custody.as_dict()
        self.record(
            incident_id, TimelineAction.CLASSIFIED, detail, actor=actor, now=now
        )
        return result

    def classification(self, incident_id: str) -> Classification:
        """The incident's latest recorded classification, with any exemption decision applied.

        The classification is replayed with the packs it recorded, so a pack
        added later never changes it. A confirmed exemption candidate becomes
        not reportable; a rejected one reportable.

        Raises:
            UnknownIncidentError: No incident has that id.
            IncidentError: The incident has not been classified.
        """
        entries = self.store.timeline(incident_id)
        recorded = [e for e in entries if e.action is TimelineAction.CLASSIFIED]
        if not recorded:
            msg = f"incident {incident_id!r} has not been classified"
            raise IncidentError(msg)
        detail = recorded[-1].detail
        appi, gdpr = detail.get("appi"), detail.get("gdpr")
        raw_custody = detail.get("custody")
        result = classify(
            self.store.get(incident_id),
            taxonomy=self.taxonomy,
            custody=None if raw_custody is None else _custody(raw_custody),
            appi_pack=None
            if appi is None
            else rule_pack("appi", pack_id=appi["pack_id"]),
            gdpr_pack=None
            if gdpr is None
            else rule_pack("gdpr", pack_id=gdpr["pack_id"]),
        )
        decision = self.exemption_decision(incident_id)
        if (
            result.appi is not None
            and result.appi.status is Reportability.EXEMPTION_CANDIDATE
            and decision is not None
        ):
            status = (
                Reportability.NOT_REPORTABLE if decision else Reportability.REPORTABLE
            )
            result = attrs.evolve(result, appi=_with_status(result.appi, status))
        return result

    # -- deadlines, routes, reports ------------------------------------------

    def deadlines(self, incident_id: str) -> tuple[DueItem, ...]:
        """The incident's due items (see :func:`deadlines`)."""
        return deadlines(
            self.store.get(incident_id),
            self.classification(incident_id),
            routes=self.routes,
        )

    def reminders(self, incident_id: str, *, now: dt.datetime) -> tuple[Reminder, ...]:
        """The reminders fallen due by *now* for items not yet recorded as done."""
        return reminders(
            self.deadlines(incident_id),
            offsets=self.routes.reminder_offsets,
            now=now,
            done=self.done_items(incident_id),
        )

    def route_status(self, incident_id: str) -> tuple[RouteStatus, ...]:
        """Where each step of the policy's reporting routes stands."""
        entries = self.store.timeline(incident_id)
        notified: dict[str, dt.datetime] = {}
        acks: dict[str, TimelineEntry] = {}
        for e in entries:
            if e.action is TimelineAction.NOTIFIED:
                notified.setdefault(str(e.detail.get("item")), e.at)
            elif e.action is TimelineAction.ACKNOWLEDGED:
                acks.setdefault(str(e.detail.get("step")), e)
        out = []
        for step in self.routes.steps:
            ack = acks.get(step.id)
            out.append(
                RouteStatus(
                    step=step.id,
                    recipient=step.recipient,
                    item=step.item,
                    notified_at=None if step.item is None else notified.get(step.item),
                    acknowledged_at=None if ack is None else ack.at,
                    acknowledged_by=None if ack is None else ack.actor,
                )
            )
        return tuple(out)

    def report(
        self,
        incident_id: str,
        *,
        kind: ReportKind | str = ReportKind.PPC,
        stage: ReportStage | str = ReportStage.FINAL,
    ) -> IncidentReport:
        """Build a report from the record and the facts on its timeline.

        Raises:
            IncidentReportIncompleteError: A final report lacks items.
        """
        return build_report(
            self.store.get(incident_id),
            self.classification(incident_id),
            self.facts(incident_id),
            kind=kind,
            stage=stage,
            taxonomy=self.taxonomy,
            organisation=self.organisation,
            dpo_contact=self.routes.dpo_contact,
        )

    def cessation_grounds(self, subject_ref: str) -> tuple[str, ...]:
        """The reportable incidents that concern a subject (法35条5項).

        A data-subject request for 利用停止・消去 citing one of these needs no
        further grounds. Subjects are named by their audit pseudonym.
        """
        out = []
        for incident_id in self.store.incidents_of_subject(subject_ref):
            try:
                result = self.classification(incident_id)
            except IncidentError:
                continue
            if result.eligible_for_cessation:
                out.append(incident_id)
        return tuple(out)


@functools.cache
def _report_item_keys() -> frozenset[str]:
    """Every report item key of every pack's incident topic."""
    return frozenset(
        str(item["key"])
        for pack in rule_packs()
        if "incident" in pack.topics
        for item in pack.topic("incident")["report_items"]
    )


def _custody(raw: Mapping[str, Any]) -> KeyCustody:
    return KeyCustody(
        algorithm=str(raw["algorithm"]),
        provider=raw.get("provider"),
        kek_id=raw.get("kek_id"),
        data_key_ids=tuple(int(k) for k in raw.get("data_key_ids", ())),
        keys_stored_apart=bool(raw["keys_stored_apart"]),
    )


def _with_status(appi: AppiAssessment, status: Reportability) -> AppiAssessment:
    return attrs.evolve(appi, status=status)
