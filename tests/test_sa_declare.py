"""One codec per column, fixed by the declaration, whatever runs first."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import subprocess
import sys
import uuid

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest

from sqlalchemy import create_engine, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session

import custdata

from custdata.crypto import Keyring
from custdata.sqlalchemy import customer_data, subject_key


ROOT = Path(__file__).resolve().parent.parent


class Tier(enum.Enum):
    """A member tier."""

    GOLD = "gold"
    SILVER = "silver"


def _models(suffix: str) -> Any:
    """A fresh declarative base with typed customer-data columns, not configured."""

    class Base(DeclarativeBase):
        pass

    class Member(Base):
        __tablename__ = f"sa_declare_{suffix}"
        id: Mapped[uuid.UUID] = subject_key()
        born: Mapped[dt.date] = customer_data(
            "demographic.birth_date", purposes=["billing"]
        )
        spent: Mapped[decimal.Decimal | None] = customer_data(
            "transaction.history", purposes=["billing"]
        )
        tier: Mapped[Tier] = customer_data("transaction.history", purposes=["billing"])
        seen: Mapped[Any] = customer_data(
            "transaction.history", purposes=["billing"], python_type=dt.datetime
        )
        code: Mapped[Annotated[str | None, "a note"]] = customer_data(
            "transaction.history", purposes=["billing"]
        )

    return Base, Member


@pytest.fixture
def members(
    db_url: str, sample_policy: custdata.Policy
) -> Iterator[tuple[Any, Engine]]:
    """The members table on each database, with an active custodian, never configured."""
    base, member = _models(uuid.uuid4().hex[:8])
    engine = create_engine(db_url)
    base.metadata.create_all(engine)
    custodian = custdata.Custodian(policy=sample_policy, keyring=Keyring.generate())
    try:
        with custodian.activate():
            yield member, engine
    finally:
        base.metadata.drop_all(engine)
        engine.dispose()
        base.registry.dispose()


class TestDeclaredCodec:
    """The Mapped[...] annotation (or python_type=) fixes the codec at class creation."""

    def test_codec_fixed_before_mappers_configure(self) -> None:
        """Before configure_mappers() runs, each column already has its declared type."""
        base, member = _models(uuid.uuid4().hex[:8])
        try:
            types = {
                c.name: c.type._binding.python_type
                for c in member.__table__.columns
                if c.name in {"born", "spent", "tier", "seen", "code"}
            }
            assert {
                "born": dt.date,
                "spent": decimal.Decimal,
                "tier": Tier,
                "seen": dt.datetime,
                "code": str,
            } == types
        finally:
            base.registry.dispose()

    def test_core_before_orm_round_trip(self, members: tuple[Any, Engine]) -> None:
        """A Core insert and select run before any ORM use keep dates, decimals, enums."""
        member, engine = members
        table = member.__table__
        mid = uuid.uuid4()
        row = {
            "id": mid,
            "born": dt.date(1990, 5, 17),
            "spent": decimal.Decimal("1234.50"),
            "tier": Tier.GOLD,
            "seen": dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.timezone.utc),
        }
        with (
            custdata.acting_as("c-1", role="billing_clerk"),
            custdata.purpose("billing"),
        ):
            with engine.begin() as conn:
                conn.execute(insert(table), row)
            with engine.connect() as conn:
                got = conn.execute(
                    select(
                        table.c.id,
                        table.c.born,
                        table.c.spent,
                        table.c.tier,
                        table.c.seen,
                    )
                ).one()
        assert row == dict(got._mapping)

    def test_wrong_type_refused_before_sending(
        self, members: tuple[Any, Engine]
    ) -> None:
        """A str for a date column: ValueTypeError naming the column, nothing sent.

        Core insert and an ORM flush alike; the message names the column and
        the types, never the value.
        """
        member, engine = members
        table = member.__table__
        canary = "1990-05-17-canary"
        where = rf"{table.name}\.born: the date codec cannot encode a str"
        with (
            custdata.acting_as("c-1", role="billing_clerk"),
            custdata.purpose("billing"),
        ):
            with (
                pytest.raises(custdata.ValueTypeError, match=where) as core,
                engine.begin() as conn,
            ):
                conn.execute(
                    insert(table),
                    {
                        "id": uuid.uuid4(),
                        "born": canary,
                        "tier": Tier.GOLD,
                        "seen": None,
                    },
                )
            with Session(engine) as session:
                session.add(member(born=canary, tier=Tier.GOLD))
                with pytest.raises(custdata.ValueTypeError, match=where) as orm:
                    session.flush()
        assert isinstance(core.value, TypeError)  # generic handlers keep working
        assert canary not in str(core.value) + str(orm.value)
        with engine.connect() as conn:
            assert 0 == len(conn.execute(select(table.c.id)).all())

    def test_fresh_process_script_reencrypts_example_models(
        self, tmp_path: Path
    ) -> None:
        """reencrypt() from a script in a fresh process reads the example's Decimal column."""
        url = f"sqlite:///{tmp_path / 'shop.db'}"
        keyring = tmp_path / "keyring.json"
        setup = f"""
import sys, decimal
sys.path.insert(0, {str(ROOT)!r})
import custdata
from custdata.crypto import Keyring
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from examples.shop.models import Base, Customer, Order
k = Keyring.generate(); k.save({str(keyring)!r})
c = custdata.Custodian(policy=custdata.Policy.from_toml({str(ROOT / "examples" / "custdata.toml")!r}), keyring=k)
e = create_engine({url!r}); Base.metadata.create_all(e)
with c.activate(), Session(e) as s, custdata.acting_as("c", role="billing_clerk"), custdata.purpose("billing"):
    cu = Customer(name="n", email="e@example.jp"); cu.orders.append(Order(total=decimal.Decimal("9.5"))); s.add(cu); s.commit()
k.rotate(); k.save({str(keyring)!r})
"""
        job = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from sqlalchemy import create_engine
from custdata.crypto import Keyring
from custdata.sqlalchemy import reencrypt
from examples.shop.models import Base

class Keys:
    keyring = Keyring.load({str(keyring)!r})
    subject_keys = None

report = reencrypt(create_engine({url!r}), Keys(), tables=Base)
print(report.reencrypted, report.complete)
"""
        for script in (setup, job):
            done = subprocess.run(
                [sys.executable, "-c", script],
                capture_output=True,
                text=True,
                check=False,
            )
            assert 0 == done.returncode, done.stderr
        assert "3 True" == done.stdout.strip()


class TestDeclarationErrors:
    """Declarations custdata cannot encode are refused when the class is created."""

    def test_unencodable_annotation(self) -> None:
        """Mapped[float] names no codec: ConfigurationError naming the attribute."""

        class Base(DeclarativeBase):
            pass

        try:
            with pytest.raises(custdata.ConfigurationError, match=r"Bad\.ratio"):

                class Bad(Base):
                    __tablename__ = "sa_declare_bad"
                    id: Mapped[uuid.UUID] = subject_key()
                    ratio: Mapped[float] = customer_data(
                        "transaction.history", purposes=["billing"]
                    )
        finally:
            base_registry = Base.registry
            base_registry.dispose()

    def test_python_type_disagrees_with_annotation(self) -> None:
        """python_type=date on a Mapped[str] attribute: ConfigurationError."""

        class Base(DeclarativeBase):
            pass

        try:
            with pytest.raises(custdata.ConfigurationError, match="disagrees"):

                class Bad(Base):
                    __tablename__ = "sa_declare_bad2"
                    id: Mapped[uuid.UUID] = subject_key()
                    born: Mapped[str] = customer_data(
                        "demographic.birth_date",
                        purposes=["billing"],
                        python_type=dt.date,
                    )
        finally:
            Base.registry.dispose()

    @pytest.mark.parametrize("python_type", [float, object, str | None])
    def test_python_type_must_have_a_codec(self, python_type: Any) -> None:
        """python_type= takes only the types custdata encrypts: TypeError."""
        with pytest.raises(TypeError, match="python_type"):
            customer_data("name", purposes=["billing"], python_type=python_type)

    @pytest.mark.parametrize("argument", ["purposes", "prohibited"])
    def test_purposes_as_a_string(self, argument: str) -> None:
        """purposes="billing" is one clear error, not one per character."""
        kwargs: dict[str, Any] = {"purposes": ["billing"], argument: "billing"}
        with pytest.raises(custdata.ConfigurationError) as caught:
            customer_data("name", **kwargs)
        assert f"{argument}=['billing']" in str(caught.value)
        assert "'b'" not in str(caught.value)
