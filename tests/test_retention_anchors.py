"""Per-record retention anchors and acquisition metadata (R-RET-1, R-PUR-6)."""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures

from __future__ import annotations

import datetime as dt
import sys
import uuid

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session

import custdata

from custdata.crypto import Keyring
from custdata.sqlalchemy import (
    AcquisitionSource,
    acquisition_source,
    customer_data,
    notice_version,
    retention_anchor,
    subject_key,
)


sys.path.insert(0, str(Path(__file__).parent))
from sa_fixtures import engine  # noqa: F401 - pytest fixture


JST = dt.timezone(dt.timedelta(hours=9))
CANARY = "Canary Acquired Taro"


class _Models:
    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:8]

        class Base(DeclarativeBase):
            pass

        class Customer(Base):
            __tablename__ = f"acq_customers_{suffix}"
            id: Mapped[uuid.UUID] = subject_key()
            acquired_at: Mapped[dt.datetime] = retention_anchor("acquired")
            contract_end: Mapped[dt.datetime | None] = retention_anchor("contract_end")
            source: Mapped[str] = acquisition_source()
            notice: Mapped[str | None] = notice_version()
            name: Mapped[str] = customer_data("name", purposes=["billing"])

        self.Base = Base
        self.Customer = Customer


@pytest.fixture
def models(engine: Engine, sample_policy: custdata.Policy) -> Iterator[_Models]:
    m = _Models()
    m.Base.metadata.create_all(engine)
    custodian = custdata.Custodian(policy=sample_policy, keyring=Keyring.generate())
    with (
        custodian.activate(),
        custdata.acting_as("c-1", role="billing_clerk"),
        custdata.purpose("billing"),
    ):
        yield m
    m.Base.metadata.drop_all(engine)


def _count(engine: Engine, m: _Models) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(m.Customer.__table__)
            ).scalar_one()
        )


class TestAnchors:
    """Anchor columns: acquired set on insert, stored in UTC, read back aware."""

    def test_acquired_set_on_insert_and_read_back_aware(
        self, engine: Engine, models: _Models
    ) -> None:
        """acquired_at is filled on insert; a JST instant reads back as the same UTC instant."""
        before = dt.datetime.now(dt.timezone.utc)
        end = dt.datetime(2030, 4, 1, 9, 30, 15, 123456, tzinfo=JST)
        with Session(engine) as session:
            c = models.Customer(name=CANARY, source="third_party", contract_end=end)
            session.add(c)
            session.commit()
            cid = c.id
        with Session(engine) as session:
            got = session.get(models.Customer, cid)
            assert got is not None
            assert end == got.contract_end
            assert dt.timezone.utc == got.contract_end.tzinfo
            assert before - dt.timedelta(seconds=1) <= got.acquired_at
            assert got.acquired_at.tzinfo is not None

    @pytest.mark.parametrize(
        "value",
        [dt.datetime(2030, 1, 1), "2030-01-01", dt.date(2030, 1, 1)],
        ids=["naive", "text", "date"],
    )
    def test_bad_anchor_values(self, models: _Models, value: Any) -> None:
        """A naive, textual or date anchor is a ValueTypeError naming the attribute."""
        with pytest.raises(custdata.ValueTypeError, match="contract_end"):
            models.Customer(name="n", source="public", contract_end=value)


class TestAcquisition:
    """Direct acquisition needs the privacy-notice version shown (R-PUR-6)."""

    def test_direct_without_notice_refused(
        self, engine: Engine, models: _Models
    ) -> None:
        """Creating a customer through the direct path without notice_version fails."""
        with Session(engine) as session:
            session.add(models.Customer(name=CANARY, source="direct"))
            with pytest.raises(custdata.AcquisitionError, match="notice") as caught:
                session.commit()
            session.rollback()
        assert CANARY not in str(caught.value)
        assert 0 == _count(engine, models)

    @pytest.mark.parametrize(
        ("source", "notice"),
        [
            (AcquisitionSource.DIRECT, "2026-10"),
            ("direct", "2026-10"),
            ("third_party", None),
            ("public", None),
        ],
        ids=["direct-enum", "direct-text", "third-party", "public"],
    )
    def test_accepted(
        self, engine: Engine, models: _Models, source: Any, notice: str | None
    ) -> None:
        """Each source is stored as its text; direct with a notice version is accepted."""
        with Session(engine) as session:
            c = models.Customer(name=CANARY, source=source, notice=notice)
            session.add(c)
            session.commit()
            cid = c.id
        with Session(engine) as session:
            got = session.get(models.Customer, cid)
            assert got is not None
            assert AcquisitionSource(source).value == got.source

    def test_unknown_source_refused(self, engine: Engine, models: _Models) -> None:
        """A source that is not direct, third_party or public is refused."""
        with Session(engine) as session:
            session.add(models.Customer(name=CANARY, source="scraped"))
            with pytest.raises(custdata.AcquisitionError, match="one of"):
                session.commit()
            session.rollback()
        assert 0 == _count(engine, models)
