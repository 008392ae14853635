"""Declaring customer-data columns: :func:`customer_data` and :func:`subject_key`."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import os
import sys
import time
import typing
import uuid
import weakref

from collections.abc import Iterable
from typing import Any, Literal

import attrs

from sqlalchemy import Column, ForeignKey, Integer, LargeBinary, Table, Uuid, event
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import MappedColumn, mapped_column
from sqlalchemy.types import TypeEngine

from custdata._errors import ConfigurationError
from custdata._policy import FieldPolicy

from ._binding import INFO_KEY, SUBJECT_INFO_KEY, SubjectKind
from ._types import TYPE_FOR, EncryptedType, Storage, set_subject


__all__ = [
    "BLIND_INDEX_SUFFIX",
    "CustomerDataInfo",
    "customer_data",
    "subject_key",
    "uuid7",
]

#: The companion column of a searchable column is named ``<column><suffix>``.
BLIND_INDEX_SUFFIX = "_bidx"


def uuid7() -> uuid.UUID:
    """Return a new time-ordered UUID (version 7, RFC 9562).

    48 bits of Unix time in milliseconds, then 74 random bits, so ids sort by
    creation time and index well.
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


@attrs.frozen(kw_only=True)
class CustomerDataInfo:
    """custdata's metadata on a customer-data column (in ``Column.info["custdata"]``).

    Attributes:
        field: The field policy: category, purposes, retention, masking.
        searchable: Whether the column has a blind-index companion.
        unique: Whether values must be unique (enforced on the companion).
        normalizer: The blind-index normaliser: ``"email"``, ``"phone"`` or ``None``.
        key_scope: ``"column"`` (per-column keys) or ``"subject"`` (per-subject
            keys, for crypto-shredding).
        companion: The name of the blind-index companion column, if searchable.
    """

    field: FieldPolicy
    searchable: bool = False
    unique: bool = False
    normalizer: str | None = None
    key_scope: Literal["column", "subject"] = "column"
    companion: str | None = None


_NORMALIZERS = frozenset({"email", "phone"})


def customer_data(
    category: str,
    *,
    purposes: Iterable[str],
    prohibited: Iterable[str] = (),
    retention: str | None = None,
    searchable: bool = False,
    unique: bool = False,
    normalizer: Literal["email", "phone"] | None = None,
    mask: str | None = None,
    on_violation: Literal["raise", "mask"] = "raise",
    type_: EncryptedType[Any] | type[EncryptedType[Any]] | None = None,
    python_type: type[Any] | None = None,
    storage: Storage = "binary",
    key_scope: Literal["column", "subject"] = "column",
    nullable: bool | None = None,
    deferred: bool = False,
    doc: str | None = None,
    legacy_plaintext: bool = False,
) -> MappedColumn[Any]:
    """Declare a customer-data column: encrypted, purpose-bound and audited.

    Use it as the value of a ``Mapped[...]`` attribute; the Python type in
    ``Mapped[...]`` picks the codec (``str``, ``int``, ``date``, ``Decimal``, ...)
    unless *type_* or *python_type* is given. The codec is fixed when the class
    is declared, so every path -- Core statements, the ORM, the jobs, the
    command line -- encodes and decodes the column alike, whatever runs first::

        email: Mapped[str] = customer_data(
            "contact.email", purposes=["billing", "support"], searchable=True
        )

    Args:
        category: The taxonomy category (``"contact.email"``).
        purposes: The purposes the field may be used for.
        prohibited: Purposes it must never be used for.
        retention: A retention rule id overriding the purposes' rules.
        searchable: Add a blind-index companion column ``<name>_bidx`` so that
            ``==`` and ``in_()`` work.
        unique: Make values unique (through the companion; needs *searchable*).
        normalizer: Normalise values before indexing (``"email"`` folds case,
            ``"phone"`` keeps digits). Defaults from the category.
        mask: The mask kind shown where the field is revealed only as a mask.
        on_violation: ``"raise"`` (default) or ``"mask"`` on an out-of-purpose read.
        type_: An explicit encrypted type, for types ``Mapped[...]`` cannot tell.
        python_type: The Python type of the values (``datetime.date``,
            ``decimal.Decimal``, an ``Enum`` class, ``dict`` for JSON ...),
            instead of reading it from ``Mapped[...]``.
        storage: ``"binary"`` (default) or ``"text"`` (base64).
        key_scope: ``"column"`` or ``"subject"`` (per-subject data keys, needed
            for crypto-shredding with :func:`shred_subject`).
        nullable: Passed to ``mapped_column``; defaults from ``Mapped[...]``.
        deferred: Load the column only when accessed.
        doc: The attribute's docstring.
        legacy_plaintext: The transitional read mode while a plaintext column
            is migrated in place (:func:`encrypt_plaintext_columns`): a stored
            value that is no envelope is read as plaintext, counted
            (:func:`legacy_plaintext_reads`) and recorded, instead of raising
            :class:`~custdata.DecryptionError`. Writes always encrypt.
            ``custdata check`` reports the column (SA004) until it is removed.

    Returns:
        The ``mapped_column`` to assign.

    Raises:
        ConfigurationError: If *purposes* or *prohibited* is a string rather
            than a list of purpose ids; when the class is declared, if
            ``Mapped[...]`` names a type custdata cannot encrypt or disagrees
            with *python_type*.
        ValueError: On *unique* without *searchable*, or an unknown normaliser.
        TypeError: If *type_* is not an encrypted type, or *python_type* is
            given with *type_* or is not a type custdata can encrypt.

    The policy itself is checked when mappers configure (``ConfigurationError``
    for an unknown category or purpose).
    """
    for name, ids in (("purposes", purposes), ("prohibited", prohibited)):
        if isinstance(ids, (str, bytes)):
            raise ConfigurationError(
                f"{name} takes a list of purpose ids, not a string: "
                f"write {name}=[{ids!r}]",
                key_path=f"customer_data({category!r}).{name}",
            )
    if unique and not searchable:
        raise ValueError(
            "unique=True needs searchable=True (uniqueness goes through the blind index)"
        )
    if normalizer is None and searchable:
        normalizer = {"contact.email": "email", "contact.phone": "phone"}.get(category)  # type: ignore[assignment]
    if normalizer is not None and normalizer not in _NORMALIZERS:
        raise ValueError(
            f"unknown normalizer {normalizer!r}; expected 'email', 'phone' or None"
        )
    field = FieldPolicy(
        category=category,
        purposes=tuple(purposes),
        prohibited=tuple(prohibited),
        retention=retention,
        on_violation=on_violation,
        mask=mask,
    )
    if python_type is not None and (
        type_ is not None or _codec_type(python_type) is None
    ):
        raise TypeError(
            "python_type takes one of the types custdata encrypts (str, bytes, int, "
            "Decimal, bool, date, datetime, time, UUID, an Enum, dict/list for JSON), "
            "without type_"
        )
    if type_ is None:
        type_instance: EncryptedType[Any] = _Inferred(
            storage=storage,
            python_type=None if python_type is None else _codec_type(python_type),
        )
    elif isinstance(type_, type):
        if not issubclass(type_, EncryptedType):
            raise TypeError("type_ must be an encrypted column type")
        type_instance = type_(storage=storage)
    elif isinstance(type_, EncryptedType):
        type_instance = type_
    else:
        raise TypeError("type_ must be an encrypted column type")
    binding = type_instance._binding  # noqa: SLF001
    binding.field = field
    if legacy_plaintext:
        binding.legacy_plaintext = True
    binding.key_scope = key_scope
    binding.normalizer = normalizer
    info = CustomerDataInfo(
        field=field,
        searchable=searchable,
        unique=unique,
        normalizer=normalizer,
        key_scope=key_scope,
    )
    kwargs: dict[str, Any] = {"info": {INFO_KEY: info}, "deferred": deferred}
    if nullable is not None:
        kwargs["nullable"] = nullable
    if doc is not None:
        kwargs["doc"] = doc
    return _CustomerDataColumn(type_instance, **kwargs)


def _codec_type(py: Any) -> type[Any] | None:
    """The type whose codec encrypts values of *py*, or ``None`` if there is none."""
    if not isinstance(py, type):
        return None
    if py in TYPE_FOR or issubclass(py, enum.Enum):
        return py
    if issubclass(py, (dict, list)):
        return dict
    return None


#: Names an annotation may use for a codec type when it cannot be evaluated
#: (``from __future__ import annotations`` with the import under TYPE_CHECKING).
_TYPE_NAMES: dict[str, type[Any]] = {
    "str": str,
    "bytes": bytes,
    "int": int,
    "bool": bool,
    "Decimal": decimal.Decimal,
    "decimal.Decimal": decimal.Decimal,
    "date": dt.date,
    "dt.date": dt.date,
    "datetime.date": dt.date,
    "datetime": dt.datetime,
    "dt.datetime": dt.datetime,
    "datetime.datetime": dt.datetime,
    "time": dt.time,
    "dt.time": dt.time,
    "datetime.time": dt.time,
    "UUID": uuid.UUID,
    "uuid.UUID": uuid.UUID,
}


def _evaluate(annotation: Any, module: str | None, cls: type[Any]) -> Any:
    """Evaluate a string annotation in its class's module, or read it by name."""
    if isinstance(annotation, typing.ForwardRef):
        annotation = annotation.__forward_arg__
    if not isinstance(annotation, str):
        return annotation
    namespace = dict(vars(sys.modules[module])) if module in sys.modules else {}
    try:
        return eval(annotation, namespace, dict(vars(cls)))  # noqa: S307 - the class's own annotation
    except Exception:  # noqa: BLE001 - unresolvable names: read the text
        text = annotation.strip()
        if text.startswith("Mapped[") and text.endswith("]"):
            text = text[len("Mapped[") : -1]
        first = text.split("|")[0].strip()
        if first.startswith("Optional[") and first.endswith("]"):
            first = first[len("Optional[") : -1]
        return _TYPE_NAMES.get(first)


def annotation_type(annotation: Any, module: str | None, cls: type[Any]) -> Any:
    """The value type a ``Mapped[...]`` annotation names, without ``None``.

    ``str | None`` gives ``str``, ``list[str]`` gives ``list``,
    ``Annotated[str, ...]`` gives ``str``; a union of two types stays a union
    (no codec can take it).
    """
    evaluated = _evaluate(annotation, module, cls)
    if typing.get_origin(evaluated) is typing.Annotated:
        evaluated = _evaluate(typing.get_args(evaluated)[0], module, cls)
    if _is_union(evaluated):
        options = [a for a in typing.get_args(evaluated) if a is not type(None)]
        if len(options) == 1:
            evaluated = options[0]
    origin = typing.get_origin(evaluated)
    return origin if origin is not None and not _is_union(evaluated) else evaluated


def _is_union(annotation: Any) -> bool:
    import types  # noqa: PLC0415

    origin = typing.get_origin(annotation)
    return origin is typing.Union or origin is types.UnionType


class _CustomerDataColumn(MappedColumn[Any]):
    """The ``mapped_column`` of a customer-data field (internal).

    It fixes the column's codec when the class is declared, from the
    ``Mapped[...]`` annotation, so that no statement, job or command can
    encode the column with another codec, whichever runs first.
    """

    def declarative_scan(  # noqa: PLR0917 - SQLAlchemy's signature
        self,
        decl_scan: Any,
        registry: Any,
        cls: type[Any],
        originating_module: str | None,
        key: str,
        mapped_container: Any,
        annotation: Any,
        extracted_mapped_annotation: Any,
        is_dataclass_field: bool,
    ) -> None:
        """Declare the column, then fix its codec from the annotation."""
        super().declarative_scan(
            decl_scan,
            registry,
            cls,
            originating_module,
            key,
            mapped_container,
            annotation,
            extracted_mapped_annotation,
            is_dataclass_field,
        )
        type_ = self.column.type
        if not isinstance(type_, _Inferred) or extracted_mapped_annotation is None:
            return
        where = f"{cls.__name__}.{key}"
        named = annotation_type(extracted_mapped_annotation, originating_module, cls)
        py = _codec_type(named)
        declared = type_.declared
        if declared is not None and py is not None and declared is not py:
            raise ConfigurationError(
                f"python_type={declared.__name__} disagrees with Mapped[{py.__name__}]",
                key_path=where,
            )
        py = declared or py
        if py is None:
            raise ConfigurationError(
                f"Mapped[{getattr(named, '__name__', named)}] is not a type custdata "
                "can encrypt; pass python_type= or type_= to customer_data()",
                key_path=where,
            )
        type_._binding.python_type = py  # noqa: SLF001 - this module's type


class _Inferred(EncryptedType[Any]):
    """An encrypted type whose Python type comes from ``Mapped[...]`` (internal).

    Until the class is declared its codec is ``python_type`` if given, else
    ``str``.
    """

    cache_ok = True

    def __init__(
        self,
        key_ref: str | None = None,
        *,
        storage: Storage = "binary",
        python_type: type[Any] | None = None,
    ) -> None:
        self.declared = python_type
        super().__init__(key_ref, storage=storage)

    def _value_type(self) -> type[Any]:
        return self.declared or self.python_type_

    def __repr__(self) -> str:
        args = [repr(self.key_ref)]
        if self.storage != "binary":
            args.append(f"storage={self.storage!r}")
        return f"EncryptedType({', '.join(args)})"


# Alembic renders a type as ``<module>.<repr>``: show the public path.
_Inferred.__module__ = "custdata.sqlalchemy"


def subject_key(
    foreign_key: str | ForeignKey | None = None,
    *,
    type_: TypeEngine[Any] | type[TypeEngine[Any]] | None = None,
    primary_key: bool | None = None,
    nullable: bool = False,
    index: bool | None = None,
    ondelete: str | None = None,
) -> MappedColumn[Any]:
    """Declare the column that identifies the data subject of each row.

    On the customer table it is the primary key, a client-generated UUIDv7 by
    default; on a child table (orders, inquiries) pass the foreign key to the
    customer table. Encrypted values in the table are then bound to the row's
    subject: a ciphertext copied to another customer's row does not decrypt.

    Args:
        foreign_key: ``"customers.id"`` or a ``ForeignKey`` on child tables.
        type_: The column type; ``Uuid`` by default (inferred from the foreign
            key on child tables).
        primary_key: Defaults to ``True`` without a foreign key, else ``False``.
        nullable: Whether the subject may be missing (not recommended).
        index: Index the column; defaults to ``True`` on child tables.
        ondelete: ``ON DELETE`` of the foreign key.

    Returns:
        The ``mapped_column`` to assign.
    """
    info = {SUBJECT_INFO_KEY: True}
    if foreign_key is None:
        return mapped_column(
            type_ if type_ is not None else Uuid(),
            primary_key=True if primary_key is None else primary_key,
            default=uuid7,
            nullable=nullable,
            index=bool(index),
            info={**info, "custdata_uuid7": True},
        )
    fk = (
        ForeignKey(foreign_key, ondelete=ondelete)
        if isinstance(foreign_key, str)
        else foreign_key
    )
    args: list[Any] = [] if type_ is None else [type_]
    return mapped_column(
        *args,
        fk,
        primary_key=bool(primary_key),
        nullable=nullable,
        index=True if index is None else index,
        info=info,
    )


# -- attachment: runs when a column joins its table --------------------------------


def _subject_kind(column: Column[Any]) -> SubjectKind:
    type_ = column.type
    if isinstance(type_, Uuid):
        return "uuid"
    if isinstance(type_, Integer):
        return "int"
    for fk in column.foreign_keys:
        return _subject_kind(fk.column)
    return "str"


def _subject_column(table: Table) -> Column[Any] | None:
    for col in table.columns:
        if col.info.get(SUBJECT_INFO_KEY):
            return col
    return None


def _companion_type() -> TypeEngine[Any]:
    return LargeBinary().with_variant(mysql.VARBINARY(32), "mysql", "mariadb")


#: Every table that has an encrypted or subject column.
KNOWN_TABLES: weakref.WeakSet[Table] = weakref.WeakSet()


@event.listens_for(Column, "after_parent_attach")
def _on_column_attach(column: Column[Any], table: Any) -> None:
    if not isinstance(table, Table):
        return
    if column.info.get(SUBJECT_INFO_KEY) or isinstance(column.type, EncryptedType):
        KNOWN_TABLES.add(table)
    if column.info.get(SUBJECT_INFO_KEY):
        for other in table.columns:
            if isinstance(other.type, EncryptedType):
                set_subject(other.type, column.key, "uuid")
        _refresh_subject_kinds(table)
        return
    if not isinstance(column.type, EncryptedType):
        return
    column.type._attach(table.name, column.name, column.key)  # noqa: SLF001
    subject = _subject_column(table)
    if subject is not None:
        set_subject(column.type, subject.key, "uuid")
        _refresh_subject_kinds(table)
    info = column.info.get(INFO_KEY)
    if isinstance(info, FieldPolicy):
        # A Core column tagged with info={"custdata": FieldPolicy(...)}.
        column.type._binding.field = info  # noqa: SLF001
    if isinstance(info, CustomerDataInfo) and info.searchable:
        name = f"{column.name}{BLIND_INDEX_SUFFIX}"
        # A copy of an attached column (Alembic, Table.to_metadata) already
        # names its companion, and the companion's own copy follows it.
        if name not in table.c and info.companion is None:
            companion = Column(
                name,
                _companion_type(),
                nullable=True,
                unique=info.unique,
                index=not info.unique,
                info={"custdata_blind_index_of": column.key},
            )
            table.append_column(companion)
        column.type._binding.companion_key = name  # noqa: SLF001
        if info.companion != name:
            column.info[INFO_KEY] = attrs.evolve(info, companion=name)


def _refresh_subject_kinds(table: Table) -> None:
    subject = _subject_column(table)
    if subject is None:
        return
    # A foreign key's target may not be resolvable yet; the kind is settled
    # again when mappers configure (see _runtime).
    try:
        kind = _subject_kind(subject)
    except Exception:  # noqa: BLE001 - unresolved foreign keys
        kind = "uuid"
    for other in table.columns:
        if isinstance(other.type, EncryptedType):
            set_subject(other.type, subject.key, kind)


def settle_table(table: Table) -> None:
    """Resolve subject kinds once foreign keys can be followed (internal)."""
    _refresh_subject_kinds(table)
