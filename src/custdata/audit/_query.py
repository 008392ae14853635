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

from collections.abc import Sequence
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
from ._sql import audit_tables


__all__ = ["AuditQuery", "QueryResult"]

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
        actor: str,
        *,
        since: dt.datetime,
        until: dt.datetime,
        purposes: Sequence[str] | None = None,
    ) -> QueryResult:
        """Return the subjects whose data *actor* saw in ``[since, until)``.

        Args:
            actor: The actor id.
            since: Start, inclusive (timezone-aware).
            until: End, exclusive.
            purposes: Only these purposes, when given.
        """
        s = self.tables.subject
        stmt = sa.select(s.c.subject_ref, s.c.chain, s.c.seq, s.c.purpose).where(
            s.c.actor_id == actor,
            s.c.ts >= self._ts(since),
            s.c.ts < self._ts(until),
            s.c.action.in_(_SAW),
        )
        if purposes is not None:
            stmt = stmt.where(s.c.purpose.in_(list(purposes)))
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(stmt)]  # noqa: SLF001
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
        s = self.tables.subject
        stmt = sa.select(
            s.c.actor_id, s.c.action, s.c.purpose, s.c.ts, s.c.chain, s.c.seq
        ).where(
            s.c.subject_ref == ref,
            s.c.ts >= self._ts(since),
            s.c.ts < self._ts(until),
        )
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(stmt)]  # noqa: SLF001
        saw = [r["actor_id"] for r in rows if r["action"] in _SAW and r["actor_id"]]
        return self._result(saw, rows)

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
                    }
                )
        return self._result([str(r["recipient_id"]) for r in rows], rows)
