"""What one encrypted column knows about itself, shared by every copy of its type.

SQLAlchemy copies a ``TypeDecorator`` per dialect (shallowly), so everything a
column learns after it is declared -- its table, its subject column, its blind
index companion, its field policy -- lives in one :class:`FieldBinding` object
that all copies share.
"""

from __future__ import annotations

import threading
import uuid

from collections.abc import Callable, Sequence
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


#: The SQLAlchemy drivers that bind through the standard library's ``sqlite3``.
_SQLITE3_DRIVERS = frozenset({"pysqlite", "aiosqlite"})


def blob_binder(dialect: Any) -> Callable[[Any], Any] | None:
    """How custdata hands binary values (envelopes, subject ids, wrapped keys) to a driver.

    ``bytearray`` through the standard library's ``sqlite3``, ``None`` (the
    ``bytes`` as they are) elsewhere. ``sqlite3`` binds ``int``, ``float``,
    ``str`` and ``bytearray`` at once but puts any other parameter, ``bytes``
    included, through its adaptation protocol first: a registry lookup, then
    two attribute lookups that fail (on Python 3.11 each raises and clears an
    ``AttributeError``), about 2,500 CPU instructions a value -- more than
    sealing it. A ``bytearray`` is bound as the same ``BLOB`` without them.
    Not where the application registered an adapter for ``bytearray`` (which
    ``sqlite3`` then applies to every parameter): then ``bytes``, as before.
    """
    found = dialect.__dict__.get(_BLOB_BINDER, _UNKNOWN)
    if found is not _UNKNOWN:
        return found  # type: ignore[no-any-return]
    binder = None
    if dialect.name == "sqlite" and dialect.driver in _SQLITE3_DRIVERS:
        dbapi = getattr(dialect, "dbapi", None)
        adapters = getattr(dbapi, "adapters", None)
        protocol = getattr(dbapi, "PrepareProtocol", None)
        if not (
            adapters is None or protocol is None or (bytearray, protocol) in adapters
        ):
            binder = bytearray
    # Decided once per dialect, as SQLAlchemy builds a type's bind processor.
    dialect.__dict__[_BLOB_BINDER] = binder
    return binder


#: Where :func:`blob_binder` keeps its answer on a dialect.
_BLOB_BINDER = "_custdata_blob_binder"
_UNKNOWN = object()


#: Plaintext types whose values cannot be told apart from a sealed envelope
#: (and what a driver may return a stored envelope as).
BYTES_LIKE = (bytes, bytearray, memoryview)


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
        raw_sealed: Whether sealed values travel as bare ``bytes``.
        legacy_plaintext: The transitional read mode: a stored value that is
            no envelope is read as plaintext (see ``_legacy``).
    """

    __slots__ = (
        "__weakref__",
        "_cache",
        "_legacy",
        "_lock",
        "_python_type",
        "column",
        "column_key",
        "companion_key",
        "field",
        "key_scope",
        "legacy_plaintext",
        "normalizer",
        "raw_sealed",
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
        self._python_type: type[Any] | None = None
        #: Whether the statement hooks may hand this column's sealed values to
        #: its bind processor as bare ``bytes`` (no wrapper object for the
        #: garbage collector to track): true unless a plaintext can itself be
        #: bytes-like.
        self.raw_sealed = True
        self.python_type = python_type
        # (keyring, subject-key store, cipher): the last cipher built, reused
        # while the keyring and store stay the same objects.
        self._cache: tuple[object, object, Any] | None = None
        self._lock = threading.Lock()
        self.legacy_plaintext = False
        self._legacy: Any = None

    @property
    def python_type(self) -> type[Any] | None:
        """The Python type of the values, once known."""
        return self._python_type

    @python_type.setter
    def python_type(self, value: type[Any] | None) -> None:
        self._python_type = value
        self.raw_sealed = not (
            isinstance(value, type) and issubclass(value, BYTES_LIKE)
        )

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
        legacy = None
        if self.legacy_plaintext:
            if self._legacy is None:
                from ._legacy import legacy_reader  # noqa: PLC0415

                self._legacy = legacy_reader(self)
            legacy = self._legacy
        with self._lock:
            cipher = keyring.field_cipher(
                table=self.table,
                column=self.column,
                codec=codec,
                subject_keys=store,
                legacy=legacy,
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


#: ``len ‖ b"u"`` : the fixed start of a UUID subject's associated-data tail.
_UUID_TAIL = b"\x00\x00\x00\x11u"


def subject_parts(raw: object, kind: SubjectKind) -> tuple[str, bytes]:
    """Return a fetched subject id's canonical text and its associated-data tail.

    *raw* is the subject as the driver returns it -- a ``uuid.UUID`` (native
    UUID columns), 32 hex digits (``CHAR(32)`` storage), the text of a
    concatenated value, an int -- and the result is the same on every dialect
    and every path: the canonical text is ``str()`` of the value
    :func:`subject_value` gives (what audit records name), and the tail is
    ``len ‖ subject_bytes(...)``, what the crypto layer appends to the
    associated data. For UUIDs no ``uuid.UUID`` object is built.

    Raises:
        TypeError: If *raw* cannot be a subject id of *kind*.
        ValueError: If *raw* is not the text of a subject id of *kind*.
    """
    if kind == "uuid":
        cls = raw.__class__
        if cls is uuid.UUID:
            number: int = raw.int  # type: ignore[attr-defined]
            h = f"{number:032x}"
            return (
                f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}",
                _UUID_TAIL + number.to_bytes(16, "big"),
            )
        data: bytes | None = None
        if cls is bytes:
            raw = raw.decode("ascii")  # type: ignore[attr-defined]
            cls = str
        if cls is str:
            text: str = raw  # type: ignore[assignment]
            size = len(text)
            if size == 32:  # noqa: PLR2004 - CHAR(32) hex storage
                data = bytes.fromhex(text)
                if len(data) == 16 and text.islower():  # noqa: PLR2004
                    # Valid lowercase hex is its own canonical spelling.
                    return (
                        f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}",
                        _UUID_TAIL + data,
                    )
            elif size == 36 and text[8] == text[13] == text[18] == text[23] == "-":  # noqa: PLR2004
                data = bytes.fromhex(text.replace("-", ""))
            if data is None or len(data) != 16:  # noqa: PLR2004
                data = uuid.UUID(text).bytes
        elif isinstance(raw, uuid.UUID):
            data = raw.bytes
        else:
            data = uuid.UUID(str(subject_value(raw, kind))).bytes
        h = data.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}", _UUID_TAIL + data
    from custdata.crypto._envelope import (  # noqa: PLC0415 - keep import light
        length_prefixed,
        subject_bytes,
    )

    value = subject_value(raw, kind)
    return str(value), length_prefixed(subject_bytes(value))


def subject_batch(
    values: Sequence[object], kind: SubjectKind
) -> tuple[list[str | None], list[bytes | None]]:
    """:func:`subject_parts` of many subject ids, as two lists (``None`` for ``None``).

    The canonical texts and the associated-data tails, without a tuple per
    value (fewer objects for the garbage collector on large writes).

    Raises:
        TypeError: If a value cannot be a subject id of *kind*.
        ValueError: If a value is not the text of a subject id of *kind*.
    """
    uuid_class = uuid.UUID
    if kind == "uuid" and all(value.__class__ is uuid_class for value in values):
        # The common batch (client-generated UUID keys), a list at a time.
        raw = [value.int.to_bytes(16, "big") for value in values]  # type: ignore[attr-defined]
        return [
            f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
            for h in (data.hex() for data in raw)
        ], [_UUID_TAIL + data for data in raw]
    texts: list[str | None] = []
    tails: list[bytes | None] = []
    text_of = texts.append
    tail_of = tails.append
    for value in values:
        if value is None:
            text_of(None)
            tail_of(None)
        elif value.__class__ is uuid_class and kind == "uuid":
            number: int = value.int
            h = f"{number:032x}"
            text_of(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
            tail_of(_UUID_TAIL + number.to_bytes(16, "big"))
        else:
            text, tail = subject_parts(value, kind)
            text_of(text)
            tail_of(tail)
    return texts, tails


def subject_tail(value: object, kind: SubjectKind) -> bytes:
    """Return the associated-data tail of a subject id given as a parameter.

    The same bytes as :func:`subject_parts` gives for the fetched id.

    Raises:
        TypeError: If *value* cannot be a subject id of *kind*.
        ValueError: If *value* is not the text of a subject id of *kind*.
    """
    if value.__class__ is uuid.UUID and kind == "uuid":
        return _UUID_TAIL + value.bytes
    return subject_parts(value, kind)[1]
