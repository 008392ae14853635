"""Objects hold sealed values: every route to a loaded value decides at the read.

On SQLite, PostgreSQL and MariaDB. Each test names the route; the canary
plaintexts of ``sa_fixtures.CANARIES`` must never be found where the route
leads, and each refused read must leave a denial naming its subject.
"""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures

from __future__ import annotations

import copy
import datetime as dt
import decimal
import logging
import pickle
import sys
import uuid

from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlalchemy import create_engine, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, joinedload, load_only, undefer

import custdata

from custdata.audit import MemorySink


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
    trail_sink,
)


#: Models whose classes pickle by reference (module-level names).
PICKLED = make_models("sealpk")
PickledCustomer = PICKLED.Customer
PickledOrder = PICKLED.Order
for _cls, _name in (
    (PickledCustomer, "PickledCustomer"),
    (PickledOrder, "PickledOrder"),
):
    _cls.__module__, _cls.__qualname__ = __name__, _name
# Configured now, so no other test's configure_mappers() meets them pending.
PICKLED.Base.registry.configure()


@pytest.fixture
def pickled(engine: Engine) -> Iterator[Models]:
    PICKLED.create(engine)
    yield PICKLED
    PICKLED.drop(engine)


def _add(session: Session, models: Models) -> uuid.UUID:
    with billing():
        customer = models.Customer(
            name=CANARIES["name"],
            email=CANARIES["email"],
            card=CANARIES["card"],
            birth_date=dt.date(1990, 4, 1),
        )
        customer.orders.append(models.Order(total=decimal.Decimal("12.50")))
        session.add(customer)
        session.commit()
        customer_id: uuid.UUID = customer.id
    return customer_id


@pytest.fixture
def cid(engine: Engine, models: Models, sa_custodian: custdata.Custodian) -> uuid.UUID:
    with Session(engine) as session:
        return _add(session, models)


def _no_canary(blob: object) -> None:
    text = blob.decode("latin-1") if isinstance(blob, bytes) else repr(blob)
    for value in CANARIES.values():
        assert value not in text


def _reads(recorder: Recorder, start: int) -> list[custdata.AccessDecision]:
    return [d for d in recorder.decisions[start:] if d.action is custdata.Action.READ]


class TestSealedState:
    """What a loaded object holds is the sealed form, whoever looks."""

    def test_dict_loaded_value_repr_pickle_copy(
        self, engine: Engine, pickled: Models, sa_custodian: custdata.Custodian
    ) -> None:
        """After a permitted read, __dict__, loaded_value, repr, pickle and copies hold no plaintext."""
        models = pickled
        with Session(engine) as session:
            cid = _add(session, models)
        with Session(engine) as session, billing():
            c = session.get(models.Customer, cid)
            assert CANARIES["card"] == c.card
            assert CANARIES["name"] == c.name
            _no_canary(c.__dict__)
            _no_canary(inspect(c).attrs.card.loaded_value)
            _no_canary(inspect(c).attrs.name.loaded_value)
            _no_canary(c)
            _no_canary(pickle.dumps(c))
            _no_canary(copy.copy(c).__dict__)
            _no_canary(copy.deepcopy(c.__dict__["card"]))

    def test_only_the_fields_read_are_decrypted(
        self, engine: Engine, models: Models, cid: uuid.UUID, counting: CountingKeyring
    ) -> None:
        """Loading decrypts nothing; each read decrypts its one value (again on every read)."""
        with Session(engine) as session, billing():
            before = counting.counts["decrypt"]
            c = session.scalars(select(models.Customer)).one()
            assert 0 == counting.counts["decrypt"] - before
            assert CANARIES["card"] == c.card
            assert 1 == counting.counts["decrypt"] - before
            assert CANARIES["card"] == c.card
            assert 2 == counting.counts["decrypt"] - before

    def test_values_assigned_by_the_application_are_its_own(
        self, engine: Engine, models: Models, cid: uuid.UUID, recorder: Recorder
    ) -> None:
        """A value the application assigned reads back as assigned, without a decision."""
        with Session(engine) as session, billing():
            c = session.get(models.Customer, cid)
            c.name = "Assigned"
        start = len(recorder.decisions)
        assert "Assigned" == c.name
        assert [] == _reads(recorder, start)


class TestReadsUnderAnotherContext:
    """A read under another context than the load's decides, records and may raise."""

    def test_object_carried_out_of_its_block(
        self, engine: Engine, models: Models, cid: uuid.UUID, recorder: Recorder
    ) -> None:
        """Outside the with block no actor is in force: ActorRequiredError, recorded with the subject."""
        with Session(engine) as session:
            with billing():
                c = session.get(models.Customer, cid)
                assert CANARIES["card"] == c.card
            with pytest.raises(custdata.ActorRequiredError) as info:
                _ = c.card
        _no_canary(str(info.value))
        last = recorder.decisions[-1]
        assert (custdata.Outcome.DENIED, ("card",), (str(cid),)) == (
            last.outcome,
            last.fields,
            last.subjects,
        )

    def test_requires_purpose_helper_does_not_leak(
        self, engine: Engine, models: Models, cid: uuid.UUID
    ) -> None:
        """Objects returned by a @requires_purpose helper reveal nothing to a caller without it."""

        @custdata.requires_purpose("billing")
        def load(session: Session) -> object:
            return session.get(models.Customer, cid)

        with (
            Session(engine) as session,
            custdata.acting_as("clerk-1", role="billing_clerk"),
        ):
            c = load(session)
            with pytest.raises(custdata.PurposeRequiredError):
                _ = c.card  # type: ignore[attr-defined]

    def test_other_purpose_decides_per_object_and_field(
        self, engine: Engine, models: Models, cid: uuid.UUID, recorder: Recorder
    ) -> None:
        """Under support: card refused (recorded with the subject), name allowed once, then covered."""
        with Session(engine) as session:
            with billing():
                c = session.get(models.Customer, cid)
            with support():
                start = len(recorder.decisions)
                with pytest.raises(custdata.PurposeViolationError):
                    _ = c.card
                assert CANARIES["name"] == c.name
                assert CANARIES["name"] == c.name
                decided = recorder.decisions[start:]
        assert [
            (custdata.Outcome.DENIED, ("card",), (str(cid),)),
            (custdata.Outcome.ALLOWED, ("name",), (str(cid),)),
        ] == [(d.outcome, d.fields, d.subjects) for d in decided]

    def test_load_announces_only_what_the_context_may_read(
        self, engine: Engine, models: Models, cid: uuid.UUID, recorder: Recorder
    ) -> None:
        """A load under support announces name, email and phone; reading them adds no decision."""
        with Session(engine) as session, support():
            start = len(recorder.decisions)
            c = session.get(models.Customer, cid)
            _ = (c.name, c.email, c.phone)
            reads = _reads(recorder, start)
        assert [("email", "name", "phone")] == [tuple(sorted(d.fields)) for d in reads]


class TestObjectRoutes:
    """Pickles, merges and re-added objects: sealed, and decided when read."""

    def test_unpickled_object_decides_afresh(
        self,
        engine: Engine,
        pickled: Models,
        sa_custodian: custdata.Custodian,
        recorder: Recorder,
    ) -> None:
        """An unpickled object reads only with a context that permits it, each read recorded."""
        models = pickled
        with Session(engine) as session:
            cid = _add(session, models)
        with Session(engine) as session, billing():
            data = pickle.dumps(session.get(models.Customer, cid))
        clone = pickle.loads(data)  # noqa: S301 - our own bytes
        with pytest.raises(custdata.ActorRequiredError):
            _ = clone.card
        start = len(recorder.decisions)
        with billing():
            assert CANARIES["card"] == clone.card
        assert [("card",)] == [d.fields for d in _reads(recorder, start)]

    def test_merge_and_readd_hold_sealed_values_and_write_nothing(
        self, engine: Engine, models: Models, cid: uuid.UUID, recorder: Recorder
    ) -> None:
        """A merged detached object and an expunged, re-added one hold sealed values; nothing is written."""
        with Session(engine) as session, billing():
            detached = session.get(models.Customer, cid)
            session.expunge(detached)
        with Session(engine) as session, support():
            merged = session.merge(detached)
            _no_canary(merged.__dict__)
            start = len(recorder.decisions)
            session.commit()
            assert [] == [
                d
                for d in recorder.decisions[start:]
                if d.action is custdata.Action.WRITE
            ]
        with Session(engine) as session, support():
            session.add(detached)
            _no_canary(detached.__dict__)
            with pytest.raises(custdata.PurposeViolationError):
                _ = detached.card
            session.commit()
        with Session(engine) as session, billing():
            assert CANARIES["card"] == session.get(models.Customer, cid).card


class TestRowLogging:
    """SQLAlchemy's row logging (echo="debug") never shows a plaintext."""

    def test_debug_logs_hold_no_plaintext(
        self,
        db_url: str,
        models: Models,
        cid: uuid.UUID,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """ORM loads log sealed values; rows of Core selects are not logged, but returned."""
        noisy = create_engine(db_url, echo="debug", hide_parameters=True)
        try:
            with caplog.at_level(logging.DEBUG, logger="sqlalchemy.engine"):
                with Session(noisy) as session, billing():
                    c = session.get(models.Customer, cid)
                    assert CANARIES["card"] == c.card
                    names = session.scalars(select(models.Customer.name)).all()
                with noisy.connect() as conn, billing():
                    t = models.Customer.__table__
                    row = conn.execute(select(t.c.email, t.c.card)).one()
        finally:
            noisy.dispose()
        assert [CANARIES["name"]] == names
        assert (CANARIES["email"], CANARIES["card"]) == tuple(row)
        assert "Row " in caplog.text
        assert "customer data" in caplog.text
        for value in CANARIES.values():
            assert value not in caplog.text


class TestNoSilentNone:
    """After commit, refresh, expiry or populate_existing a denied field raises, recorded."""

    @pytest.mark.parametrize("route", ["commit", "refresh", "expire", "populate"])
    def test_denied_field_raises_after(
        self,
        engine: Engine,
        models: Models,
        cid: uuid.UUID,
        recorder: Recorder,
        route: str,
    ) -> None:
        """Support touching card raises PurposeViolationError, whatever reloaded it."""
        with Session(engine) as session, support():
            c = session.get(models.Customer, cid)
            if route == "commit":
                session.commit()
            elif route == "refresh":
                session.refresh(c)
            elif route == "expire":
                session.expire(c)
            else:
                session.scalars(
                    select(models.Customer).execution_options(populate_existing=True)
                ).one()
            with pytest.raises(custdata.PurposeViolationError):
                _ = c.card
            assert CANARIES["name"] == c.name
        last_denied = [d for d in recorder.decisions if not d.allowed][-1]
        assert (("card",), (str(cid),)) == (last_denied.fields, last_denied.subjects)

    def test_null_field_is_decided_too(
        self, engine: Engine, models: Models, sa_custodian: custdata.Custodian
    ) -> None:
        """A NULL card is refused to support like a set one: being set is card data too."""
        with Session(engine) as session:
            with billing():
                c = models.Customer(name="N", email="n@example.jp")
                session.add(c)
                session.commit()
            with support():
                session.expire_all()
                with pytest.raises(custdata.PurposeViolationError):
                    _ = c.card
            with billing():
                assert c.card is None

    def test_primary_key_after_commit_reveals_nothing(
        self, engine: Engine, models: Models, cid: uuid.UUID, recorder: Recorder
    ) -> None:
        """Reading the id after commit (the refresh it triggers) records no read decision."""
        with Session(engine) as session, billing():
            c = session.get(models.Customer, cid)
            session.commit()
            start = len(recorder.decisions)
            assert cid == c.id
            assert [] == _reads(recorder, start)
            assert CANARIES["card"] == c.card
            assert [("card",)] == [d.fields for d in _reads(recorder, start)]

    @pytest.mark.parametrize("option", ["load_only", "undefer"])
    def test_loader_options_naming_a_denied_field(
        self, engine: Engine, models: Models, cid: uuid.UUID, option: str
    ) -> None:
        """load_only(card) / undefer(card) under support: PurposeViolationError, not SQLAlchemy's error."""
        opt = (
            load_only(models.Customer.card)
            if option == "load_only"
            else undefer(models.Customer.card)
        )
        with Session(engine) as session, support():
            c = session.scalars(select(models.Customer).options(opt)).one()
            with pytest.raises(custdata.PurposeViolationError):
                _ = c.card


class TestJoinsWithTheTrail:
    """Reads spanning two customer-data tables work with the real audit trail."""

    def test_one_event_per_table(
        self, engine: Engine, models: Models, trail_sink: MemorySink
    ) -> None:
        """joinedload, lazy="joined" and a two-table column select: one field.reveal per table."""
        joined = make_models(orders_lazy="joined")
        joined.create(engine)
        try:
            for m in (models, joined):
                with Session(engine) as session:
                    _add(session, m)
            entities: list[set[str]] = []
            with Session(engine) as session, billing():
                for statement in (
                    select(models.Customer).options(joinedload(models.Customer.orders)),
                    select(joined.Customer),
                ):
                    start = len(trail_sink.records)
                    c = session.scalars(statement).unique().one()
                    assert decimal.Decimal("12.50") == c.orders[0].total
                    entities.append(_revealed(trail_sink, start))
                start = len(trail_sink.records)
                rows = session.execute(
                    select(models.Customer.name, models.Order.total).join(models.Order)
                ).all()
                entities.append(_revealed(trail_sink, start))
        finally:
            joined.drop(engine)
        assert [(CANARIES["name"], decimal.Decimal("12.50"))] == [
            tuple(r) for r in rows
        ]
        assert [
            {models.Customer.__tablename__, models.Order.__tablename__},
            {joined.Customer.__tablename__, joined.Order.__tablename__},
            {models.Customer.__tablename__, models.Order.__tablename__},
        ] == entities

    def test_refused_join_records_no_reveal(
        self, engine: Engine, models: Models, trail_sink: MemorySink
    ) -> None:
        """A join refused on its second table records that denial only, no reveal of the first.

        Billing may read the customer's name but not the order's note: nothing
        is released, so nothing may be recorded as revealed (ORM column
        select and Core, both orders of the tables).
        """
        with Session(engine) as session:
            _add(session, models)
        customers = models.Customer.__table__
        orders = models.Order.__table__
        seen: list[list[tuple[str, str, str]]] = []

        def events(start: int) -> list[tuple[str, str, str]]:
            return [
                (r.fields["action"], r.fields["outcome"], r.fields["entity"])
                for r in trail_sink.records[start:]
            ]

        with Session(engine) as session, billing():
            start = len(trail_sink.records)
            with pytest.raises(custdata.PurposeViolationError):
                session.execute(
                    select(models.Customer.name, models.Order.note).join(models.Order)
                ).all()
            seen.append(events(start))
        with engine.connect() as conn, billing():
            for statement in (
                select(customers.c.name, orders.c.note).join_from(customers, orders),
                select(orders.c.note, customers.c.name).join_from(orders, customers),
            ):
                start = len(trail_sink.records)
                with pytest.raises(custdata.PurposeViolationError):
                    conn.execute(statement).all()
                seen.append(events(start))
        assert [[("purpose.check", "denied", orders.name)]] * 3 == seen


def _revealed(sink: MemorySink, start: int) -> set[str]:
    return {
        r.fields["entity"]
        for r in sink.records[start:]
        if r.fields["action"] == "field.reveal"
    }


class TestDenialsInTheTrail:
    """A refused read of a loaded object leaves a denial with its subject in the real trail."""

    def test_denied_read_names_its_subject(
        self, engine: Engine, models: Models, trail_sink: MemorySink
    ) -> None:
        """Support touching card: purpose.check, denied, requested read, the subject's pseudonym."""
        with Session(engine) as session:
            _add(session, models)
            with billing():
                c = session.scalars(select(models.Customer)).one()
            with support():
                start = len(trail_sink.records)
                with pytest.raises(custdata.PurposeViolationError):
                    _ = c.card
                events = [r.fields for r in trail_sink.records[start:]]
        assert [("purpose.check", "denied", "read", ["card"])] == [
            (e["action"], e["outcome"], e["requested"], e["fields"]) for e in events
        ]
        assert events[0]["subject_ref"].startswith("sr_")
        _no_canary(events)
