"""Retention anchors per record: the events a retention period counts from."""

from __future__ import annotations

import datetime as dt

from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import mapped_column
from sqlalchemy.types import TypeDecorator

from custdata._retention import Anchor


__all__ = ["ANCHOR_INFO_KEY", "UtcDateTime", "anchor_columns", "retention_anchor"]

#: The ``Column.info`` key naming the anchor a column holds.
ANCHOR_INFO_KEY = "custdata_anchor"


class UtcDateTime(TypeDecorator[dt.datetime]):
    """An aware date-time stored in UTC on every database, read back aware.

    MySQL and MariaDB keep no time zone (and whole seconds by default): values
    are converted to UTC before they are sent and given UTC when read, with
    microseconds kept.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        """Microsecond precision on MySQL and MariaDB."""
        if dialect.name in {"mysql", "mariadb"}:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        """Convert to UTC; a naive value is refused."""
        if value is None:
            return None
        if not isinstance(value, dt.datetime):
            msg = f"a retention anchor is a datetime, not {type(value).__name__}"
            raise TypeError(msg)
        if value.tzinfo is None or value.utcoffset() is None:
            msg = "a retention anchor must be time-zone aware"
            raise ValueError(msg)
        utc = value.astimezone(dt.timezone.utc)
        if dialect.name in {"mysql", "mariadb", "sqlite"}:
            return utc.replace(tzinfo=None)
        return utc

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        """Give the stored value its time zone (UTC) back."""
        return aware_utc(value)


def aware_utc(value: dt.datetime | None) -> dt.datetime | None:
    """*value* as an aware UTC date-time (a naive one is taken as UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def retention_anchor(
    anchor: Anchor | str,
    *,
    set_on_insert: bool | None = None,
    nullable: bool = True,
) -> Any:
    """Declare a column holding one retention anchor of the record (R-RET-1).

    The retention sweep (:func:`custdata.sqlalchemy.sweep`) reads it to decide
    when each customer-data value of the row expires: a rule whose anchor is
    ``last_transaction`` counts from this row's ``last_transaction`` column.
    A row without a value for an anchor (a contract still running) does not
    expire under the rules counting from it.

    Example::

        class Customer(Base):
            __tablename__ = "customers"
            id: Mapped[uuid.UUID] = subject_key()
            acquired_at: Mapped[dt.datetime] = retention_anchor("acquired")
            last_order_at: Mapped[dt.datetime | None] = retention_anchor(
                "last_transaction"
            )

    Args:
        anchor: ``acquired``, ``last_transaction``, ``contract_end``, or the
            name of a custom anchor (a rule's ``custom_anchor``).
        set_on_insert: Fill the column with the current time when a row is
            inserted without it. Defaults to true for ``acquired``.
        nullable: Whether the column may be NULL (the event has not happened).

    Returns:
        A ``mapped_column`` of :class:`UtcDateTime`.

    Raises:
        ValueError: If *anchor* is empty.
    """
    name = anchor.value if isinstance(anchor, Anchor) else str(anchor)
    if not name:
        msg = "a retention anchor needs a name"
        raise ValueError(msg)
    if set_on_insert is None:
        set_on_insert = name == Anchor.ACQUIRED.value
    return mapped_column(
        UtcDateTime(),
        nullable=nullable,
        default=_utcnow if set_on_insert else None,
        # Timestamps of events, not customer data: custdata check accepts them.
        info={ANCHOR_INFO_KEY: name, "custdata_exempt": f"retention anchor {name}"},
    )


def anchor_columns(table: Any) -> dict[str, Any]:
    """The anchor columns of *table*, by anchor name."""
    return {
        c.info[ANCHOR_INFO_KEY]: c for c in table.columns if c.info.get(ANCHOR_INFO_KEY)
    }
