"""The legal-hold register's records in the application's database."""

from __future__ import annotations

import datetime as dt

from collections.abc import Collection
from typing import Any

from sqlalchemy import Column, Index, MetaData, String, Table

from custdata.governance import HoldRecord

from ._anchors import UtcDateTime
from ._ledger import TableStore


__all__ = ["SqlHoldStore", "hold_table"]

_DEFAULT_TABLE = "custdata_legal_hold"


def hold_table(metadata: MetaData, table_name: str = _DEFAULT_TABLE) -> Table:
    """Return the legal-hold table on *metadata*, defining it if needed.

    One row per held subject of each hold (:class:`custdata.governance.HoldRecord`).
    """
    existing = metadata.tables.get(table_name)
    if existing is not None:
        return existing
    return Table(
        table_name,
        metadata,
        Column("id", String(64), primary_key=True),
        Column("subject", String(255), primary_key=True),
        Column("case_ref", String(255), nullable=False),
        Column("reason", String(1000), nullable=False),
        Column("placed_by", String(255), nullable=False),
        Column("placed_at", UtcDateTime(), nullable=False),
        Column("released_by", String(255), nullable=True),
        Column("released_at", UtcDateTime(), nullable=True),
        Column("release_reason", String(1000), nullable=True),
        Index(f"ix_{table_name}_subject", "subject"),
    )


class SqlHoldStore(TableStore):
    """A :class:`custdata.governance.HoldStore` in a SQL table.

    Args:
        engine: The engine the store uses, on its own connections.
        table_name: The table's name (``custdata_legal_hold`` by default).
        metadata: The ``MetaData`` to define the table in (a new one by default);
            :func:`custdata.sqlalchemy.add_custdata_tables` defines it on the
            application's.
    """

    _define = staticmethod(hold_table)
    _default_table = _DEFAULT_TABLE

    def add_many(self, records: Collection[HoldRecord]) -> None:
        """Store new records."""
        self._insert(
            [
                {
                    "id": r.id,
                    "subject": r.subject,
                    "case_ref": r.case,
                    "reason": r.reason,
                    "placed_by": r.placed_by,
                    "placed_at": r.placed_at,
                    "released_by": r.released_by,
                    "released_at": r.released_at,
                    "release_reason": r.release_reason,
                }
                for r in records
            ]
        )

    def release(self, hold_id: str, *, by: str, at: dt.datetime, reason: str) -> int:
        """Mark every record of a hold released; return how many were in force."""
        t = self.table
        return self._end(
            t.c.id == hold_id,
            t.c.released_at.is_(None),
            released_by=by,
            released_at=at,
            release_reason=reason,
        )

    def records_for(self, subjects: Collection[str]) -> list[HoldRecord]:
        """Every hold record of *subjects*."""
        return self._records_of(subjects, _record)


def _record(row: Any) -> HoldRecord:
    return HoldRecord(
        id=row.id,
        case=row.case_ref,
        subject=row.subject,
        reason=row.reason,
        placed_by=row.placed_by,
        placed_at=row.placed_at,
        released_by=row.released_by,
        released_at=row.released_at,
        release_reason=row.release_reason,
    )
