"""What one encrypted column knows about itself, shared by every copy of its type.

SQLAlchemy copies a ``TypeDecorator`` per dialect (shallowly), so everything a
column learns after it is declared -- its table, its subject column, its blind
index companion, its field policy -- lives in one :class:`FieldBinding` object
that all copies share.
"""

from __future__ import annotations

import threading
import uuid

from typing import Any, Literal

from custdata._errors import ConfigurationError
from custdata._policy import FieldPolicy


__all__ = ["INFO_KEY", "SUBJECT_INFO_KEY", "FieldBinding", "subject_value"]

#: The key of custdata's metadata in ``Column.info``.
INFO_KEY = "custdata"
#: The key in ``Column.info`` that marks the data-subject column.
SUBJECT_INFO_KEY = "custdata_subject"

SubjectKind = Literal["uuid", "int", "str"]


def subject_value(value: object, kind: SubjectKind) -> object:
    """Return a subject id as the crypto layer should see it.

    The same subject must reach the crypto layer as the same Python value on
    write (from a parameter) and on read (from the text the database returns),
    so both sides go through this function.

    Raises:
        TypeError: If *value* cannot be a subject id of *kind*.
    """
    if kind == "uuid":
        if isinstance(value, uuid.UUID):
            return value
        if isinstance(value, bytes):
            value = value.decode("ascii")
        if isinstance(value, str):
            return uuid.UUID(value)
        raise TypeError("a UUID subject id must be a uuid.UUID or its text")
    if kind == "int":
        if isinstance(value, bytes):
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            return int(value)
        raise TypeError("an integer subject id must be an int")
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    return str(value)


class FieldBinding:
    """The runtime facts of one encrypted column (internal).

    Attributes:
        table: The table name, once the column is attached.
        column: The column name.
        column_key: The column's key in ``Table.c``.
        field: The field policy, for ``customer_data`` columns.
        subject_key: The key of the table's data-subject column, if any.
        subject_kind: How subject ids are typed.
        companion_key: The key of the blind-index companion column, if searchable.
        normalizer: The blind-index normaliser name (``"email"``, ``"phone"``).
        key_scope: ``"column"`` or ``"subject"`` (per-subject data keys).
        python_type: The Python type of the values, once known.
    """

    __slots__ = (
        "__weakref__",
        "_cache",
        "_lock",
        "column",
        "column_key",
        "companion_key",
        "field",
        "key_scope",
        "normalizer",
        "python_type",
        "subject_key",
        "subject_kind",
        "table",
    )

    def __init__(
        self,
        *,
        table: str | None = None,
        column: str | None = None,
        python_type: type[Any] | None = None,
        field: FieldPolicy | None = None,
        key_scope: Literal["column", "subject"] = "column",
    ) -> None:
        self.table = table
        self.column = column
        self.column_key: str | None = column
        self.field = field
        self.subject_key: str | None = None
        self.subject_kind: SubjectKind = "uuid"
        self.companion_key: str | None = None
        self.normalizer: str | None = None
        self.key_scope = key_scope
        self.python_type = python_type
        # (keyring, subject-key store, cipher): the last cipher built, reused
        # while the keyring and store stay the same objects.
        self._cache: tuple[object, object, Any] | None = None
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        """``table.column`` for messages (names only)."""
        return f"{self.table or '?'}.{self.column or '?'}"

    def cipher(self, custodian: Any) -> Any:
        """Return the field cipher for *custodian*'s keyring (cached).

        Raises:
            ConfigurationError: If the custodian has no keyring, or the column
                is not attached to a table yet.
        """
        keyring = custodian.keyring
        store = custodian.subject_keys if self.key_scope == "subject" else None
        cache = self._cache
        if cache is not None and cache[0] is keyring and cache[1] is store:
            return cache[2]
        if keyring is None:
            raise ConfigurationError(
                f"{self.where}: the current custodian has no keyring"
            )
        if self.table is None or self.column is None:
            raise ConfigurationError(
                "an encrypted column is used before it is attached to a table"
            )
        if self.key_scope == "subject" and store is None:
            raise ConfigurationError(
                f"{self.where}: per-subject keys need a custodian with subject_keys"
            )
        from custdata.crypto import codec_for  # noqa: PLC0415 - keep import light

        codec = codec_for(self.python_type or str)
        with self._lock:
            cipher = keyring.field_cipher(
                table=self.table, column=self.column, codec=codec, subject_keys=store
            )
            self._cache = (keyring, store, cipher)
        return cipher

    def blind_index(self, custodian: Any) -> Any:
        """Return the blind index of this column for *custodian*'s keyring."""
        from custdata.crypto import normalize_email, normalize_phone  # noqa: PLC0415

        normalizers = {"email": normalize_email, "phone": normalize_phone, None: None}
        if self.table is None or self.column is None:
            raise ConfigurationError(
                "a searchable column is used before it is attached"
            )
        return custodian.keyring.blind_index(
            table=self.table,
            column=self.column,
            normalizer=normalizers[self.normalizer],
        )
