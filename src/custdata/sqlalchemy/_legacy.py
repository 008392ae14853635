"""The transitional read mode of a column migrated from plaintext.

A column declared ``customer_data(..., legacy_plaintext=True)`` (or an
encrypted type built with ``legacy_plaintext=True``) reads a stored value that
is no envelope as its plaintext, while
:func:`~custdata.sqlalchemy.encrypt_plaintext_columns` encrypts the rows in
place. Writes always encrypt. Each such read is counted
(:func:`legacy_plaintext_reads`) and, with an audit trail, recorded as a
``field.reveal`` event with the reason ``legacy_plaintext``.
"""

from __future__ import annotations

import threading

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from custdata._context import _custodian, _default_custodian, current_access
from custdata.crypto._legacy import read_legacy_plaintext


if TYPE_CHECKING:
    from ._binding import FieldBinding

__all__ = ["legacy_plaintext_reads", "legacy_reader"]

_lock = threading.Lock()
#: ``table.column`` -> legacy plaintext values read in this process.
_COUNTS: dict[str, int] = {}

LEGACY_REASON = "legacy_plaintext"


def legacy_plaintext_reads() -> dict[str, int]:
    """Return how many legacy plaintext values each column has read in this process.

    Only columns in the transitional read mode (``legacy_plaintext=True``)
    read such values; keys are ``"table.column"``. A column whose count stays
    at zero while :func:`~custdata.sqlalchemy.encrypt_plaintext_columns`
    reports nothing left can leave the mode.
    """
    with _lock:
        return dict(_COUNTS)


def legacy_reader(binding: FieldBinding) -> Callable[[object], Any]:
    """The function the column's cipher calls for a stored value that is no envelope.

    It reads the value as the column's plaintext (raising
    :class:`~custdata.DecryptionError` if it cannot be read as the column's
    type), counts it and records it in the custodian's audit trail.
    """

    def read(stored: object) -> Any:
        where = binding.where
        value = read_legacy_plaintext(stored, binding.python_type or str, where=where)
        with _lock:
            _COUNTS[where] = _COUNTS.get(where, 0) + 1
        _record(binding)
        return value

    return read


def _record(binding: FieldBinding) -> None:
    """Record one legacy plaintext read (an AuditTrail's ``field.reveal`` event)."""
    custodian = _custodian.get() or _default_custodian[0]
    audit = getattr(custodian, "audit", None)
    record = getattr(audit, "record", None)
    if record is None:
        return
    ctx = current_access()
    actor: dict[str, Any] = {"type": "none"}
    if ctx.actor is not None:
        actor = {"type": "user", "id": ctx.actor}
        if ctx.role is not None:
            actor["roles"] = [ctx.role]
    fields: dict[str, Any] = {}
    if ctx.purpose is not None:
        fields["purpose"] = ctx.purpose
    if binding.field is not None:
        fields["data_categories"] = [binding.field.category]
    record(
        "field.reveal",
        outcome="allowed",
        actor=actor,
        reason=LEGACY_REASON,
        entity=binding.table,
        fields=[binding.column],
        count=1,
        **fields,
    )
