"""Expired is not readable: a read past the purpose's retention is refused (R-RET-1)."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import DateTime, column, select, table
from sqlalchemy.engine import Engine

from ._anchors import ANCHOR_INFO_KEY, aware_utc
from ._binding import SUBJECT_INFO_KEY
from ._chunks import rows_in_chunks
from ._jobs import _tables_arg


__all__ = ["SqlRetentionGuard", "retention_coverage"]


def _subject_column(tbl: Any) -> Any:
    return next((c for c in tbl.columns if c.info.get(SUBJECT_INFO_KEY)), None)


def _one_per_subject(tbl: Any) -> bool:
    """Whether *tbl* declares anchors and its subject key is its primary key."""
    pk = list(tbl.primary_key.columns)
    anchored = any(c.info.get(ANCHOR_INFO_KEY) for c in tbl.columns)
    return anchored and len(pk) == 1 and bool(pk[0].info.get(SUBJECT_INFO_KEY))


def retention_coverage(tables: Any) -> dict[str, str | None]:
    """Which table's anchors decide whether each table's records have expired.

    The one rule the retention guard and ``custdata check`` (``SA005``) share:

    - a table with anchors whose subject key is its primary key (one row per
      subject) is covered by its own anchors;
    - a table without anchors of its own whose subject-key column is a foreign
      key to such a table (``subject_key(ForeignKey("customers.id"))``: a
      child table of the subject's record) is covered by that table's anchors;
    - any other table is not covered (``None``): its values stay readable
      until the sweep disposes of them.

    Args:
        tables: A declarative base, ``MetaData`` or tables.

    Returns:
        Table name -> the name of the table whose anchors cover it, or
        ``None``; for every table with a subject-key column.
    """
    listed = list(_tables_arg(tables) or [])
    own = {t.name for t in listed if _one_per_subject(t)}
    out: dict[str, str | None] = {}
    for tbl in listed:
        subject = _subject_column(tbl)
        if subject is None:
            continue
        if tbl.name in own:
            out[tbl.name] = tbl.name
            continue
        out[tbl.name] = None
        if any(c.info.get(ANCHOR_INFO_KEY) for c in tbl.columns):
            continue  # its own anchors, per row: not the subject's record
        for fk in subject.foreign_keys:
            parent = fk.column.table
            if parent.name in own and fk.column.info.get(SUBJECT_INFO_KEY):
                out[tbl.name] = parent.name
                break
    return out


class _Anchored:
    """A table whose rows are one per subject, with their anchor columns."""

    def __init__(self, tbl: Any) -> None:
        subject = _subject_column(tbl)
        self.kind = getattr(subject.type, "python_type", str)
        self.anchors = {
            c.info[ANCHOR_INFO_KEY]: c.name
            for c in tbl.columns
            if c.info.get(ANCHOR_INFO_KEY)
        }
        self.subject = column(subject.name, subject.type)
        self.raw = table(
            tbl.name,
            self.subject,
            *(column(name, DateTime()) for name in self.anchors.values()),
            schema=tbl.schema,
        )

    def key(self, text: str) -> Any:
        if self.kind is uuid.UUID:
            return uuid.UUID(text)
        if self.kind is int:
            return int(text)
        return text


class SqlRetentionGuard:
    """Refuses reads of records whose retention for the purpose in force has ended.

    Give it to the custodian (``Custodian(retention=...)``). For every fetched
    batch of a table that declares retention anchors and whose subject key is
    its primary key (one row per subject), or of a child table whose subject
    key is a foreign key to such a table (see :func:`retention_coverage`), it
    reads the subjects' anchors in one ``SELECT`` and refuses the batch when,
    for a field read, the retention rule of the purpose in force (or the
    field's own) has run out for one of its records: the read is recorded as
    denied (``retention_expired``), naming those subjects. Other tables are
    not checked; ``custdata check --models`` reports them (``SA005``).

    Args:
        engine: The application's database (read on the guard's own
            connections).
        policy: The policy whose retention rules decide.
        tables: A declarative base, ``MetaData`` or tables.
    """

    def __init__(self, engine: Engine, policy: Any, *, tables: Any) -> None:
        self._engine = engine
        self._policy = policy
        self._tables: dict[str, _Anchored] = {}
        listed = {t.name: t for t in _tables_arg(tables) or []}
        coverage = retention_coverage(list(listed.values()))
        for name in sorted(coverage, key=lambda n: coverage[n] != n):
            by = coverage[name]
            if by is None:
                continue
            # A child table reads its parent's anchors, by the same subject ids.
            anchored = self._tables.get(by) or _Anchored(listed[by])
            self._tables[by] = self._tables[name] = anchored
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<SqlRetentionGuard tables={sorted(self._tables)}>"

    def expired_subjects(
        self,
        entity: str | None,
        fields: Mapping[str, Any] | None,
        purpose: str,
        subjects: Collection[str],
        now: dt.datetime,
    ) -> set[str]:
        """The subjects of *subjects* whose record has outlived *purpose*'s retention.

        Args:
            entity: The table read.
            fields: The fields read, with their policies.
            purpose: The purpose in force.
            subjects: The batch's subjects (as text).
            now: The time of the read.

        Returns:
            The expired subjects (empty when the table is not checked).
        """
        target = self._tables.get(entity or "")
        if target is None or not fields:
            return set()
        rules = {
            rule.id: rule
            for fp in fields.values()
            if fp is not None
            and (rule := self._policy.retention_rule_for_use(fp, purpose)) is not None
        }
        if not rules:
            return set()
        keys = [target.key(s) for s in subjects]
        expired: set[str] = set()
        with self._engine.connect() as conn:
            for row in rows_in_chunks(
                conn, select(*target.raw.c), target.subject, keys
            ):
                anchors = {
                    name: when
                    for name, col in target.anchors.items()
                    if (when := aware_utc(getattr(row, col))) is not None
                }
                for rule in rules.values():
                    end = rule.expires_at(anchors)
                    if end is not None and now >= end:
                        expired.add(str(getattr(row, target.subject.name)))
                        break
        return expired
