"""Typing of the SQLAlchemy integration: mypy --strict accepts normal use."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session

from custdata.sqlalchemy import (
    EncryptedDate,
    EncryptedString,
    customer_data,
    subject_key,
)


class Base(DeclarativeBase):
    """Base."""


class Person(Base):
    """A typed model."""

    __tablename__ = "typing_people"

    id: Mapped[uuid.UUID] = subject_key()
    email: Mapped[str] = customer_data(
        "contact.email", purposes=["support"], searchable=True
    )
    born: Mapped[dt.date | None] = customer_data(
        "demographic.birth_date", purposes=["billing"], type_=EncryptedDate
    )


def find(session: Session, email: str) -> str | None:
    """Return a person's e-mail through the blind index."""
    person = session.scalars(select(Person).where(Person.email == email)).first()
    if person is None:
        return None
    born: dt.date | None = person.born
    del born
    return person.email


def core_type() -> EncryptedString:
    """The explicit types are plain TypeDecorators."""
    return EncryptedString("typing_people.email", storage="text")
