"""The inventory of stored customer-data fields, for the rendered documents."""

from __future__ import annotations

from typing import Any

from custdata.governance import FieldRecord

from ._binding import INFO_KEY
from ._check import _field_of, _metadata
from ._types import EncryptedType


__all__ = ["field_inventory"]


def field_inventory(base: Any) -> tuple[FieldRecord, ...]:
    """Return one :class:`custdata.governance.FieldRecord` per customer-data column.

    Args:
        base: A declarative base, a registry or a ``MetaData``.

    Returns:
        The tagged columns of every table, sorted by table and column, with
        whether each is encrypted and searchable (has a blind-index companion).

    Raises:
        ConfigurationError: *base* is none of the accepted kinds.
    """
    records = []
    for table in sorted(_metadata(base).tables.values(), key=lambda t: t.name):
        indexed = {
            str(c.info["custdata_blind_index_of"])
            for c in table.columns
            if c.info.get("custdata_blind_index_of")
        }
        for col in table.columns:
            field = _field_of(col.info.get(INFO_KEY))
            if field is None:
                continue
            records.append(
                FieldRecord(
                    table=table.name,
                    column=col.name,
                    category=field.category,
                    purposes=field.purposes,
                    prohibited=field.prohibited,
                    encrypted=isinstance(col.type, EncryptedType),
                    searchable=col.name in indexed or col.key in indexed,
                    retention=field.retention,
                )
            )
    return tuple(sorted(records, key=lambda r: (r.table, r.column)))
