"""Incident records and their append-only timeline (R-INC-1).

An :class:`Incident` is what the business knew when it opened the record:
when it knew (知った時点), who reported it, what happened (leak, loss or damage;
actual or possible), the cause, whether it was malicious, the scope (explicit,
or computed from the audit trail), whether data at the acquisition stage was
involved (the 2024 web-skimming rule), contractor origin and jurisdictions.
The record never changes; everything that happens afterwards (classification,
facts for the reports, notifications, acknowledgements, the decision on the
encryption exemption) is a :class:`TimelineEntry` appended to it. Every
incident is kept, reportable or not (GDPR Art. 33(5)).

Scopes name subjects only by their audit pseudonyms (``sr_…``) and fields by
category; an incident record never holds a customer value.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import threading
import uuid

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import attrs

from custdata._errors import IncidentError, UnknownIncidentError


__all__ = [
    "AffectedField",
    "InMemoryIncidentStore",
    "Incident",
    "IncidentKind",
    "IncidentScope",
    "IncidentStore",
    "TimelineAction",
    "TimelineEntry",
    "incident_from_dict",
    "incident_to_dict",
]


class IncidentKind(str, enum.Enum):
    """What happened to the data (漏えい等)."""

    #: 漏えい: the data reached someone who should not have it.
    LEAK = "leak"
    #: 滅失: the data is gone.
    LOSS = "loss"
    #: 毀損: the data is damaged or unusable (ransomware encryption included).
    DAMAGE = "damage"


class TimelineAction(str, enum.Enum):
    """The kinds of timeline entry."""

    OPENED = "opened"
    CLASSIFIED = "classified"
    FACT = "fact"
    NOTIFIED = "notified"
    ACKNOWLEDGED = "acknowledged"
    EXEMPTION_CONFIRMED = "exemption_confirmed"
    EXEMPTION_REJECTED = "exemption_rejected"
    NOTE = "note"


def _aware(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        msg = f"{attribute.name} must be a time-zone aware datetime"
        raise IncidentError(msg)


def _non_negative(
    instance: object, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        msg = f"{attribute.name} must be a whole number >= 0"
        raise IncidentError(msg)


def _text(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        msg = f"{attribute.name} must be a non-empty string"
        raise IncidentError(msg)


def _kind(value: IncidentKind | str) -> IncidentKind:
    try:
        return IncidentKind(value)
    except ValueError:
        msg = "kind must be 'leak', 'loss' or 'damage'"
        raise IncidentError(msg) from None


def _names(values: Iterable[str]) -> frozenset[str]:
    return frozenset(values)


def _ints(values: Iterable[int]) -> tuple[int, ...]:
    return tuple(values)


def _strs(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _fields(values: Iterable[AffectedField]) -> tuple[AffectedField, ...]:
    return tuple(values)


@attrs.frozen(kw_only=True)
class AffectedField:
    """One kind of data an incident concerns, with its encryption evidence.

    Attributes:
        category: The taxonomy key (``"contact.email"``).
        entity: The table or entity, when known.
        field: The field, when known.
        encrypted: The values were stored encrypted by custdata.
        key_ids: The data keys their envelopes name (empty when unknown).
    """

    category: str = attrs.field(validator=_text)
    entity: str | None = None
    field: str | None = None
    encrypted: bool = False
    key_ids: tuple[int, ...] = attrs.field(default=(), converter=_ints)


@attrs.frozen(kw_only=True)
class IncidentScope:
    """Whose data, and which data, an incident concerns.

    Attributes:
        fields: The kinds of data concerned.
        subject_count: How many distinct data subjects.
        subject_refs: Their audit pseudonyms, when known (never raw ids).
        record_count: How many records, when known (GDPR Art. 33(3)(a)).
        basis: How the scope was established (``"explicit"``, or the audit
            query that computed it).
    """

    fields: tuple[AffectedField, ...] = attrs.field(converter=_fields)
    subject_count: int = attrs.field(validator=_non_negative)
    subject_refs: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    record_count: int | None = None
    basis: str = "explicit"

    def __attrs_post_init__(self) -> None:
        if self.subject_refs and len(set(self.subject_refs)) > self.subject_count:
            msg = "subject_count is smaller than the number of subject_refs"
            raise IncidentError(msg)

    @property
    def categories(self) -> tuple[str, ...]:
        """The distinct categories concerned, sorted."""
        return tuple(sorted({f.category for f in self.fields}))


@attrs.frozen(kw_only=True)
class Incident:
    """An incident as recorded when it was opened; never changed afterwards.

    Attributes:
        incident_id: The record's id.
        detected_at: When the business knew (知った時点); time-zone aware.
        reporter: Who reported it (an actor id).
        kind: Leak, loss or damage.
        possible: Only possibly occurred (おそれ), not confirmed.
        cause: What caused it, as known.
        malicious: Caused by an unauthorised or malicious act (不正の目的):
            unauthorised access, ransomware, insider exfiltration, theft.
        scope: Whose data and which data.
        acquisition_stage: Data the business was acquiring or about to acquire
            (a skimmed web form) is involved (規則7条3号 since 2024-04-01).
        contractor_origin: The contractor (委託先) where it happened, if any.
        principal: The principal (委託元) to notify when the business handles
            the data as its contractor, if any.
        jurisdictions: ``"appi"``, ``"gdpr"`` or both.
        keys_compromised: The incident compromised encryption keys.
        compromised_key_ids: The data keys known to be compromised.
        pseudonymised: The data is 仮名加工情報 only (exempt from reporting).
    """

    incident_id: str = attrs.field(validator=_text)
    detected_at: dt.datetime = attrs.field(validator=_aware)
    reporter: str = attrs.field(validator=_text)
    kind: IncidentKind = attrs.field(converter=_kind)
    scope: IncidentScope
    possible: bool = False
    cause: str = ""
    malicious: bool = False
    acquisition_stage: bool = False
    contractor_origin: str | None = None
    principal: str | None = None
    jurisdictions: frozenset[str] = attrs.field(
        default=frozenset({"appi"}), converter=_names
    )
    keys_compromised: bool = False
    compromised_key_ids: tuple[int, ...] = attrs.field(default=(), converter=_ints)
    pseudonymised: bool = False

    def __attrs_post_init__(self) -> None:
        unknown = self.jurisdictions - {"appi", "gdpr"}
        if unknown or not self.jurisdictions:
            msg = "jurisdictions must be 'appi', 'gdpr' or both"
            raise IncidentError(msg)

    @staticmethod
    def new_id(detected_at: dt.datetime) -> str:
        """Return a fresh incident id (``INC-20260203-1a2b3c4d``)."""
        return f"INC-{detected_at:%Y%m%d}-{uuid.uuid4().hex[:8]}"


@attrs.frozen(kw_only=True)
class TimelineEntry:
    """One recorded event in an incident's life.

    Attributes:
        incident_id: The incident.
        seq: Its position in the timeline, from 1.
        at: When it happened (time-zone aware).
        actor: Who recorded it.
        action: What kind of entry it is.
        detail: What it says (JSON-serialisable; never a customer value).
    """

    incident_id: str
    seq: int
    at: dt.datetime = attrs.field(validator=_aware)
    actor: str = attrs.field(validator=_text)
    action: TimelineAction = attrs.field(converter=TimelineAction)
    detail: Mapping[str, Any] = attrs.field(factory=dict)


def incident_to_dict(incident: Incident) -> dict[str, Any]:
    """Return *incident* as a JSON-serialisable dict (the stored form)."""
    data = attrs.asdict(incident, recurse=True)
    data["detected_at"] = incident.detected_at.isoformat()
    data["kind"] = incident.kind.value
    data["jurisdictions"] = sorted(incident.jurisdictions)
    data["compromised_key_ids"] = list(incident.compromised_key_ids)
    scope = data["scope"]
    scope["fields"] = [{**f, "key_ids": list(f["key_ids"])} for f in scope["fields"]]
    scope["subject_refs"] = list(scope["subject_refs"])
    return data


def incident_from_dict(data: Mapping[str, Any]) -> Incident:
    """Rebuild an incident from :func:`incident_to_dict`'s form.

    Raises:
        IncidentError: The data does not describe a valid incident.
    """
    try:
        raw = dict(data)
        scope = dict(raw.pop("scope"))
        fields = tuple(AffectedField(**f) for f in scope.pop("fields"))
        raw["detected_at"] = dt.datetime.fromisoformat(raw["detected_at"])
        return Incident(scope=IncidentScope(fields=fields, **scope), **raw)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, IncidentError):
            raise
        msg = f"not a valid incident record ({type(exc).__name__})"
        raise IncidentError(msg) from None


def _detail(detail: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return dict(json.loads(json.dumps(dict(detail), sort_keys=True)))
    except (TypeError, ValueError):
        msg = "a timeline entry's detail must be JSON-serialisable"
        raise IncidentError(msg) from None


class IncidentStore(Protocol):
    """Where incidents and their timelines are kept (append-only).

    :class:`InMemoryIncidentStore` serves tests; the SQL store is
    :class:`custdata.sqlalchemy.SqlIncidentStore`.
    """

    def add(self, incident: Incident, *, at: dt.datetime, actor: str) -> TimelineEntry:
        """Store a new incident and its ``opened`` entry.

        Raises:
            IncidentError: An incident with that id already exists.
        """
        ...

    def get(self, incident_id: str) -> Incident:
        """Return the incident.

        Raises:
            UnknownIncidentError: No incident has that id.
        """
        ...

    def incidents(self) -> tuple[Incident, ...]:
        """Every incident, oldest detection first."""
        ...

    def append(
        self,
        incident_id: str,
        *,
        at: dt.datetime,
        actor: str,
        action: TimelineAction,
        detail: Mapping[str, Any],
    ) -> TimelineEntry:
        """Append an entry to the incident's timeline and return it.

        Raises:
            UnknownIncidentError: No incident has that id.
        """
        ...

    def timeline(self, incident_id: str) -> tuple[TimelineEntry, ...]:
        """The incident's entries in order.

        Raises:
            UnknownIncidentError: No incident has that id.
        """
        ...

    def incidents_of_subject(self, subject_ref: str) -> tuple[str, ...]:
        """The ids of the incidents whose scope names *subject_ref*."""
        ...


class InMemoryIncidentStore:
    """An incident store in memory, for tests and examples."""

    def __init__(self) -> None:
        self._incidents: dict[str, Incident] = {}
        self._timelines: dict[str, list[TimelineEntry]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<InMemoryIncidentStore of {len(self._incidents)} incidents>"

    def add(self, incident: Incident, *, at: dt.datetime, actor: str) -> TimelineEntry:
        """Store a new incident and its ``opened`` entry (see :class:`IncidentStore`)."""
        with self._lock:
            if incident.incident_id in self._incidents:
                msg = f"incident {incident.incident_id!r} already exists"
                raise IncidentError(msg)
            entry = TimelineEntry(
                incident_id=incident.incident_id,
                seq=1,
                at=at,
                actor=actor,
                action=TimelineAction.OPENED,
                detail={},
            )
            self._incidents[incident.incident_id] = incident
            self._timelines[incident.incident_id] = [entry]
            return entry

    def get(self, incident_id: str) -> Incident:
        """Return the incident (see :class:`IncidentStore`)."""
        try:
            return self._incidents[incident_id]
        except KeyError:
            raise UnknownIncidentError(f"no incident {incident_id!r}") from None

    def incidents(self) -> tuple[Incident, ...]:
        """Every incident, oldest detection first."""
        return tuple(sorted(self._incidents.values(), key=lambda i: i.detected_at))

    def append(
        self,
        incident_id: str,
        *,
        at: dt.datetime,
        actor: str,
        action: TimelineAction,
        detail: Mapping[str, Any],
    ) -> TimelineEntry:
        """Append an entry (see :class:`IncidentStore`)."""
        with self._lock:
            self.get(incident_id)
            entries = self._timelines[incident_id]
            entry = TimelineEntry(
                incident_id=incident_id,
                seq=len(entries) + 1,
                at=at,
                actor=actor,
                action=action,
                detail=_detail(detail),
            )
            entries.append(entry)
            return entry

    def timeline(self, incident_id: str) -> tuple[TimelineEntry, ...]:
        """The incident's entries in order."""
        self.get(incident_id)
        return tuple(self._timelines[incident_id])

    def incidents_of_subject(self, subject_ref: str) -> tuple[str, ...]:
        """The ids of the incidents whose scope names *subject_ref*."""
        return tuple(
            i.incident_id
            for i in self.incidents()
            if subject_ref in i.scope.subject_refs
        )


def latest_facts(entries: Iterable[TimelineEntry]) -> dict[str, str]:
    """The latest ``fact`` text per report item among *entries*."""
    out: dict[str, str] = {}
    for e in entries:
        if e.action is TimelineAction.FACT:
            out[str(e.detail["item"])] = str(e.detail["text"])
    return out
