"""Incidents in the application's database, and their scope from the audit trail.

:class:`SqlIncidentStore` is the SQL :class:`custdata.governance.IncidentStore`:
three tables (``custdata_incident``, ``custdata_incident_timeline``,
``custdata_incident_subject``) that :func:`add_custdata_tables` adds to the
application's metadata. The store only ever inserts: no statement it runs
updates or deletes a row, so the timeline is append-only.

:func:`incident_scope_from_audit` computes an incident's scope from the audit
tables: the subjects whose data the given actors saw in a time window, and the
categories of the fields they saw (from the mapped models' ``customer_data``
declarations).
"""

from __future__ import annotations

import datetime as dt
import json

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import sqlalchemy as sa

from custdata._errors import IncidentError, UnknownIncidentError
from custdata.governance import (
    AffectedField,
    Incident,
    IncidentScope,
    TimelineAction,
    TimelineEntry,
    incident_from_dict,
    incident_to_dict,
)

from ._binding import INFO_KEY
from ._declare import CustomerDataInfo
from ._jobs import key_usage
from ._ledger import create_tables, history_table, naive_utc


__all__ = [
    "IncidentTables",
    "SqlIncidentStore",
    "incident_scope_from_audit",
    "incident_tables",
]

_APPEND_ATTEMPTS = 5


@attrs.frozen
class IncidentTables:
    """The incident tables.

    Attributes:
        incident: One row per incident: id, detection time, the record (JSON).
        timeline: One row per timeline entry, keyed by (incident id, seq).
        subject: The audit pseudonyms in each incident's scope (35条5項).
    """

    incident: sa.Table
    timeline: sa.Table
    subject: sa.Table


def incident_tables(
    metadata: sa.MetaData | None = None, *, prefix: str = "custdata_incident"
) -> IncidentTables:
    """Return the incident tables on *metadata* (a new one when omitted), defining them if needed."""
    md = metadata if metadata is not None else sa.MetaData()
    names = (prefix, f"{prefix}_timeline", f"{prefix}_subject")
    if all(n in md.tables for n in names):
        return IncidentTables(*(md.tables[n] for n in names))
    incident = sa.Table(
        names[0],
        md,
        sa.Column("incident_id", sa.String(64), primary_key=True),
        sa.Column("detected_at", sa.DateTime(), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
    )
    timeline = history_table(md, names[1], incident)
    subject = sa.Table(
        names[2],
        md,
        sa.Column(
            "incident_id",
            sa.String(64),
            sa.ForeignKey(f"{names[0]}.incident_id"),
            primary_key=True,
        ),
        sa.Column("subject_ref", sa.String(64), primary_key=True),
        sa.Index(f"ix_{names[2]}_ref", "subject_ref"),
    )
    return IncidentTables(incident, timeline, subject)


class SqlIncidentStore:
    """The incident register's store in the application's database.

    Args:
        engine: The database (not disposed here).
        metadata: The metadata to define the tables on (Alembic's, after
            :func:`add_custdata_tables`); a new one when omitted.
        prefix: The tables' name prefix.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        metadata: sa.MetaData | None = None,
        prefix: str = "custdata_incident",
    ) -> None:
        self.engine = engine
        self.tables = incident_tables(metadata, prefix=prefix)

    def __repr__(self) -> str:
        return f"<SqlIncidentStore {self.tables.incident.name}>"

    def create_tables(self) -> None:
        """Create the tables if they do not exist (tests, the CLI; else use migrations)."""
        create_tables(self.engine, attrs.astuple(self.tables, recurse=False))

    def add(self, incident: Incident, *, at: dt.datetime, actor: str) -> TimelineEntry:
        """Store a new incident and its ``opened`` entry.

        Raises:
            IncidentError: An incident with that id already exists.
        """
        t = self.tables
        entry = TimelineEntry(
            incident_id=incident.incident_id,
            seq=1,
            at=at,
            actor=actor,
            action=TimelineAction.OPENED,
            detail={},
        )
        record = json.dumps(
            incident_to_dict(incident), ensure_ascii=False, sort_keys=True
        )
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    t.incident.insert().values(
                        incident_id=incident.incident_id,
                        detected_at=naive_utc(incident.detected_at),
                        record=record,
                    )
                )
                conn.execute(t.timeline.insert().values(**_entry_row(entry)))
                refs = sorted(set(incident.scope.subject_refs))
                if refs:
                    conn.execute(
                        t.subject.insert(),
                        [
                            {"incident_id": incident.incident_id, "subject_ref": r}
                            for r in refs
                        ],
                    )
        except sa.exc.IntegrityError:
            msg = f"incident {incident.incident_id!r} already exists"
            raise IncidentError(msg) from None
        return entry

    def get(self, incident_id: str) -> Incident:
        """Return the incident.

        Raises:
            UnknownIncidentError: No incident has that id.
        """
        t = self.tables.incident
        with self.engine.connect() as conn:
            record = conn.execute(
                sa.select(t.c.record).where(t.c.incident_id == incident_id)
            ).scalar_one_or_none()
        if record is None:
            raise UnknownIncidentError(f"no incident {incident_id!r}")
        return incident_from_dict(json.loads(record))

    def incidents(self) -> tuple[Incident, ...]:
        """Every incident, oldest detection first."""
        t = self.tables.incident
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.c.record).order_by(t.c.detected_at, t.c.incident_id)
            ).scalars()
            return tuple(incident_from_dict(json.loads(r)) for r in rows)

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

        Two writers racing for the same position are kept apart by the
        primary key; the loser takes the next one.

        Raises:
            UnknownIncidentError: No incident has that id.
            IncidentError: *detail* is not JSON-serialisable.
        """
        try:
            body = json.dumps(dict(detail), ensure_ascii=False, sort_keys=True)
        except (TypeError, ValueError):
            msg = "a timeline entry's detail must be JSON-serialisable"
            raise IncidentError(msg) from None
        self.get(incident_id)
        for _ in range(_APPEND_ATTEMPTS):
            entry = self._try_append(
                incident_id, at=at, actor=actor, action=action, body=body
            )
            if entry is not None:
                return entry
        msg = (
            f"could not append to incident {incident_id!r}: too many concurrent writers"
        )
        raise IncidentError(msg)

    def _try_append(
        self,
        incident_id: str,
        *,
        at: dt.datetime,
        actor: str,
        action: TimelineAction,
        body: str,
    ) -> TimelineEntry | None:
        """Append at the next position; ``None`` when another writer took it."""
        t = self.tables.timeline
        try:
            with self.engine.begin() as conn:
                last = conn.execute(
                    sa.select(sa.func.max(t.c.seq)).where(
                        t.c.incident_id == incident_id
                    )
                ).scalar_one()
                entry = TimelineEntry(
                    incident_id=incident_id,
                    seq=int(last or 0) + 1,
                    at=at,
                    actor=actor,
                    action=action,
                    detail=json.loads(body),
                )
                conn.execute(t.insert().values(**_entry_row(entry)))
        except sa.exc.IntegrityError:
            return None
        return entry

    def timeline(self, incident_id: str) -> tuple[TimelineEntry, ...]:
        """The incident's entries in order.

        Raises:
            UnknownIncidentError: No incident has that id.
        """
        self.get(incident_id)
        t = self.tables.timeline
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t).where(t.c.incident_id == incident_id).order_by(t.c.seq)
            ).all()
        return tuple(
            TimelineEntry(
                incident_id=r.incident_id,
                seq=r.seq,
                at=dt.datetime.fromisoformat(r.at),
                actor=r.actor,
                action=TimelineAction(r.action),
                detail=json.loads(r.detail),
            )
            for r in rows
        )

    def incidents_of_subject(self, subject_ref: str) -> tuple[str, ...]:
        """The ids of the incidents whose scope names *subject_ref*."""
        t = self.tables.subject
        with self.engine.connect() as conn:
            return tuple(
                conn.execute(
                    sa.select(t.c.incident_id)
                    .where(t.c.subject_ref == subject_ref)
                    .order_by(t.c.incident_id)
                ).scalars()
            )


def _entry_row(entry: TimelineEntry) -> dict[str, Any]:
    return {
        "incident_id": entry.incident_id,
        "seq": entry.seq,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "action": entry.action.value,
        "detail": json.dumps(dict(entry.detail), ensure_ascii=False, sort_keys=True),
    }


def _field_categories(metadata: sa.MetaData) -> dict[tuple[str, str], str]:
    """(table, column) → category of every customer-data column on *metadata*."""
    out: dict[tuple[str, str], str] = {}
    for table in metadata.tables.values():
        for column in table.columns:
            info = column.info.get(INFO_KEY)
            if isinstance(info, CustomerDataInfo):
                out[table.name, column.key] = info.field.category
                out[table.name, column.name] = info.field.category
    return out


def incident_scope_from_audit(
    query: Any,
    *,
    actors: Iterable[str] | None = None,
    since: dt.datetime,
    until: dt.datetime,
    metadata: sa.MetaData,
    purposes: Sequence[str] | None = None,
    engine: sa.Engine | None = None,
) -> IncidentScope:
    """Compute an incident's scope from the audit tables.

    The subjects are those whose data any of *actors* saw (revealed fields,
    third-party exports) in ``[since, until)`` -- or anyone saw, when
    *actors* is ``None`` (a time window: a leak whose actor is unknown) --
    by their audit pseudonyms;
    the fields are those seen, with the categories their models declare. Every
    custdata customer-data column is stored encrypted, so each field is marked
    encrypted (whether the keys are safe is the classification's question).

    Args:
        query: A :class:`custdata.audit.AuditQuery` over the audit tables.
        actors: The actor ids to investigate (a compromised account, an
            insider); ``None`` for every actor in the window.
        since: Start, inclusive (time-zone aware).
        until: End, exclusive.
        metadata: The application's metadata with the mapped models.
        purposes: Only events under these purposes, when given.
        engine: The application's database; when given, each field records
            the data keys its stored values are under (from the envelope
            headers, :func:`key_usage`), so a compromised key id can be
            matched (R-SEC-2).

    Raises:
        IncidentError: An event names a field no model on *metadata* declares.
        ValueError: A bound is naive.
    """
    categories = _field_categories(metadata)
    refs: set[str] = set()
    seen: dict[tuple[str, str], str] = {}
    names: list[str | None] = [None] if actors is None else [*sorted(set(actors))]
    for actor in names:
        result = query.subjects_revealed(
            actor, since=since, until=until, purposes=purposes
        )
        refs.update(result.values)
        for row in result.rows:
            if row.get("outcome") not in {None, "allowed"}:
                continue
            entity = str(row.get("entity") or "")
            for field in row.get("fields") or ():
                key = (entity, str(field))
                if key not in categories:
                    msg = (
                        f"the audit trail names field {entity}.{field}, which no "
                        "model on the metadata declares as customer data"
                    )
                    raise IncidentError(msg)
                seen[key] = categories[key]
    keys: dict[tuple[str, str], set[int]] = {}
    if engine is not None and seen:
        for usage in key_usage(engine, tables=metadata):
            if usage.kind == "value":
                keys.setdefault((usage.table, usage.column), set()).add(usage.key_id)
    fields = [
        AffectedField(
            category=cat,
            entity=entity,
            field=field,
            encrypted=True,
            key_ids=tuple(sorted(keys.get((entity, field), ()))),
        )
        for (entity, field), cat in sorted(seen.items())
    ]
    return IncidentScope(
        fields=fields,
        subject_count=len(refs),
        subject_refs=tuple(sorted(refs)),
        basis=(
            f"audit: subjects revealed to "
            f"{'anyone' if actors is None else ', '.join(map(str, names))} from "
            f"{since.isoformat()} until {until.isoformat()}"
        ),
    )
