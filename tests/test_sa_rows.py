"""One sealed object per loaded row: what it holds and how each field reads from it.

On SQLite, PostgreSQL and MariaDB.
"""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures

from __future__ import annotations

import copy
import datetime as dt
import gc
import pickle
import sys
import uuid

from pathlib import Path
from typing import Any

import pytest

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import custdata

from custdata.crypto import _accel as _crypto_accel
from custdata.sqlalchemy._sealed import SealedRow


sys.path.insert(0, str(Path(__file__).parent))
from counting import python_calls
from sa_fixtures import (  # noqa: F401 - pytest fixtures
    CANARIES,
    CountingKeyring,
    Models,
    Recorder,
    billing,
    counting,
    engine,
    keyring,
    models,
    recorder,
    sa_custodian,
    support,
)


def _add(engine: Engine, models: Models, n: int = 1) -> list[uuid.UUID]:
    with Session(engine) as session, billing():
        rows = [
            models.Customer(
                name=f"{CANARIES['name']} {i}",
                email=f"{i}.{CANARIES['email']}",
                card=CANARIES["card"],
                birth_date=dt.date(1990, 4, 1),
            )
            for i in range(n)
        ]
        session.add_all(rows)
        session.commit()
        return [c.id for c in rows]


def test_the_row_object_is_shared_and_holds_no_plaintext(
    engine: Engine, models: Models, sa_custodian: custdata.Custodian
) -> None:
    """Every customer-data attribute of a loaded instance refers to one sealed row."""
    (cid,) = _add(engine, models)
    with Session(engine) as session, billing():
        c = session.get(models.Customer, cid)
        held = {id(c.__dict__[k]) for k in ("name", "email", "card", "birth_date")}
        assert 1 == len(held)
        sealed = c.__dict__["card"]
        assert sealed.__class__ is SealedRow
        assert "<custdata sealed value>" == repr(sealed) == str(sealed)
        for blob in (repr(sealed.values), pickle.dumps(sealed)):
            text = blob.decode("latin-1") if isinstance(blob, bytes) else blob
            for value in CANARIES.values():
                assert value not in text
        assert CANARIES["card"] == c.card
        assert f"{CANARIES['name']} 0" == c.name


def test_each_field_reads_its_own_envelope(
    engine: Engine,
    models: Models,
    sa_custodian: custdata.Custodian,
    counting: CountingKeyring,
) -> None:
    """Reading one field of the row opens that field only."""
    (cid,) = _add(engine, models)
    with Session(engine) as session, billing():
        c = session.get(models.Customer, cid)
        before = counting.counts["decrypt"]
        assert CANARIES["card"] == c.card
        assert 1 == counting.counts["decrypt"] - before
        assert dt.date(1990, 4, 1) == c.birth_date
        assert 2 == counting.counts["decrypt"] - before


def test_a_copy_decides_afresh_per_field(
    engine: Engine, models: Models, sa_custodian: custdata.Custodian, recorder: Recorder
) -> None:
    """A deep copy of the row drops its grant: a refused field raises, a permitted one is recorded."""
    (cid,) = _add(engine, models)
    with Session(engine) as session, billing():
        c = session.get(models.Customer, cid)
        clone = copy.deepcopy(c.__dict__["card"])
        assert clone == c.__dict__["card"]
        assert clone.grant is None
        c.__dict__["card"] = clone
        c.__dict__["name"] = clone
    with support():
        start = len(recorder.decisions)
        with pytest.raises(custdata.PurposeViolationError):
            _ = c.card
        assert f"{CANARIES['name']} 0" == c.name
        assert f"{CANARIES['name']} 0" == c.name
    assert [
        (custdata.Outcome.DENIED, ("card",), (str(cid),)),
        (custdata.Outcome.ALLOWED, ("name",), (str(cid),)),
    ] == [(d.outcome, d.fields, d.subjects) for d in recorder.decisions[start:]]


def test_a_load_leaves_one_object_per_row_for_the_collector(
    engine: Engine, models: Models, sa_custodian: custdata.Custodian
) -> None:
    """The sealed objects a load leaves do not grow with the number of fields."""
    _add(engine, models, n=50)
    with Session(engine) as session, billing():
        gc.collect()
        loaded = session.scalars(select(models.Customer)).all()
        rows = [o for o in gc.get_objects() if o.__class__ is SealedRow]
        assert 50 == len(loaded)
        assert 50 == len(rows)


def test_a_load_makes_one_custdata_call_per_row_and_one_per_read(
    engine: Engine, models: Models, sample_policy: custdata.Policy
) -> None:
    """Counted, not timed: what custdata's code adds to a select-all per row.

    A load hands each row over sealed with one Python call of custdata's per
    row (the sealed row's ``__init__``; the batch is walked by ``map`` over C
    callables); a read is the attribute's ``__get__``, whose open is one C
    call (natively). The rest
    is per batch, whatever its size.
    """
    custodian = custdata.Custodian(
        policy=sample_policy, keyring=custdata.crypto.Keyring.generate()
    )
    with custodian.activate(), billing():
        with Session(engine) as session:
            session.add_all(
                models.Customer(name=f"{CANARIES['name']} {i}", email=f"{i}@example.jp")
                for i in range(90)
            )
            session.commit()
        ids = [
            *Session(engine).scalars(
                select(models.Customer.id).order_by(models.Customer.id)
            )
        ]

        def load(n: int, *, read: bool) -> int:
            chosen = ids[:n]
            statement = select(models.Customer).where(models.Customer.id.in_(chosen))

            def run() -> None:
                with Session(engine) as session:
                    for c in session.scalars(statement).all():
                        if read:
                            assert c.name.startswith(CANARIES["name"])
                            assert c.email.endswith("@example.jp")

            run()  # compiled, cached, the column keys derived
            return python_calls(run, under=str(Path(custdata.__file__).parent))

        # A read is __get__ alone: the cipher's native reader opens the value
        # without a Python call; without the native accelerator, the reader
        # is open_value, and the reference's open_text and open_envelope are
        # called from it.
        per_read = 1 if _crypto_accel.native is not None else 4
        for read, per_row in ((False, 1), (True, 1 + 2 * per_read)):
            small, large = load(30, read=read), load(90, read=read)
            assert per_row * 60 == large - small, (read, small, large)


def test_rows_the_driver_returns_as_lists_are_sealed(
    tmp_path: Path, sample_policy: custdata.Policy
) -> None:
    """A DBAPI whose rows are not tuples: each row is still handed over sealed."""
    from sqlalchemy import create_engine, event

    from sa_fixtures import make_models

    engine = create_engine(f"sqlite:///{tmp_path / 'lists.db'}", hide_parameters=True)

    @event.listens_for(engine, "connect")
    def _lists(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.row_factory = lambda _cursor, row: list(row)

    models = make_models()
    models.create(engine)
    recorder = Recorder()
    custodian = custdata.Custodian(
        policy=sample_policy,
        keyring=custdata.crypto.Keyring.generate(),
        audit=recorder,
    )
    try:
        with custodian.activate(), billing(), Session(engine) as session:
            session.add_all(
                models.Customer(
                    name=f"{CANARIES['name']} {i}",
                    email=f"{i}@example.jp",
                    card=CANARIES["card"],
                )
                for i in range(3)
            )
            session.commit()
            session.expunge_all()
            loaded = session.scalars(select(models.Customer)).all()
            assert 3 == len({id(c.__dict__["name"]) for c in loaded})
            assert all(c.__dict__["card"] is c.__dict__["name"] for c in loaded)
            assert all(c.__dict__["name"].__class__ is SealedRow for c in loaded)
            assert {f"{CANARIES['name']} {i}" for i in range(3)} == {
                c.name for c in loaded
            }
            assert {CANARIES["card"]} == {c.card for c in loaded}
            assert all(isinstance(c.id, uuid.UUID) for c in loaded)
    finally:
        models.drop(engine)
        engine.dispose()
