"""Per-subject data keys in a SQL table, and crypto-shredding through the ORM."""

from __future__ import annotations

import datetime as dt
import threading
import weakref

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    LargeBinary,
    MetaData,
    Table,
    bindparam,
    delete,
    event,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.orm import Session

from custdata.crypto import SubjectKeyRecord
from custdata.crypto._subject import WrappedKey

from ._binding import SUBJECT_INFO_KEY, blob_binder
from ._ledger import TableStore


__all__ = ["SqlSubjectKeyStore", "blind_index_eraser", "shred_subject"]

_DEFAULT_TABLE = "custdata_subject_keys"

#: The subject of the row that holds the store's shred epoch in ``key_id``.
#: No canonical subject id is empty (each starts with its type byte).
_EPOCH = b""

#: Subjects per statement of a batch.
_CHUNK = 500

#: New records per multi-row ``INSERT`` (six parameters each).
_INSERT_CHUNK = 1000

_MISSING = object()
#: The destruction times of a chunk of live keys (see ``_insert_rendered``).
_NONE_ONLY = frozenset({None})


#: The most bound values in one statement of an SQLite before 3.32.
_OLD_SQLITE_PARAMETERS = 999


def _sqlite_allows(parameters: int) -> bool:
    """Whether this process's SQLite takes ``parameters`` bound values in one statement.

    SQLite before 3.32 stops at 999 by default; later ones at 32,766.
    """
    import sqlite3  # noqa: PLC0415 - only for SQLite engines

    return (
        sqlite3.sqlite_version_info >= (3, 32, 0)
        or parameters <= _OLD_SQLITE_PARAMETERS
    )


class _Open:
    """What is known of one connection's open transaction: savepoints, watchers."""

    __slots__ = ("__weakref__", "savepoints", "watchers")

    def __init__(self) -> None:
        self.savepoints: list[str] = []
        self.watchers: list[Callable[[object, int, bool], None]] = []


#: Connections with an open transaction that holds new subject keys, or a
#: savepoint (so the depth of a later key is known).
_OPEN: weakref.WeakKeyDictionary[Connection, _Open] = weakref.WeakKeyDictionary()


def _ended(conn: Connection) -> None:
    state = _OPEN.pop(conn, None) if _OPEN else None
    if state is not None:
        for on_end in state.watchers:
            on_end(conn, -1, False)  # noqa: FBT003 - the protocol's signature


@event.listens_for(Engine, "commit")
def _on_commit(conn: Connection) -> None:
    # Fired before the commit itself: keys held for the transaction are dropped
    # rather than promoted, so a commit that then fails leaves none behind.
    _ended(conn)


@event.listens_for(Engine, "rollback")
def _on_rollback(conn: Connection) -> None:
    _ended(conn)


@event.listens_for(Engine, "savepoint")
def _on_savepoint(conn: Connection, name: str) -> None:
    state = _OPEN.get(conn)
    if state is None:
        state = _OPEN[conn] = _Open()
    state.savepoints.append(name)


def _savepoint_ended(conn: Connection, name: str, *, kept: bool) -> None:
    state = _OPEN.get(conn)
    if state is None or name not in state.savepoints:
        return
    depth = state.savepoints.index(name)
    del state.savepoints[depth:]
    for on_end in state.watchers:
        on_end(conn, depth, kept)


@event.listens_for(Engine, "rollback_savepoint")
def _on_rollback_savepoint(conn: Connection, name: str, context: object) -> None:
    _savepoint_ended(conn, name, kept=False)


@event.listens_for(Engine, "release_savepoint")
def _on_release_savepoint(conn: Connection, name: str, context: object) -> None:
    _savepoint_ended(conn, name, kept=True)


#: Per dialect, the literal of the empty byte string (the epoch row's subject).
_EMPTY_BYTES: Mapping[str, str] = {
    "sqlite": "X''",
    "postgresql": "''::bytea",
    "mysql": "X''",
    "mariadb": "X''",
}

#: Per dialect, the isolation levels under which each statement of a
#: transaction reads the latest committed rows and nothing uncommitted of
#: other transactions (PostgreSQL's READ UNCOMMITTED is its READ COMMITTED).
_FRESH_LEVELS: Mapping[str, frozenset[str]] = {
    "postgresql": frozenset({"READ COMMITTED", "READ UNCOMMITTED", "AUTOCOMMIT"}),
    "mysql": frozenset({"READ COMMITTED", "AUTOCOMMIT"}),
    "mariadb": frozenset({"READ COMMITTED", "AUTOCOMMIT"}),
}


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


class SqlSubjectKeyStore(TableStore):
    """A :class:`custdata.crypto.SubjectKeyStore` in a SQL table.

    Each row holds one subject's wrapped data key (never a plain key) or, after
    shredding, its tombstone. :meth:`add` is atomic through the primary key, so
    several processes racing for a new subject end up with one key.

    The table (``custdata_subject_keys`` by default) is created by
    :meth:`create_table` or by your migrations (it is in :attr:`metadata`).

    Args:
        engine: The engine the store uses, on its own connections.
        table_name: The table's name (``custdata_subject_keys`` by default).
        metadata: The ``MetaData`` to define the table in (a new one by default),
            so Alembic can see it when you pass your models' metadata.
    """

    _define = staticmethod(subject_key_table)
    _default_table = _DEFAULT_TABLE

    def __init__(
        self,
        engine: Engine,
        *,
        table_name: str | None = None,
        metadata: MetaData | None = None,
    ) -> None:
        super().__init__(engine, table_name=table_name, metadata=metadata)
        self._lock = threading.Lock()
        self._lookups: dict[tuple[str, object], Any] = {}
        self._inserts: dict[str, Any] = {}
        self._shared_engines: weakref.WeakKeyDictionary[Engine, bool] = (
            weakref.WeakKeyDictionary()
        )

    def _array_sql(self, dialect: Any) -> tuple[str, str] | None:
        """The lookup and the ``INSERT`` that bind binary arrays, for ``dialect``.

        Only through psycopg (3) on PostgreSQL, whose ``%b`` placeholder sends
        a parameter in binary: the lookup binds its subjects as one
        ``bytea[]`` (``subject = ANY(%b)``) and the ``INSERT`` each column of
        its records as one array (``SELECT ... FROM unnest(...)``). Either
        statement has a handful of placeholders, so psycopg parses it once
        and keeps it, where a list of 500 (or 6,000) ``%s`` would be parsed
        again on every execution, and no value is escaped as text. Returns
        ``None`` elsewhere (the rendered ``IN`` list and multi-row ``VALUES``).
        """
        key = ("arrays", f"{dialect.name}+{dialect.driver}")
        if key in self._lookups:
            return self._lookups[key]  # type: ignore[no-any-return]
        rendered = None
        table_sql = dialect.identifier_preparer.format_table(self.table)
        if (
            dialect.name == "postgresql"
            and dialect.driver == "psycopg"  # its async mode too
            and "%" not in table_sql
        ):
            quote = dialect.identifier_preparer.quote
            subject, key_id, wrapped, wrapping, created, destroyed = (
                quote(c.name) for c in self.table.columns
            )
            arrays = (
                "%b::bytea[], %b::int8[], %b::bytea[], %b::int8[], "
                "%b::timestamptz[], %b::timestamptz[]"
            )
            # Identifiers quoted by the dialect; every value is a parameter.
            lookup = (
                f"SELECT {subject}, {key_id}, {wrapped}, {wrapping} "  # noqa: S608
                f"FROM {table_sql} WHERE {subject} = ANY(%b::bytea[])"
            )
            add = (
                f"INSERT INTO {table_sql} ({subject}, {key_id}, {wrapped}, "  # noqa: S608
                f"{wrapping}, {created}, {destroyed}) SELECT * FROM unnest({arrays}) "
                f"ON CONFLICT ({subject}) DO NOTHING"
            )
            rendered = (lookup, add)
        self._lookups[key] = rendered
        return rendered

    def _lookup_rows(self, conn: Connection, subjects: list[bytes]) -> Sequence[Any]:
        """Run the lookup of ``subjects`` on ``conn``; return its rows.

        The SQL is rendered once per dialect and power-of-two size (padded
        with repeats of the first id) and run with ``exec_driver_sql``:
        SQLAlchemy's events still see it, but neither an expanding ``IN`` nor
        bind processing is redone for every lookup -- on a one-subject lookup
        (a ``session.get``) those cost more than the query. Through psycopg
        the subjects go as one binary array instead (:meth:`_array_sql`).
        """
        dialect = conn.dialect
        arrays = self._array_sql(dialect)
        if arrays is not None:
            return conn.exec_driver_sql(arrays[0], (subjects,)).all()
        size = 1 << (len(subjects) - 1).bit_length()
        rendered = self._lookups.get((dialect.name, size))
        if rendered is None:
            t = self.table
            compiled = (
                select(t.c.subject, t.c.key_id, t.c.wrapped_key, t.c.wrapping_key_id)
                .where(t.c.subject.in_([bindparam(f"s{i}") for i in range(size)]))
                .compile(dialect=dialect)
            )
            names = compiled.positiontup
            # Positional parameters: the position of each subject, or True
            # when they are in the list's order (then no reordering at all).
            order: Any = None
            if names is not None:
                order = [int(name[1:]) for name in names]
                order = True if order == list(range(size)) else order
            rendered = self._lookups[(dialect.name, size)] = (compiled.string, order)
        sql, order = rendered
        padded = subjects + [subjects[0]] * (size - len(subjects))
        to_blob = blob_binder(dialect)
        if to_blob is not None:
            padded = list(map(to_blob, padded))
        if order is True:
            params: Any = tuple(padded)
        elif order is None:
            params = {f"s{i}": s for i, s in enumerate(padded)}
        else:
            params = tuple([padded[i] for i in order])
        return conn.exec_driver_sql(sql, params).all()

    def _insert_missing(self, conn: Connection) -> Any:
        """An ``INSERT`` that skips subjects that have a record, for ``conn``'s dialect."""
        name = conn.dialect.name
        statement = self._inserts.get(name)
        if statement is None:
            t = self.table
            if name == "postgresql":
                statement = postgresql.insert(t).on_conflict_do_nothing(
                    index_elements=[t.c.subject]
                )
            elif name == "sqlite":
                statement = sqlite.insert(t).on_conflict_do_nothing(
                    index_elements=[t.c.subject]
                )
            elif name in {"mysql", "mariadb"}:
                statement = insert(t).prefix_with("IGNORE", dialect=name)
            else:
                statement = insert(t)
            self._inserts[name] = statement
        return statement

    @staticmethod
    def _record(row: Any) -> SubjectKeyRecord:
        subject, key_id, wrapped, wrapping, created, destroyed = row
        return SubjectKeyRecord(
            subject=bytes(subject),
            key_id=int(key_id),
            wrapped_key=None if wrapped is None else bytes(wrapped),
            wrapping_key_id=None if wrapping is None else int(wrapping),
            created_at=_aware(created),  # type: ignore[arg-type]
            destroyed_at=_aware(destroyed),
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

    def shares(self, connection: Connection) -> bool:
        """Whether ``connection`` is to the database the store's table is in.

        Then new subjects' keys are added in the connection's own transaction,
        so they commit or roll back with the rows written there.
        """
        return self._shared(connection.engine)

    def reads_committed_on(self, connection: object) -> bool:
        """Whether a lookup on ``connection`` sees what one on the store's own would.

        That is: ``connection`` is to the store's database, its transaction
        has added no subject key (nor read one for a write), and its next
        statement reads the latest committed rows -- outside a transaction on
        SQLite, under ``READ COMMITTED`` (or ``AUTOCOMMIT``) on PostgreSQL,
        MySQL and MariaDB, as set through SQLAlchemy's ``isolation_level``.
        Then a fetched batch's keys are looked up on the batch's own
        connection, with no connection of the store's to check out; every key
        found is committed and current, so it is cached as any other.
        """
        if (
            not isinstance(connection, Connection)
            or connection in _OPEN
            or not self._shared(connection.engine)
        ):
            return False
        dialect = connection.dialect
        if dialect.name == "sqlite":
            try:
                dbapi = connection.connection.dbapi_connection
            except Exception:  # noqa: BLE001 - an unusable connection: not this one
                return False
            return getattr(dbapi, "in_transaction", True) is False
        fresh = _FRESH_LEVELS.get(dialect.name)
        if fresh is None:
            return False
        level = connection.get_execution_options().get("isolation_level")
        if level is None:
            level = getattr(dialect, "_on_connect_isolation_level", None)
        if level is None:
            level = dialect.default_isolation_level
        return isinstance(level, str) and level.upper().replace("_", " ") in fresh

    def epoch_column(self, connection: Connection) -> str | None:
        """SQL of a scalar subquery reading the shred epoch, for a statement on ``connection``.

        The read path puts it first in the select list of a statement that
        fetches per-subject-key values, so the batch's cached keys are checked
        against the epoch read in the same statement as the rows, with no
        statement of the store's. ``None`` where that check would not be the
        one :meth:`lookup` makes: ``connection`` is not one the store
        :meth:`reads_committed_on`, or its dialect is not SQLite, PostgreSQL,
        MySQL or MariaDB.
        """
        if not self.reads_committed_on(connection):
            return None
        dialect = connection.dialect
        key = ("epoch", dialect.name)
        if key in self._lookups:
            return self._lookups[key]  # type: ignore[no-any-return]
        empty = _EMPTY_BYTES.get(dialect.name)
        sql = None
        if empty is not None:
            keys = self.table.alias("custdata_epoch")
            sql = str(
                select(keys.c.key_id)
                .where(keys.c.subject == literal_column(empty))
                .scalar_subquery()
                .compile(dialect=dialect)
            )
            if "%" in sql and dialect.paramstyle in {"format", "pyformat"}:
                sql = None  # a table name that would need escaping: not here
        self._lookups[key] = sql
        return sql

    def key_columns(self, connection: Connection) -> str:
        """SQL of three scalar subqueries reading one subject's key record.

        ``key_id``, ``wrapped_key`` and ``wrapping_key_id`` of the subject
        bound as ``custdata_subject`` (three times, for a positional parameter
        style), each ``NULL`` when it has no record: what :meth:`lookup` reads
        of it, for a statement that names its one subject before it runs (a
        ``get``). Use only where :meth:`epoch_column` gives the epoch's
        column, which goes before these.
        """
        dialect = connection.dialect
        key = ("key columns", dialect.name)
        sql = self._lookups.get(key)
        if sql is None:
            keys = self.table.alias("custdata_key")
            subject = bindparam("custdata_subject", type_=self.table.c.subject.type)
            sql = self._lookups[key] = ", ".join(
                str(
                    select(column)
                    .where(keys.c.subject == subject)
                    .scalar_subquery()
                    .compile(dialect=dialect)
                )
                + f" AS custdata_{column.name}"
                for column in (
                    keys.c.key_id,
                    keys.c.wrapped_key,
                    keys.c.wrapping_key_id,
                )
            )
        return sql

    def _shared(self, other: Engine) -> bool:
        """:meth:`shares` for a connection of ``other``, remembered per engine."""
        if other is self._engine:
            return True
        known = self._shared_engines.get(other)
        if known is None:
            url = self._engine.url
            # The same database through another driver (an async engine's) counts.
            known = bool(
                url.database
                and url.database != ":memory:"
                and other.url.set(drivername=other.url.get_backend_name())
                == url.set(drivername=url.get_backend_name())
            )
            self._shared_engines[other] = known
        return known

    def _connect(
        self, transaction: object, *, begin: bool = False
    ) -> AbstractContextManager[Connection]:
        """The application's connection ``transaction``, or one of the store's own."""
        if transaction is None:
            if begin:
                return self._engine.begin()
            return self._reader.connect()
        if not isinstance(transaction, Connection):
            raise TypeError("transaction must be a SQLAlchemy Connection")
        return nullcontext(transaction)

    def get(self, subject: bytes) -> SubjectKeyRecord | None:
        """Return the record of *subject* (live or tombstone), or ``None``."""
        if subject == _EPOCH:
            return None
        with self._engine.connect() as conn:
            row = conn.execute(
                select(self.table).where(self.table.c.subject == subject)
            ).first()
        return None if row is None else self._record(row)

    def lookup(
        self, subjects: Collection[bytes], *, transaction: object = None
    ) -> tuple[dict[bytes, WrappedKey], int]:
        """Return the wrapped keys of ``subjects`` that have one, and the shred epoch.

        One ``SELECT`` of the four columns unwrapping needs ``WHERE subject IN
        (...)``; the shred epoch's row comes back in the same statement. Ask
        for at most a few hundred subjects at a time (the scope asks for 500).

        Args:
            subjects: Canonical subject ids.
            transaction: A ``Connection`` of the application whose transaction
                to read in (seeing its uncommitted keys), or ``None`` for the
                store's own.

        Returns:
            Per subject found, ``(subject, key_id, wrapped_key, wrapping_key_id)``
            (see :data:`custdata.crypto.BatchSubjectKeyStore`), and the epoch.
        """
        found: dict[bytes, WrappedKey] = {}
        epoch = 0
        with self._connect(transaction) as conn:
            rows = self._lookup_rows(conn, [_EPOCH, *subjects])
        for row in rows:
            subject = row[0]
            if subject.__class__ is not bytes:
                subject = bytes(subject)
            if subject == _EPOCH:
                epoch = int(row[1])
            else:
                found[subject] = row
        return found, epoch

    def add(self, record: SubjectKeyRecord) -> SubjectKeyRecord:
        """Insert *record* unless its subject has one; return the stored record."""
        return self.add_many([record])[record.subject]

    def add_many(
        self, records: Sequence[SubjectKeyRecord], *, transaction: object = None
    ) -> dict[bytes, SubjectKeyRecord]:
        """Insert each record whose subject has none; return each subject's stored record.

        One multi-row ``INSERT`` per 1,000 records (on SQLite, PostgreSQL,
        MySQL and MariaDB -- through psycopg, the records' columns as six
        binary arrays; one executemany elsewhere), skipping subjects that
        already have one (``ON CONFLICT DO NOTHING`` on PostgreSQL and SQLite,
        ``INSERT IGNORE`` on MySQL and MariaDB); only when some were skipped
        (another writer got there first) is the winners' record read back, with
        a locking read that sees the latest committed key.

        Args:
            records: New records, one per subject.
            transaction: A ``Connection`` of the application whose transaction
                to add them in (they commit or roll back with it), or ``None``
                to commit them at once in the store's own.
        """
        if not records:
            return {}
        out = {r.subject: r for r in records}
        own = transaction is None
        if not own and isinstance(transaction, Connection) and transaction not in _OPEN:
            # Keys added in the application's transaction: until it ends, reads
            # on its connection may see uncommitted keys (reads_committed_on).
            _OPEN[transaction] = _Open()
        with self._connect(transaction, begin=True) as conn:
            arrays = self._array_sql(conn.dialect)
            rendered = None if arrays is not None else self._insert_sql(conn.dialect)
            if arrays is not None:
                added = self._insert_arrays(conn, arrays[1], list(out.values()))
            elif rendered is not None:
                added = self._insert_rendered(conn, rendered, list(out.values()))
            else:
                added = self._insert_executemany(
                    conn, [self._values(r) for r in out.values()]
                )
            if added != len(out):
                t = self.table
                query = select(t).where(t.c.subject.in_(list(out)))
                if not own:
                    query = query.with_for_update(read=True)
                for row in conn.execute(query):
                    out[bytes(row.subject)] = self._record(row)
        return out

    def _insert_sql(self, dialect: Any) -> tuple[str, str, Any] | None:
        """The multi-row ``INSERT`` that skips existing subjects, for ``dialect``.

        Returns ``(head, tail, (row group, row group of live keys, time
        bind processor))``: the row groups to join around ``n`` of them (the
        second with a literal ``NULL`` destruction time) and the bind
        processor of the time columns; ``None`` where it is not
        rendered by hand (another dialect or parameter style, or an SQLite too
        old for 6,000 parameters in one statement).
        """
        name = dialect.name
        key = ("insert", name)
        if key in self._lookups:
            return self._lookups[key]  # type: ignore[no-any-return]
        rendered = None
        mark = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(dialect.paramstyle)
        table_sql = dialect.identifier_preparer.format_table(self.table)
        if (
            mark is not None
            and name in {"sqlite", "postgresql", "mysql", "mariadb"}
            and not (mark == "%s" and "%" in table_sql)
            and (name != "sqlite" or _sqlite_allows(_INSERT_CHUNK * 6))
        ):
            quote = dialect.identifier_preparer.quote
            columns = ", ".join(quote(c.name) for c in self.table.columns)
            verb = (
                "INSERT IGNORE INTO" if name in {"mysql", "mariadb"} else "INSERT INTO"
            )
            tail = (
                ""
                if name in {"mysql", "mariadb"}
                else f" ON CONFLICT ({quote('subject')}) DO NOTHING"
            )
            group = "(" + ", ".join([mark] * 6) + ")"
            live_group = "(" + ", ".join([mark] * 5) + ", NULL)"
            time_type = self.table.c.created_at.type.dialect_impl(dialect)
            rendered = (
                f"{verb} {table_sql} ({columns}) VALUES ",
                tail,
                (group, live_group, time_type.bind_processor(dialect)),
            )
        self._lookups[key] = rendered
        return rendered

    def _insert_rendered(
        self, conn: Connection, rendered: Any, records: list[SubjectKeyRecord]
    ) -> int:
        """Insert ``records`` with one multi-row statement per 1,000; return how many were new.

        Run with ``exec_driver_sql`` (SQLAlchemy's events still see each
        statement): no per-row parameter processing, and the times of a batch
        (one creation time for all its keys) converted once.
        """
        head, tail, (group, live_group, to_db) = rendered
        times: dict[Any, Any] = {None: None}
        added = 0
        # Through sqlite3, bytes as bytearray and no None parameter: each
        # other parameter goes through its adaptation protocol (blob_binder).
        to_blob = blob_binder(conn.dialect)
        for start in range(0, len(records), _INSERT_CHUNK):
            chunk = records[start : start + _INSERT_CHUNK]
            # New keys have no destruction time: NULL in the text instead.
            live = {r.destroyed_at for r in chunk} == _NONE_ONLY
            params: list[Any] = []
            extend = params.extend
            for r in chunk:
                wrapped = r.wrapped_key
                created = times.get(r.created_at, _MISSING)
                if created is _MISSING:
                    created = times[r.created_at] = (
                        r.created_at if to_db is None else to_db(r.created_at)
                    )
                if to_blob is not None:
                    row = (
                        to_blob(r.subject),
                        r.key_id,
                        None if wrapped is None else to_blob(wrapped),
                        r.wrapping_key_id,
                        created,
                    )
                else:
                    row = (r.subject, r.key_id, wrapped, r.wrapping_key_id, created)
                if live:
                    extend(row)
                    continue
                destroyed = times.get(r.destroyed_at, _MISSING)
                if destroyed is _MISSING:
                    destroyed = times[r.destroyed_at] = (
                        r.destroyed_at if to_db is None else to_db(r.destroyed_at)
                    )
                extend((*row, destroyed))
            sql = head + ", ".join([live_group if live else group] * len(chunk)) + tail
            added += conn.exec_driver_sql(sql, tuple(params)).rowcount
        return added

    @staticmethod
    def _insert_arrays(
        conn: Connection, sql: str, records: list[SubjectKeyRecord]
    ) -> int:
        """Insert ``records`` as six binary arrays per 1,000; return how many were new."""
        added = 0
        for start in range(0, len(records), _INSERT_CHUNK):
            chunk = records[start : start + _INSERT_CHUNK]
            columns = (
                [r.subject for r in chunk],
                [r.key_id for r in chunk],
                [r.wrapped_key for r in chunk],
                [r.wrapping_key_id for r in chunk],
                [r.created_at for r in chunk],
                [r.destroyed_at for r in chunk],
            )
            added += conn.exec_driver_sql(sql, columns).rowcount
        return added

    def _insert_executemany(
        self, conn: Connection, values: list[dict[str, Any]]
    ) -> int:
        """Insert ``values`` with one executemany; return how many were new."""
        statement = self._insert_missing(conn)
        if conn.dialect.name != "postgresql":
            return int(conn.execute(statement, values).rowcount)
        # Batched as insertmanyvalues (PostgreSQL), an executemany has no
        # row count: ask for the inserted subjects back instead.
        return len(
            conn.execute(statement.returning(self.table.c.subject), values).all()
        )

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

    def destroy_many(
        self, subjects: Collection[bytes], *, now: dt.datetime
    ) -> tuple[dict[bytes, SubjectKeyRecord | None], int]:
        """Replace each subject's record by its tombstone and raise the shred epoch.

        One transaction: per 500 subjects one ``SELECT`` of their records, one
        ``UPDATE`` turning live ones into tombstones and one ``INSERT`` of
        tombstones for subjects without a key; then one ``UPDATE`` of the epoch.
        A subject destroyed already keeps its first destruction time.

        Returns:
            Each subject's record before (``None`` if it had none), and the new
            shred epoch.
        """
        t = self.table
        before: dict[bytes, SubjectKeyRecord | None] = dict.fromkeys(subjects)
        ordered = list(before)
        with self._lock, self._engine.begin() as conn:
            for start in range(0, len(ordered), _CHUNK):
                chunk = ordered[start : start + _CHUNK]
                for row in conn.execute(
                    select(t).where(t.c.subject.in_(chunk)).with_for_update()
                ):
                    before[bytes(row.subject)] = self._record(row)
                live = [
                    s for s in chunk if (r := before[s]) is not None and not r.destroyed
                ]
                if live:
                    conn.execute(
                        update(t)
                        .where(t.c.subject.in_(live), t.c.destroyed_at.is_(None))
                        .values(
                            wrapped_key=None, wrapping_key_id=None, destroyed_at=now
                        )
                    )
                absent = [s for s in chunk if before[s] is None]
                if absent:
                    conn.execute(
                        self._insert_missing(conn),
                        [
                            {
                                "subject": s,
                                "key_id": 0,
                                "wrapped_key": None,
                                "wrapping_key_id": None,
                                "created_at": now,
                                "destroyed_at": now,
                            }
                            for s in absent
                        ],
                    )
            epoch = self._raise_epoch(conn, now)
        return before, epoch

    def _raise_epoch(self, conn: Connection, now: dt.datetime) -> int:
        t = self.table
        where = t.c.subject == _EPOCH
        if (
            conn.execute(update(t).where(where).values(key_id=t.c.key_id + 1)).rowcount
            == 0
        ):
            conn.execute(
                self._insert_missing(conn),
                [
                    {
                        "subject": _EPOCH,
                        "key_id": 0,
                        "wrapped_key": None,
                        "wrapping_key_id": None,
                        "created_at": now,
                        "destroyed_at": None,
                    }
                ],
            )
            conn.execute(update(t).where(where).values(key_id=t.c.key_id + 1))
        return int(conn.execute(select(t.c.key_id).where(where)).scalar_one())

    def shred_epoch(self) -> int:
        """The store's shred epoch: how many batches of keys were destroyed so far."""
        return self.lookup(())[1]

    def watch(
        self, transaction: object, on_end: Callable[[object, int, bool], None]
    ) -> int:
        """Have ``on_end`` called as the ``Connection`` ``transaction`` ends.

        See :meth:`custdata.crypto.BatchSubjectKeyStore.watch`.
        """
        conn = cast("Connection", transaction)
        state = _OPEN.get(conn)
        if state is None:
            state = _OPEN[conn] = _Open()
        if on_end not in state.watchers:
            state.watchers.append(on_end)
        return len(state.savepoints)

    def records(self) -> Iterator[SubjectKeyRecord]:
        """Iterate over every record, live and tombstone."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(self.table).order_by(self.table.c.subject)).all()
        for row in rows:
            if bytes(row.subject) != _EPOCH:
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
        """Delete every record and the shred epoch (for tests and teardown).

        Clear the scopes that cached keys from this store too
        (:meth:`custdata.crypto.SubjectKeyScope.clear`).
        """
        with self._engine.begin() as conn:
            conn.execute(delete(self.table))


def _subject_tables(metadata: MetaData | None) -> list[Table]:
    from ._runtime import known_tables  # noqa: PLC0415

    tables = list(metadata.tables.values()) if metadata is not None else known_tables()
    return [t for t in tables if any(c.info.get(SUBJECT_INFO_KEY) for c in t.columns)]


class _BlindIndexEraser:
    """Clears subjects' blind-index companions; see :func:`blind_index_eraser`."""

    def __init__(
        self, session_or_engine: Session | Engine, metadata: MetaData | None
    ) -> None:
        self._target = session_or_engine
        self._metadata = metadata

    def __call__(self, subject_id: object) -> int:
        """Clear one subject's entries; return how many rows changed."""
        return self.many([subject_id])

    def many(self, subject_ids: Sequence[object]) -> int:
        """Clear the entries of many subjects, one ``UPDATE`` per table and 500 ids."""
        statements = []
        for table in _subject_tables(self._metadata):
            subject_col = next(c for c in table.columns if c.info.get(SUBJECT_INFO_KEY))
            companions = [
                c for c in table.columns if c.info.get("custdata_blind_index_of")
            ]
            if not companions:
                continue
            cleared = dict.fromkeys((c.key for c in companions), None)
            for start in range(0, len(subject_ids), _CHUNK):
                chunk = list(subject_ids[start : start + _CHUNK])
                statements.append(
                    update(table).where(subject_col.in_(chunk)).values(**cleared)
                )
        target = self._target
        if isinstance(target, Session):
            return sum(target.execute(stmt).rowcount for stmt in statements)  # type: ignore[attr-defined]
        with target.begin() as conn:
            return sum(conn.execute(stmt).rowcount for stmt in statements)


def blind_index_eraser(
    session_or_engine: Session | Engine, *, metadata: MetaData | None = None
) -> Callable[[object], int]:
    """Return an eraser for :meth:`custdata.Custodian.shred` that unlinks searches.

    Blind-index entries are keyed per column, not per subject, so destroying a
    subject's data key leaves them linkable. The eraser clears the subject's
    blind-index companions in every table with a subject column. It also has a
    ``many(subject_ids)`` method, which :meth:`custdata.Custodian.shred_many`
    calls: one ``UPDATE ... WHERE subject IN (...)`` per table and 500 subjects.

    Args:
        session_or_engine: Where to clear them. A session is used in its current
            transaction (commit it yourself); an engine runs its own transaction.
        metadata: The tables to clear; by default every table custdata knows.

    Returns:
        A callable taking a subject id and returning how many rows it cleared.
    """
    return _BlindIndexEraser(session_or_engine, metadata)


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


def hold_subject_keys(  # noqa: PLR0917
    conn: Connection,
    custodian: Any,
    facts: Any,
    rows: Sequence[Mapping[str, Any]],
    tails: Sequence[bytes | None] | None,
    extra_subject: object,
    *,
    fresh: bool = False,
) -> None:
    """Make ready the keys of the subjects a write statement encrypts for (internal).

    Called once per statement by the write hook, before its values are
    encrypted: the keys of every subject written are fetched, and the missing
    ones created, as one batch. When the store's table is in the statement's
    database, that happens in the statement's transaction, so the keys commit
    or roll back with the rows; otherwise the new keys commit first, in the
    store's own transaction (a crash in between leaves keys without rows,
    never rows without keys).

    Args:
        conn: The statement's connection.
        custodian: The custodian in force.
        facts: The table's facts (its subject column and subject-bound columns).
        rows: The statement's parameter sets.
        tails: Per row, the subject's associated-data tail, if worked out already.
        extra_subject: The subject of rows that do not name one.
        fresh: Whether the statement is an ``INSERT`` (see
            :meth:`custdata.crypto.SubjectKeyScope.write_keys`).
    """
    from ._binding import subject_tail  # noqa: PLC0415 - runtime's helpers
    from ._write import row_subject  # noqa: PLC0415

    store = custodian.subject_keys
    keyring = custodian.keyring
    subject_col = facts.subject_col
    if store is None or keyring is None or subject_col is None:
        return  # the encryption itself names what is missing
    # Only columns under per-subject keys need their subjects' keys; a
    # column-key value is bound to its subject through its associated data
    # alone.
    bound = [key for key, b in facts.subject_bound if b.key_scope == "subject"]
    if not bound:
        return
    wanted: set[bytes] = set()
    kind = facts.subject_kind
    for i, row in enumerate(rows):
        if not any(row.get(key) is not None for key in bound):
            continue
        tail = tails[i] if tails is not None else None
        if tail is None:
            subject = row_subject(row, subject_col, extra_subject)
            if subject is None:
                continue  # refused by the encryption, which names the column
            try:
                tail = subject_tail(subject, kind)
            except (TypeError, ValueError):
                continue  # an SQL expression, or refused by the encryption
        wanted.add(tail[4:])
    if not wanted:
        return
    shares = getattr(store, "shares", None)
    transaction = conn if shares is not None and shares(conn) else None
    keyring.subject_scope(store).prepare(wanted, transaction=transaction, fresh=fresh)
