"""Models, custodians and helpers shared by the ``test_sa_*`` tests."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from sqlalchemy import String, create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

import custdata

from custdata.audit import AuditTrail, MemorySink
from custdata.crypto import InMemorySubjectKeyStore, Keyring
from custdata.governance import ConsentLedger
from custdata.sqlalchemy import customer_data, subject_key


#: Plaintexts that must never appear at rest.
CANARIES = {
    "name": "Canary Hanako",
    "email": "canary.hanako@example.jp",
    "card": "4111111111111111",
    "note": "canary-note-7f3a",
    "phone": "090-1234-5678",
}


class CountingCipher:
    """Wraps a field cipher and counts decryptions."""

    def __init__(self, inner: Any, counter: dict[str, int]) -> None:
        self._inner = inner
        self._counter = counter

    def encrypt(self, value: Any, subject: object = None) -> bytes:
        self._counter["encrypt"] += 1
        return self._inner.encrypt(value, subject=subject)  # type: ignore[no-any-return]

    def decrypt(self, blob: bytes, subject: object = None) -> Any:
        self._counter["decrypt"] += 1
        return self._inner.decrypt(blob, subject=subject)

    def seal_many(self, values: Any, tails: Any = None) -> list[bytes]:
        self._counter["encrypt"] += len(values)
        return self._inner.seal_many(values, tails)  # type: ignore[no-any-return]

    def open_value(self, blob: Any, tail: Any = None) -> Any:
        self._counter["decrypt"] += 1
        return self._inner.open_value(blob, tail)

    def read(self, blob: Any, tail: Any = None) -> Any:
        # The cipher's one-value read (its reader, or open_value itself).
        self._counter["decrypt"] += 1
        return self._inner.read(blob, tail)

    def open_fetched(self, blobs: Any, tails: Any = None) -> list[Any]:
        self._counter["decrypt"] += sum(blob is not None for blob in blobs)
        return self._inner.open_fetched(blobs, tails)  # type: ignore[no-any-return]


class CountingKeyring:
    """A keyring whose field ciphers count decrypt calls (``.counts["decrypt"]``)."""

    def __init__(self, inner: Keyring) -> None:
        self.inner = inner
        self.counts = {"encrypt": 0, "decrypt": 0}

    def field_cipher(self, **kw: Any) -> CountingCipher:
        return CountingCipher(self.inner.field_cipher(**kw), self.counts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Recorder:
    """An in-memory decision recorder."""

    def __init__(self) -> None:
        self.decisions: list[custdata.AccessDecision] = []

    def record_decision(self, decision: custdata.AccessDecision) -> None:
        self.decisions.append(decision)


@dataclass
class Models:
    """One set of mapped classes with unique table names."""

    Base: type[DeclarativeBase]
    Customer: Any
    Order: Any
    suffix: str

    def create(self, engine: Engine) -> None:
        self.Base.metadata.create_all(engine)

    def drop(self, engine: Engine) -> None:
        self.Base.metadata.drop_all(engine)


def make_models(
    suffix: str | None = None, *, storage: str = "binary", orders_lazy: str = "select"
) -> Models:
    """Build Customer/Order models on tables ``sa_customers_<suffix>``/``sa_orders_<suffix>``.

    *orders_lazy* is the loader strategy configured on ``Customer.orders``.
    """
    suffix = suffix or uuid.uuid4().hex[:8]

    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = f"sa_customers_{suffix}"
        id: Mapped[uuid.UUID] = subject_key()
        plan: Mapped[str] = mapped_column(
            String(20), default="basic", info={"custdata_exempt": "product tier"}
        )
        name: Mapped[str] = customer_data(
            "name", purposes=["billing", "support"], storage=storage
        )  # type: ignore[arg-type]
        email: Mapped[str] = customer_data(
            "contact.email",
            purposes=["billing", "support", "marketing"],
            searchable=True,
            unique=True,
            storage=storage,  # type: ignore[arg-type]
        )
        phone: Mapped[str | None] = customer_data(
            "contact.phone",
            purposes=["support"],
            on_violation="mask",
            storage=storage,  # type: ignore[arg-type]
        )
        card: Mapped[str | None] = customer_data(
            "payment.card", purposes=["billing"], storage=storage
        )  # type: ignore[arg-type]
        birth_date: Mapped[dt.date | None] = customer_data(
            "demographic.birth_date", purposes=["billing"]
        )
        orders: Mapped[list[Order]] = relationship(
            back_populates="customer",
            order_by="Order.id",
            lazy=orders_lazy,  # type: ignore[arg-type]
        )

    class Order(Base):
        __tablename__ = f"sa_orders_{suffix}"
        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
        customer_id: Mapped[uuid.UUID] = subject_key(f"sa_customers_{suffix}.id")
        total: Mapped[decimal.Decimal | None] = customer_data(
            "transaction.history", purposes=["billing", "support"]
        )
        note: Mapped[str | None] = customer_data(
            "transaction.history", purposes=["support"]
        )
        customer: Mapped[Customer] = relationship(back_populates="orders")

    return Models(Base=Base, Customer=Customer, Order=Order, suffix=suffix)


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def counting(keyring: Keyring) -> CountingKeyring:
    return CountingKeyring(keyring)


def consent_to_marketing(ledger: ConsentLedger, subject: object) -> str:
    """Record *subject*'s consent to marketing; return the consent id."""
    return ledger.grant(
        subject, "marketing", method="web_form", notice_version="2026-10"
    ).id


@pytest.fixture
def sa_custodian(
    sample_policy: custdata.Policy,
    counting: CountingKeyring,
    recorder: Recorder,
    consent_ledger: ConsentLedger,
) -> Iterator[custdata.Custodian]:
    c = custdata.Custodian(
        policy=sample_policy,
        keyring=counting,
        audit=recorder,
        subject_keys=InMemorySubjectKeyStore(),
        consent=consent_ledger,
    )
    with c.activate():
        yield c


@pytest.fixture
def trail_sink(sample_policy: custdata.Policy) -> Iterator[MemorySink]:
    """The real audit trail into a memory sink; its custodian is active for the test."""
    keyring = Keyring.generate()
    sink = MemorySink()
    trail = AuditTrail(keyring, sinks=[sink], checkpoint_interval=None)
    custodian = custdata.Custodian(policy=sample_policy, keyring=keyring, audit=trail)
    try:
        with custodian.activate():
            yield sink
    finally:
        trail.close()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = create_engine(db_url, hide_parameters=True)
    yield eng
    eng.dispose()


@pytest.fixture
def models(engine: Engine) -> Iterator[Models]:
    m = make_models()
    m.create(engine)
    yield m
    m.drop(engine)


def support() -> Any:
    """``acting_as`` + ``purpose("support")`` as one context manager."""
    return _Ctx("agent-1", "support_agent", "support")


def billing() -> Any:
    return _Ctx("clerk-1", "billing_clerk", "billing")


def marketing() -> Any:
    return _Ctx("mkt-1", "marketer", "marketing.email")


def plant(conn: Any, table_name: str, column_name: str, value: object) -> None:
    """Write *value* into every row's *column_name*, as an attacker with database access.

    Through a plain ``table()`` view, outside the application's encrypted
    columns: custdata refuses such a write through them (and in SQL text).
    """
    from sqlalchemy import LargeBinary, column, table, update

    raw = table(table_name, column(column_name, LargeBinary))
    conn.execute(update(raw).values({column_name: value}))


class _Ctx:
    def __init__(self, actor: str, role: str, purpose: str) -> None:
        self.args = (actor, role, purpose)

    def __enter__(self) -> None:
        actor, role, purpose = self.args
        self._a = custdata.acting_as(actor, role=role)
        self._a.__enter__()
        self._p = custdata.purpose(purpose)
        try:
            self._p.__enter__()
        except BaseException:
            self._a.__exit__(None, None, None)
            raise

    def __exit__(self, *exc: object) -> None:
        self._p.__exit__(*exc)
        self._a.__exit__(*exc)


__all__ = [
    "CANARIES",
    "CountingKeyring",
    "Models",
    "Recorder",
    "billing",
    "counting",
    "engine",
    "keyring",
    "make_models",
    "marketing",
    "models",
    "plant",
    "recorder",
    "sa_custodian",
    "support",
    "trail_sink",
]
