"""Reading a value stored before its column was encrypted (legacy plaintext).

A column migrated from plaintext holds, until the in-place job has encrypted
every row, values that are no envelope: the plaintext as the database kept it
-- the UTF-8 bytes of a text (after ``ALTER ... TYPE bytea``), the text
itself, or a number. :func:`read_legacy_plaintext` turns such a value into the
column's Python type, the same way for the migration job (which encrypts it)
and for the transitional read mode (which returns it).
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import uuid

from collections.abc import Callable
from typing import Any

from custdata._errors import DecryptionError


__all__ = ["looks_sealed", "read_legacy_plaintext"]

_TRUE = frozenset({"1", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "f", "false", "n", "no"})


def _bool(text: str) -> bool:
    folded = text.strip().lower()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise ValueError(folded)


_PARSERS: dict[type[Any], Callable[[str], Any]] = {
    int: int,
    float: float,
    decimal.Decimal: decimal.Decimal,
    bool: _bool,
    dt.date: dt.date.fromisoformat,
    dt.datetime: dt.datetime.fromisoformat,
    dt.time: dt.time.fromisoformat,
    uuid.UUID: uuid.UUID,
    dict: json.loads,
    list: json.loads,
}


def looks_sealed(blob: object) -> bool:
    """Whether *blob* has the shape of an envelope: bytes, version 1, a known algorithm.

    Only the shape: an envelope is authentic only once it decrypts.
    """
    return (
        isinstance(blob, (bytes, bytearray, memoryview))
        and len(blob) >= 22  # noqa: PLR2004 - the smallest envelope (AES-SIV, empty frame)
        and blob[0] == 1
        and blob[1] in {1, 2, 3}
    )


def read_legacy_plaintext(stored: object, python_type: type[Any], *, where: str) -> Any:
    """Return a legacy plaintext *stored* value as a value of *python_type*.

    Bytes are UTF-8 text (raw bytes for a ``bytes`` column); text is parsed as
    the type's ISO or decimal spelling (``2026-12-02``, ``12.50``, ``true``, a
    UUID, JSON, an enum member's name); a value the driver already returned as
    the type (a number in a SQLite column) is taken as it is.

    Args:
        stored: The value as the driver returned it.
        python_type: The column's Python type.
        where: ``table.column``, for the error message.

    Raises:
        DecryptionError: If *stored* cannot be read as *python_type* (the
            message names the column and the type, never the value).
    """
    try:
        return _parse(stored, python_type)
    except (TypeError, ValueError, KeyError, ArithmeticError):
        name = getattr(python_type, "__name__", str(python_type))
        raise DecryptionError(
            f"{where}: a legacy plaintext value cannot be read as {name}"
        ) from None


def _parse(stored: object, python_type: type[Any]) -> Any:
    """:func:`read_legacy_plaintext` without the error translation."""
    if isinstance(stored, (bytearray, memoryview)):
        stored = bytes(stored)
    if python_type is bytes:
        if isinstance(stored, str):
            return stored.encode("utf-8")
        return _expect(stored, bytes)
    if isinstance(stored, python_type) and not (
        python_type is int and isinstance(stored, bool)
    ):
        return stored
    text = stored.decode("utf-8") if isinstance(stored, bytes) else stored
    if isinstance(text, (int, float, decimal.Decimal)):
        text = str(text)
    text = _expect(text, str)
    if python_type is str:
        return text
    if issubclass(python_type, enum.Enum):
        return python_type[text]
    return _expect(_PARSERS.get(python_type), Callable)(text)


def _expect(value: Any, kind: Any) -> Any:
    if not isinstance(value, kind):
        raise TypeError(type(value).__name__)
    return value
