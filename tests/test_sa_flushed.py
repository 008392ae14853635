"""Values the application assigned are its own only until they are flushed.

On SQLite, PostgreSQL and MariaDB. After a flush (with ``expire_on_commit``
off, so nothing is reloaded) the object holds the envelope that was written,
sealed like a loaded value (one sealed row per object): the canary plaintexts are absent from
``__dict__``, ``loaded_value``, pickles and copies; a read under a context
that permits the field returns the value (and is recorded); a read under one
that does not raises and records a denial naming the subject.
"""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures

from __future__ import annotations

import copy
import datetime as dt
import pickle
import sys
import uuid

from pathlib import Path

import pytest

from sqlalchemy import inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import custdata

from custdata.sqlalchemy import _runtime
from custdata.sqlalchemy._sealed import SealedRow


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


SEALED = ("name", "email", "card")


def _no_canary(blob: object) -> None:
    text = blob.decode("latin-1") if isinstance(blob, bytes) else repr(blob)
    for value in CANARIES.values():
        assert value not in text


def _new_customer(models: Models) -> object:
    return models.Customer(
        name=CANARIES["name"],
        email=CANARIES["email"],
        card=CANARIES["card"],
        birth_date=dt.date(1990, 4, 1),
    )


class TestSealedAfterFlush:
    """A flushed object holds what was written, sealed; reads decide under their context."""

    def test_inserted_values_are_sealed_after_flush(
        self, engine: Engine, models: Models, sa_custodian: custdata.Custodian
    ) -> None:
        """Before the flush the object holds its own plaintext; after it, sealed envelopes."""
        with Session(engine, expire_on_commit=False) as session, billing():
            c = _new_customer(models)
            session.add(c)
            assert CANARIES["card"] == c.__dict__["card"]  # the application's own
            session.flush()
            for key in SEALED:
                assert c.__dict__[key].__class__ is SealedRow
                _no_canary(inspect(c).attrs[key].loaded_value)
            _no_canary(c.__dict__)
            _no_canary(c)
            _no_canary(copy.copy(c).__dict__)
            _no_canary(copy.deepcopy(c.__dict__["card"]))
            session.commit()
            _no_canary(c.__dict__)

    def test_default_session_flush_then_commit(
        self, engine: Engine, models: Models, sa_custodian: custdata.Custodian
    ) -> None:
        """With expire_on_commit: sealed after flush(), expired after commit(); never plaintext."""
        with Session(engine) as session, billing():
            c = _new_customer(models)
            session.add(c)
            session.flush()
            assert c.__dict__["card"].__class__ is SealedRow
            _no_canary(c.__dict__)
            session.commit()
            assert "card" not in c.__dict__
            _no_canary(c.__dict__)
            assert CANARIES["card"] == c.card

    def test_savepoint_commit_seals(
        self, engine: Engine, models: Models, sa_custodian: custdata.Custodian
    ) -> None:
        """Releasing a savepoint expires nothing: its flush seals the values."""
        with Session(engine) as session, billing():
            with session.begin_nested():
                c = _new_customer(models)
                session.add(c)
            assert c.__dict__["card"].__class__ is SealedRow
            _no_canary(c.__dict__)
            session.commit()

    def test_pickle_after_flush_holds_no_plaintext(
        self, engine: Engine, models: Models, sa_custodian: custdata.Custodian
    ) -> None:
        """The pickled form of a flushed value is the sealed envelope."""
        with Session(engine, expire_on_commit=False) as session, billing():
            c = _new_customer(models)
            session.add(c)
            session.commit()
            for key in SEALED:
                _no_canary(pickle.dumps(c.__dict__[key]))

    def test_permitted_read_returns_the_value_and_is_recorded(
        self,
        engine: Engine,
        models: Models,
        sa_custodian: custdata.Custodian,
        recorder: Recorder,
    ) -> None:
        """Under billing the flushed values read as assigned; the read is a recorded decision."""
        with Session(engine, expire_on_commit=False) as session, billing():
            c = _new_customer(models)
            session.add(c)
            session.commit()
            start = len(recorder.decisions)
            assert CANARIES["card"] == c.card
            assert CANARIES["name"] == c.name
            assert CANARIES["email"] == c.email
            assert dt.date(1990, 4, 1) == c.birth_date
            reads = [
                d
                for d in recorder.decisions[start:]
                if d.action is custdata.Action.READ
            ]
        assert {("card",), ("name",), ("email",)} <= {d.fields for d in reads}
        assert all(d.subjects == (str(c.id),) for d in reads)
        assert all(d.outcome is custdata.Outcome.ALLOWED for d in reads)

    def test_refused_read_raises_and_records_a_denial(
        self,
        engine: Engine,
        models: Models,
        sa_custodian: custdata.Custodian,
        recorder: Recorder,
    ) -> None:
        """Under support the flushed card is refused, with a denial naming its subject."""
        with Session(engine, expire_on_commit=False) as session:
            with billing():
                c = _new_customer(models)
                session.add(c)
                session.commit()
            with support():
                with pytest.raises(custdata.PurposeViolationError) as info:
                    _ = c.card
                assert CANARIES["name"] == c.name
        _no_canary(str(info.value))
        denied = [d for d in recorder.decisions if d.outcome is custdata.Outcome.DENIED]
        assert [(("card",), (str(c.id),))] == [(d.fields, d.subjects) for d in denied]

    def test_masked_and_null_fields_read_again_after_flush(
        self,
        engine: Engine,
        models: Models,
        sa_custodian: custdata.Custodian,
        recorder: Recorder,
    ) -> None:
        """A flushed field the purpose only masks reads as its mask, again and again; NULL as None."""
        with Session(engine, expire_on_commit=False) as session:
            with billing():
                c = _new_customer(models)
                c2 = models.Customer(name="No Card", email="nocard@example.jp")
                session.add_all([c, c2])
                session.commit()
            with support():
                c.phone = CANARIES["phone"]
                c2.phone = None
                session.commit()
            with billing():
                start = len(recorder.decisions)
                assert ["***", "***"] == [c.phone, c.phone]
                assert [None, None] == [c2.card, c2.card]
        assert 1 == sum(d.fields == ("phone",) for d in recorder.decisions[start:])
        _no_canary(c.__dict__)

    def test_read_after_the_block_needs_an_actor(
        self, engine: Engine, models: Models, sa_custodian: custdata.Custodian
    ) -> None:
        """Carried out of its with block, a flushed object reveals nothing."""
        with Session(engine, expire_on_commit=False) as session:
            with billing():
                c = _new_customer(models)
                session.add(c)
                session.commit()
            with pytest.raises(custdata.ActorRequiredError):
                _ = c.card

    def test_updated_value_is_sealed_after_flush(
        self, engine: Engine, models: Models, sa_custodian: custdata.Custodian
    ) -> None:
        """A loaded object's field assigned anew is sealed again once the UPDATE is flushed."""
        with Session(engine, expire_on_commit=False) as session, billing():
            c = _new_customer(models)
            session.add(c)
            session.commit()
            new_card = "5500000000000004"
            c.card = new_card
            assert new_card == c.__dict__["card"]
            session.flush()
            assert c.__dict__["card"].__class__ is SealedRow
            assert new_card not in repr(c.__dict__)
            assert new_card == c.card
            session.commit()
        with Session(engine) as session, billing():
            assert new_card == session.get(models.Customer, c.id).card

    def test_shared_value_object_seals_per_subject(
        self, engine: Engine, models: Models, sa_custodian: custdata.Custodian
    ) -> None:
        """One str object assigned to two customers: each holds its own subject's envelope."""
        shared = "Shared Name"  # one object, the value of both
        with Session(engine, expire_on_commit=False) as session, billing():
            a = models.Customer(name=shared, email="a@example.jp")
            b = models.Customer(name=shared, email="b@example.jp")
            session.add_all([a, b])
            session.commit()
            assert a.__dict__["name"] != b.__dict__["name"]
            assert shared == a.name
            assert shared == b.name

    def test_failed_flush_leaves_the_values_as_assigned(
        self, engine: Engine, models: Models, sa_custodian: custdata.Custodian
    ) -> None:
        """A flush that fails seals nothing: the objects still hold what was assigned."""
        with Session(engine, expire_on_commit=False) as session, billing():
            first = _new_customer(models)
            session.add(first)
            session.commit()
            twin = models.Customer(
                id=uuid.uuid4(), name="Twin", email=CANARIES["email"]
            )
            session.add(twin)
            with pytest.raises(IntegrityError):
                session.flush()
            session.rollback()
            assert "Twin" == twin.__dict__["name"]
            # What the failed flush noted is dropped with it.
            assert _runtime._FLUSHED.get() is None


def test_text_storage_is_sealed_after_flush(
    engine: Engine, sa_custodian: custdata.Custodian
) -> None:
    """Base64 text storage: the flushed object holds the stored text form, which opens."""
    models = make_models(storage="text")
    models.create(engine)
    try:
        with Session(engine, expire_on_commit=False) as session, billing():
            c = _new_customer(models)
            session.add(c)
            session.commit()
            assert c.__dict__["card"].__class__ is SealedRow
            _no_canary(c.__dict__)
            assert CANARIES["card"] == c.card
    finally:
        models.drop(engine)
