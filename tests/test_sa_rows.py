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

import pytest

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import custdata

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
