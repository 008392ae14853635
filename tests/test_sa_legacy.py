"""Stored values that are no envelope, and the transitional read mode of a migration.

On SQLite, PostgreSQL and MariaDB. Without the mode, every stored value that
is not a valid envelope of its column raises :class:`custdata.DecryptionError`
on every read path (never ``TypeError``), without the value in the message.
With ``legacy_plaintext=True``, such a value is read as the column's
plaintext, counted and recorded, while the in-place job encrypts the rows.
"""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures

from __future__ import annotations

import datetime as dt
import os
import random
import sys
import threading
import uuid

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlalchemy import (
    Column,
    LargeBinary,
    MetaData,
    Table,
    Text,
    Uuid,
    column,
    delete,
    insert,
    select,
    table,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session

import custdata

from custdata.audit import AuditTrail, MemorySink
from custdata.crypto import Keyring
from custdata.sqlalchemy import (
    EncryptedString,
    check_models,
    customer_data,
    encrypt_plaintext_columns,
    legacy_plaintext_reads,
    subject_key,
)
from custdata.sqlalchemy._jobs import _is_envelope


sys.path.insert(0, str(Path(__file__).parent))
from sa_fixtures import (  # noqa: F401 - pytest fixtures
    CANARIES,
    Models,
    billing,
    counting,
    engine,
    keyring,
    models,
    plant,
    recorder,
    sa_custodian,
    support,
)


CANARY = CANARIES["card"]

#: Stored bytes that are not an envelope of the column.
BAD_BYTES: dict[str, bytes] = {
    "empty": b"",
    "plaintext": f"legacy {CANARY} plaintext of some length".encode(),
    "short-header": b"\x01\x01\x00\x00",
    "envelope-shaped": b"\x01\x01\x00\x00\x00\x09" + CANARY.encode() * 3,
    "unknown-version": b"\x07" + CANARY.encode() * 3,
}


@pytest.fixture
def cid(engine: Engine, models: Models, sa_custodian: custdata.Custodian) -> uuid.UUID:
    """One customer with a card."""
    with Session(engine) as session, billing():
        customer = models.Customer(name="Hanako", email="h@example.jp", card="4000")
        session.add(customer)
        session.commit()
        return customer.id  # type: ignore[no-any-return]


def _reads(models: Models, cid: uuid.UUID) -> dict[str, Callable[[Engine], Any]]:
    """Every way to read the card: entity get, entity select, column select, RETURNING."""
    t = models.Customer.__table__

    def get(engine: Engine) -> Any:
        with Session(engine) as session:
            return session.get(models.Customer, cid).card  # type: ignore[union-attr]

    def entities(engine: Engine) -> Any:
        with Session(engine) as session:
            return [c.card for c in session.scalars(select(models.Customer))]

    def column_only(engine: Engine) -> Any:
        with engine.connect() as conn:
            return conn.execute(select(t.c.card)).all()

    def with_subject(engine: Engine) -> Any:
        with engine.connect() as conn:
            return conn.execute(select(t.c.id, t.c.card).where(t.c.id == cid)).all()

    def returning(engine: Engine) -> Any:
        # A delete needs a purpose that may erase (support), a read of the card
        # billing: an UPDATE ... RETURNING reads it under billing alone.
        if not engine.dialect.update_returning:
            pytest.skip(f"{engine.dialect.name} has no UPDATE ... RETURNING")
        with engine.connect() as conn:
            return conn.execute(
                update(t).where(t.c.id == cid).values(plan="gold").returning(t.c.card)
            ).all()

    return {
        "get": get,
        "entities": entities,
        "column": column_only,
        "with-subject": with_subject,
        "returning": returning,
    }


READS = ["get", "entities", "column", "with-subject", "returning"]


class TestNotAnEnvelope:
    """A stored value that is no envelope of its column raises DecryptionError."""

    @pytest.mark.parametrize("read", READS)
    @pytest.mark.parametrize("kind", sorted(BAD_BYTES))
    def test_bad_bytes(
        self, engine: Engine, models: Models, cid: uuid.UUID, kind: str, read: str
    ) -> None:
        """Empty, plaintext, truncated or foreign bytes: DecryptionError, no canary."""
        with engine.begin() as conn:
            plant(conn, models.Customer.__tablename__, "card", BAD_BYTES[kind])
        with pytest.raises(custdata.DecryptionError) as info, billing():
            _reads(models, cid)[read](engine)
        assert CANARY not in str(info.value)
        assert CANARY not in repr(info.value)

    @pytest.mark.parametrize("storage", ["binary", "text"])
    @pytest.mark.parametrize("read", ["select", "one-row", "returning"])
    def test_wrong_storage_type(
        self, engine: Engine, sa_custodian: custdata.Custodian, storage: str, read: str
    ) -> None:
        """Text where binary is declared (and the reverse): DecryptionError, not TypeError."""
        name = f"sa_storage_{uuid.uuid4().hex[:8]}"
        physical = MetaData()
        Table(
            name,
            physical,
            Column("id", Uuid, primary_key=True),
            # The opposite of what the model declares.
            Column("note", LargeBinary if storage == "text" else Text),
        )
        declared = MetaData()
        tag = {
            "custdata": custdata.FieldPolicy(category="inquiry", purposes=["support"])
        }
        t = Table(
            name,
            declared,
            Column("id", Uuid, primary_key=True),
            Column("note", EncryptedString(storage=storage), info=tag),  # type: ignore[arg-type]
        )
        physical.create_all(engine)
        try:
            raw = table(name, column("id", Uuid), column("note"))
            stored: object = CANARY.encode() if storage == "text" else CANARY
            ids = [uuid.uuid4(), uuid.uuid4()]
            with engine.begin() as conn:
                conn.execute(insert(raw), [{"id": i, "note": stored} for i in ids])
            if read == "returning" and not engine.dialect.delete_returning:
                pytest.skip("no DELETE ... RETURNING")
            statements = {
                "select": select(t.c.note),
                "one-row": select(t.c.note).where(t.c.id == ids[0]),
                "returning": delete(t).where(t.c.id == ids[0]).returning(t.c.note),
            }
            with (
                engine.connect() as conn,
                support(),
                pytest.raises(custdata.DecryptionError) as info,
            ):
                conn.execute(statements[read]).all()
            assert CANARY not in str(info.value)
        finally:
            physical.drop_all(engine)

    def test_number_in_a_binary_column(
        self, engine: Engine, models: Models, cid: uuid.UUID
    ) -> None:
        """A number (SQLite keeps any type in any column): DecryptionError."""
        if engine.dialect.name != "sqlite":
            pytest.skip("only SQLite stores a number in a BLOB column")
        with engine.begin() as conn:
            raw = table(models.Customer.__tablename__, column("card"))
            conn.execute(update(raw).values(card=4111111111111111))
        for read in ("get", "entities", "column"):
            with pytest.raises(custdata.DecryptionError), billing():
                _reads(models, cid)[read](engine)


def _legacy_models(
    storage: str = "binary", *, legacy: bool = True
) -> tuple[type[DeclarativeBase], Any]:
    suffix = uuid.uuid4().hex[:8]

    class Base(DeclarativeBase):
        pass

    class Legacy(Base):
        __tablename__ = f"sa_legacy_{suffix}"
        id: Mapped[uuid.UUID] = subject_key()
        note: Mapped[str | None] = customer_data(
            "inquiry.contents",
            purposes=["support"],
            storage=storage,  # type: ignore[arg-type]
            legacy_plaintext=legacy,
        )
        since: Mapped[dt.date | None] = customer_data(
            "transaction.history", purposes=["support"], legacy_plaintext=legacy
        )

    return Base, Legacy


def _plant_legacy(
    engine: Engine, model: Any, rows: dict[uuid.UUID, str], text: bool
) -> None:
    raw = table(
        model.__tablename__,
        column("id", model.__table__.c.id.type),
        column("note", Text() if text else LargeBinary()),
        column("since", LargeBinary()),
    )
    with engine.begin() as conn:
        conn.execute(
            insert(raw),
            [
                {
                    "id": i,
                    "note": note if text else note.encode(),
                    "since": b"2026-12-02",
                }
                for i, note in rows.items()
            ],
        )


@pytest.fixture
def trail_custodian(
    sample_policy: custdata.Policy,
) -> Iterator[tuple[custdata.Custodian, MemorySink]]:
    """A custodian with a real audit trail in memory."""
    keyring = Keyring.generate()
    sink = MemorySink()
    trail = AuditTrail(keyring, sinks=[sink], checkpoint_interval=None)
    custodian = custdata.Custodian(policy=sample_policy, keyring=keyring, audit=trail)
    with custodian.activate():
        yield custodian, sink
    trail.close()


class TestTransitionalReads:
    """legacy_plaintext=True: legacy values read as plaintext, counted and recorded."""

    @pytest.mark.parametrize("storage", ["binary", "text"])
    def test_reads_counted_and_recorded(
        self,
        engine: Engine,
        trail_custodian: tuple[custdata.Custodian, MemorySink],
        storage: str,
    ) -> None:
        """Every read path returns the plaintext; each legacy value read is counted and recorded."""
        _custodian, sink = trail_custodian
        base, model = _legacy_models(storage)
        base.metadata.create_all(engine)
        try:
            # "abcd" is valid base64 of no envelope: still a legacy value.
            rows = {uuid.uuid4(): "abcd", uuid.uuid4(): f"note {CANARY}"}
            _plant_legacy(engine, model, rows, storage == "text")
            where = f"{model.__tablename__}.note"
            before = legacy_plaintext_reads().get(where, 0)
            start = len(sink.records)
            with Session(engine) as session, support():
                first = next(iter(rows))
                got = session.get(model, first)
                assert got is not None
                assert (rows[first], dt.date(2026, 12, 2)) == (got.note, got.since)
                session.expunge_all()
                assert sorted(rows.values()) == sorted(
                    session.scalars(select(model.note)).all()
                )
                session.expunge_all()
                assert sorted(rows.values()) == sorted(
                    o.note for o in session.scalars(select(model))
                )
            assert 5 == legacy_plaintext_reads()[where] - before
            events = [
                r.fields
                for r in sink.records[start:]
                if r.fields.get("reason") == "legacy_plaintext"
            ]
            assert 5 == len([e for e in events if e["fields"] == ["note"]])
            assert {"field.reveal"} == {e["action"] for e in events}
            assert {"agent-1"} == {e["actor"]["id"] for e in events}
            assert [] == [r for r in sink.records if CANARY in repr(r.fields)]
        finally:
            base.metadata.drop_all(engine)

    def test_writes_encrypt(
        self, engine: Engine, trail_custodian: tuple[custdata.Custodian, MemorySink]
    ) -> None:
        """A value written in the mode is an envelope at rest, bound to its row."""
        base, model = _legacy_models()
        base.metadata.create_all(engine)
        try:
            ident = uuid.uuid4()
            _plant_legacy(engine, model, {ident: "old"}, False)
            with Session(engine) as session, support():
                session.get(model, ident).note = "new"  # type: ignore[union-attr]
                session.add(model(note=CANARY, since=dt.date(2020, 1, 1)))
                session.commit()
            raw = table(model.__tablename__, column("note", LargeBinary()))
            with engine.connect() as conn:
                stored = conn.execute(select(raw.c.note)).scalars().all()
            assert all(_is_envelope(v, False) for v in stored)
            assert not any(CANARY.encode() in bytes(v) for v in stored)
        finally:
            base.metadata.drop_all(engine)

    def test_unreadable_legacy_value(
        self, engine: Engine, trail_custodian: tuple[custdata.Custodian, MemorySink]
    ) -> None:
        """A legacy value that is not of the column's type: DecryptionError, no value."""
        base, model = _legacy_models()
        base.metadata.create_all(engine)
        try:
            ident = uuid.uuid4()
            raw = table(
                model.__tablename__,
                column("id", model.__table__.c.id.type),
                column("since", LargeBinary()),
            )
            with engine.begin() as conn:
                conn.execute(insert(raw).values(id=ident, since=CANARY.encode()))
            with (
                Session(engine) as session,
                support(),
                pytest.raises(custdata.DecryptionError, match="date") as info,
            ):
                _ = session.get(model, ident).since  # type: ignore[union-attr]
            assert CANARY not in str(info.value)
        finally:
            base.metadata.drop_all(engine)

    def test_check_reports_the_mode(self, sample_policy: custdata.Policy) -> None:
        """custdata check reports SA004 for each column in the transitional mode."""
        base, model = _legacy_models()
        findings = [f for f in check_models(base, sample_policy) if f.code == "SA004"]
        assert [f"{model.__tablename__}.note", f"{model.__tablename__}.since"] == [
            f.key_path for f in findings
        ]

    def test_without_the_mode_nothing_is_read(
        self, engine: Engine, trail_custodian: tuple[custdata.Custodian, MemorySink]
    ) -> None:
        """The same legacy values in columns without the mode raise DecryptionError."""
        base, model = _legacy_models(legacy=False)
        base.metadata.create_all(engine)
        try:
            ident = uuid.uuid4()
            _plant_legacy(engine, model, {ident: CANARY}, False)
            with (
                Session(engine) as session,
                support(),
                pytest.raises(custdata.DecryptionError) as info,
            ):
                _ = session.get(model, ident).note  # type: ignore[union-attr]
            assert CANARY not in str(info.value)
        finally:
            base.metadata.drop_all(engine)


class TestZeroDowntimeMigration:
    """Reads and writes keep working from another thread while the job migrates."""

    def test_serving_during_migration(
        self, engine: Engine, trail_custodian: tuple[custdata.Custodian, MemorySink]
    ) -> None:
        """Every read returns the right value; every row ends encrypted; writes win."""
        custodian, _sink = trail_custodian
        base, model = _legacy_models()
        base.metadata.create_all(engine)
        try:
            expected = {uuid.uuid4(): f"legacy {n}" for n in range(120)}
            _plant_legacy(engine, model, expected, False)
            lock = threading.Lock()
            done = threading.Event()
            failures: list[str] = []
            served = {"reads": 0, "writes": 0}

            def serve() -> None:
                rng = random.Random(7)
                ids = list(expected)
                with custodian.activate(), support():
                    while not done.is_set() or served["reads"] < 50:
                        ident = rng.choice(ids)
                        with Session(engine) as session:
                            if rng.random() < 0.3:
                                value = f"written {served['writes']}"
                                with lock:
                                    obj = session.get(model, ident)
                                    obj.note = value  # type: ignore[union-attr]
                                    session.commit()
                                    expected[ident] = value
                                served["writes"] += 1
                                continue
                            with lock:
                                want = expected[ident]
                            got = session.get(model, ident)
                            if got is None or got.note != want:
                                failures.append(str(ident))
                            served["reads"] += 1

            worker = threading.Thread(target=serve)
            worker.start()
            try:
                remaining = -1
                while remaining != 0:
                    reports = encrypt_plaintext_columns(
                        engine, custodian, tables=base, batch_size=7
                    )
                    remaining = sum(r.remaining for r in reports)
            finally:
                done.set()
                worker.join(timeout=120)
            assert not worker.is_alive()
            assert [] == failures
            assert served["reads"] >= 50
            assert served["writes"] > 0
            raw = table(
                model.__tablename__,
                column("note", LargeBinary()),
                column("since", LargeBinary()),
            )
            with engine.connect() as conn:
                stored = conn.execute(select(raw.c.note, raw.c.since)).all()
            assert all(
                _is_envelope(n, False) and _is_envelope(s, False) for n, s in stored
            )
            with Session(engine) as session, support():
                final = {o.id: o.note for o in session.scalars(select(model))}
            assert expected == final
        finally:
            base.metadata.drop_all(engine)


LEGACY_MODELS = """
import datetime as dt
import uuid

from sqlalchemy.orm import DeclarativeBase, Mapped

from custdata.sqlalchemy import customer_data, subject_key


class Base(DeclarativeBase):
    pass


class Ticket(Base):
    __tablename__ = "tickets_{suffix}"
    id: Mapped[uuid.UUID] = subject_key()
    body: Mapped[str] = customer_data(
        "inquiry.contents", purposes=["support"], legacy_plaintext={legacy}
    )
"""


class TestCheckCommand:
    """The installed ``custdata check`` reports columns in the transitional mode."""

    @pytest.mark.parametrize("legacy", [True, False])
    def test_sa004(self, tmp_path: Path, legacy: bool) -> None:
        """SA004 and exit 1 while the flag is on; exit 0 once it is removed."""
        import subprocess

        suffix = uuid.uuid4().hex[:8]
        module = f"legacy_models_{suffix}"
        (tmp_path / f"{module}.py").write_text(
            LEGACY_MODELS.format(suffix=suffix, legacy=legacy)
        )
        policy = Path(__file__).resolve().parent.parent / "examples" / "custdata.toml"
        command = Path(sys.executable).parent / "custdata"
        result = subprocess.run(
            [
                str(command),
                "check",
                "--policy",
                str(policy),
                "--models",
                f"{module}:Base",
                "--today",
                "2027-01-01",
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(tmp_path)},
        )
        assert (1 if legacy else 0, legacy) == (
            result.returncode,
            f"tickets_{suffix}.body: SA004" in result.stdout,
        )
