"""The shop's models: customers and their orders."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from custdata.sqlalchemy import customer_data, retention_anchor, subject_key


class Base(DeclarativeBase):
    """The shop's declarative base."""


class Customer(Base):
    """A customer of the shop."""

    __tablename__ = "shop_customers"

    id: Mapped[uuid.UUID] = subject_key()
    plan: Mapped[str] = mapped_column(
        String(20), default="basic", info={"custdata_exempt": "product tier"}
    )
    #: When the customer last ordered: the retention rules count from it.
    last_order_at: Mapped[dt.datetime | None] = retention_anchor("last_transaction")
    name: Mapped[str] = customer_data(
        "name", purposes=["billing", "support", "shipping"]
    )
    email: Mapped[str] = customer_data(
        "contact.email",
        purposes=["billing", "support", "marketing"],
        searchable=True,
        unique=True,
    )
    phone: Mapped[str | None] = customer_data(
        "contact.phone", purposes=["support"], on_violation="mask"
    )
    address: Mapped[str | None] = customer_data(
        "contact.address", purposes=["billing", "shipping"]
    )
    card: Mapped[str | None] = customer_data("payment.card", purposes=["billing"])
    orders: Mapped[list[Order]] = relationship(back_populates="customer")


class Order(Base):
    """An order, bound to its customer."""

    __tablename__ = "shop_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[uuid.UUID] = subject_key(ForeignKey("shop_customers.id"))
    total: Mapped[decimal.Decimal] = customer_data(
        "transaction.history", purposes=["billing", "support"]
    )
    note: Mapped[str | None] = customer_data(
        "transaction.history", purposes=["support"]
    )
    customer: Mapped[Customer] = relationship(back_populates="orders")
