"""Investigation queries over the audit tables (R-AUD-3).

Each answer names the latest anchored checkpoint (signature checked) and counts
the matching events newer than it, so an investigator knows which part of the
answer is covered by evidence outside the database. Run ``custdata audit
verify`` to establish that the covered rows are intact.

The subject fan-out table carries ``(actor_id, ts)`` and ``(subject_ref, ts)``
indexes, so each question is one index range scan.
"""

from __future__ import annotations

import datetime as dt
import json

from collections.abc import Iterable, Sequence
from typing import Any, Final

import attrs
import sqlalchemy as sa

from ._checkpoint import Checkpoint, CheckpointAnchor, CheckpointVerifier
from ._keys import (
    AuditKeySource,
    PseudonymKey,
    pseudonym_key,
    pseudonym_root,
    subject_ref,
)
from ._schema import audit_name, parse_ts
from ._sql import audit_tables
from ._store import JsonLinesSource, SqlSource, StoredRecord, TrailSource


__all__ = ["AuditQuery", "QueryResult", "find_events", "pseudonym_for"]


def pseudonym_for(keys: AuditKeySource, subject: str, *, tenant: str = "") -> str:
    """Return the pseudonym (``sr_…``) the trail records for a raw subject id.

    The same as :meth:`custdata.audit.AuditTrail.subject_ref` of a trail over
    *keys*: stable across audit key rotation. A subject whose id is its e-mail
    address is looked up by that address; otherwise look up its id first.
    """
    return subject_ref(
        PseudonymKey(pseudonym_key(pseudonym_root(keys))), subject, tenant=tenant
    )


#: The actions by which an actor saw a subject's data.
_SAW: Final = ("field.reveal", "export.third_party")


@attrs.frozen(kw_only=True)
class QueryResult:
    """The answer to an investigation query.

    Attributes:
        values: The distinct answers, sorted (subject refs or actor ids).
        rows: One mapping per matching event (value-free columns only).
        event_count: How many events matched.
        verified_through: The latest anchored checkpoint, or ``None``.
        unanchored_events: Matching events newer than that checkpoint.
    """

    values: tuple[str, ...]
    rows: tuple[dict[str, Any], ...] = attrs.field(repr=False)
    event_count: int
    verified_through: Checkpoint | None
    unanchored_events: int


def _verified(verifier: CheckpointVerifier, record: str) -> Checkpoint | None:
    try:
        return verifier.verify(record)
    except ValueError:
        return None


class AuditQuery:
    """Ask the audit tables who saw what.

    Args:
        engine: The database holding the audit tables (not disposed here).
        prefix: The tables' prefix.
        anchor: The checkpoint anchor, to state what each answer is covered by.
        verifier: The pinned checkpoint verifier key (needed with *anchor*).
        keys: The audit key source, to turn raw subject ids into pseudonyms.
        tenant: The tenant mixed into pseudonyms.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        prefix: str = "custdata_audit",
        anchor: CheckpointAnchor | None = None,
        verifier: CheckpointVerifier | None = None,
        keys: AuditKeySource | None = None,
        tenant: str = "",
    ) -> None:
        if anchor is not None and verifier is None:
            raise ValueError("an anchor needs the checkpoint verifier key")
        self.engine = engine
        self.tables = audit_tables(prefix=prefix)
        self._anchor = anchor
        self._verifier = verifier
        self._pseudo = (
            None if keys is None else PseudonymKey(pseudonym_key(pseudonym_root(keys)))
        )
        self._tenant = tenant
        self._aware = engine.dialect.name == "postgresql"

    def __repr__(self) -> str:
        return f"<AuditQuery {self.tables.event.name}>"

    def _ts(self, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None:
            raise ValueError("query bounds must be timezone-aware")
        utc = value.astimezone(dt.timezone.utc)
        return utc if self._aware else utc.replace(tzinfo=None)

    def _latest(self) -> Checkpoint | None:
        if self._anchor is None or self._verifier is None:
            return None
        for record in reversed(self._anchor.records()):
            checkpoint = _verified(self._verifier, record)
            if checkpoint is not None:
                return checkpoint
        return None

    def _result(self, values: Sequence[str], rows: list[dict[str, Any]]) -> QueryResult:
        latest = self._latest()
        heads = {} if latest is None else {c: s for c, s, _ in latest.heads}
        unanchored = sum(1 for r in rows if r["seq"] > heads.get(r["chain"], 0))
        return QueryResult(
            values=tuple(sorted(set(values))),
            rows=tuple(rows),
            event_count=len({(r["chain"], r["seq"]) for r in rows}),
            verified_through=latest,
            unanchored_events=unanchored,
        )

    def subject_ref(self, subject: str) -> str:
        """Return the pseudonym of a raw subject id.

        Raises:
            ValueError: The query was built without *keys*.
        """
        if self._pseudo is None:
            raise ValueError("pass keys= to query by raw subject id")
        return subject_ref(self._pseudo, subject, tenant=self._tenant)

    def subjects_revealed(
        self,
        actor: str | None,
        *,
        since: dt.datetime,
        until: dt.datetime,
        purposes: Sequence[str] | None = None,
    ) -> QueryResult:
        """Return the subjects whose data *actor* saw in ``[since, until)``.

        Args:
            actor: The actor id, or ``None`` for every actor (all the
                subjects whose data anyone saw in the window).
            since: Start, inclusive (timezone-aware).
            until: End, exclusive.
            purposes: Only these purposes, when given.
        """
        s = self.tables.subject
        t = self.tables.event
        stmt = (
            sa.select(
                s.c.subject_ref,
                s.c.chain,
                s.c.seq,
                s.c.ts,
                s.c.actor_id,
                s.c.action,
                s.c.purpose,
                t.c.outcome,
                t.c.body,
            )
            .join(t, sa.and_(t.c.chain == s.c.chain, t.c.seq == s.c.seq))
            .where(
                s.c.ts >= self._ts(since),
                s.c.ts < self._ts(until),
                s.c.action.in_(_SAW),
            )
            .order_by(s.c.ts, s.c.chain, s.c.seq)
        )
        if actor is not None:
            stmt = stmt.where(s.c.actor_id == audit_name(actor))
        if purposes is not None:
            stmt = stmt.where(s.c.purpose.in_([audit_name(p) for p in purposes]))
        with self.engine.connect() as conn:
            rows = _with_bodies(conn.execute(stmt))
        return self._result([r["subject_ref"] for r in rows], rows)

    def accessors_of(
        self,
        subject: str | None = None,
        *,
        subject_ref: str | None = None,
        since: dt.datetime,
        until: dt.datetime,
    ) -> QueryResult:
        """Return who accessed a subject in ``[since, until)`` (breach scoping).

        Pass the raw *subject* id (needs *keys*) or its *subject_ref*. Denied
        attempts are included in ``rows`` with their action and purpose; only
        actors who saw data are in ``values``.
        """
        ref = subject_ref if subject_ref is not None else self.subject_ref(str(subject))
        s, t = self.tables.subject, self.tables.event
        stmt = (
            sa.select(
                s.c.actor_id,
                s.c.action,
                s.c.purpose,
                s.c.ts,
                s.c.chain,
                s.c.seq,
                t.c.outcome,
                t.c.body,
            )
            .join(t, sa.and_(t.c.chain == s.c.chain, t.c.seq == s.c.seq))
            .where(
                s.c.subject_ref == ref,
                s.c.ts >= self._ts(since),
                s.c.ts < self._ts(until),
            )
            .order_by(s.c.ts, s.c.chain, s.c.seq)
        )
        with self.engine.connect() as conn:
            rows = _with_bodies(conn.execute(stmt))
        saw = [
            r["actor_id"]
            for r in rows
            if r["action"] in _SAW and r["outcome"] == "allowed" and r["actor_id"]
        ]
        return self._result(saw, rows)

    def actions_of(
        self,
        actor: str,
        *,
        since: dt.datetime,
        until: dt.datetime,
    ) -> QueryResult:
        """Return everything *actor* did in ``[since, until)``, allowed or denied.

        ``values`` are the pseudonyms of the subjects concerned; each row names
        action, outcome, purpose, entity, fields, count, reason and subjects.
        The actor id is matched as recorded (:func:`~custdata.audit._schema.audit_name`).
        """
        t = self.tables.event
        stmt = (
            sa.select(
                t.c.chain,
                t.c.seq,
                t.c.ts,
                t.c.actor_id,
                t.c.action,
                t.c.outcome,
                t.c.purpose,
                t.c.body,
            )
            .where(
                t.c.actor_id == audit_name(actor),
                t.c.ts >= self._ts(since),
                t.c.ts < self._ts(until),
            )
            .order_by(t.c.ts, t.c.chain, t.c.seq)
        )
        with self.engine.connect() as conn:
            rows = _with_bodies(conn.execute(stmt))
        refs = [ref for r in rows for ref in r["subjects"]]
        return self._result(refs, rows)

    def exports(
        self,
        *,
        since: dt.datetime,
        until: dt.datetime,
        recipient_id: str | None = None,
    ) -> QueryResult:
        """Return the third-party provisions in ``[since, until)``.

        ``values`` are the recipient ids; each row names actor, entity, purpose,
        recipient, basis and count.
        """
        t = self.tables.event
        stmt = sa.select(
            t.c.chain, t.c.seq, t.c.ts, t.c.actor_id, t.c.entity, t.c.purpose, t.c.body
        ).where(
            t.c.action == "export.third_party",
            t.c.ts >= self._ts(since),
            t.c.ts < self._ts(until),
        )
        rows: list[dict[str, Any]] = []
        with self.engine.connect() as conn:
            for r in conn.execute(stmt):
                body = json.loads(bytes(r.body)) if r.body is not None else {}
                recipient = body.get("recipient", {})
                if (
                    recipient_id is not None
                    and recipient.get("recipient_id") != recipient_id
                ):
                    continue
                rows.append(
                    {
                        "chain": r.chain,
                        "seq": r.seq,
                        "ts": r.ts,
                        "actor_id": r.actor_id,
                        "entity": r.entity,
                        "purpose": r.purpose,
                        "recipient_id": recipient.get("recipient_id"),
                        "basis": recipient.get("basis"),
                        "count": body.get("count", 0),
                        "outcome": body.get("outcome"),
                        "fields": list(body.get("fields") or ()),
                    }
                )
        return self._result([str(r["recipient_id"]) for r in rows], rows)


def _body_facts(body: bytes | None) -> dict[str, Any]:
    """Return the investigation columns of a body (empty when it is gone)."""
    try:
        fields = json.loads(body) if body is not None else {}
    except (ValueError, RecursionError):
        fields = {}
    if not isinstance(fields, dict):
        fields = {}
    actor = fields.get("actor")
    subjects = list(fields.get("subjects") or ())
    if fields.get("subject_ref"):
        subjects.append(fields["subject_ref"])
    return {
        "roles": list(actor.get("roles") or ()) if isinstance(actor, dict) else [],
        "entity": fields.get("entity"),
        "fields": list(fields.get("fields") or ()),
        "denied_fields": list(fields.get("denied_fields") or ()),
        "count": fields.get("count"),
        "reason": fields.get("reason"),
        "subjects": subjects,
    }


def _with_bodies(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """Return the rows with each raw ``body`` replaced by its investigation columns.

    A bulk event has one fan-out row per subject; its body is decoded once.
    """
    out = []
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        row = dict(r._mapping)  # noqa: SLF001 - SQLAlchemy's public row mapping
        body = row.pop("body", None)
        key = (row["chain"], row["seq"])
        facts = seen.get(key)
        if facts is None:
            facts = seen[key] = _body_facts(None if body is None else bytes(body))
        row.update(facts)
        out.append(row)
    return out


def find_events(
    source: TrailSource,
    *,
    subject_ref: str | None = None,
    actor: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Return the events of a stored trail that concern a subject or an actor.

    A JSON-lines file is read in one streaming pass; lines are decoded only
    when their bytes contain the pseudonym or the actor id. The audit tables
    are queried through their ``(subject_ref, ts)`` and ``(actor_id, ts)``
    indexes (:class:`AuditQuery`). Rows are ordered by time.

    Args:
        source: The stored trail.
        subject_ref: Events listing this pseudonym.
        actor: Events by this actor id (as given; matched as recorded).
        since: Start, inclusive (timezone-aware).
        until: End, exclusive.

    Returns:
        One dict per event: ``ts`` (aware), ``chain``, ``seq``, ``actor_id``,
        ``roles``, ``action``, ``outcome``, ``purpose``, ``entity``,
        ``fields``, ``denied_fields``, ``count``, ``reason``, ``subjects``.

    Raises:
        ValueError: Neither or both of *subject_ref* and *actor* are given, or
            a bound is naive.
    """
    if (subject_ref is None) == (actor is None):
        raise ValueError("give exactly one of subject_ref and actor")
    lo = since or dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    hi = until or dt.datetime.max.replace(tzinfo=dt.timezone.utc)
    if lo.tzinfo is None or hi.tzinfo is None:
        raise ValueError("query bounds must be timezone-aware")
    if isinstance(source, SqlSource):
        q = AuditQuery(
            source.engine, prefix=source.tables.event.name.removesuffix("_event")
        )
        if subject_ref is not None:
            result = q.accessors_of(subject_ref=subject_ref, since=lo, until=hi)
        else:
            result = q.actions_of(str(actor), since=lo, until=hi)
        rows = [dict(r) for r in result.rows]
        for row in rows:
            row["ts"] = _aware(row["ts"])
            row.setdefault("outcome", None)
        return rows
    if not isinstance(source, JsonLinesSource):
        raise TypeError("find_events reads JSON-lines files and audit tables")
    name = None if actor is None else audit_name(actor)
    needle = (subject_ref or json.dumps(name, ensure_ascii=False)[1:-1]).encode()
    rows = []
    for rec in source.records():
        if (
            not isinstance(rec, StoredRecord)
            or rec.body is None
            or needle not in rec.body
        ):
            continue
        try:
            body = json.loads(rec.body)
            ts = parse_ts(str(body["ts"]))
        except (ValueError, RecursionError, KeyError, TypeError):
            continue
        facts = _body_facts(rec.body)
        who = body.get("actor")
        actor_id = who.get("id") if isinstance(who, dict) else None
        if subject_ref is not None and subject_ref not in facts["subjects"]:
            continue
        if name is not None and actor_id != name:
            continue
        if not lo <= ts < hi:
            continue
        rows.append(
            {
                "ts": ts,
                "chain": rec.chain,
                "seq": rec.seq,
                "actor_id": actor_id,
                "action": body.get("action"),
                "outcome": body.get("outcome"),
                "purpose": body.get("purpose"),
                **facts,
            }
        )
    rows.sort(key=lambda r: (r["ts"], r["chain"], r["seq"]))
    return rows


def _aware(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value
