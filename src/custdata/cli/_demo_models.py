"""The demo's model: imported only when ``custdata demo`` runs."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy.orm import DeclarativeBase, Mapped

from ..sqlalchemy import customer_data, retention_anchor, subject_key


class Base(DeclarativeBase):
    """The demo's declarative base."""


class Customer(Base):
    """A customer of the sample mail-order business."""

    __tablename__ = "demo_customers"

    id: Mapped[uuid.UUID] = subject_key()
    #: The last order: the retention rules count from it.
    last_order_at: Mapped[dt.datetime | None] = retention_anchor("last_transaction")
    name: Mapped[str] = customer_data(
        "name", purposes=["billing", "shipping", "support"]
    )
    email: Mapped[str] = customer_data(
        "contact.email",
        purposes=["billing", "support", "marketing.email"],
        searchable=True,
    )
    phone: Mapped[str] = customer_data(
        "contact.phone", purposes=["billing", "shipping"], on_violation="mask"
    )
    card: Mapped[str] = customer_data("payment.card", purposes=["billing"])
