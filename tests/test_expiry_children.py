"""Expired is not readable in child tables; uncovered tables are reported (SA005)."""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures

from __future__ import annotations

import datetime as dt
import sys
import uuid

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlalchemy import ForeignKey, MetaData, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import custdata

from custdata import Purpose, RetentionRule, Role
from custdata.crypto import Keyring
from custdata.sqlalchemy import (
    SqlRetentionGuard,
    check_models,
    customer_data,
    retention_anchor,
    retention_coverage,
    subject_key,
)


sys.path.insert(0, str(Path(__file__).parent))
from sa_fixtures import Recorder, engine  # noqa: F401 - pytest fixture


UTC = dt.timezone.utc
T0 = dt.datetime(2020, 3, 1, 9, 0, tzinfo=UTC)
CANARY = "canary-child-note-41"


@pytest.fixture(scope="module")
def policy() -> custdata.Policy:
    """billing 7 years, support 1 year, both from the last transaction."""
    return custdata.Policy.build(
        organisation="Child K.K.",
        version="1",
        effective_date=dt.date(2019, 1, 1),
        next_review=dt.date(2099, 1, 1),
        retention_rules=[
            RetentionRule(
                id="billing", period="P7Y", anchor="last_transaction", action="delete"
            ),
            RetentionRule(
                id="support", period="P1Y", anchor="last_transaction", action="delete"
            ),
        ],
        purposes=[
            Purpose(
                id="billing", text_ja="請求", text_en="Billing", retention="billing"
            ),
            Purpose(
                id="support", text_ja="サポート", text_en="Support", retention="support"
            ),
        ],
        roles=[Role(id="clerk", purposes=["billing", "support"])],
    )


class _Models:
    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:8]

        class Base(DeclarativeBase):
            pass

        class Customer(Base):
            __tablename__ = f"ch_customers_{suffix}"
            id: Mapped[uuid.UUID] = subject_key()
            last_tx: Mapped[dt.datetime | None] = retention_anchor("last_transaction")
            name: Mapped[str] = customer_data("name", purposes=["billing", "support"])

        class Note(Base):
            """A child: its subject key is a foreign key to the customer."""

            __tablename__ = f"ch_notes_{suffix}"
            id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
            customer_id: Mapped[uuid.UUID] = subject_key(
                ForeignKey(f"ch_customers_{suffix}.id")
            )
            text: Mapped[str | None] = customer_data(
                "transaction.history", purposes=["billing", "support"]
            )

        class Loose(Base):
            """Names its subject without a foreign key: cannot be covered."""

            __tablename__ = f"ch_loose_{suffix}"
            id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
            customer_id: Mapped[uuid.UUID] = subject_key(primary_key=False)
            text: Mapped[str | None] = customer_data(
                "transaction.history", purposes=["support"]
            )

        self.suffix = suffix
        self.Base = Base
        self.Customer = Customer
        self.Note = Note
        self.Loose = Loose


@pytest.fixture
def models(engine: Engine) -> Iterator[_Models]:
    m = _Models()
    m.Base.metadata.create_all(engine)
    yield m
    m.Base.metadata.drop_all(engine)


def test_coverage_rule() -> None:
    """Own anchors cover the subject's table; a child by foreign key is covered by it."""
    m = _Models()
    customers, notes, loose = (
        m.Customer.__tablename__,
        m.Note.__tablename__,
        m.Loose.__tablename__,
    )
    assert {customers: customers, notes: customers, loose: None} == retention_coverage(
        m.Base
    )


def test_check_reports_uncovered_tables(policy: custdata.Policy) -> None:
    """SA005 names the table whose expired values stay readable; not the covered ones."""
    m = _Models()
    found = [(f.code, f.key_path) for f in check_models(m.Base, policy)]
    assert [("SA005", m.Loose.__tablename__)] == [f for f in found if f[0] == "SA005"]


def test_check_quiet_without_any_anchors(policy: custdata.Policy) -> None:
    """Models that declare no anchors at all get no SA005 (nothing is expected)."""
    metadata = MetaData()
    m = _Models()
    m.Loose.__table__.to_metadata(metadata)
    assert [] == [f for f in check_models(metadata, policy) if f.code == "SA005"]


def _read_notes(engine: Engine, m: _Models, customer: uuid.UUID, purpose: str) -> Any:
    with (
        Session(engine) as session,
        custdata.acting_as("c", role="clerk"),
        custdata.purpose(purpose),
    ):
        return session.scalars(
            select(m.Note.text).where(m.Note.customer_id == customer)
        ).all()


def test_child_rows_follow_the_parents_anchors(
    engine: Engine, models: _Models, policy: custdata.Policy
) -> None:
    """At two years, support may not read an old customer's notes; billing may."""
    recorder = Recorder()
    clock = [T0]
    custodian = custdata.Custodian(
        policy=policy,
        keyring=Keyring.generate(),
        audit=recorder,
        retention=SqlRetentionGuard(engine, policy, tables=models.Base),
        clock=lambda: clock[0],
    )
    m = models
    with custodian.activate():
        old, new = uuid.uuid4(), uuid.uuid4()
        with (
            Session(engine) as session,
            custdata.acting_as("c", role="clerk"),
            custdata.purpose("billing"),
        ):
            two_years = T0 + dt.timedelta(days=730)
            session.add_all(
                [
                    m.Customer(id=old, last_tx=T0, name="Old"),
                    m.Customer(id=new, last_tx=two_years, name="New"),
                    m.Note(customer_id=old, text=CANARY),
                    m.Note(customer_id=old, text="second"),
                    m.Note(customer_id=new, text="fresh"),
                ]
            )
            session.commit()
        clock[0] = T0 + dt.timedelta(days=731)
        assert ["fresh"] == _read_notes(engine, m, new, "support")
        assert sorted([CANARY, "second"]) == sorted(
            _read_notes(engine, m, old, "billing")
        )
        with pytest.raises(custdata.PurposeViolationError, match="retention") as caught:
            _read_notes(engine, m, old, "support")
        assert CANARY not in str(caught.value)
        denied = recorder.decisions[-1]
        assert (custdata.DenyReason.RETENTION_EXPIRED, (str(old),)) == (
            denied.reason,
            denied.subjects,
        )
