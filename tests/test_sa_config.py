"""Coverage holes closed: unclassified columns, column_property(), expressions over ciphertext."""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures

from __future__ import annotations

import sys
import uuid

from pathlib import Path
from typing import Any

import pytest

from sqlalchemy import String, func, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    aliased,
    column_property,
    mapped_column,
)

import custdata

from custdata.sqlalchemy import EncryptedString, subject_key


sys.path.insert(0, str(Path(__file__).parent))
from sa_fixtures import (  # noqa: F401 - pytest fixtures
    CANARIES,
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


class TestUnclassified:
    """An encrypted or tagged column not declared with customer_data() fails when mappers configure."""

    @pytest.mark.parametrize(
        "column",
        [
            lambda: mapped_column(EncryptedString()),
            lambda: mapped_column(String(40), info={"custdata": {"category": "name"}}),
        ],
        ids=["encrypted-type", "tagged"],
    )
    def test_unclassified_field_error(self, column: Any) -> None:
        """UnclassifiedFieldError names table.attribute."""

        class Base(DeclarativeBase):
            pass

        suffix = uuid.uuid4().hex[:8]

        class Loose(Base):
            __tablename__ = f"loose_{suffix}"
            id: Mapped[uuid.UUID] = subject_key()
            secret: Mapped[str] = column()

        try:
            with pytest.raises(custdata.UnclassifiedFieldError) as info:
                Base.registry.configure()
        finally:
            Base.registry.dispose()
        assert f"loose_{suffix}.secret" == info.value.key_path


def _add(engine: Engine, models: Models) -> uuid.UUID:
    with Session(engine) as session, billing():
        c = models.Customer(name=CANARIES["name"], email=CANARIES["email"], card="4111")
        session.add(c)
        session.commit()
        return c.id  # type: ignore[no-any-return]


class TestColumnProperty:
    """column_property() over a customer-data column is enforced like the field or refused."""

    def test_same_column_is_enforced_like_the_field(
        self, engine: Engine, sa_custodian: custdata.Custodian, recorder: Recorder
    ) -> None:
        """A second attribute over card is sealed: support is refused (recorded), billing reads it."""
        m = make_models()
        m.Customer.card_again = column_property(m.Customer.__table__.c.card)
        m.create(engine)
        try:
            cid = uuid.uuid4()
            with engine.begin() as conn, billing():
                conn.execute(
                    insert(m.Customer.__table__),
                    [{"id": cid, "name": "N", "email": "n@example.jp", "card": "4111"}],
                )
            with Session(engine) as session, support():
                c = session.get(m.Customer, cid)
                with pytest.raises(custdata.PurposeViolationError):
                    _ = c.card_again
            with Session(engine) as session, billing():
                assert "4111" == session.get(m.Customer, cid).card_again
        finally:
            m.drop(engine)
        assert (str(cid),) == next(
            d for d in recorder.decisions if not d.allowed
        ).subjects

    def test_expression_is_refused_clearly(
        self, engine: Engine, sa_custodian: custdata.Custodian
    ) -> None:
        """column_property(lower(email)) refuses the load with UnsupportedOperationError; the registry stays usable."""
        m = make_models()
        m.Customer.email_lower = column_property(
            func.lower(m.Customer.__table__.c.email)
        )
        m.Base.registry.configure()
        m.create(engine)
        try:
            with engine.begin() as conn, billing():
                conn.execute(
                    insert(m.Customer.__table__),
                    [{"id": uuid.uuid4(), "name": "N", "email": "n@example.jp"}],
                )
            with Session(engine) as session, billing():
                with pytest.raises(custdata.UnsupportedOperationError) as info:
                    session.scalars(select(m.Customer)).all()
                assert "email" in str(info.value)
                assert 1 == session.scalar(select(func.count(m.Customer.email)))
        finally:
            m.drop(engine)


class TestExpressionsOverCiphertext:
    """Comparisons that would run on ciphertext raise instead of matching nothing."""

    @pytest.mark.parametrize(
        "where",
        [
            lambda c: func.lower(c.email) == "x@example.jp",
            lambda c: c.email == c.name,
            lambda c: c.email == aliased(c).email,
            lambda c: c.email.in_([c.name]),
        ],
        ids=["function", "column", "aliased", "in-column"],
    )
    def test_unsupported(
        self,
        engine: Engine,
        models: Models,
        sa_custodian: custdata.Custodian,
        where: Any,
    ) -> None:
        """UnsupportedOperationError when built or executed; never an empty result."""
        _add(engine, models)
        with (
            Session(engine) as session,
            support(),
            pytest.raises(custdata.UnsupportedOperationError),
        ):
            session.execute(select(models.Customer.id).where(where(models.Customer)))
