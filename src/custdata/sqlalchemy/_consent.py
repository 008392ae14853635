"""The consent ledger's records in the application's database."""

from __future__ import annotations

import datetime as dt
import json

from collections.abc import Collection
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    MetaData,
    String,
    Table,
    Text,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import mysql

from custdata.governance import Consent

from ._chunks import rows_in_chunks
from ._ledger import TableStore


__all__ = ["SqlConsentStore", "consent_table"]

_DEFAULT_TABLE = "custdata_consent"


def _when() -> Any:
    # MySQL's DATETIME keeps whole seconds unless told otherwise; a consent
    # granted and withdrawn within one second must stay distinguishable.
    return DateTime(timezone=True).with_variant(
        mysql.DATETIME(fsp=6), "mysql", "mariadb"
    )


def consent_table(metadata: MetaData, table_name: str = _DEFAULT_TABLE) -> Table:
    """Return the consent ledger's table on *metadata*, defining it if needed.

    One row per :class:`custdata.governance.Consent`; ``scope`` is a JSON list
    of field names; times are stored in UTC.
    """
    existing = metadata.tables.get(table_name)
    if existing is not None:
        return existing
    return Table(
        table_name,
        metadata,
        Column("id", String(64), primary_key=True),
        Column("subject", String(255), nullable=False),
        Column("purpose", String(255), nullable=False),
        Column("scope", Text, nullable=False),
        Column("granted_at", _when(), nullable=False),
        Column("withdrawn_at", _when(), nullable=True),
        Column("method", String(64), nullable=False),
        Column("notice_version", String(64), nullable=False),
        Column("evidence_ref", String(255), nullable=True),
        Index(f"ix_{table_name}_subject", "subject", "purpose"),
    )


def _utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.timezone.utc)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


class SqlConsentStore(TableStore):
    """A :class:`custdata.governance.ConsentStore` in a SQL table.

    Give it to :class:`custdata.governance.ConsentLedger`. The ledger asks it
    once per fetched batch for the records of the batch's subjects: one
    ``SELECT`` on the table's ``(subject, purpose)`` index, on the store's
    own connection.

    Args:
        engine: The engine the store uses, on its own connections.
        table_name: The table's name (``custdata_consent`` by default).
        metadata: The ``MetaData`` to define the table in (a new one by
            default); :func:`custdata.sqlalchemy.add_custdata_tables` defines it
            on the application's, so Alembic sees it.
    """

    _define = staticmethod(consent_table)
    _default_table = _DEFAULT_TABLE

    @staticmethod
    def _record(row: Any) -> Consent:
        granted = _aware(row.granted_at)
        assert granted is not None  # noqa: S101 - NOT NULL column
        return Consent(
            id=row.id,
            subject=row.subject,
            purpose=row.purpose,
            scope=tuple(json.loads(row.scope)),
            granted_at=granted,
            withdrawn_at=_aware(row.withdrawn_at),
            method=row.method,
            notice_version=row.notice_version,
            evidence_ref=row.evidence_ref,
        )

    def add(self, consent: Consent) -> None:
        """Store a new record."""
        self._insert(
            [
                {
                    "id": consent.id,
                    "subject": consent.subject,
                    "purpose": consent.purpose,
                    "scope": json.dumps(list(consent.scope)),
                    "granted_at": _utc(consent.granted_at),
                    "withdrawn_at": None
                    if consent.withdrawn_at is None
                    else _utc(consent.withdrawn_at),
                    "method": consent.method,
                    "notice_version": consent.notice_version,
                    "evidence_ref": consent.evidence_ref,
                }
            ]
        )

    def set_withdrawn(self, consent_id: str, at: dt.datetime) -> Consent | None:
        """Mark a record withdrawn at *at* unless it already is; return it."""
        t = self.table
        with self._engine.begin() as conn:
            conn.execute(
                update(t)
                .where(t.c.id == consent_id, t.c.withdrawn_at.is_(None))
                .values(withdrawn_at=_utc(at))
            )
            row = conn.execute(select(t).where(t.c.id == consent_id)).first()
        return None if row is None else self._record(row)

    def records_for(
        self, subjects: Collection[str], purposes: Collection[str] | None
    ) -> list[Consent]:
        """Every record of *subjects* for *purposes* (``None``: any purpose)."""
        t = self.table
        wanted = list(subjects)
        query = select(t)
        if purposes is not None:
            query = query.where(t.c.purpose.in_(list(purposes)))
        with self._reader.connect() as conn:
            return [
                self._record(row)
                for row in rows_in_chunks(conn, query, t.c.subject, wanted)
            ]

    def in_force(
        self, subjects: Collection[str], purposes: Collection[str], at: dt.datetime
    ) -> list[tuple[str, str, tuple[str, ...], dt.datetime]]:
        """The consents of *subjects* for *purposes* in force at *at*, filtered in SQL.

        Returns:
            (subject, consent id, scope, granted at) per consent in force.
        """
        t = self.table
        wanted = list(subjects)
        when = _utc(at)
        cols = (t.c.subject, t.c.id, t.c.scope, t.c.granted_at)
        out: list[tuple[str, str, tuple[str, ...], dt.datetime]] = []
        query = select(*cols).where(
            t.c.purpose.in_(list(purposes)),
            t.c.granted_at <= when,
            or_(t.c.withdrawn_at.is_(None), t.c.withdrawn_at > when),
        )
        with self._reader.connect() as conn:
            for subject, cid, scope, granted in rows_in_chunks(
                conn, query, t.c.subject, wanted
            ):
                fields = () if scope == "[]" else tuple(json.loads(scope))
                out.append((subject, cid, fields, _aware(granted)))  # type: ignore[arg-type]
        return out

    def get(self, consent_id: str) -> Consent | None:
        """The record with *consent_id*, or ``None``."""
        t = self.table
        with self._reader.connect() as conn:
            row = conn.execute(select(t).where(t.c.id == consent_id)).first()
        return None if row is None else self._record(row)
