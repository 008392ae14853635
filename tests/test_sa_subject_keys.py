"""Per-subject keys at scale: created with their rows, fetched per batch, shredded in batches."""

# ruff: noqa: F811 - the engine fixture is imported from sa_fixtures

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import types
import uuid

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session
from tests.sa_fixtures import engine, support  # noqa: F401 - engine is a fixture

import custdata

from custdata import KeyDestroyedError, UnknownKeyError
from custdata.audit import AuditTrail, MemorySink
from custdata.crypto import Keyring
from custdata.crypto._envelope import subject_bytes
from custdata.crypto._subject import tombstone
from custdata.sqlalchemy import (
    SqlSubjectKeyStore,
    _keyreads,
    _runtime,
    blind_index_eraser,
    customer_data,
    shred_subject,
    subject_key,
)
from custdata.sqlalchemy._binding import blob_binder


#: Values that must never appear in an error, a log line or an audit event.
CANARY = "canary-subject-5f1e"

CHUNK = 500

#: The shred-epoch subquery the read path puts first in a row statement, and
#: the subqueries of the named subject's key record after it (a get).
_EPOCH_COLUMN = re.compile(
    r"\(SELECT custdata_epoch\.key_id\s+FROM \S+ AS custdata_epoch\s+"
    r"WHERE custdata_epoch\.subject = [^)]*\) AS custdata_shred_epoch, "
    r"(\(SELECT custdata_key\..*? AS custdata_wrapping_key_id, )?",
    re.DOTALL,
)
_KEY_COLUMNS = re.compile(r"AS custdata_shred_epoch, \(SELECT custdata_key\.")


def reads_key_store(statement: str, key_table: str) -> bool:
    """Whether ``statement`` is one of the key store's (not a row statement reading the epoch)."""
    return key_table in _EPOCH_COLUMN.sub("", statement)


def reads_epoch(statement: str) -> bool:
    """Whether ``statement`` reads the shred epoch in its first column."""
    return _EPOCH_COLUMN.search(statement) is not None


def reads_named_key(statement: str) -> bool:
    """Whether ``statement`` reads its named subject's key record after the epoch."""
    return _KEY_COLUMNS.search(statement) is not None


MODELS = """
import uuid
from sqlalchemy.orm import DeclarativeBase, Mapped
from custdata.sqlalchemy import customer_data, subject_key

class Base(DeclarativeBase):
    pass

class Client(Base):
    __tablename__ = "sk_clients_{suffix}"
    id: Mapped[uuid.UUID] = subject_key()
    name: Mapped[str] = customer_data(
        "name", purposes=["billing", "support"], key_scope="subject"
    )
    email: Mapped[str] = customer_data(
        "contact.email", purposes=["billing", "support"], key_scope="subject",
        searchable=True,
    )
"""


def _models(suffix: str) -> tuple[type[DeclarativeBase], Any]:
    class Base(DeclarativeBase):
        pass

    class Client(Base):
        __tablename__ = f"sk_clients_{suffix}"
        id: Mapped[uuid.UUID] = subject_key()
        name: Mapped[str] = customer_data(
            "name", purposes=["billing", "support"], key_scope="subject"
        )
        email: Mapped[str] = customer_data(
            "contact.email",
            purposes=["billing", "support"],
            key_scope="subject",
            searchable=True,
        )

    return Base, Client


class World:
    """An engine, a model, a key store in the same database, and a custodian."""

    def __init__(
        self,
        engine: Engine,
        policy: custdata.Policy,
        *,
        store_engine: Engine | None = None,
        audit: Any = None,
    ) -> None:
        self.suffix = uuid.uuid4().hex[:8]
        self.engine = engine
        self.Base, self.Client = _models(self.suffix)
        self.key_table = f"sk_keys_{self.suffix}"
        self.store = SqlSubjectKeyStore(
            store_engine or engine, table_name=self.key_table
        )
        self.store.create_table()
        self.Base.metadata.create_all(engine)
        self.keyring = Keyring.generate()
        self.custodian = custdata.Custodian(
            policy=policy, keyring=self.keyring, subject_keys=self.store, audit=audit
        )
        self.statements: list[str] = []

    @property
    def scope(self) -> Any:
        return self.keyring.subject_scope(self.store)

    def count_key_statements(self, engine: Engine | None = None) -> None:
        """Record every statement that touches the key table."""

        @event.listens_for(engine or self.engine, "before_cursor_execute")
        def _seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if reads_key_store(statement, self.key_table):
                self.statements.append(statement)

    def add(self, n: int) -> list[uuid.UUID]:
        ids = [uuid.uuid4() for _ in range(n)]
        with support(), Session(self.engine) as session:
            session.add_all(
                self.Client(id=i, name=f"{CANARY}-{k}", email=f"c{k}@example.jp")
                for k, i in enumerate(ids)
            )
            session.commit()
        return ids

    def live_keys(self) -> int:
        return sum(not r.destroyed for r in self.store.records())

    def rows(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(select(func.count()).select_from(self.Client)).scalar_one()
            )

    def drop(self) -> None:
        self.Base.metadata.drop_all(self.engine)
        self.store.table.drop(self.store._engine)


@pytest.fixture
def world(engine: Engine, sample_policy: custdata.Policy) -> Iterator[World]:
    w = World(engine, sample_policy)
    with w.custodian.activate():
        yield w
    w.drop()


class TestKeysCommitWithTheirRows:
    def test_commit_keeps_rows_and_keys(self, world: World) -> None:
        """Rows and their subjects' keys commit together; a new session reads them."""
        ids = world.add(40)
        assert (40, 40) == (world.rows(), world.live_keys())
        world.scope.clear()
        with support(), Session(world.engine) as session:
            names = sorted(c.name for c in session.scalars(select(world.Client)))
        assert sorted(f"{CANARY}-{k}" for k in range(40)) == names
        assert len(ids) == len(set(ids))

    def test_column_key_rows_make_no_subject_keys(self, world: World) -> None:
        """A table under column keys, beside a key store, writes no key record.

        Its values are bound to their subject through the associated data
        alone: a subject key made for them would never be used (and would
        cost a key-table row per subject).
        """

        class ColumnKeyed(world.Base):  # type: ignore[name-defined,misc]
            __tablename__ = f"sk_column_{world.suffix}"
            id: Mapped[uuid.UUID] = subject_key()
            name: Mapped[str] = customer_data("name", purposes=["support"])

        ColumnKeyed.__table__.create(world.engine)
        world.count_key_statements()
        ids = [uuid.uuid4() for _ in range(20)]
        with support(), Session(world.engine) as session:
            session.add_all(
                ColumnKeyed(id=i, name=f"{CANARY}-{k}") for k, i in enumerate(ids)
            )
            session.commit()
        with support(), Session(world.engine) as session:
            assert f"{CANARY}-3" == session.get(ColumnKeyed, ids[3]).name
        assert [] == world.statements
        assert 0 == world.live_keys()
        # The per-subject table beside it still gets its keys.
        world.add(2)
        assert 2 == world.live_keys()

    def test_rollback_takes_the_keys_with_the_rows(self, world: World) -> None:
        """A flushed, then rolled-back batch leaves no key in the store or the caches."""
        ids = [uuid.uuid4() for _ in range(25)]
        with support(), Session(world.engine) as session:
            session.add_all(
                world.Client(id=i, name=CANARY, email=f"{k}@x.jp")
                for k, i in enumerate(ids)
            )
            session.flush()
            inside = world.store.lookup(
                [b"u" + i.bytes for i in ids], transaction=session.connection()
            )[0]
            assert 25 == len(inside)
            session.rollback()
        assert (0, 0, 0) == (world.rows(), world.live_keys(), len(world.scope))
        assert {} == world.scope._pending
        # The same subjects get fresh keys later, and read back.
        with support(), Session(world.engine) as session:
            session.add(world.Client(id=ids[0], name=CANARY, email="again@x.jp"))
            session.commit()
        world.scope.clear()
        with support(), Session(world.engine) as session:
            assert CANARY == session.get(world.Client, ids[0]).name
        assert 1 == world.live_keys()

    def test_rows_read_back_inside_their_transaction(self, world: World) -> None:
        """Before commit, the transaction reads its own rows with its own uncommitted keys."""
        with support(), Session(world.engine) as session:
            session.add_all(
                world.Client(id=uuid.uuid4(), name=f"{CANARY}{k}", email=f"{k}@x.jp")
                for k in range(5)
            )
            session.flush()
            session.expunge_all()
            names = sorted(c.name for c in session.scalars(select(world.Client)))
            session.commit()
        assert [f"{CANARY}{k}" for k in range(5)] == names

    def test_savepoint_rollback_takes_only_its_keys(self, world: World) -> None:
        """Keys made inside a rolled-back savepoint go; keys made before it stay usable."""
        kept, dropped = uuid.uuid4(), uuid.uuid4()
        with support(), Session(world.engine) as session:
            session.add(world.Client(id=kept, name="kept", email="k@x.jp"))
            session.flush()
            nested = session.begin_nested()
            session.add(world.Client(id=dropped, name="dropped", email="d@x.jp"))
            session.flush()
            nested.rollback()
            session.expunge_all()
            assert "kept" == session.get(world.Client, kept).name
            session.commit()
        assert (1, 1) == (world.rows(), world.live_keys())
        assert world.store.get(b"u" + dropped.bytes) is None

    def test_core_executemany_commits_or_rolls_back_with_its_keys(
        self, world: World
    ) -> None:
        """A Core insert of many rows adds their keys in its own transaction."""
        table = world.Client.__table__
        rows = [
            {"id": uuid.uuid4(), "name": CANARY, "email": f"{k}@x.jp"}
            for k in range(30)
        ]
        with support():
            with world.engine.connect() as conn:
                conn.execute(table.insert(), rows[:10])
                conn.rollback()
            with world.engine.begin() as conn:
                conn.execute(table.insert(), rows[10:])
        assert (20, 20) == (world.rows(), world.live_keys())


class TestBinaryParameters:
    """Envelopes and key records reach the driver as the BLOBs they are."""

    def test_sqlite3_adapts_none_of_custdatas_binary_values(self, world: World) -> None:
        """Through sqlite3, no envelope, subject id or wrapped key is adapted.

        sqlite3 puts every ``bytes`` parameter through its adaptation protocol
        (about 2,500 CPU instructions each on Python 3.11, more than sealing
        the value); custdata hands them over as ``bytearray``, which binds as
        the same BLOB at once. An adapter registered for ``bytes`` therefore
        never sees (or rewrites) one, and the values stored are BLOBs.
        """
        if world.engine.dialect.driver != "pysqlite":
            pytest.skip("sqlite3's adaptation protocol")
        import sqlite3

        seen: list[int] = []

        def spy(value: bytes) -> bytes:
            seen.append(len(value))
            return value

        key = (bytes, sqlite3.PrepareProtocol)
        assert key not in sqlite3.adapters
        sqlite3.register_adapter(bytes, spy)
        try:
            ids = world.add(30)
            world.scope.clear()
            with support(), Session(world.engine) as session:
                names = sorted(c.name for c in session.scalars(select(world.Client)))
            world.scope.clear()
            with support(), Session(world.engine) as session:
                assert f"{CANARY}-7" == session.get(world.Client, ids[7]).name
        finally:
            del sqlite3.adapters[key]
        assert sorted(f"{CANARY}-{k}" for k in range(30)) == names
        assert [] == seen
        with world.engine.connect() as conn:
            table = world.Client.__tablename__
            kinds = conn.exec_driver_sql(
                f"SELECT DISTINCT typeof(name), typeof(email) FROM {table}"  # noqa: S608 - a test's own table
            ).all()
            columns = "typeof(subject), typeof(wrapped_key), typeof(destroyed_at)"
            keys = conn.exec_driver_sql(
                f"SELECT DISTINCT {columns} FROM {world.key_table}"  # noqa: S608 - a test's own table
            ).all()
        assert [("blob", "blob")] == [tuple(k) for k in kinds]
        assert [("blob", "blob", "null")] == [tuple(k) for k in keys]

    def test_a_chunk_with_a_tombstone_keeps_its_destruction_time(
        self, world: World
    ) -> None:
        """New keys are inserted with a literal NULL destruction time; a tombstone with its own."""
        records, _ = world.keyring._new_subject_records([b"\x01live", b"\x01gone"])
        live, gone = records
        gone = tombstone(
            gone.subject, gone, dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)
        )
        world.store.add_many([live, gone])
        world.store.add_many(world.keyring._new_subject_records([b"\x01more"])[0])
        stored = {r.subject: r for r in world.store.records()}
        assert not stored[b"\x01live"].destroyed
        assert not stored[b"\x01more"].destroyed
        assert stored[b"\x01gone"].destroyed
        assert stored[b"\x01gone"].wrapped_key is None
        assert stored[b"\x01live"].wrapped_key == live.wrapped_key


def test_blob_binder_defers_to_an_application_bytearray_adapter() -> None:
    """Where the application adapts bytearray in sqlite3, custdata binds bytes as before."""

    class Protocol:
        pass

    def dialect(adapters: dict[Any, Any], driver: str = "pysqlite") -> Any:
        return types.SimpleNamespace(
            name="sqlite",
            driver=driver,
            dbapi=types.SimpleNamespace(adapters=adapters, PrepareProtocol=Protocol),
        )

    assert blob_binder(dialect({})) is bytearray
    assert blob_binder(dialect({(bytearray, Protocol): bytes})) is None
    assert blob_binder(dialect({}, driver="pysqlcipher")) is None
    assert (
        blob_binder(types.SimpleNamespace(name="postgresql", driver="psycopg")) is None
    )


def test_blob_binder_keeps_bytes_through_aiosqlite() -> None:
    """SQLAlchemy's aiosqlite adapter shows no adapter registry: bytes, as documented."""
    pytest.importorskip("aiosqlite")
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    try:
        assert blob_binder(engine.sync_engine.dialect) is None
    finally:
        engine.sync_engine.dispose()


class TestBoundedStatements:
    @pytest.mark.parametrize("n", [1, 120, 1200])
    def test_a_flush_of_new_subjects_uses_a_few_key_statements(
        self, world: World, n: int
    ) -> None:
        """N new subjects cost one insert per 1,000 and no lookup, never one per subject."""
        world.count_key_statements()
        world.add(n)
        inserts = [
            s for s in world.statements if s.lstrip().upper().startswith("INSERT")
        ]
        lookups = [
            s for s in world.statements if s.lstrip().upper().startswith("SELECT")
        ]
        assert [] == lookups
        # One multi-row INSERT per 1,000 records.
        assert 1 <= len(inserts) <= math.ceil(n / 1000)
        assert (n, n) == (world.rows(), world.live_keys())

    def test_an_insert_for_subjects_with_keys_keeps_their_keys(
        self, world: World
    ) -> None:
        """Uncached subjects that have keys: the insert keeps them (one read-back, no new key)."""
        ids = world.add(3)
        before = {r.subject: r.key_id for r in world.store.records()}
        with support(), Session(world.engine) as session:
            session.execute(world.Client.__table__.delete())
            session.commit()
        world.scope.clear()
        world.count_key_statements()
        with support(), Session(world.engine) as session:
            session.add_all(
                world.Client(id=i, name=f"again-{k}", email=f"a{k}@x.jp")
                for k, i in enumerate(ids)
            )
            session.commit()
        selects = [
            s for s in world.statements if s.lstrip().upper().startswith("SELECT")
        ]
        assert 1 == len(selects)  # the stored records read back after the insert
        assert before == {r.subject: r.key_id for r in world.store.records()}
        world.scope.clear()
        with support(), Session(world.engine) as session:
            names = {c.name for c in session.scalars(select(world.Client))}
        assert {"again-0", "again-1", "again-2"} == names

    def test_psycopg_binds_each_key_statement_as_a_few_arrays(
        self, world: World
    ) -> None:
        """Through psycopg, key inserts and lookups bind binary arrays, not long lists.

        1,200 new subjects, then a cold read of them: the two INSERTs and
        three lookups each bind at most six parameters (one per column, or
        the subjects as one ``bytea[]``), so psycopg parses each statement
        once and caches it, instead of a 6,000- or 512-placeholder statement
        parsed on every execution.
        """
        if world.engine.dialect.driver != "psycopg":
            pytest.skip("binary arrays are bound through psycopg on PostgreSQL")
        bound: list[tuple[str, int]] = []

        @event.listens_for(world.engine, "before_cursor_execute")
        def _seen(
            conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any
        ) -> None:
            if reads_key_store(statement, world.key_table):
                bound.append((statement.split(maxsplit=1)[0], len(parameters)))

        world.add(1200)
        world.scope.clear()
        with support(), Session(world.engine) as session:
            assert 1200 == len({c.name for c in session.scalars(select(world.Client))})
        assert [("INSERT", 6)] * 2 + [("SELECT", 1)] * math.ceil(1200 / CHUNK) == bound
        assert (1200, 1200) == (world.rows(), world.live_keys())

    def test_a_lookup_makes_no_python_call_per_subject(self, world: World) -> None:
        """A lookup of 500 subjects binds them without a Python call each (in custdata).

        Counted with ``sys.setprofile`` in custdata's own code: the rendered
        statement's parameters are the padded list itself (in order), not a
        generator resumed once per subject.
        """
        subjects = [b"u" + uuid.uuid4().bytes for _ in range(500)]
        world.store.lookup(subjects)  # rendered for 512, the connection made
        calls: list[str] = []

        def profile(frame: Any, event: str, arg: Any) -> None:
            if event == "call" and "/custdata/" in frame.f_code.co_filename:
                calls.append(frame.f_code.co_name)

        sys.setprofile(profile)
        try:
            found, epoch = world.store.lookup(subjects)
        finally:
            sys.setprofile(None)
        assert ({}, 0) == (found, epoch)
        assert len(calls) < 20, sorted(set(calls))


class TestBatchedReads:
    def test_select_all_reads_keys_once_per_chunk(self, world: World) -> None:
        """A cold select of 1,200 subjects does 3 lookups; warm, none (the epoch comes with the rows).

        Under MariaDB's default REPEATABLE READ the row statement's snapshot
        may predate a shred, so the warm select checks the epoch in one
        statement of the store's.
        """
        world.add(1200)
        world.scope.clear()
        world.count_key_statements()
        with support(), Session(world.engine) as session:
            assert 1200 == len({c.name for c in session.scalars(select(world.Client))})
        assert math.ceil(1200 / CHUNK) == len(world.statements)
        world.statements.clear()
        with support(), Session(world.engine) as session:
            clients = session.scalars(select(world.Client)).all()
            assert 1200 == len({c.name for c in clients})
        assert (0 if _reads_latest(world.engine) else 1) == len(world.statements)

    def test_a_batch_larger_than_the_cache_reads_each_key_once(
        self, world: World
    ) -> None:
        """The cache's bound does not make a batch fetch keys twice."""
        world.add(700)
        world.scope.clear()
        world.scope.max_entries = 100
        world.count_key_statements()
        with support(), Session(world.engine) as session:
            clients = session.scalars(select(world.Client)).all()
            assert 700 == len({(c.name, c.email) for c in clients})
        assert 2 == len(world.statements)
        assert 100 == len(world.scope)

    def test_get_takes_the_same_path(self, world: World) -> None:
        """session.get with a cold cache reads the subject's key with its row.

        Under MariaDB's REPEATABLE READ, in one lookup of the store's.
        """
        (cid,) = world.add(1)
        world.scope.clear()
        world.count_key_statements()
        with support(), Session(world.engine) as session:
            client = session.get(world.Client, cid)
            assert (CANARY + "-0", "c0@example.jp") == (client.name, client.email)
        assert (0 if _reads_latest(world.engine) else 1) == len(world.statements)
        assert world.scope.cached(_canonical(cid)) is not None

    def test_a_get_after_another_takes_the_one_row_path(
        self, world: World, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Gets after the first under one context skip the batch bookkeeping.

        The plan's announced grant serves them (one decision each, the row's
        key kept in its sealed row), as for column keys: no
        ``_batch_subjects`` call, no key-store statement, the right values.
        """
        ids = world.add(3)
        world.scope.clear()
        batches: list[int] = []
        batch_subjects = _runtime._batch_subjects

        def counted(rows: Any, plan: Any) -> Any:
            batches.append(len(rows))
            return batch_subjects(rows, plan)

        monkeypatch.setattr(_runtime, "_batch_subjects", counted)
        with support(), Session(world.engine) as session:
            assert CANARY + "-0" == session.get(world.Client, ids[0]).name
            assert [1] == batches
            world.count_key_statements()
            got = [session.get(world.Client, i) for i in ids[1:]]
            assert [CANARY + "-1", CANARY + "-2"] == [c.name for c in got]
            assert ["c1@example.jp", "c2@example.jp"] == [c.email for c in got]
        assert [1] == batches
        assert (0 if _reads_latest(world.engine) else 2) == len(world.statements)

    def test_a_get_finds_its_subject_parameter_once_per_compiled_form(
        self, world: World, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Which parameter names a get's subject is worked out once, not per get."""
        ids = world.add(4)
        world.scope.clear()
        searches: list[int] = []
        subject_parameter = _keyreads._subject_parameter

        def counted(*args: Any) -> Any:
            searches.append(1)
            return subject_parameter(*args)

        monkeypatch.setattr(_keyreads, "_subject_parameter", counted)
        world.count_key_statements()
        for i, cid in enumerate(ids):
            with support(), Session(world.engine) as session:
                assert f"{CANARY}-{i}" == session.get(world.Client, cid).name
        assert len(searches) <= 1
        assert (0 if _reads_latest(world.engine) else 4) == len(world.statements)

    def test_core_select_reads_keys_once_per_chunk(self, world: World) -> None:
        """A Core select of the table takes the same batched path."""
        world.add(600)
        world.scope.clear()
        world.count_key_statements()
        with support(), world.engine.connect() as conn:
            rows = conn.execute(select(world.Client.__table__)).all()
        assert 600 == len(rows)
        assert 2 == len(world.statements)

    def _spy_slices(self, monkeypatch: pytest.MonkeyPatch) -> list[int]:
        """Record how many values each call of ``FieldCipher.open_held_many`` opens."""
        from custdata.crypto._cipher import FieldCipher

        sizes: list[int] = []
        real = FieldCipher.open_held_many

        def spy(self: Any, blobs: Any, tails: Any, by_tail: Any) -> Any:
            sizes.append(len(blobs))
            return real(self, blobs, tails, by_tail)

        monkeypatch.setattr(FieldCipher, "open_held_many", spy)
        return sizes

    @pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
    def test_a_large_core_batch_opens_a_slice_of_rows_at_a_time(
        self, world: World, monkeypatch: pytest.MonkeyPatch, warm: bool
    ) -> None:
        """Every per-subject column of a slice of rows, then the next: values in place.

        A batch of more than ``ROW_SLICE`` rows has its per-subject-key
        columns opened together a slice at a time (a row's values meet its
        subject's key while it is in the processor's cache), with the keys
        fetched once for the whole batch.
        """
        n = 2 * _runtime.ROW_SLICE + 44
        ids = world.add(n)
        names = {i: f"{CANARY}-{k}" for k, i in enumerate(ids)}
        world.scope.clear()
        if warm:
            with support(), world.engine.connect() as conn:
                conn.execute(select(world.Client.__table__)).all()
        sizes = self._spy_slices(monkeypatch)
        world.count_key_statements()
        with support(), world.engine.connect() as conn:
            rows = conn.execute(select(world.Client.__table__)).all()
        assert {(i, names[i], f"c{k}@example.jp") for k, i in enumerate(ids)} == {
            (r.id, r.name, r.email) for r in rows
        }
        # Two columns, three slices each (128 + 128 + 44 rows).
        assert [128, 128, 128, 128, 44, 44] == sizes
        # The batch's keys in one lookup (cold); warm, no key is looked up:
        # the shred epoch is read with the rows where the store reads
        # committed rows on their connection, else alone.
        if not warm:
            assert 1 == len(world.statements)
        else:
            assert (0 if _reads_latest(world.engine) else 1) == len(world.statements)
            # (That one reads the epoch's row alone: one id in its list.)
            assert not [s for s in world.statements if re.search(r"%\(s1\)s|\?,", s)]

    def test_text_storage_and_a_column_key_column_in_a_sliced_batch(
        self, world: World
    ) -> None:
        """Base64 envelopes, NULLs and a column-key column beside per-subject ones: in place."""

        class Base(DeclarativeBase):
            pass

        class Note(Base):
            __tablename__ = f"sk_notes_{world.suffix}"
            id: Mapped[uuid.UUID] = subject_key()
            name: Mapped[str] = customer_data(
                "name", purposes=["support"], key_scope="subject", storage="text"
            )
            email: Mapped[str] = customer_data(
                "contact.email", purposes=["support"], key_scope="subject"
            )
            phone: Mapped[str] = customer_data("contact.phone", purposes=["support"])
            city: Mapped[str | None] = customer_data(
                "contact.address", purposes=["support"], key_scope="subject"
            )

        Base.metadata.create_all(world.engine)
        try:
            n = _runtime.ROW_SLICE + 70
            ids = [uuid.uuid4() for _ in range(n)]
            with support(), Session(world.engine) as session:
                session.add_all(
                    Note(
                        id=i,
                        name=f"{CANARY}-{k}",
                        email=f"n{k}@example.jp",
                        phone=f"0{k}",
                        city=None if k % 3 else f"city-{k}",
                    )
                    for k, i in enumerate(ids)
                )
                session.commit()
            world.scope.clear()
            with support(), world.engine.connect() as conn:
                rows = conn.execute(select(Note.__table__)).all()
            expected = {
                (
                    i,
                    f"{CANARY}-{k}",
                    f"n{k}@example.jp",
                    f"0{k}",
                    None if k % 3 else f"city-{k}",
                )
                for k, i in enumerate(ids)
            }
            assert expected == {(r.id, r.name, r.email, r.phone, r.city) for r in rows}
        finally:
            Base.metadata.drop_all(world.engine)

    def test_a_batch_within_one_slice_opens_each_column_whole(
        self, world: World, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Up to ``ROW_SLICE`` rows: one call per column, as before."""
        world.add(_runtime.ROW_SLICE)
        world.scope.clear()
        sizes = self._spy_slices(monkeypatch)
        with support(), world.engine.connect() as conn:
            rows = conn.execute(select(world.Client.__table__)).all()
        assert _runtime.ROW_SLICE == len(rows)
        assert [_runtime.ROW_SLICE, _runtime.ROW_SLICE] == sizes

    def test_a_moved_value_in_a_later_slice_fails_the_batch(self, world: World) -> None:
        """A value copied to another subject's row past the first slice: DecryptionError."""
        from sqlalchemy import LargeBinary, column, table, text, update

        n = 2 * _runtime.ROW_SLICE + 44
        world.add(n)
        t = world.Client.__table__.name
        with world.engine.begin() as conn:
            stored = conn.execute(text(f"SELECT id, name FROM {t}")).all()  # noqa: S608
            (_, donor), (victim, _) = stored[-2], stored[-1]
            raw = table(t, column("id"), column("name", LargeBinary))
            conn.execute(update(raw).where(raw.c.id == victim).values(name=donor))
        world.scope.clear()
        with support(), world.engine.connect() as conn:
            with pytest.raises(custdata.DecryptionError) as info:
                conn.execute(select(world.Client.__table__)).all()
        assert CANARY not in str(info.value)
        assert CANARY not in repr(info.value)


class TestShreddedKeysAreNeverServed:
    def test_across_two_sessions(self, world: World) -> None:
        """A key cached by one session's read is not served to any read after shred."""
        alice, bob = world.add(2)
        with support(), Session(world.engine) as first:
            assert CANARY + "-0" == first.get(world.Client, alice).name
            with custdata.acting_as("dpo-1", role="support_agent"):
                world.custodian.shred(alice)
            with Session(world.engine) as second:
                shredded = second.get(world.Client, alice)  # loaded sealed
                with pytest.raises(KeyDestroyedError) as info:
                    _ = shredded.name
                assert CANARY not in str(info.value)
                assert CANARY + "-1" == second.get(world.Client, bob).name
            first.expunge_all()
            loaded = first.scalars(select(world.Client)).all()
            with pytest.raises(KeyDestroyedError):
                _ = [client.name for client in loaded]
        with support(), Session(world.engine) as session:
            session.add(world.Client(id=alice, name="again", email="a@x.jp"))
            with pytest.raises(KeyDestroyedError):
                session.flush()

    def test_across_two_processes(
        self, world: World, db_url: str, tmp_path: Path
    ) -> None:
        """Another process's shred reaches this process's warm cache at the next batch."""
        alice, bob = world.add(2)
        with support(), Session(world.engine) as session:
            assert 2 == len(session.scalars(select(world.Client)).all())
        assert 2 == len(world.scope)
        world.keyring.save(tmp_path / "keyring.json")
        script = SHREDDER.format(
            root=str(Path(__file__).resolve().parent.parent),
            url=db_url,
            keyring=str(tmp_path / "keyring.json"),
            table=world.key_table,
            subject=str(alice),
        )
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert (0, "1\n") == (done.returncode, done.stdout), done.stderr
        with support(), Session(world.engine) as session:
            shredded = session.get(world.Client, alice)  # loaded sealed
            with pytest.raises(KeyDestroyedError):
                _ = shredded.name
            assert CANARY + "-1" == session.get(world.Client, bob).name
            session.expunge_all()
            loaded = session.scalars(select(world.Client)).all()
            with pytest.raises(KeyDestroyedError):
                _ = [client.name for client in loaded]


SHREDDER = """
import sys
sys.path.insert(0, {root!r})
import uuid
from sqlalchemy import create_engine
import custdata
from custdata.crypto import Keyring
from custdata.sqlalchemy import SqlSubjectKeyStore

engine = create_engine({url!r})
store = SqlSubjectKeyStore(engine, table_name={table!r})
keyring = Keyring.load({keyring!r})
print(keyring.shred_subjects([uuid.UUID({subject!r})], store))
engine.dispose()
"""


WRITER = """
import os, sys, time, uuid
sys.path.insert(0, {models_dir!r})
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
import custdata
from custdata.crypto import Keyring
from custdata.sqlalchemy import SqlSubjectKeyStore
import {module} as m

engine = create_engine({url!r})
store_engine = create_engine({store_url!r})
store = SqlSubjectKeyStore(store_engine, table_name={table!r})
policy = custdata.Policy.from_toml({policy!r})
custodian = custdata.Custodian(
    policy=policy, keyring=Keyring.load({keyring!r}), subject_keys=store
)
custodian.make_current()
with custdata.acting_as("agent-1", role="support_agent"), custdata.purpose("support"):
    session = Session(engine)
    session.add_all(
        m.Client(id=uuid.uuid4(), name="x", email=f"{{k}}@x.jp") for k in range(50)
    )
    session.flush()
    print("flushed", flush=True)
    time.sleep(120)
"""


class TestCrashWindow:
    def _kill_after_flush(
        self, tmp_path: Path, url: str, store_url: str, world: World
    ) -> None:
        models_dir = tmp_path / "mods"
        models_dir.mkdir()
        module = f"sk_models_{world.suffix}"
        (models_dir / f"{module}.py").write_text(MODELS.format(suffix=world.suffix))
        world.keyring.save(tmp_path / "keyring.json")
        script = WRITER.format(
            models_dir=str(models_dir),
            module=module,
            url=url,
            store_url=store_url,
            table=world.key_table,
            policy=str(
                Path(__file__).resolve().parent.parent / "examples/custdata.toml"
            ),
            keyring=str(tmp_path / "keyring.json"),
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert "flushed\n" == line, proc.stderr.read() if proc.stderr else ""
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            if proc.stdout is not None:
                proc.stdout.close()
            if proc.stderr is not None:
                proc.stderr.close()

    def test_same_database_kill_leaves_neither_rows_nor_keys(
        self, world: World, db_url: str, tmp_path: Path
    ) -> None:
        """kill -9 after the flush, before commit: no row and no key survive."""
        self._kill_after_flush(tmp_path, db_url, db_url, world)
        assert (0, 0) == (world.rows(), world.live_keys())

    def test_separate_store_kill_leaves_keys_without_rows(
        self, tmp_path: Path, sample_policy: custdata.Policy
    ) -> None:
        """With the store in another database, the crash window leaves orphan keys only."""
        app = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
        keys = create_engine(f"sqlite:///{tmp_path / 'keys.db'}")
        try:
            world = World(app, sample_policy, store_engine=keys)
            with app.connect() as conn:
                assert not world.store.shares(conn)
            self._kill_after_flush(
                tmp_path,
                f"sqlite:///{tmp_path / 'app.db'}",
                f"sqlite:///{tmp_path / 'keys.db'}",
                world,
            )
            assert (0, 50) == (world.rows(), world.live_keys())
        finally:
            app.dispose()
            keys.dispose()


class TestShredAtScale:
    def test_shred_many_is_one_batch_with_its_events(
        self, engine: Engine, db_url: str, sample_policy: custdata.Policy
    ) -> None:
        """10,000 subjects (2,000 on servers) are shredded in a few statements per 500."""
        n = 10_000 if db_url.startswith("sqlite") else 2_000
        sink = MemorySink()
        keyring = Keyring.generate()
        trail = AuditTrail(keyring, sinks=[sink], checkpoint_interval=None)
        world = World(engine, sample_policy, audit=trail)
        world.keyring = keyring
        world.custodian = custdata.Custodian(
            policy=sample_policy, keyring=keyring, subject_keys=world.store, audit=trail
        )
        try:
            with world.custodian.activate():
                ids = world.add(n)
                world.count_key_statements()
                with custdata.acting_as("dpo-1", role="support_agent"):
                    cleared = world.custodian.shred_many(
                        ids,
                        erasers=[
                            blind_index_eraser(engine, metadata=world.Base.metadata)
                        ],
                    )
                # Per 500 subjects: one SELECT, one UPDATE (none are absent);
                # then at most four for the shred epoch.
                assert len(world.statements) <= 2 * math.ceil(n / CHUNK) + 4
                assert n == cleared
                assert 0 == world.live_keys()
                shreds = [r for r in sink.records if b'"key.shred"' in r.body]
                assert n == len(shreds)
                assert not any(
                    str(i).encode() in r.body for r in shreds for i in ids[:5]
                )
                with (
                    support(),
                    Session(engine) as session,
                    pytest.raises(KeyDestroyedError),
                ):
                    _ = session.get(world.Client, ids[-1]).name
        finally:
            trail.close()
            world.drop()

    def test_shredding_a_subject_without_a_key_leaves_a_tombstone(
        self, world: World
    ) -> None:
        """A subject shredded before it had a key can never get one."""
        never = uuid.uuid4()
        with custdata.acting_as("dpo-1", role="support_agent"):
            world.custodian.shred_many([never, never])
        record = world.store.get(b"u" + never.bytes)
        assert record is not None
        assert record.destroyed
        with support(), Session(world.engine) as session:
            session.add(world.Client(id=never, name="x", email="x@x.jp"))
            with pytest.raises(KeyDestroyedError):
                session.flush()

    def test_epoch_row_is_not_a_record(self, world: World) -> None:
        """The store's shred epoch never shows up as a subject's record."""
        ids = world.add(2)
        with custdata.acting_as("dpo-1", role="support_agent"):
            world.custodian.shred(ids[0])
        assert 1 == world.store.shred_epoch()
        assert {b"u" + i.bytes for i in ids} == {
            r.subject for r in world.store.records()
        }
        with pytest.raises(UnknownKeyError):
            world.scope.read_key(b"u" + uuid.uuid4().bytes, 1)


class TestAsync:
    def test_async_session_writes_keys_in_its_transaction(
        self, tmp_path: Path, sample_policy: custdata.Policy
    ) -> None:
        """Through aiosqlite, keys go into the async session's transaction (same file)."""
        import asyncio

        from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

        sync = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
        world = World(sync, sample_policy)

        async def scenario() -> int:
            engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
            try:
                async with AsyncSession(engine) as session:
                    session.add_all(
                        world.Client(id=uuid.uuid4(), name=CANARY, email=f"{k}@x.jp")
                        for k in range(30)
                    )
                    await session.flush()
                    await session.rollback()
                async with AsyncSession(engine) as session:
                    session.add_all(
                        world.Client(id=uuid.uuid4(), name=CANARY, email=f"{k}@x.jp")
                        for k in range(20)
                    )
                    await session.commit()
                world.scope.clear()
                async with AsyncSession(engine) as session:
                    got = (await session.scalars(select(world.Client))).all()
                    return sum(c.name == CANARY for c in got)
            finally:
                await engine.dispose()

        try:
            with world.custodian.activate(), support():
                assert 20 == asyncio.run(scenario())
            assert (20, 20) == (world.rows(), world.live_keys())
        finally:
            world.drop()
            sync.dispose()


class TestRacingWriters:
    def test_two_transactions_creating_one_subject_share_its_key(
        self, world: World, db_url: str
    ) -> None:
        """The second writer waits for the first's key and uses it, never a key of its own."""
        if db_url.startswith("sqlite"):
            pytest.skip("SQLite has one writer at a time: there is no race")
        import threading

        subject = uuid.uuid4()
        table = world.Client.__table__
        errors: list[BaseException] = []
        started = threading.Event()

        def second() -> None:
            try:
                with world.custodian.activate(), support():
                    started.set()
                    with world.engine.begin() as conn:
                        conn.execute(
                            table.insert(),
                            [{"id": uuid.uuid4(), "name": "second", "email": "s@x.jp"}],
                        )
                        # The same subject's key, from another row of another table
                        # would race the same way; here: an UPDATE of the subject.
                        conn.execute(
                            table.update()
                            .where(table.c.id == subject)
                            .values(name="second wrote")
                        )
            except BaseException as exc:
                errors.append(exc)

        with support(), world.engine.connect() as conn:
            conn.execute(
                table.insert(), [{"id": subject, "name": "first", "email": "f@x.jp"}]
            )
            worker = threading.Thread(target=second)
            worker.start()
            started.wait(10)
            worker.join(
                0.5
            )  # blocked on the uncommitted key (or done with its own rows)
            conn.commit()
        worker.join(60)
        assert [] == errors
        world.scope.clear()
        with support(), Session(world.engine) as session:
            assert "second wrote" == session.get(world.Client, subject).name
        records = [
            r for r in world.store.records() if r.subject == b"u" + subject.bytes
        ]
        assert 1 == len(records)


class Trace:
    """Every statement (with the ``Connection`` that ran it) and pool checkout."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.statements: list[tuple[Any, str]] = []
        self.checkouts = 0
        event.listen(world.engine, "before_cursor_execute", self._statement)
        event.listen(world.engine, "checkout", self._checkout)

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append((conn, statement))

    def _checkout(self, *args: Any) -> None:
        self.checkouts += 1

    def clear(self) -> None:
        self.statements.clear()
        self.checkouts = 0

    def key_lookups(self) -> list[Any]:
        """The connections the key table was read on."""
        return [
            c
            for c, sql in self.statements
            if reads_key_store(sql, self.world.key_table)
        ]

    def row_queries(self) -> list[Any]:
        """The connections the client table was read on."""
        table = self.world.Client.__tablename__
        return [
            c
            for c, sql in self.statements
            if table in sql and not reads_key_store(sql, self.world.key_table)
        ]

    def close(self) -> None:
        event.remove(self.world.engine, "before_cursor_execute", self._statement)
        event.remove(self.world.engine, "checkout", self._checkout)


def _reads_latest(engine: Engine) -> bool:
    """Whether the backend's default isolation lets a read see later commits."""
    return engine.dialect.name in {"sqlite", "postgresql"}


class TestKeysReadOnTheBatchConnection:
    """A fetched batch's keys are read on its own connection where that is safe."""

    def test_a_cold_get_checks_out_one_connection(self, world: World) -> None:
        """A cold get reads its subject's key in its own statement, on one connection."""
        (cid,) = world.add(1)
        world.scope.clear()
        trace = Trace(world)
        try:
            with support(), Session(world.engine) as session:
                client = session.get(world.Client, cid)
                assert (CANARY + "-0", "c0@example.jp") == (client.name, client.email)
            (row_conn,) = trace.row_queries()
            if _reads_latest(world.engine):
                assert [] == trace.key_lookups()
                ((_, row_sql),) = trace.statements
                assert reads_named_key(row_sql)
                assert 1 == trace.checkouts
            else:
                # MariaDB's REPEATABLE READ: a snapshot may predate a shred.
                (key_conn,) = trace.key_lookups()
                assert key_conn is not row_conn
                assert 2 == trace.checkouts
        finally:
            trace.close()
        assert world.scope.cached(_canonical(cid)) is not None

    def test_a_warm_get_reads_the_epoch_with_its_row(self, world: World) -> None:
        """Warm, a get is one statement: its row and the shred epoch, read together.

        Under MariaDB's default REPEATABLE READ the epoch is checked in a
        statement of the store's, on its own connection.
        """
        _, other = world.add(2)
        with support(), Session(world.engine) as session:
            assert 2 == len({c.name for c in session.scalars(select(world.Client))})
        trace = Trace(world)
        try:
            with support(), Session(world.engine) as session:
                assert CANARY + "-1" == session.get(world.Client, other).name
            ((row_conn, row_sql),) = [
                (c, sql)
                for c, sql in trace.statements
                if world.Client.__tablename__ in sql
            ]
            if _reads_latest(world.engine):
                assert reads_epoch(row_sql)
                assert [] == trace.key_lookups()
                assert 1 == trace.checkouts
            else:
                assert not reads_epoch(row_sql)
                (key_conn,) = trace.key_lookups()
                assert key_conn is not row_conn
                assert 2 == trace.checkouts
        finally:
            trace.close()

    def test_a_cold_select_reads_every_chunk_on_its_connection(
        self, world: World
    ) -> None:
        """An ORM select-all of 1,200 subjects: 3 lookups, all on its connection."""
        world.add(1200)
        world.scope.clear()
        trace = Trace(world)
        try:
            with support(), Session(world.engine) as session:
                assert 1200 == len(
                    {c.name for c in session.scalars(select(world.Client))}
                )
            lookups = trace.key_lookups()
            assert math.ceil(1200 / CHUNK) == len(lookups)
            (row_conn,) = trace.row_queries()
            assert all(c is row_conn for c in lookups) == _reads_latest(world.engine)
        finally:
            trace.close()
        assert 1200 == len(world.scope)

    def test_a_transaction_that_added_keys_reads_on_the_stores_connection(
        self, world: World
    ) -> None:
        """Keys a transaction added are uncommitted: its reads do not look keys up in it."""
        (old,) = world.add(1)
        world.scope.clear()
        new = uuid.uuid4()
        trace = Trace(world)
        try:
            with support(), Session(world.engine) as session:
                session.add(world.Client(id=new, name="fresh", email="f@x.jp"))
                session.flush()
                trace.clear()
                assert CANARY + "-0" == session.get(world.Client, old).name
                (row_conn,) = trace.row_queries()
                (key_conn,) = trace.key_lookups()
                assert key_conn is not row_conn
                assert not world.store.reads_committed_on(row_conn)
                session.rollback()
        finally:
            trace.close()
        assert world.scope.cached(_canonical(new)) is None
        assert world.scope.cached(_canonical(old)) is not None

    def test_keys_added_directly_in_a_transaction_keep_it_off(
        self, world: World
    ) -> None:
        """add_many in an application transaction marks its connection as not committed-only."""
        record = world.keyring._new_subject_records([b"\x01direct"])[0][0]
        with world.engine.connect() as conn:
            assert world.store.reads_committed_on(conn) == _reads_latest(world.engine)
            world.store.add_many([record], transaction=conn)
            assert not world.store.reads_committed_on(conn)
            conn.rollback()
            if world.engine.dialect.name != "sqlite":
                assert world.store.reads_committed_on(conn) == _reads_latest(
                    world.engine
                )
        assert world.store.get(b"\x01direct") is None

    def test_a_snapshot_isolation_level_keeps_the_stores_connection(
        self, world: World
    ) -> None:
        """Under REPEATABLE READ a shred committed after the snapshot is still seen."""
        if world.engine.dialect.name == "sqlite":
            pytest.skip("SQLite has no REPEATABLE READ level")
        alice, bob = world.add(2)
        snapshot = world.engine.execution_options(isolation_level="REPEATABLE READ")
        with support(), Session(snapshot) as first:
            assert CANARY + "-0" == first.get(world.Client, alice).name
            conn = first.connection()
            assert not world.store.reads_committed_on(conn)
            with custdata.acting_as("dpo-1", role="support_agent"):
                world.custodian.shred(alice)
            first.expunge_all()
            loaded = {c.id: c for c in first.scalars(select(world.Client))}
            with pytest.raises(KeyDestroyedError):
                _ = loaded[alice].name
            assert CANARY + "-1" == loaded[bob].name

    def test_a_streamed_result_reads_keys_on_the_stores_connection(
        self, world: World
    ) -> None:
        """yield_per streams rows: no other statement runs on its connection meanwhile."""
        world.add(30)
        world.scope.clear()
        trace = Trace(world)
        try:
            with support(), Session(world.engine) as session:
                names = [
                    c.name
                    for c in session.scalars(
                        select(world.Client).execution_options(yield_per=10)
                    )
                ]
                assert 30 == len(names)
            (row_conn,) = trace.row_queries()
            assert trace.key_lookups()
            assert all(c is not row_conn for c in trace.key_lookups())
        finally:
            trace.close()


def _canonical(subject: uuid.UUID) -> bytes:
    """The canonical id of a UUID subject (as the key store keys it)."""
    return subject_bytes(subject)


class Trailed:
    """A :class:`World` whose custodian records into a real audit trail."""

    def __init__(self, engine: Engine, policy: custdata.Policy) -> None:
        self.sink = MemorySink()
        keyring = Keyring.generate()
        self.trail = AuditTrail(keyring, sinks=[self.sink], checkpoint_interval=None)
        self.world = World(engine, policy, audit=self.trail)
        self.world.keyring = keyring
        self.world.custodian = custdata.Custodian(
            policy=policy,
            keyring=keyring,
            subject_keys=self.world.store,
            audit=self.trail,
        )
        self.mark = 0

    def events(self) -> list[dict[str, Any]]:
        """The events recorded since the last call (the chain's own left out)."""
        bodies = [json.loads(r.body) for r in self.sink.records[self.mark :]]
        self.mark = len(self.sink.records)
        return [b for b in bodies if not b["action"].startswith("audit.")]

    def ref(self, subject: uuid.UUID) -> str:
        return self.trail.subject_ref(str(subject))


def _named(event: dict[str, Any]) -> set[str]:
    return set(event.get("subjects") or ()) | (
        {event["subject_ref"]} if event.get("subject_ref") else set()
    )


@pytest.fixture
def trailed(engine: Engine, sample_policy: custdata.Policy) -> Iterator[Trailed]:
    t = Trailed(engine, sample_policy)
    try:
        with t.world.custodian.activate():
            yield t
    finally:
        t.trail.close()
        t.world.drop()


class TestShreddedValuesAreNeverRecordedAsRevealed:
    """A row left behind by ``shred_subject``: refused and recorded so, never "revealed"."""

    @pytest.fixture
    def left(self, trailed: Trailed) -> tuple[uuid.UUID, uuid.UUID]:
        """Two subjects; the first crypto-shredded, its row left in the table."""
        shredded, live = trailed.world.add(2)
        self._shred_now(trailed, shredded)
        trailed.events()
        return shredded, live

    def _refused_only(self, trailed: Trailed, shredded: uuid.UUID) -> None:
        """The events since: a key_destroyed denial of the shredded subject, no reveal."""
        events = [
            e
            for e in trailed.events()
            if e["action"] != "purpose.check" or e.get("reason")
        ]
        refusals = [e for e in events if e.get("reason") == "key_destroyed"]
        assert 1 == len(refusals)
        assert ("purpose.check", "denied") == (
            refusals[0]["action"],
            refusals[0]["outcome"],
        )
        assert {trailed.ref(shredded)} == _named(refusals[0])
        assert not [e for e in events if e["action"] == "field.reveal"]

    def test_orm_get(self, trailed: Trailed, left: tuple[uuid.UUID, uuid.UUID]) -> None:
        """``session.get`` of the shredded row: refused, recorded as refused."""
        shredded, _ = left
        with support(), Session(trailed.world.engine) as session:
            client = session.get(trailed.world.Client, shredded)
            with pytest.raises(KeyDestroyedError) as info:
                _ = client.name
        assert CANARY not in str(info.value)
        self._refused_only(trailed, shredded)

    def test_orm_get_after_another_get(
        self,
        trailed: Trailed,
        left: tuple[uuid.UUID, uuid.UUID],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A get after another under the same context (the one-row path): refused too.

        The second get is decided without the batch bookkeeping (no
        ``_batch_subjects``), and its shredded subject is still refused,
        recorded as refused, never revealed.
        """
        shredded, live = left
        batches: list[int] = []
        batch_subjects = _runtime._batch_subjects

        def counted(rows: Any, plan: Any) -> Any:
            batches.append(len(rows))
            return batch_subjects(rows, plan)

        monkeypatch.setattr(_runtime, "_batch_subjects", counted)
        with support(), Session(trailed.world.engine) as session:
            assert CANARY + "-1" == session.get(trailed.world.Client, live).name
            trailed.events()
            batches.clear()
            client = session.get(trailed.world.Client, shredded)
            with pytest.raises(KeyDestroyedError) as info:
                _ = client.name
        assert [] == batches
        assert CANARY not in str(info.value)
        self._refused_only(trailed, shredded)

    def _shred_now(self, trailed: Trailed, subject: uuid.UUID) -> None:
        """Crypto-shred *subject* in a session of its own, committed."""
        with (
            custdata.acting_as("dpo-1", role="support_agent"),
            Session(trailed.world.engine) as session,
        ):
            shred_subject(
                trailed.world.custodian,
                subject,
                session_or_engine=session,
                metadata=trailed.world.Base.metadata,
            )
            session.commit()

    @pytest.mark.parametrize("load", ["select", "get"])
    def test_an_object_loaded_before_the_shred_is_refused_after_it(
        self, trailed: Trailed, load: str
    ) -> None:
        """Loaded (sealed, its batch's keys held) before a shred, read after it: refused.

        The keys a loaded object holds are never used once the shred has
        withdrawn them in this process: the read is refused and recorded as
        refused, like a read of a row fetched after the shred.
        """
        shredded, live = trailed.world.add(2)
        with support(), Session(trailed.world.engine) as session:
            if load == "select":
                clients = {
                    c.id: c for c in session.scalars(select(trailed.world.Client)).all()
                }
            else:
                clients = {
                    cid: session.get(trailed.world.Client, cid)
                    for cid in (shredded, live)
                }
            self._shred_now(trailed, shredded)
            trailed.events()
            with pytest.raises(KeyDestroyedError) as info:
                _ = clients[shredded].name
            assert CANARY not in str(info.value)
            assert CANARY + "-1" == clients[live].name
        events = trailed.events()
        refusals = [e for e in events if e.get("reason") == "key_destroyed"]
        assert [({trailed.ref(shredded)}, "denied")] == [
            (_named(e), e["outcome"]) for e in refusals
        ]
        for recorded in events:
            if recorded["action"] == "field.reveal":
                assert trailed.ref(shredded) not in _named(recorded)

    def test_orm_select_releases_the_others(
        self, trailed: Trailed, left: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """A batch with a shredded row: the others revealed (and recorded), it refused."""
        shredded, live = left
        with support(), Session(trailed.world.engine) as session:
            clients = {
                c.id: c for c in session.scalars(select(trailed.world.Client)).all()
            }
            assert CANARY + "-1" == clients[live].name
            with pytest.raises(KeyDestroyedError):
                _ = clients[shredded].email
        events = trailed.events()
        reveals = [e for e in events if e["action"] == "field.reveal"]
        refusals = [e for e in events if e.get("reason") == "key_destroyed"]
        assert [{trailed.ref(live)}] == [_named(e) for e in reveals]
        assert [2] == [e["count"] for e in reveals]
        assert [({trailed.ref(shredded)}, "denied", 2)] == [
            (_named(e), e["outcome"], e["count"]) for e in refusals
        ]
        # The refusal is recorded before the batch's reveal.
        assert events.index(refusals[0]) < events.index(reveals[0])

    def test_core_select_refuses_the_batch(
        self, trailed: Trailed, left: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """A Core result hands over whole batches: none is released, none recorded as revealed."""
        shredded, _ = left
        table = trailed.world.Client.__table__
        with support(), trailed.world.engine.connect() as conn:
            with pytest.raises(KeyDestroyedError) as info:
                conn.execute(select(table)).all()
            assert CANARY not in str(info.value)
        self._refused_only(trailed, shredded)

    def test_core_get_by_id(
        self, trailed: Trailed, left: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """One row by its id (the one-row path): refused, recorded as refused."""
        shredded, live = left
        table = trailed.world.Client.__table__
        with support(), trailed.world.engine.connect() as conn:
            with pytest.raises(KeyDestroyedError):
                conn.execute(select(table).where(table.c.id == shredded)).all()
            self._refused_only(trailed, shredded)
            row = conn.execute(select(table).where(table.c.id == live)).one()
        assert CANARY + "-1" == row.name
        assert ["field.reveal"] == [
            e["action"] for e in trailed.events() if e["action"] != "purpose.check"
        ]

    def test_a_read_under_another_context(
        self, trailed: Trailed, left: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """A value read under a context other than its load's decides then: refused."""
        shredded, _ = left
        with support(), Session(trailed.world.engine) as session:
            client = session.get(trailed.world.Client, shredded)
        trailed.events()
        with (
            custdata.acting_as("clerk-1", role="billing_clerk"),
            custdata.purpose("billing"),
            pytest.raises(KeyDestroyedError),
        ):
            _ = client.name
        self._refused_only(trailed, shredded)


def _shred_elsewhere(
    world: World, db_url: str, tmp_path: Path, subject: object
) -> None:
    """Shred ``subject`` from another process (its own keyring, store and cache)."""
    world.keyring.save(tmp_path / "keyring.json")
    script = SHREDDER.format(
        root=str(Path(__file__).resolve().parent.parent),
        url=db_url,
        keyring=str(tmp_path / "keyring.json"),
        table=world.key_table,
        subject=str(subject),
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (0, "1\n") == (done.returncode, done.stdout), done.stderr


class TestEpochReadWithTheRows:
    """The shred epoch comes in the row statement's first column; nobody else sees it."""

    def test_a_warm_core_select_runs_no_key_statement(self, world: World) -> None:
        """Warm, a Core select-all is its one statement; its rows keep the table's columns."""
        world.add(30)
        table = world.Client.__table__
        with support(), world.engine.connect() as conn:
            assert 30 == len(conn.execute(select(table)).all())
        trace = Trace(world)
        try:
            with support(), world.engine.connect() as conn:
                result = conn.execute(select(table))
                assert [c.name for c in table.columns] == list(result.keys())
                rows = result.all()
            assert 30 == len(rows)
            assert {CANARY + f"-{k}" for k in range(30)} == {r.name for r in rows}
            assert all(len(r) == len(table.columns) for r in rows)
            (row_sql,) = [sql for _, sql in trace.statements if table.name in sql]
            if _reads_latest(world.engine):
                assert reads_epoch(row_sql)
                assert [] == trace.key_lookups()
            else:
                # MariaDB's REPEATABLE READ: the epoch is read by the store.
                assert not reads_epoch(row_sql)
                assert 1 == len(trace.key_lookups())
        finally:
            trace.close()

    def test_a_cold_get_reads_its_key_once_and_the_epoch_with_its_row(
        self, world: World
    ) -> None:
        """Cold, a get's statement reads its row, the epoch and its key; warm, row and epoch."""
        (cid,) = world.add(1)
        world.scope.clear()
        trace = Trace(world)
        try:
            for _cold in (True, False):
                trace.clear()
                with support(), Session(world.engine) as session:
                    assert CANARY + "-0" == session.get(world.Client, cid).name
                if _reads_latest(world.engine):
                    assert [] == trace.key_lookups()
                    ((_, row_sql),) = trace.statements
                    assert reads_epoch(row_sql)
                    # Cold, its key record too; warm, the cached key is
                    # checked against the epoch alone.
                    assert _cold is reads_named_key(row_sql)
                else:
                    assert 1 == len(trace.key_lookups())
            assert _cold is False
        finally:
            trace.close()

    def test_a_key_gone_from_the_cache_after_the_statement_is_read_from_the_store(
        self, world: World, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The cache hint is only a hint: a key evicted before the row opens is looked up."""
        (cid,) = world.add(1)
        world.scope.clear()
        # The statement is built as for a cached key, but the cache is empty
        # when the row is opened (as if evicted in between).
        monkeypatch.setattr(type(world.scope), "caches", lambda self, subject: True)
        trace = Trace(world)
        try:
            with support(), Session(world.engine) as session:
                assert CANARY + "-0" == session.get(world.Client, cid).name
            # No key record in the row's statement; the store reads it.
            assert not any(reads_named_key(sql) for _, sql in trace.statements)
            assert 1 == len(trace.key_lookups())
        finally:
            trace.close()

    @pytest.mark.parametrize(
        "shape", ["distinct", "union", "where", "columns", "scalar subquery"]
    )
    def test_other_statement_shapes_read_their_values(
        self, world: World, shape: str
    ) -> None:
        """Shapes that take the epoch column, or fall back to the lookup, read the same values."""
        ids = world.add(5)
        t = world.Client.__table__
        statement: Any = {
            "distinct": select(t.c.id, t.c.name).distinct(),
            "union": select(t.c.id, t.c.name)
            .where(t.c.id == ids[0])
            .union_all(select(t.c.id, t.c.name).where(t.c.id != ids[0])),
            "where": select(t.c.id, t.c.name).where(t.c.id.in_(ids)),
            "columns": select(t.c.name, t.c.id).order_by(t.c.id),
            "scalar subquery": select(t.c.id, t.c.name).where(
                t.c.id == select(t.c.id).where(t.c.id == ids[2]).scalar_subquery()
            ),
        }[shape]
        expected = 1 if shape == "scalar subquery" else 5
        for _ in range(2):  # cold, then warm
            with support(), world.engine.connect() as conn:
                rows = conn.execute(statement).all()
            assert expected == len(rows)
            assert all(r.name.startswith(CANARY) for r in rows)
            assert all(len(r) == 2 for r in rows)

    def test_loaded_objects_after_a_cleared_cache_read_their_batch_once(
        self, world: World
    ) -> None:
        """A withdrawal that destroys nothing: loaded objects still read, one lookup per batch."""
        world.add(30)
        with support(), Session(world.engine) as session:
            clients = session.scalars(select(world.Client)).all()
            world.scope.clear()  # the generation moves: held keys are checked again
            world.count_key_statements()
            names = sorted(c.name for c in clients)
            assert sorted(c.name for c in clients) == names  # again: no lookup
        assert sorted(f"{CANARY}-{k}" for k in range(30)) == names
        assert 1 == len(world.statements)

    def test_a_shred_elsewhere_reaches_loaded_objects_after_the_next_statement(
        self, world: World, db_url: str, tmp_path: Path
    ) -> None:
        """Another process's shred: once a statement has read the moved epoch, a loaded object is refused."""
        alice, bob = world.add(2)
        with support(), Session(world.engine) as session:
            loaded = session.get(world.Client, alice)
            _shred_elsewhere(world, db_url, tmp_path, alice)
            # Any statement on the key store's database reads the epoch.
            assert CANARY + "-1" == session.get(world.Client, bob).name
            with pytest.raises(KeyDestroyedError) as info:
                _ = loaded.name
            assert CANARY not in str(info.value)

    def test_a_shred_elsewhere_reaches_a_warm_core_select(
        self, world: World, db_url: str, tmp_path: Path
    ) -> None:
        """Another process's shred: the next warm Core select sees the epoch move and refuses."""
        alice, bob = world.add(2)
        table = world.Client.__table__
        with support(), world.engine.connect() as conn:
            assert 2 == len(conn.execute(select(table)).all())
        assert 2 == len(world.scope)
        _shred_elsewhere(world, db_url, tmp_path, alice)
        with support(), world.engine.connect() as conn:
            with pytest.raises(KeyDestroyedError) as info:
                conn.execute(select(table)).all()
            assert CANARY not in str(info.value)
            (row,) = conn.execute(select(table).where(table.c.id == bob)).all()
            assert CANARY + "-1" == row.name

    def test_a_shred_elsewhere_reaches_a_warm_get_through_the_row_statement(
        self, world: World, db_url: str, tmp_path: Path
    ) -> None:
        """The warm get's own statement carries the new epoch: the key is read again and refused."""
        alice, _ = world.add(2)
        with support(), Session(world.engine) as session:
            assert CANARY + "-0" == session.get(world.Client, alice).name
        _shred_elsewhere(world, db_url, tmp_path, alice)
        trace = Trace(world)
        try:
            with support(), Session(world.engine) as session:
                shredded = session.get(world.Client, alice)
                with pytest.raises(KeyDestroyedError):
                    _ = shredded.name
            # The row statement read the epoch; the moved epoch cost one lookup
            # (under MariaDB's REPEATABLE READ, the store reads the epoch too).
            assert (1 if _reads_latest(world.engine) else 2) == len(trace.key_lookups())
            if _reads_latest(world.engine):
                ((_, row_sql),) = [
                    (c, sql)
                    for c, sql in trace.statements
                    if world.Client.__tablename__ in sql
                ]
                assert reads_epoch(row_sql)
        finally:
            trace.close()
