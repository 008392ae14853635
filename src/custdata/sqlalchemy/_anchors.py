"""Per-record retention anchors and acquisition metadata (R-RET-1, R-PUR-6)."""

from __future__ import annotations

import datetime as dt
import enum

from typing import Any

from sqlalchemy import DateTime, String, event
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapper, mapped_column
from sqlalchemy.types import TypeDecorator

from custdata._errors import AcquisitionError, ValueTypeError
from custdata._retention import Anchor


__all__ = [
    "ACQUISITION_INFO_KEY",
    "ANCHOR_INFO_KEY",
    "AcquisitionSource",
    "UtcDateTime",
    "acquisition_source",
    "anchor_columns",
    "notice_version",
    "retention_anchor",
]

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


#: The ``Column.info`` key naming the acquisition item a column holds.
ACQUISITION_INFO_KEY = "custdata_acquisition"


class AcquisitionSource(str, enum.Enum):
    """Where a record's customer data was obtained (R-PUR-6)."""

    #: From the data subject (the privacy notice's version must be recorded).
    DIRECT = "direct"
    #: From a third party (a receipt record is kept, APPI Art. 30).
    THIRD_PARTY = "third_party"
    #: From a publication.
    PUBLIC = "public"


def acquisition_source(*, nullable: bool = False) -> Any:
    """Declare the column recording where the record's data was obtained (R-PUR-6).

    The value is an :class:`AcquisitionSource` (stored as its text). With
    :func:`notice_version` on the same model, an ORM insert of a record
    acquired ``direct``-ly without the notice version shown is refused with
    :class:`custdata.AcquisitionError` before anything is sent.
    """
    return mapped_column(
        String(16),
        nullable=nullable,
        info={
            ACQUISITION_INFO_KEY: "source",
            "custdata_exempt": "acquisition metadata",
        },
    )


def notice_version(*, nullable: bool = True) -> Any:
    """Declare the column recording the privacy-notice version shown at acquisition.

    Required (on ORM inserts) when the record's :func:`acquisition_source` is
    ``direct`` (APPI Art. 21(2): the purpose is stated to the person).
    """
    return mapped_column(
        String(64),
        nullable=nullable,
        info={
            ACQUISITION_INFO_KEY: "notice_version",
            "custdata_exempt": "acquisition metadata",
        },
    )


def _acquisition_attrs(mapper: Mapper[Any]) -> tuple[str | None, str | None]:
    source = notice = None
    for prop in mapper.column_attrs:
        for col in prop.columns:
            kind = (getattr(col, "info", None) or {}).get(ACQUISITION_INFO_KEY)
            if kind == "source":
                source = prop.key
            elif kind == "notice_version":
                notice = prop.key
    return source, notice


def _check_anchor(where: str) -> Any:
    def check(_target: Any, value: Any, _old: Any, _initiator: Any) -> Any:
        if value is None:
            return value
        if not isinstance(value, dt.datetime):
            msg = f"{where} is a retention anchor: expected a datetime, got {type(value).__name__}"
            raise ValueTypeError(msg)
        if value.tzinfo is None or value.utcoffset() is None:
            msg = f"{where} is a retention anchor: the datetime must be time-zone aware"
            raise ValueTypeError(msg)
        return value

    return check


@event.listens_for(Mapper, "mapper_configured")
def _watch_acquisition(mapper: Mapper[Any], class_: type[Any]) -> None:
    for prop in mapper.column_attrs:
        if any(
            (getattr(col, "info", None) or {}).get(ANCHOR_INFO_KEY)
            for col in prop.columns
        ):
            # Checked when set, so a naive or wrong value is a custdata error
            # naming the attribute, not a driver error at flush.
            event.listen(
                prop.class_attribute,
                "set",
                _check_anchor(f"{class_.__name__}.{prop.key}"),
                retval=True,
            )
    source, notice = _acquisition_attrs(mapper)
    if source is None:
        return

    def check(_mapper: Any, _connection: Any, target: Any) -> None:
        value = getattr(target, source)
        try:
            kind = AcquisitionSource(value)
        except ValueError:
            choices = ", ".join(repr(s.value) for s in AcquisitionSource)
            msg = f"{mapper.class_.__name__}.{source} must be one of {choices}"
            raise AcquisitionError(msg) from None
        if isinstance(value, AcquisitionSource):
            setattr(target, source, value.value)
        if (
            kind is AcquisitionSource.DIRECT
            and notice is not None
            and not getattr(target, notice)
        ):
            msg = (
                f"{mapper.class_.__name__}: data acquired directly needs the "
                f"privacy-notice version shown ({notice})"
            )
            raise AcquisitionError(msg)

    event.listen(mapper, "before_insert", check)
