"""Every path to a field is a use: blind-index search, bulk updates and deletes.

On SQLite, PostgreSQL and MariaDB: each is refused without a context that
permits it, leaving a recorded denial with its subjects (where known) and the
stored data intact, and each allowed use records its event.
"""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures

from __future__ import annotations

import sys
import uuid

from pathlib import Path
from typing import Any

import pytest

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import custdata

from custdata.audit import MemorySink


sys.path.insert(0, str(Path(__file__).parent))
from sa_fixtures import (  # noqa: F401 - pytest fixtures
    CANARIES,
    Models,
    Recorder,
    _Ctx,
    billing,
    counting,
    engine,
    keyring,
    make_models,
    models,
    recorder,
    sa_custodian,
    support,
    trail_sink,
)


def shipping() -> Any:
    """A warehouse clerk acting for shipping, which may not use e-mail or card."""
    return _Ctx("wh-1", "warehouse", "shipping")


def _customers(engine: Engine, models: Models, n: int = 2) -> list[uuid.UUID]:
    ids = []
    with Session(engine) as session, billing():
        for i in range(n):
            c = models.Customer(
                name=f"{CANARIES['name']} {i}",
                email=f"c{i}.{CANARIES['email']}",
                card=CANARIES["card"],
            )
            session.add(c)
            session.flush()
            ids.append(c.id)
        session.commit()
    return ids


def _email(i: int) -> str:
    return f"c{i}.{CANARIES['email']}"


def _count(engine: Engine, models: Models) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(models.Customer.__table__)
            ).scalar_one()
        )


@pytest.fixture
def ids(
    engine: Engine, models: Models, sa_custodian: custdata.Custodian
) -> list[uuid.UUID]:
    return _customers(engine, models)


class TestSearch:
    """== and in_() through the blind index need a context that permits the field."""

    @pytest.mark.parametrize(
        ("context", "error"),
        [
            (None, custdata.ActorRequiredError),
            (shipping, custdata.PurposeViolationError),
        ],
    )
    def test_search_refused(
        self,
        engine: Engine,
        models: Models,
        ids: list[uuid.UUID],
        recorder: Recorder,
        context: Any,
        error: type[Exception],
    ) -> None:
        """No actor, or a purpose not permitting email: refused before the query runs, recorded."""
        statement = select(models.Customer.id).where(models.Customer.email == _email(0))
        with Session(engine) as session, context() if context else _Nothing():
            with pytest.raises(error) as info:
                session.scalars(statement).all()
        assert CANARIES["email"] not in str(info.value)
        last = recorder.decisions[-1]
        assert (custdata.Action.SEARCH, custdata.Outcome.DENIED, ("email",)) == (
            last.action,
            last.outcome,
            last.fields,
        )

    def test_allowed_search_records_fields_and_count(
        self, engine: Engine, models: Models, ids: list[uuid.UUID], recorder: Recorder
    ) -> None:
        """ORM and Core searches under support record field.search with the number of rows found."""
        t = models.Customer.__table__
        with Session(engine) as session, support():
            start = len(recorder.decisions)
            found = session.scalars(
                select(models.Customer.id).where(
                    models.Customer.email.in_(
                        [_email(0), _email(1), "nobody@example.jp"]
                    )
                )
            ).all()
            with engine.connect() as conn:
                one = conn.execute(select(t.c.id).where(t.c.email == _email(1))).all()
            searches = [
                d
                for d in recorder.decisions[start:]
                if d.action is custdata.Action.SEARCH
            ]
        assert sorted(ids) == sorted(found)
        assert [ids[1]] == [r[0] for r in one]
        assert [(("email",), 2), (("email",), 1)] == [
            (d.fields, d.count) for d in searches
        ]
        assert all(d.allowed for d in searches)
        for d in searches:
            assert CANARIES["email"] not in repr(d)

    def test_search_in_a_dml_statement(
        self, engine: Engine, models: Models, ids: list[uuid.UUID], recorder: Recorder
    ) -> None:
        """UPDATE ... WHERE email == v is a search too: refused without an actor, nothing changed."""
        t = models.Customer.__table__
        statement = update(t).where(t.c.email == _email(0)).values(plan="gold")
        with engine.begin() as conn, pytest.raises(custdata.ActorRequiredError):
            conn.execute(statement)
        with engine.begin() as conn, support():
            conn.execute(statement)
        with engine.connect() as conn:
            plans = dict(conn.execute(select(t.c.id, t.c.plan)).all())
        assert {ids[0]: "gold", ids[1]: "basic"} == plans
        searches = [d for d in recorder.decisions if d.action is custdata.Action.SEARCH]
        assert [False, True] == [d.allowed for d in searches]

    def test_search_event_in_the_trail(
        self, engine: Engine, models: Models, trail_sink: MemorySink
    ) -> None:
        """With the real trail: one field.search event naming the field and the count, no value."""
        _customers(engine, models)
        with Session(engine) as session, support():
            start = len(trail_sink.records)
            session.scalars(
                select(models.Customer.id).where(models.Customer.email == _email(0))
            ).all()
            events = [r.fields for r in trail_sink.records[start:]]
        search = [e for e in events if e["action"] == "field.search"]
        assert [(["email"], 1, models.Customer.__tablename__)] == [
            (e["fields"], e["count"], e["entity"]) for e in search
        ]
        assert CANARIES["email"] not in repr(events)


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class TestBulkUpdateByPrimaryKey:
    """session.execute(update(Customer), [{...}]) authorizes every written field like a flush."""

    def test_field_the_purpose_may_not_write_is_refused(
        self, engine: Engine, models: Models, ids: list[uuid.UUID], recorder: Recorder
    ) -> None:
        """Support may not write card: refused, recorded with the field and subject, card intact."""
        with Session(engine) as session, support():
            with pytest.raises(custdata.PurposeViolationError):
                session.execute(
                    update(models.Customer), [{"id": ids[0], "card": "0000"}]
                )
            session.rollback()
        last = recorder.decisions[-1]
        assert (custdata.Outcome.DENIED, ("card",), (str(ids[0]),)) == (
            last.outcome,
            last.fields,
            last.subjects,
        )
        with Session(engine) as session, billing():
            assert CANARIES["card"] == session.get(models.Customer, ids[0]).card

    def test_allowed_update_names_its_fields(
        self, engine: Engine, models: Models, ids: list[uuid.UUID], recorder: Recorder
    ) -> None:
        """Billing writes card by primary key: one UPDATE decision naming card and the subject."""
        with Session(engine) as session, billing():
            session.execute(update(models.Customer), [{"id": ids[0], "card": "5555"}])
            session.commit()
        updates = [d for d in recorder.decisions if d.action is custdata.Action.UPDATE]
        assert [(("card",), (str(ids[0]),), 1)] == [
            (d.fields, d.subjects, d.count) for d in updates
        ]
        with Session(engine) as session, billing():
            assert "5555" == session.get(models.Customer, ids[0]).card


class TestDeletes:
    """Deleting records needs an actor and a purpose that may_erase; record.delete names them."""

    @pytest.mark.parametrize("route", ["session", "core", "bulk"])
    @pytest.mark.parametrize(
        ("context", "error"),
        [
            (None, custdata.ActorRequiredError),
            (billing, custdata.PurposeViolationError),
        ],
    )
    def test_refused_delete_leaves_the_record(
        self,
        engine: Engine,
        models: Models,
        ids: list[uuid.UUID],
        recorder: Recorder,
        route: str,
        context: Any,
        error: type[Exception],
    ) -> None:
        """No actor, or billing (which may not erase): refused, recorded with the subject, nothing deleted."""
        with Session(engine) as session:
            with billing():
                target = session.get(models.Customer, ids[0])
            with context() if context else _Nothing(), pytest.raises(error):
                _delete(session, models, route, target, ids[0])
            session.rollback()
        assert 2 == _count(engine, models)
        last = recorder.decisions[-1]
        assert (custdata.Action.DELETE, custdata.Outcome.DENIED, (str(ids[0]),)) == (
            last.action,
            last.outcome,
            last.subjects,
        )

    @pytest.mark.parametrize("route", ["session", "core", "bulk"])
    def test_allowed_delete_is_recorded(
        self,
        engine: Engine,
        models: Models,
        ids: list[uuid.UUID],
        recorder: Recorder,
        route: str,
    ) -> None:
        """Support may erase: one DELETE decision with the subject and a count of 1."""
        with Session(engine) as session, support():
            target = session.get(models.Customer, ids[0])
            start = len(recorder.decisions)
            _delete(session, models, route, target, ids[0])
            session.commit()
        deletes = [
            d for d in recorder.decisions[start:] if d.action is custdata.Action.DELETE
        ]
        assert [((str(ids[0]),), 1)] == [(d.subjects, d.count) for d in deletes]
        assert "card" in deletes[0].fields
        assert 1 == _count(engine, models)

    def test_delete_event_in_the_trail(
        self, engine: Engine, models: Models, trail_sink: MemorySink
    ) -> None:
        """With the real trail: record.delete names both subjects' pseudonyms and the count."""
        _customers(engine, models)
        with engine.begin() as conn, support():
            start = len(trail_sink.records)
            conn.execute(delete(models.Customer.__table__))
            events = [r.fields for r in trail_sink.records[start:]]
        deleted = [e for e in events if e["action"] == "record.delete"]
        assert [(2, 2)] == [(len(e["subjects"]), e["count"]) for e in deleted]


def _delete(
    session: Session, models: Models, route: str, target: Any, cid: uuid.UUID
) -> None:
    if route == "session":
        session.delete(target)
        session.flush()
    elif route == "core":
        t = models.Customer.__table__
        session.connection().execute(delete(t).where(t.c.id == cid))
    else:
        session.execute(delete(models.Customer).where(models.Customer.id == cid))


class TestSearchAnywhere:
    """A comparison with the blind index is a search wherever it stands in the statement."""

    @pytest.mark.parametrize("where", ["join", "subquery"])
    def test_search_outside_the_where_clause(
        self,
        engine: Engine,
        models: Models,
        ids: list[uuid.UUID],
        recorder: Recorder,
        where: str,
    ) -> None:
        """In a join's ON clause or a subquery: refused without an actor, recorded with one."""
        customer, order = models.Customer, models.Order
        with Session(engine) as session, billing():
            session.add(order(customer_id=ids[0]))
            session.commit()
        if where == "join":
            statement = select(order.id).join(
                customer,
                (customer.id == order.customer_id) & (customer.email == _email(0)),
            )
        else:
            statement = select(order.id).where(
                order.customer_id.in_(
                    select(customer.id).where(customer.email == _email(0))
                )
            )
        with Session(engine) as session, pytest.raises(custdata.ActorRequiredError):
            session.execute(statement).all()
        with Session(engine) as session, support():
            assert 1 == len(session.execute(statement).all())
        searches = [d for d in recorder.decisions if d.action is custdata.Action.SEARCH]
        assert [(False, ("email",)), (True, ("email",))] == [
            (d.allowed, d.fields) for d in searches
        ]
