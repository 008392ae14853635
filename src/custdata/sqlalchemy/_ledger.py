"""What custdata's SQL registers share: a store on one table, and a per-record history table.

The consent ledger, the legal holds, the restrictions of use and the
per-subject keys each keep one table in the application's database
(:class:`TableStore`); the incident and data-subject request registers each
keep a record table with an append-only history of numbered entries
(:func:`history_table`). The registers differ in their columns and queries,
not in how a store is opened, shown, created or written.
"""

from __future__ import annotations

import datetime as dt
import functools

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import sqlalchemy as sa

from ._chunks import rows_in_chunks


__all__ = ["TableStore", "create_tables", "history_table", "naive_utc"]

_R = TypeVar("_R")


class TableStore:
    """A store kept in one table of the application's database.

    A subclass names its table's definition (``_define``, a function of the
    metadata and the table name that returns the table, defining it when
    needed) and its default name (``_default_table``).

    Args:
        engine: The engine the store uses, on its own connections.
        table_name: The table's name (the store's default when omitted).
        metadata: The ``MetaData`` to define the table in (a new one by
            default); :func:`custdata.sqlalchemy.add_custdata_tables` defines it
            on the application's, so Alembic sees it.
    """

    _default_table: ClassVar[str]

    @staticmethod
    def _define(metadata: sa.MetaData, table_name: str) -> sa.Table:
        """Return the store's table on *metadata*, defining it if needed."""
        raise NotImplementedError

    def __init__(
        self,
        engine: sa.Engine,
        *,
        table_name: str | None = None,
        metadata: sa.MetaData | None = None,
    ) -> None:
        self._engine = engine
        self.metadata = metadata if metadata is not None else sa.MetaData()
        self.table: sa.Table = self._define(
            self.metadata,
            self._default_table if table_name is None else table_name,
        )

    @functools.cached_property
    def _reader(self) -> sa.Engine:
        """The engine for one-statement reads.

        On PostgreSQL they run in autocommit: no BEGIN and no ROLLBACK round
        trip around them (psycopg switches modes locally). Elsewhere switching
        costs a round trip of its own.
        """
        engine = self._engine
        if engine.dialect.name == "postgresql":
            return engine.execution_options(isolation_level="AUTOCOMMIT")
        return engine

    def __repr__(self) -> str:
        return f"<{type(self).__name__} table={self.table.name!r}>"

    def create_table(self) -> None:
        """Create the table if it does not exist (tests and tools; use migrations)."""
        self.table.create(self._engine, checkfirst=True)

    def _insert(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert *rows* in one transaction (nothing when there are none)."""
        if rows:
            with self._engine.begin() as conn:
                conn.execute(self.table.insert(), list(rows))

    def _records_of(
        self, subjects: Collection[str], record: Callable[[Any], _R]
    ) -> list[_R]:
        """Every row of *subjects* (by the ``subject`` column), each made a *record*."""
        t = self.table
        with self._reader.connect() as conn:
            return [
                record(row)
                for row in rows_in_chunks(
                    conn, sa.select(t), t.c.subject, list(subjects)
                )
            ]

    def _end(self, *where: Any, **values: Any) -> int:
        """Set *values* on the rows *where* selects; return how many changed."""
        with self._engine.begin() as conn:
            result = conn.execute(sa.update(self.table).where(*where).values(**values))
        return int(result.rowcount or 0)


def history_table(metadata: sa.MetaData, name: str, parent: sa.Table) -> sa.Table:
    """Define the numbered, append-only history of the records of *parent*.

    One row per entry: the parent's key, the entry's position (``seq``, from
    1; the primary key keeps two writers racing for one position apart), its
    time, actor, action and a JSON detail.
    """
    (key,) = parent.primary_key.columns
    return sa.Table(
        name,
        metadata,
        sa.Column(
            key.name,
            sa.String(64),
            sa.ForeignKey(f"{parent.name}.{key.name}"),
            primary_key=True,
        ),
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
    )


def create_tables(engine: sa.Engine, tables: Iterable[sa.Table]) -> None:
    """Create *tables*, in order, where they do not exist (tests and tools; use migrations)."""
    for table in tables:
        table.create(engine, checkfirst=True)


def naive_utc(value: dt.datetime) -> dt.datetime:
    """*value* in UTC without its zone: how the registers' ``DateTime`` columns hold times."""
    return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
