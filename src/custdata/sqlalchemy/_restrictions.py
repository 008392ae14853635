"""The restrictions of use (利用停止, GDPR Art. 18) in the application's database."""

from __future__ import annotations

import datetime as dt
import json

from collections.abc import Collection
from typing import Any

from sqlalchemy import Column, Index, MetaData, String, Table, Text, or_, select

from custdata.governance import RestrictionRecord

from ._anchors import UtcDateTime
from ._chunks import rows_in_chunks
from ._ledger import TableStore


__all__ = ["SqlRestrictionStore", "restriction_table"]

_DEFAULT_TABLE = "custdata_restriction"


def restriction_table(metadata: MetaData, table_name: str = _DEFAULT_TABLE) -> Table:
    """Return the restriction table on *metadata*, defining it if needed.

    One row per :class:`custdata.governance.RestrictionRecord`;
    ``allowed_purposes`` is a JSON list of purpose ids.
    """
    existing = metadata.tables.get(table_name)
    if existing is not None:
        return existing
    return Table(
        table_name,
        metadata,
        Column("id", String(64), primary_key=True),
        Column("subject", String(255), nullable=False),
        Column("allowed_purposes", Text, nullable=False),
        Column("reason", String(1000), nullable=False),
        Column("placed_by", String(255), nullable=False),
        Column("placed_at", UtcDateTime(), nullable=False),
        Column("request_id", String(255), nullable=True),
        Column("lifted_by", String(255), nullable=True),
        Column("lifted_at", UtcDateTime(), nullable=True),
        Column("lift_reason", String(1000), nullable=True),
        Index(f"ix_{table_name}_subject", "subject"),
    )


class SqlRestrictionStore(TableStore):
    """A :class:`custdata.governance.RestrictionStore` in a SQL table.

    Give it to :class:`custdata.governance.Restrictions`. The register asks
    it once per fetched batch for the records of the batch's subjects: one
    ``SELECT`` on the table's subject index per 500 subjects, on the store's
    own connection.

    Args:
        engine: The engine the store uses, on its own connections.
        table_name: The table's name (``custdata_restriction`` by default).
        metadata: The ``MetaData`` to define the table in (a new one by
            default); :func:`custdata.sqlalchemy.add_custdata_tables` defines it
            on the application's, so Alembic sees it.
    """

    _define = staticmethod(restriction_table)
    _default_table = _DEFAULT_TABLE

    def add(self, record: RestrictionRecord) -> None:
        """Store a new record."""
        self._insert(
            [
                {
                    "id": record.id,
                    "subject": record.subject,
                    "allowed_purposes": json.dumps(list(record.allowed_purposes)),
                    "reason": record.reason,
                    "placed_by": record.placed_by,
                    "placed_at": record.placed_at,
                    "request_id": record.request_id,
                    "lifted_by": record.lifted_by,
                    "lifted_at": record.lifted_at,
                    "lift_reason": record.lift_reason,
                }
            ]
        )

    def lift(self, subject: str, *, by: str, at: dt.datetime, reason: str) -> int:
        """Mark every restriction of *subject* not yet lifted as lifted at *at*."""
        t = self.table
        return self._end(
            t.c.subject == subject,
            t.c.lifted_at.is_(None),
            lifted_by=by,
            lifted_at=at,
            lift_reason=reason,
        )

    def in_force(
        self, subjects: Collection[str], at: dt.datetime
    ) -> list[tuple[str, tuple[str, ...]]]:
        """(subject, allowed purposes) of each restriction in force at *at*, filtered in SQL.

        What :meth:`custdata.governance.Restrictions.in_force` asks once per
        fetched batch: two columns of the rows in force, no record objects.
        """
        t = self.table
        wanted = list(subjects)
        out: list[tuple[str, tuple[str, ...]]] = []
        query = select(t.c.subject, t.c.allowed_purposes).where(
            t.c.placed_at <= at,
            or_(t.c.lifted_at.is_(None), t.c.lifted_at > at),
        )
        with self._reader.connect() as conn:
            for subject, allowed in rows_in_chunks(conn, query, t.c.subject, wanted):
                purposes = () if allowed == "[]" else tuple(json.loads(allowed))
                out.append((subject, purposes))
        return out

    def records_for(self, subjects: Collection[str]) -> list[RestrictionRecord]:
        """Every restriction record of *subjects*."""
        return self._records_of(subjects, _record)


def _record(row: Any) -> RestrictionRecord:
    return RestrictionRecord(
        id=row.id,
        subject=row.subject,
        allowed_purposes=tuple(json.loads(row.allowed_purposes)),
        reason=row.reason,
        placed_by=row.placed_by,
        placed_at=row.placed_at,
        request_id=row.request_id,
        lifted_by=row.lifted_by,
        lifted_at=row.lifted_at,
        lift_reason=row.lift_reason,
    )
