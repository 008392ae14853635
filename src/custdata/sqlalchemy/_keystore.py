"""Per-subject data keys in a SQL table, and crypto-shredding through the ORM."""

from __future__ import annotations

import datetime as dt
import threading

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    LargeBinary,
    MetaData,
    Table,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from custdata.crypto import SubjectKeyRecord

from ._binding import SUBJECT_INFO_KEY


__all__ = ["SqlSubjectKeyStore", "blind_index_eraser", "shred_subject"]

_DEFAULT_TABLE = "custdata_subject_keys"


def _subject_type() -> Any:
    return LargeBinary().with_variant(mysql.VARBINARY(255), "mysql", "mariadb")


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def subject_key_table(metadata: MetaData, table_name: str = _DEFAULT_TABLE) -> Table:
    """Return the per-subject key table on *metadata*, defining it if needed."""
    existing = metadata.tables.get(table_name)
    if existing is not None:
        return existing
    return Table(
        table_name,
        metadata,
        Column("subject", _subject_type(), primary_key=True),
        Column("key_id", BigInteger, nullable=False),
        Column("wrapped_key", LargeBinary, nullable=True),
        Column("wrapping_key_id", BigInteger, nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("destroyed_at", DateTime(timezone=True), nullable=True),
    )


class SqlSubjectKeyStore:
    """A :class:`custdata.crypto.SubjectKeyStore` in a SQL table.

    Each row holds one subject's wrapped data key (never a plain key) or, after
    shredding, its tombstone. :meth:`add` is atomic through the primary key, so
    several processes racing for a new subject end up with one key.

    The table (``custdata_subject_keys`` by default) is created by
    :meth:`create_table` or by your migrations (it is in :attr:`metadata`).

    Args:
        engine: The engine the store uses, on its own connections.
        table_name: The table's name.
        metadata: The ``MetaData`` to define the table in (a new one by default),
            so Alembic can see it when you pass your models' metadata.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        table_name: str = _DEFAULT_TABLE,
        metadata: MetaData | None = None,
    ) -> None:
        self._engine = engine
        self.metadata = metadata if metadata is not None else MetaData()
        self.table: Table = subject_key_table(self.metadata, table_name)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<SqlSubjectKeyStore table={self.table.name!r}>"

    def create_table(self) -> None:
        """Create the table if it does not exist."""
        self.table.create(self._engine, checkfirst=True)

    def _record(self, row: Any) -> SubjectKeyRecord:
        return SubjectKeyRecord(
            subject=bytes(row.subject),
            key_id=int(row.key_id),
            wrapped_key=None if row.wrapped_key is None else bytes(row.wrapped_key),
            wrapping_key_id=None
            if row.wrapping_key_id is None
            else int(row.wrapping_key_id),
            created_at=_aware(row.created_at),  # type: ignore[arg-type]
            destroyed_at=_aware(row.destroyed_at),
        )

    @staticmethod
    def _values(record: SubjectKeyRecord) -> dict[str, Any]:
        return {
            "subject": record.subject,
            "key_id": record.key_id,
            "wrapped_key": record.wrapped_key,
            "wrapping_key_id": record.wrapping_key_id,
            "created_at": record.created_at,
            "destroyed_at": record.destroyed_at,
        }

    def get(self, subject: bytes) -> SubjectKeyRecord | None:
        """Return the record of *subject* (live or tombstone), or ``None``."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(self.table).where(self.table.c.subject == subject)
            ).first()
        return None if row is None else self._record(row)

    def add(self, record: SubjectKeyRecord) -> SubjectKeyRecord:
        """Insert *record* unless its subject has one; return the stored record."""
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(self.table).values(**self._values(record)))
        except IntegrityError:
            existing = self.get(record.subject)
            if existing is None:  # pragma: no cover - deleted in between
                raise
            return existing
        return record

    def put(self, record: SubjectKeyRecord) -> None:
        """Insert or replace the record of ``record.subject``."""
        values = self._values(record)
        with self._lock, self._engine.begin() as conn:
            done = conn.execute(
                update(self.table)
                .where(self.table.c.subject == record.subject)
                .values(**values)
            )
            if done.rowcount == 0:
                conn.execute(insert(self.table).values(**values))

    def records(self) -> Iterator[SubjectKeyRecord]:
        """Iterate over every record, live and tombstone."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(self.table).order_by(self.table.c.subject)).all()
        for row in rows:
            yield self._record(row)

    def replace(self, old: SubjectKeyRecord, new: SubjectKeyRecord) -> bool:
        """Store ``new`` only if ``old.subject``'s record is still ``old``; return whether.

        One conditional ``UPDATE``: a record shredded (a tombstone has no wrapped
        key) or re-wrapped since ``old`` was read is left as it is.
        """
        return self.replace_many([(old, new)]) == 1

    def replace_many(
        self, pairs: Sequence[tuple[SubjectKeyRecord, SubjectKeyRecord]]
    ) -> int:
        """Apply :meth:`replace` to each ``(old, new)`` pair in one transaction.

        Either every swap commits or none does, so a process killed midway leaves
        each record as it was.

        Returns:
            How many records were replaced.
        """
        if not pairs:
            return 0
        done = 0
        with self._engine.begin() as conn:
            for old, new in pairs:
                done += self._swap(conn, old, new)
        return done

    def _swap(self, conn: Any, old: SubjectKeyRecord, new: SubjectKeyRecord) -> int:
        t = self.table
        if old.wrapped_key is None or old.wrapping_key_id is None:
            return 0
        result = conn.execute(
            update(t)
            .where(
                t.c.subject == old.subject,
                t.c.key_id == old.key_id,
                t.c.wrapping_key_id == old.wrapping_key_id,
                t.c.wrapped_key == old.wrapped_key,
                t.c.destroyed_at.is_(None),
            )
            .values(wrapped_key=new.wrapped_key, wrapping_key_id=new.wrapping_key_id)
        )
        return int(result.rowcount)

    def records_not_wrapped_by(
        self, key_id: int, *, after: bytes | None = None, limit: int = 500
    ) -> list[SubjectKeyRecord]:
        """Return up to ``limit`` live records wrapped by a data key other than ``key_id``.

        Ordered by subject, starting after the subject ``after``: page through
        with the last subject of each page. Tombstones are never returned.
        """
        t = self.table
        query = (
            select(t)
            .where(t.c.wrapped_key.is_not(None), t.c.wrapping_key_id != key_id)
            .order_by(t.c.subject)
            .limit(limit)
        )
        if after is not None:
            query = query.where(t.c.subject > after)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [self._record(row) for row in rows]

    def wrapping_key_counts(self) -> dict[int, int]:
        """Count the live subject keys per wrapping data key id (tombstones excluded)."""
        t = self.table
        query = (
            select(t.c.wrapping_key_id, func.count())
            .where(t.c.wrapped_key.is_not(None))
            .group_by(t.c.wrapping_key_id)
        )
        with self._engine.connect() as conn:
            return {int(k): int(n) for k, n in conn.execute(query).all()}

    def delete_all(self) -> None:
        """Delete every record (for tests and teardown)."""
        with self._engine.begin() as conn:
            conn.execute(delete(self.table))


def _subject_tables(metadata: MetaData | None) -> list[Table]:
    from ._runtime import known_tables  # noqa: PLC0415

    tables = list(metadata.tables.values()) if metadata is not None else known_tables()
    return [t for t in tables if any(c.info.get(SUBJECT_INFO_KEY) for c in t.columns)]


def blind_index_eraser(
    session_or_engine: Session | Engine, *, metadata: MetaData | None = None
) -> Callable[[object], int]:
    """Return an eraser for :meth:`custdata.Custodian.shred` that unlinks searches.

    Blind-index entries are keyed per column, not per subject, so destroying a
    subject's data key leaves them linkable. The eraser clears the subject's
    blind-index companions in every table with a subject column.

    Args:
        session_or_engine: Where to clear them. A session is used in its current
            transaction (commit it yourself); an engine runs its own transaction.
        metadata: The tables to clear; by default every table custdata knows.

    Returns:
        A callable taking a subject id and returning how many rows it cleared.
    """

    def erase(subject_id: object) -> int:
        statements = []
        for table in _subject_tables(metadata):
            subject_col = next(c for c in table.columns if c.info.get(SUBJECT_INFO_KEY))
            companions = [
                c for c in table.columns if c.info.get("custdata_blind_index_of")
            ]
            if companions:
                statements.append(
                    update(table)
                    .where(subject_col == subject_id)
                    .values(**dict.fromkeys((c.key for c in companions), None))
                )
        cleared = 0
        if isinstance(session_or_engine, Session):
            for stmt in statements:
                cleared += session_or_engine.execute(stmt).rowcount  # type: ignore[attr-defined]
        else:
            with session_or_engine.begin() as conn:
                for stmt in statements:
                    cleared += conn.execute(stmt).rowcount
        return cleared

    return erase


def shred_subject(
    custodian: Any,
    subject_id: object,
    *,
    session_or_engine: Session | Engine,
    metadata: MetaData | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Crypto-shred one data subject and clear its blind-index entries.

    Shorthand for ``custodian.shred(subject_id, erasers=[blind_index_eraser(...)])``
    (see :meth:`custdata.Custodian.shred`): the destruction is audited, the
    subject's data key is destroyed, so every value stored under
    ``key_scope="subject"`` for it raises :class:`custdata.KeyDestroyedError`,
    and its blind-index entries are cleared so they can no longer be linked.

    Args:
        custodian: The custodian whose keyring, subject key store and audit
            trail to use.
        subject_id: The subject's id, as stored in its ``subject_key`` column.
        session_or_engine: Where to clear the blind-index entries.
        metadata: The tables to clear; by default every table custdata knows.
        now: When the key was destroyed (aware); defaults to now.

    Returns:
        How many rows had blind-index entries cleared.

    Raises:
        ActorRequiredError: If no actor is in force.
        ConfigurationError: If the custodian has no subject key store.
    """
    eraser = blind_index_eraser(session_or_engine, metadata=metadata)
    return int(custodian.shred(subject_id, erasers=[eraser], now=now))
