"""Encrypted column types: one ``TypeDecorator`` per codec type.

Values are encrypted with the current custodian's keyring when bound and
decrypted when fetched -- but only after the statement that fetches them was
authorized (see :mod:`custdata.sqlalchemy._runtime`); a value fetched without
an authorization is never decrypted.

Storage is binary by default (``BYTEA`` on PostgreSQL, ``BLOB`` on SQLite,
``LONGBLOB`` on MySQL/MariaDB) holding the crypto envelope as is; ``storage=
"text"`` stores it base64-encoded in a text column instead.

Where the table has a data-subject column, each value is bound to the row's
subject: the subject id is part of the associated data. Where a SELECT also
fetches the subject column itself (every entity load, ``get``, joined eager
loads), the envelope is fetched as stored and the cursor that fetched the row
decrypts it, after the batch's authorization, with the subject read from the
same row (see ``_runtime``); the result processor then passes the plaintext
on. Elsewhere (a column select without the subject column, ``RETURNING``) the
column is selected as ``subject || '|' || envelope`` (see
:class:`_SubjectPacked`), so every kind of load decrypts with the subject of
the row the value was read from.
"""

from __future__ import annotations

import base64
import contextvars
import datetime as dt
import decimal
import enum
import uuid

from collections.abc import Callable
from typing import Any, ClassVar, Generic, Literal, TypeVar

from sqlalchemy import LargeBinary, Text
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement, operators
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter, Label
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator, TypeEngine

from custdata._context import _custodian, _default_custodian
from custdata._errors import (
    ConfigurationError,
    PurposeViolationError,
    UnsupportedOperationError,
    ValueTypeError,
)
from custdata.crypto._envelope import SIV_OVERHEAD, VERSION_1

from ._binding import (
    BYTES_LIKE,
    FieldBinding,
    SubjectKind,
    blob_binder,
    subject_tail,
    subject_value,
)
from ._sealed import SealedRow, SealedValue, stored_envelope


__all__ = [
    "EncryptedBoolean",
    "EncryptedBytes",
    "EncryptedDate",
    "EncryptedDateTime",
    "EncryptedDecimal",
    "EncryptedEnum",
    "EncryptedInteger",
    "EncryptedJSON",
    "EncryptedString",
    "EncryptedTime",
    "EncryptedType",
    "EncryptedUUID",
    "Storage",
    "bind_subject",
]

_T = TypeVar("_T")
Storage = Literal["binary", "text"]

#: The grants of the batch being processed: binding -> cipher (reveal) or mask
#: text (mask only), and under :data:`SUBJECTS_KEY` the batch's subject ids by
#: their raw text. Put in force by the statement hooks after
#: ``Custodian.authorize``, once per fetched batch; read per value.
_GRANTS: contextvars.ContextVar[dict[object, Any] | None] = contextvars.ContextVar(
    "custdata_sa_grants", default=None
)
#: The key of the raw-text -> subject-id map in a grants dict.
SUBJECTS_KEY = "\x00subjects"


class _Released:
    """The grant of a column whose values the fetching cursor already decrypted."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<custdata released>"


#: Grant of a binding whose fetched values were decrypted, after the batch's
#: authorization, by the cursor that fetched them (see ``_runtime``): the result
#: processor passes them through.
RELEASED: Any = _Released()


def _custodian_now() -> Any:
    custodian = _custodian.get() or _default_custodian[0]
    if custodian is None:
        raise ConfigurationError(
            "no custodian is current: call custodian.make_current() or use custodian.activate()"
        )
    return custodian


class _Bound:
    """A value paired with the data subject it belongs to (internal)."""

    __slots__ = ("subject", "value")

    def __init__(self, value: object, subject: object) -> None:
        self.value = value
        self.subject = subject

    def __repr__(self) -> str:
        return "<custdata bound value>"


class _Sealed:
    """A value already encrypted by the statement hooks (internal)."""

    __slots__ = ("data",)

    def __init__(self, data: object) -> None:
        self.data = data

    def __repr__(self) -> str:
        return "<custdata sealed value>"


def bind_subject(value: _T, subject: object) -> _T:
    """Pair *value* with its data subject for a Core statement that cannot say.

    Core ``INSERT`` and ``UPDATE`` statements find the subject in the same
    parameter set (or the ``WHERE subject_col = ...`` clause) by themselves;
    use this only where they cannot, e.g. ``update(t).where(t.c.id == x)
    .values(note=bind_subject("...", customer_id))`` on a child table.
    """
    return _Bound(value, subject)  # type: ignore[return-value]


_MEMO: tuple[Any, bytes, str] = (None, b"", "")
_EMPTY: dict[object, object] = {}


class EncryptedType(TypeDecorator[_T], Generic[_T]):
    """Base of the encrypted column types.

    Args:
        key_ref: ``"table.column"``, the reference the column's keys derive
            from; filled in when the column is attached to a table. Never key
            material.
        storage: ``"binary"`` (default) or ``"text"`` (base64).
        legacy_plaintext: The transitional read mode of a column migrated from
            plaintext: a stored value that is no envelope is read as plaintext
            (counted and recorded) instead of raising
            :class:`~custdata.DecryptionError`. Writes always encrypt.

    Raises:
        ValueError: On an unknown storage.
    """

    impl: TypeEngine[Any] | type[TypeEngine[Any]] = LargeBinary
    cache_ok = True
    python_type_: ClassVar[type[Any]] = str

    def __init__(
        self,
        key_ref: str | None = None,
        *,
        storage: Storage = "binary",
        legacy_plaintext: bool = False,
    ) -> None:
        if storage not in {"binary", "text"}:
            raise ValueError("storage must be 'binary' or 'text'")
        super().__init__()
        self.key_ref = key_ref
        self.storage: Storage = storage
        table, _, column = (key_ref or "").rpartition(".")
        self._binding = FieldBinding(
            table=table or None, column=column or None, python_type=self._value_type()
        )
        self._binding.legacy_plaintext = bool(legacy_plaintext)

    def _value_type(self) -> type[Any]:
        return self.python_type_

    @property
    def python_type(self) -> type[Any]:
        """The Python type of the plaintext values."""
        return self._binding.python_type or self.python_type_

    def __repr__(self) -> str:
        args = [repr(self.key_ref)] if self.key_ref else []
        if self.storage != "binary":
            args.append(f"storage={self.storage!r}")
        return f"{type(self).__name__}({', '.join(args)})"

    # -- attachment ------------------------------------------------------------

    def _attach(self, table: str, column: str, column_key: str) -> None:
        b = self._binding
        b.table = table
        b.column = column
        b.column_key = column_key
        if self.key_ref is None:
            self.key_ref = f"{table}.{column}"

    def copy(self, **kw: Any) -> EncryptedType[_T]:
        """Return a copy that shares this column's binding."""
        new = super().copy(**kw)
        new._binding = self._binding  # noqa: SLF001 - same class
        return new

    # -- DDL -------------------------------------------------------------------

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """Return ``LONGBLOB``/``LONGTEXT`` on MySQL, ``LargeBinary``/``Text`` elsewhere."""
        if dialect.name in {"mysql", "mariadb"}:
            return dialect.type_descriptor(
                mysql.LONGTEXT() if self.storage == "text" else mysql.LONGBLOB()
            )
        return dialect.type_descriptor(
            Text() if self.storage == "text" else LargeBinary()
        )

    # -- values ----------------------------------------------------------------

    def process_bind_param(self, value: _T | None, dialect: Dialect) -> Any:
        """Encrypt *value* (see :meth:`bind_processor`, which is what runs)."""
        return self.bind_processor(dialect)(value)  # pragma: no cover

    def process_result_value(self, value: Any | None, dialect: Dialect) -> _T | None:
        """Decrypt *value* (see :meth:`result_processor`, which is what runs)."""
        return self.result_processor(dialect, None)(value)  # type: ignore[no-any-return]  # pragma: no cover

    def process_literal_param(self, value: _T | None, dialect: Dialect) -> str:
        """Refuse: a customer value must never be rendered into SQL text."""
        raise UnsupportedOperationError(
            f"{self._binding.where}: an encrypted value cannot be rendered as a SQL literal"
        )

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any]:
        """Return the function that encrypts a value for the database.

        The value may be wrapped by the statement hooks with its subject id.

        Raises:
            ConfigurationError: For a subject-bound column whose subject id is
                unknown, or when no custodian or keyring is available.
        """
        b = self._binding
        text = self.storage == "text"
        b64 = base64.b64encode
        # How the driver takes an envelope best (blob_binder): the same bytes.
        to_blob = None if text else blob_binder(dialect)

        def process(value: Any) -> Any:
            if value is None:
                return None
            if value.__class__ is bytes and b.raw_sealed:
                # Sealed by the statement hooks (a plaintext of this column
                # is never bytes): checked to be an envelope, passed on.
                if text:
                    return _sealed_text(value, b)
                if len(value) < SIV_OVERHEAD or value[0] != VERSION_1:
                    raise _not_sealed(b)
                return value if to_blob is None else to_blob(value)
            cls = value.__class__
            if cls is _Sealed or cls is SealedValue or cls is SealedRow:
                # Sealed already, or loaded sealed and written back as it is
                # (e.g. a merged or re-inserted object): the stored envelope,
                # unopened.
                data: Any = value.stored(b) if cls is SealedRow else value.data
                if to_blob is not None and isinstance(data, BYTES_LIKE):
                    return to_blob(data)
                return data
            if value.__class__ is _Bound:
                subject = value.subject
                value = value.value
                if value is None:
                    return None
                if subject is None:
                    raise ConfigurationError(
                        f"{b.where}: the row's subject id is missing; include "
                        f"{b.subject_key!r} in the statement"
                    )
                try:
                    blob = b.cipher(_custodian_now()).encrypt(
                        value, subject=subject_value(subject, b.subject_kind)
                    )
                except ValueTypeError as exc:
                    raise ValueTypeError(f"{b.where}: {exc}") from None
            elif b.subject_key is not None:
                raise ConfigurationError(
                    f"{b.where}: a subject-bound value was bound without its subject; "
                    f"include {b.subject_key!r} in the statement or use bind_subject()"
                )
            else:
                try:
                    blob = b.cipher(_custodian_now()).encrypt(value)
                except ValueTypeError as exc:
                    raise ValueTypeError(f"{b.where}: {exc}") from None
            if text:
                return b64(blob).decode("ascii")
            return blob if to_blob is None else to_blob(blob)

        return process

    def result_processor(
        self, dialect: Dialect, coltype: object
    ) -> Callable[[Any], Any]:
        """Return the function that decrypts a fetched value.

        It decrypts only when the statement that fetched the value was
        authorized for this column in this context; for a field revealed only
        as a mask it returns the mask without decrypting.

        Raises:
            PurposeViolationError: If the value was fetched without an
                authorization (it is not decrypted).
            DecryptionError: If the value is not an authentic envelope for this
                column (and subject).
        """
        b = self._binding
        text = self.storage == "text"
        grants_var = _GRANTS
        released = RELEASED

        def refuse() -> PurposeViolationError:
            return PurposeViolationError(
                f"{b.where}: read outside an authorized statement; values are not decrypted"
            )

        if b.subject_key is None:

            def process(value: Any) -> Any:
                if value is None:
                    return None
                grants = grants_var.get()
                cipher = grants.get(b) if grants is not None else None
                if cipher is released:
                    return value
                if cipher is None:
                    raise refuse()
                if cipher.__class__ is str:
                    return cipher
                if text:
                    value = stored_envelope(value)
                return cipher.open_value(value)

            return process

        kind = b.subject_kind
        subjects_key = SUBJECTS_KEY

        def process_subject(value: Any) -> Any:
            global _MEMO  # noqa: PLW0603 - a one-entry memo of the last subject parsed
            if value is None:
                return None
            grants = grants_var.get()
            cipher = grants.get(b) if grants is not None else None
            if cipher is released:
                return value
            if cipher is None:
                raise refuse()
            if cipher.__class__ is str:
                return cipher
            raw, _, blob = value.partition(b"|" if value.__class__ is bytes else "|")
            memo = _MEMO
            if memo[0] == raw and memo[2] == kind:
                tail = memo[1]
            else:
                subject = grants.get(subjects_key, _EMPTY).get(raw)  # type: ignore[union-attr]
                tail = subject_tail(raw if subject is None else subject, kind)
                _MEMO = (raw, tail, kind)
            if text:
                blob = stored_envelope(blob)
            elif blob.__class__ is str:
                # A text value concatenated with its subject: no envelope.
                blob = blob.encode("utf-8", "surrogateescape")
            return cipher.open_value(blob, tail)

        return process_subject

    # -- SQL -------------------------------------------------------------------

    def column_expression(self, colexpr: ColumnElement[_T]) -> ColumnElement[_T] | None:
        """Select subject-bound values together with the row's subject id.

        Raises:
            UnsupportedOperationError: If the value is selected from something
                that does not also carry the subject column (e.g. an expression
                or a subquery without it).
        """
        b = self._binding
        if b.subject_key is None:
            return colexpr
        inner: Any = colexpr
        while isinstance(inner, Label):
            inner = inner.element
        table = getattr(inner, "table", None)
        columns = getattr(table, "c", None)
        if columns is None or b.subject_key not in columns:
            raise UnsupportedOperationError(
                f"{b.where} is bound to its row's subject; select it straight from its "  # noqa: S608 - a fixed expression, no values
                f"table (or a subquery that also selects {b.subject_key!r})"
            )
        return _SubjectPacked(
            columns[b.subject_key], inner, storage=self.storage, type_=self
        )

    class Comparator(TypeDecorator.Comparator[Any]):
        """Comparison on an encrypted column: equality through the blind index.

        ``==``, ``!=``, ``in_()`` and ``not_in()`` compile to the blind-index
        companion column of a ``searchable`` column; ``IS NULL`` works on any
        column. Everything else -- ``LIKE``, ordering, ranges -- raises
        :class:`~custdata.UnsupportedOperationError` when the expression is built.
        """

        def operate(self, op: Any, *other: Any, **kwargs: Any) -> ColumnElement[Any]:
            """Build the SQL for *op*, or raise for an unsupported operator."""
            if op in _NULL_OPS and all(o is None for o in other):
                return super().operate(op, *other, **kwargs)
            if (
                op in _NULL_OPS
                and len(other) == 1
                and isinstance(other[0], ColumnElement)
                and hash(other[0]) == hash(self.expr)
            ):
                # The column against itself (or an annotated copy): what
                # SQLAlchemy's own dictionaries of columns compare when they
                # look one up (e.g. an ORM insert ... returning()).
                return super().operate(op, *other, **kwargs)
            if op in _SEARCH_OPS:
                return _search(self.expr, op, other)
            raise UnsupportedOperationError(
                f"{_binding_of(self.expr).where}: {_op_name(op)} cannot work on encrypted "
                "values; only ==, !=, in_() (on searchable columns) and IS NULL can"
            )

        def reverse_operate(
            self, op: Any, other: Any, **kwargs: Any
        ) -> ColumnElement[Any]:
            """Allow ``value == column``; refuse everything else."""
            if op in {operators.eq, operators.ne}:
                return self.operate(op, other)
            raise UnsupportedOperationError(
                f"{_binding_of(self.expr).where}: {_op_name(op)} cannot work on encrypted values"
            )

    comparator_factory = Comparator


def _not_sealed(b: FieldBinding) -> UnsupportedOperationError:
    return UnsupportedOperationError(
        f"{b.where}: bytes are not a value of this column (it does not hold bytes)"
    )


def _sealed_text(value: bytes, b: FieldBinding) -> str:
    """The base64 text of a sealed envelope, checked to start with an envelope header."""
    try:
        head = base64.b64decode(value[:8], validate=True)
        text = value.decode("ascii")
    except ValueError:
        raise _not_sealed(b) from None
    if len(value) < SIV_OVERHEAD or head[0] != VERSION_1:
        raise _not_sealed(b)
    return text


_NULL_OPS = frozenset({operators.is_, operators.is_not, operators.eq, operators.ne})
_SEARCH_OPS = frozenset(
    {operators.eq, operators.ne, operators.in_op, operators.not_in_op}
)


def _op_name(op: Any) -> str:
    return str(getattr(op, "__name__", op)).rstrip("_")


def _binding_of(expr: Any) -> FieldBinding:
    binding: FieldBinding = expr.type._binding  # noqa: SLF001
    return binding


def _search(expr: Any, op: Any, other: tuple[Any, ...]) -> ColumnElement[Any]:
    b = _binding_of(expr)
    if b.companion_key is None:
        raise UnsupportedOperationError(
            f"{b.where} is not searchable: declare it with searchable=True to compare it"
        )
    inner: Any = expr
    while isinstance(inner, Label):
        inner = inner.element
    columns = getattr(getattr(inner, "table", None), "c", None)
    if columns is None or b.companion_key not in columns:
        raise UnsupportedOperationError(
            f"{b.where}: compare the column of its own table"
        )
    companion = columns[b.companion_key]
    if op in {operators.eq, operators.ne}:
        values = list(other)
    else:
        values = (
            list(other[0]) if other and not isinstance(other[0], BindParameter) else []
        )
        if other and isinstance(other[0], BindParameter):
            raise UnsupportedOperationError(
                f"{b.where}: in_() needs literal values to search"
            )
    if any(
        isinstance(v, (ColumnElement, BindParameter))
        or hasattr(v, "__clause_element__")
        for v in values
    ):
        raise UnsupportedOperationError(
            f"{b.where}: an encrypted column can only be compared with literal values"
        )
    bidx = b.blind_index(_custodian_now())
    digests: list[bytes] = []
    for v in values:
        if v is None:
            continue
        digests.extend(bidx.candidates(v))
    if op in {operators.eq, operators.in_op}:
        if len(digests) == 1:
            return companion == digests[0]  # type: ignore[no-any-return]
        return companion.in_(digests)  # type: ignore[no-any-return]
    if len(digests) == 1:
        return companion != digests[0]  # type: ignore[no-any-return]
    return companion.not_in(digests)  # type: ignore[no-any-return]


class _SubjectPacked(FunctionElement[Any]):
    """``subject-id-text || '|' || value``, selected in place of a subject-bound column."""

    name = "custdata_subject_packed"
    inherit_cache = True

    def __init__(
        self,
        subject: ColumnElement[Any],
        value: ColumnElement[Any],
        *,
        storage: str,
        type_: Any,
    ) -> None:
        super().__init__(subject, value)
        self.type = type_
        self._custdata_text = storage == "text"
        #: Set when compiled: whether the value is fetched alone, its row
        #: also holding the subject column (``None`` until then).
        self.custdata_row: bool | None = None


def _subject_selected(compiler: SQLCompiler, subject: Any) -> bool:
    """Whether the SELECT being compiled also fetches *subject* as a column of its own."""
    if not compiler.stack:
        return False
    state = compiler.stack[-1].get("compile_state")
    columns = getattr(state, "columns_plus_names", None)
    if not columns:
        return False
    table, key = subject.table, subject.key
    for entry in columns:
        col = entry[3]
        while isinstance(col, Label):
            col = col.element
        if getattr(col, "table", None) is table and getattr(col, "key", None) == key:
            return True
    return False


def _packed_args(
    element: _SubjectPacked, compiler: SQLCompiler, **kw: Any
) -> tuple[str, str] | str:
    """Both operands compiled; or the value alone, where the row has the subject.

    Where the SELECT also fetches the subject column itself (every entity
    load), the value is fetched as is and the cursor decrypts it with the
    subject read from the same row: no per-value concatenation in SQL.
    """
    subject, value = element.clauses.clauses
    row = _subject_selected(compiler, subject)
    element.custdata_row = row
    if row:
        return compiler.process(value, **kw)
    return compiler.process(subject, **kw), compiler.process(value, **kw)


@compiles(_SubjectPacked)
def _packed_default(element: _SubjectPacked, compiler: SQLCompiler, **kw: Any) -> str:
    args = _packed_args(element, compiler, **kw)
    if isinstance(args, str):
        return args
    subject, value = args
    if element._custdata_text:  # noqa: SLF001
        return f"(CAST({subject} AS TEXT) || '|' || {value})"
    return f"CAST(CAST({subject} AS TEXT) || '|' || {value} AS BLOB)"


@compiles(_SubjectPacked, "postgresql")
def _packed_postgresql(
    element: _SubjectPacked, compiler: SQLCompiler, **kw: Any
) -> str:
    args = _packed_args(element, compiler, **kw)
    if isinstance(args, str):
        return args
    subject, value = args
    if element._custdata_text:  # noqa: SLF001
        return f"(CAST({subject} AS TEXT) || '|' || {value})"
    return f"(convert_to(CAST({subject} AS TEXT) || '|', 'UTF8') || {value})"


@compiles(_SubjectPacked, "mysql")
@compiles(_SubjectPacked, "mariadb")
def _packed_mysql(element: _SubjectPacked, compiler: SQLCompiler, **kw: Any) -> str:
    args = _packed_args(element, compiler, **kw)
    if isinstance(args, str):
        return args
    subject, value = args
    return f"CONCAT(CAST({subject} AS CHAR), '|', {value})"


# -- one class per codec type ------------------------------------------------------


class EncryptedString(EncryptedType[str]):
    """An encrypted ``str`` column (``Mapped[str]``)."""

    cache_ok = True
    python_type_ = str


class EncryptedBytes(EncryptedType[bytes]):
    """An encrypted ``bytes`` column."""

    cache_ok = True
    python_type_ = bytes


class EncryptedInteger(EncryptedType[int]):
    """An encrypted ``int`` column (any size)."""

    cache_ok = True
    python_type_ = int


class EncryptedDecimal(EncryptedType[decimal.Decimal]):
    """An encrypted ``decimal.Decimal`` column (exact, scale kept)."""

    cache_ok = True
    python_type_ = decimal.Decimal


class EncryptedBoolean(EncryptedType[bool]):
    """An encrypted ``bool`` column."""

    cache_ok = True
    python_type_ = bool


class EncryptedDate(EncryptedType[dt.date]):
    """An encrypted ``datetime.date`` column."""

    cache_ok = True
    python_type_ = dt.date


class EncryptedDateTime(EncryptedType[dt.datetime]):
    """An encrypted ``datetime.datetime`` column (naive or aware; offsets kept)."""

    cache_ok = True
    python_type_ = dt.datetime


class EncryptedTime(EncryptedType[dt.time]):
    """An encrypted ``datetime.time`` column."""

    cache_ok = True
    python_type_ = dt.time


class EncryptedUUID(EncryptedType[uuid.UUID]):
    """An encrypted ``uuid.UUID`` column."""

    cache_ok = True
    python_type_ = uuid.UUID


class EncryptedJSON(EncryptedType[Any]):
    """An encrypted JSON column (``dict`` or ``list`` values)."""

    cache_ok = True
    python_type_ = dict


_E = TypeVar("_E", bound=enum.Enum)


class EncryptedEnum(EncryptedType[_E]):
    """An encrypted :class:`enum.Enum` column, stored by member name.

    Args:
        enum_class: The enum type.
        key_ref: See :class:`EncryptedType`.
        storage: See :class:`EncryptedType`.
        legacy_plaintext: See :class:`EncryptedType`.
    """

    cache_ok = True
    python_type_ = enum.Enum

    def __init__(
        self,
        enum_class: type[_E],
        key_ref: str | None = None,
        *,
        storage: Storage = "binary",
        legacy_plaintext: bool = False,
    ) -> None:
        if not issubclass(enum_class, enum.Enum):
            raise TypeError("enum_class must be an Enum subclass")
        self.enum_class = enum_class
        super().__init__(key_ref, storage=storage, legacy_plaintext=legacy_plaintext)

    def _value_type(self) -> type[Any]:
        return self.enum_class

    def __repr__(self) -> str:
        cls = self.enum_class
        return f"EncryptedEnum({cls.__module__}.{cls.__qualname__}, {self.key_ref!r})"


#: Which type ``customer_data`` uses for a ``Mapped[...]`` Python type.
TYPE_FOR: dict[type[Any], type[EncryptedType[Any]]] = {
    str: EncryptedString,
    bytes: EncryptedBytes,
    int: EncryptedInteger,
    decimal.Decimal: EncryptedDecimal,
    bool: EncryptedBoolean,
    dt.date: EncryptedDate,
    dt.datetime: EncryptedDateTime,
    dt.time: EncryptedTime,
    uuid.UUID: EncryptedUUID,
    dict: EncryptedJSON,
    list: EncryptedJSON,
}


def set_subject(
    type_: EncryptedType[Any], subject_key: str | None, kind: SubjectKind
) -> None:
    """Tell an encrypted column which column of its table holds the subject id."""
    b = type_._binding  # noqa: SLF001
    b.subject_key = subject_key
    b.subject_kind = kind
