"""What the SQLAlchemy layer records: read batches, writes and re-encryption.

On SQLite, PostgreSQL and MariaDB.
"""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures

from __future__ import annotations

import sys
import uuid

from pathlib import Path

import pytest

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import custdata

from custdata.audit import AuditTrail, MemorySink
from custdata.crypto import Keyring
from custdata.sqlalchemy import reencrypt


sys.path.insert(0, str(Path(__file__).parent))
from sa_fixtures import (  # noqa: F401 - pytest fixtures
    CANARIES,
    CountingKeyring,
    Models,
    Recorder,
    billing,
    counting,
    engine,
    keyring,
    make_models,
    models,
    recorder,
    sa_custodian,
    support,
)


def _add(engine: Engine, models: Models, n: int) -> list[uuid.UUID]:
    with Session(engine) as session, billing():
        customers = [
            models.Customer(name=f"n{i}", email=f"e{i}@example.jp") for i in range(n)
        ]
        session.add_all(customers)
        session.commit()
        return [c.id for c in customers]


def _reads(recorder: Recorder, since: int) -> list[custdata.AccessDecision]:
    return [d for d in recorder.decisions[since:] if d.action is custdata.Action.READ]


def _writes(recorder: Recorder, since: int) -> list[custdata.AccessDecision]:
    return [d for d in recorder.decisions[since:] if d.action is custdata.Action.WRITE]


class TestReadDecisions:
    """A read decision names the subjects it released and counts their values."""

    def test_select_all_names_every_subject(
        self,
        engine: Engine,
        models: Models,
        sa_custodian: custdata.Custodian,
        recorder: Recorder,
    ) -> None:
        """Loading 12 customers is one decision with their 12 ids and 12 x fields values."""
        ids = _add(engine, models, 12)
        with Session(engine) as session, support():
            n = len(recorder.decisions)
            loaded = session.scalars(select(models.Customer)).all()
            reads = _reads(recorder, n)
        assert 12 == len(loaded)
        assert 1 == len(reads)
        assert sorted(map(str, ids)) == sorted(reads[0].subjects)
        assert 12 * len(reads[0].fields) == reads[0].count

    def test_get_names_its_subject(
        self,
        engine: Engine,
        models: Models,
        sa_custodian: custdata.Custodian,
        recorder: Recorder,
    ) -> None:
        """session.get records the one subject it loaded."""
        ids = _add(engine, models, 3)
        with Session(engine) as session, billing():
            n = len(recorder.decisions)
            c = session.get(models.Customer, ids[1])
            assert c is not None
            assert "n1" == c.name
            reads = _reads(recorder, n)
        assert [(str(ids[1]),)] == [d.subjects for d in reads]
        assert [len(reads[0].fields)] == [d.count for d in reads]

    def test_column_select_names_subjects(
        self,
        engine: Engine,
        models: Models,
        sa_custodian: custdata.Custodian,
        recorder: Recorder,
    ) -> None:
        """A column select without the id column still records the subjects, from the values."""
        ids = _add(engine, models, 4)
        with Session(engine) as session, support():
            n = len(recorder.decisions)
            names = session.scalars(select(models.Customer.name)).all()
            reads = _reads(recorder, n)
        assert 4 == len(names)
        assert [(sorted(map(str, ids)), 4)] == [
            (sorted(d.subjects), d.count) for d in reads
        ]

    def test_batches_are_announced_separately(
        self,
        engine: Engine,
        models: Models,
        sa_custodian: custdata.Custodian,
        recorder: Recorder,
    ) -> None:
        """Rows streamed with yield_per are announced once per fetched batch, each with its subjects."""
        ids = _add(engine, models, 5)
        with engine.connect() as conn, support():
            n = len(recorder.decisions)
            t = models.Customer.__table__
            result = conn.execution_options(yield_per=2).execute(select(t.c.name))
            names = [row[0] for row in result]
            reads = _reads(recorder, n)
        assert 5 == len(names)
        # SQLAlchemy grows its batches up to yield_per: 1, 2, 2.
        assert [1, 2, 2] == [len(d.subjects) for d in reads]
        assert sorted(map(str, ids)) == sorted(s for d in reads for s in d.subjects)

    def test_empty_result_is_still_one_decision(
        self,
        engine: Engine,
        models: Models,
        sa_custodian: custdata.Custodian,
        recorder: Recorder,
    ) -> None:
        """A read that finds nothing is recorded once, with no subjects and a count of 0."""
        with Session(engine) as session, support():
            n = len(recorder.decisions)
            assert [] == session.scalars(select(models.Customer.name)).all()
            reads = _reads(recorder, n)
        assert [((), 0)] == [(d.subjects, d.count) for d in reads]

    def test_denied_read_names_its_subjects_and_decrypts_nothing(
        self,
        engine: Engine,
        models: Models,
        sa_custodian: custdata.Custodian,
        recorder: Recorder,
        counting: CountingKeyring,
    ) -> None:
        """A denied read is one denied decision, naming the subjects refused, and decrypts nothing."""
        ids = _add(engine, models, 2)
        with Session(engine) as session, support():
            n = len(recorder.decisions)
            before = counting.counts["decrypt"]
            with pytest.raises(custdata.PurposeViolationError):
                session.execute(
                    select(models.Customer.name, models.Customer.card)
                ).all()
            reads = _reads(recorder, n)
        assert [custdata.Outcome.DENIED] == [d.outcome for d in reads]
        assert sorted(map(str, ids)) == sorted(reads[0].subjects)
        assert before == counting.counts["decrypt"]


class TestWriteDecisions:
    """Writing a customer-data column needs an actor and a purpose permitted for it."""

    def test_orm_insert_without_context_is_refused(
        self, engine: Engine, models: Models, sa_custodian: custdata.Custodian
    ) -> None:
        """No anonymous writes: an ORM flush without an actor raises ActorRequiredError."""
        with Session(engine) as session:
            session.add(models.Customer(name="x", email="x@example.jp"))
            with pytest.raises(custdata.ActorRequiredError):
                session.commit()

    def test_core_insert_without_context_is_refused(
        self, engine: Engine, models: Models, sa_custodian: custdata.Custodian
    ) -> None:
        """A Core insert of customer data without an actor raises ActorRequiredError."""
        t = models.Customer.__table__
        with engine.begin() as conn, pytest.raises(custdata.ActorRequiredError):
            conn.execute(insert(t), [{"id": uuid.uuid4(), "name": "x"}])

    def test_write_outside_purpose_is_refused(
        self,
        engine: Engine,
        models: Models,
        sa_custodian: custdata.Custodian,
        recorder: Recorder,
    ) -> None:
        """support may not write card (billing only): the flush raises and is audited as denied."""
        with Session(engine) as session, support():
            session.add(models.Customer(name="x", email="x@example.jp", card="1"))
            with pytest.raises(custdata.PurposeViolationError):
                session.commit()
        last = _writes(recorder, 0)[-1]
        assert (custdata.Outcome.DENIED, ("card",)) == (
            last.outcome,
            last.denied_fields,
        )

    def test_masked_field_is_not_writable_outside_its_purposes(
        self,
        engine: Engine,
        models: Models,
        sa_custodian: custdata.Custodian,
        recorder: Recorder,
    ) -> None:
        """A mask-on-read field is still refused for writing outside its purposes; nothing is stored."""
        with Session(engine) as session, billing():
            session.add(models.Customer(name="x", email="x@example.jp", phone="090"))
            with pytest.raises(custdata.PurposeViolationError, match="phone"):
                session.commit()
            session.rollback()
        last = _writes(recorder, 0)[-1]
        assert (custdata.Outcome.DENIED, ("phone",)) == (
            last.outcome,
            last.denied_fields,
        )
        with engine.connect() as conn:
            table = models.Customer.__table__
            assert (
                0 == conn.execute(select(func.count()).select_from(table)).scalar_one()
            )

    def test_flush_is_one_write_decision_with_subjects(
        self,
        engine: Engine,
        models: Models,
        sa_custodian: custdata.Custodian,
        recorder: Recorder,
    ) -> None:
        """Inserting 5 customers records one allowed WRITE naming them, the fields and the count."""
        n = len(recorder.decisions)
        ids = _add(engine, models, 5)
        writes = _writes(recorder, n)
        assert 1 == len(writes)
        assert ("name", "email") == writes[0].fields
        assert sorted(map(str, ids)) == sorted(writes[0].subjects)
        assert 10 == writes[0].count

    def test_core_update_is_a_write_for_its_subject(
        self,
        engine: Engine,
        models: Models,
        sa_custodian: custdata.Custodian,
        recorder: Recorder,
    ) -> None:
        """UPDATE ... WHERE id = x records a WRITE of the set field for subject x."""
        (cid,) = _add(engine, models, 1)
        t = models.Customer.__table__
        n = len(recorder.decisions)
        with engine.begin() as conn, support():
            conn.execute(update(t).where(t.c.id == cid).values(name="Renamed"))
        writes = _writes(recorder, n)
        assert [(("name",), (str(cid),))] == [(d.fields, d.subjects) for d in writes]

    def test_write_decision_holds_no_value(
        self,
        engine: Engine,
        models: Models,
        sa_custodian: custdata.Custodian,
        recorder: Recorder,
    ) -> None:
        """The write decision names fields, never the values written."""
        with Session(engine) as session, billing():
            session.add(models.Customer(name=CANARIES["name"], email=CANARIES["email"]))
            session.commit()
        text = repr(recorder.decisions)
        assert [] == [v for v in CANARIES.values() if v in text]


class TestReencryptAudit:
    """The re-encryption job records each table batch before decrypting it."""

    def test_each_batch_is_recorded_in_the_trail(
        self, engine: Engine, sample_policy: custdata.Policy
    ) -> None:
        """5 customers in batches of 2: three record.bulk_update events by the system actor."""
        models = make_models()
        keyring = Keyring.generate()
        sink = MemorySink()
        trail = AuditTrail(keyring, sinks=[sink], checkpoint_interval=None)
        custodian = custdata.Custodian(
            policy=sample_policy, keyring=keyring, audit=trail
        )
        models.create(engine)
        try:
            with custodian.activate():
                _add(engine, models, 5)
                keyring.rotate()
                start = len(sink.records)
                reencrypt(
                    engine, custodian, tables=[models.Customer.__table__], batch_size=2
                )
            events = [
                r.fields
                for r in sink.records[start:]
                if r.fields["action"] == "record.bulk_update"
            ]
        finally:
            models.drop(engine)
            trail.close()
        assert [2, 2, 1] == [len(e["subjects"]) for e in events]
        assert {("system", "custdata.reencrypt")} == {
            (e["actor"]["type"], e["actor"]["id"]) for e in events
        }
        assert [4, 4, 2] == [e["count"] for e in events]
        assert {models.Customer.__tablename__} == {e["entity"] for e in events}

    def test_plain_recorder_gets_update_decisions(
        self, engine: Engine, sample_policy: custdata.Policy
    ) -> None:
        """With a plain decision recorder, each batch is an allowed UPDATE decision."""
        models = make_models()
        keyring = Keyring.generate()
        recorder = Recorder()
        custodian = custdata.Custodian(
            policy=sample_policy, keyring=keyring, audit=recorder
        )
        models.create(engine)
        try:
            with custodian.activate():
                ids = _add(engine, models, 3)
                keyring.rotate()
                start = len(recorder.decisions)
                reencrypt(engine, custodian, tables=[models.Customer.__table__])
        finally:
            models.drop(engine)
        updates = [
            d for d in recorder.decisions[start:] if d.action is custdata.Action.UPDATE
        ]
        assert [("custdata.reencrypt", 6)] == [(d.actor, d.count) for d in updates]
        assert sorted(map(str, ids)) == sorted(updates[0].subjects)
