"""The statement hooks: where writes get their subject and reads their authorization.

Two engine events (and the session flush events below), installed once when
:mod:`custdata.sqlalchemy` is imported (no ``Session.do_orm_execute``
listener: as soon as one exists, SQLAlchemy builds an ``ORMExecuteState`` for
every ORM statement, customer data or not):

``Engine.before_execute``
    For an ``INSERT`` or ``UPDATE`` on a table with encrypted columns:
    authorizes the write, encrypts each value with the row's subject id (a
    multi-row statement one column at a time) and computes the blind index of
    each searchable value into its companion column; an ORM bulk ``update()``
    (by ``.values()`` or by primary key) is authorized the same way and
    recorded as ``Action.UPDATE``. For a ``DELETE`` on a customer table:
    authorizes erasing the records (``Action.DELETE``).

``Engine.before_cursor_execute``
    Once per compiled statement, a plan of what it touches is cached on it;
    a statement that touches no customer data then costs one dictionary
    lookup. For an ORM select: validates its mapped classes against the
    policy and, for a relationship load or a refresh, names the subject of
    the object it loads for (a refresh announces nothing). For every
    statement that fetches encrypted columns (Core or ORM, entity, column,
    relationship or ``get``) or searches a blind index: the results
    are read through an announcing cursor, which records the search and makes
    one :meth:`custdata.Custodian.authorize` call per fetched batch and table,
    with the batch's subject ids and value count, before anything is
    released. Rows the statement returns to the caller are then decrypted (or
    masked); values an entity load puts into objects are handed over sealed
    (:mod:`custdata.sqlalchemy._sealed`), to be decided and decrypted when
    read. For ``RETURNING`` rows, which SQLAlchemy fetches itself, the read is
    authorized before the statement runs and the result processors decrypt.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import weakref

from base64 import b64encode
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any
from uuid import UUID

import attrs

from sqlalchemy import Table, event, func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.sql import Delete, Insert, Select, Update, operators, visitors
from sqlalchemy.sql.elements import (
    BinaryExpression,
    ColumnClause,
    Grouping,
    Label,
    TextClause,
    UnaryExpression,
)
from sqlalchemy.sql.functions import FunctionElement

from custdata._context import _access, _custodian, _default_custodian, current_access
from custdata._decision import Action
from custdata._errors import (
    ConfigurationError,
    UnclassifiedFieldError,
    UnsupportedOperationError,
    ValueTypeError,
)
from custdata._policy import FieldPolicy
from custdata.crypto import _accel as _crypto_accel
from custdata.crypto._cipher import FieldCipher, open_in_place
from custdata.crypto._subject import (
    DESTROYED,
    done_reading_through,
    reading_through,
)

from ._binding import (
    _UUID_TAIL,
    INFO_KEY,
    FieldBinding,
    SubjectKind,
    subject_batch,
    subject_parts,
    subject_tail,
    subject_value,
)
from ._declare import KNOWN_TABLES, CustomerDataInfo, settle_table, uuid7
from ._keyreads import KeysWithRows, keys_first
from ._keystore import hold_subject_keys
from ._raw import refuse_raw_write
from ._sealed import (
    MASK_TEXT,
    Grant,
    SealedRow,
    SealedValue,
    seal_attribute,
    stored_envelope,
)
from ._types import (
    _GRANTS,
    RELEASED,
    EncryptedType,
    _Bound,
    _Sealed,
    _SubjectPacked,
)
from ._withhold import mask_grant, open_withheld, split_withheld
from ._write import (
    AMBIGUOUS,
    column_key,
    embedded_sources,
    logical_rows,
    refuse_insert_forms,
    refuse_moved_object,
    refuse_subject_change,
    refuse_unpinned,
    row_subject,
    to_params,
    where_subject,
)


__all__ = [
    "MASK_TEXT",
    "install",
    "known_tables",
    "table_fields",
    "validate_mapper",
    "validate_models",
]

_lock = threading.Lock()
#: :func:`custdata.current_access` without the Python call (hot paths).
_access_now = _access.get


def _current_custodian() -> Any:
    return _custodian.get() or _default_custodian[0]


# -- per-table facts -----------------------------------------------------------------


class _TableFacts:
    """What the hooks need to know about one table (cached)."""

    __slots__ = (
        "encrypted",
        "erased",
        "name",
        "sealing",
        "searchable",
        "subject_col",
        "subject_default",
        "subject_kind",
        "table",
        "write_fields",
    )

    def __init__(self, table: Table) -> None:
        settle_table(table)
        self.table = table
        self.name = table.name
        self.encrypted: list[tuple[str, FieldBinding]] = []
        self.searchable: list[tuple[str, str, FieldBinding]] = []
        self.sealing: list[tuple[str, FieldBinding, bool]] = []
        self.subject_col: Any = None
        self.subject_default = False
        #: The field mappings of written column sets, one object per set, so
        #: the custodian's verdict memo (keyed on identity) hits.
        self.write_fields: dict[tuple[str, ...], dict[str, FieldPolicy | None]] = {}
        for col in table.columns:
            if col.info.get("custdata_subject"):
                self.subject_col = col
                self.subject_default = bool(col.info.get("custdata_uuid7"))
            if isinstance(col.type, EncryptedType):
                b = col.type._binding  # noqa: SLF001
                self.encrypted.append((col.key, b))
                self.sealing.append((col.key, b, col.type.storage == "text"))
                if b.companion_key is not None:
                    self.searchable.append((col.key, b.companion_key, b))
        #: What deleting a row erases: every encrypted field (one mapping object).
        self.erased: dict[str, FieldPolicy | None] = {
            b.column or k: b.field for k, b in self.encrypted
        }
        #: How the subject ids of subject-bound columns are typed (None: none are).
        self.subject_kind: SubjectKind | None = next(
            (b.subject_kind for _k, b in self.encrypted if b.subject_key is not None),
            None,
        )

    @property
    def subject_bound(self) -> list[tuple[str, FieldBinding]]:
        return [(k, b) for k, b in self.encrypted if b.subject_key is not None]


_TABLES: weakref.WeakKeyDictionary[Table, _TableFacts] = weakref.WeakKeyDictionary()


def _facts(table: Any) -> _TableFacts | None:
    if not isinstance(table, Table):
        return None
    facts = _TABLES.get(table)
    if facts is None:
        facts = _TableFacts(table)
        _TABLES[table] = facts
    return facts if facts.encrypted or facts.subject_col is not None else None


def table_fields(table: Table) -> dict[str, FieldPolicy | None]:
    """Return the encrypted columns of *table* with their field policies."""
    facts = _facts(table)
    if facts is None:
        return {}
    return {b.column or k: b.field for k, b in facts.encrypted}


# -- writes: subject binding and blind indexes -------------------------------------------


def _prepare_row(
    row: Mapping[str, Any],
    facts: _TableFacts,
    custodian: Any,
    extra_subject: object,
    indexes: dict[str, Any],
    *,
    in_place: bool = False,
) -> Mapping[str, Any]:
    """Encrypt a parameter set's customer values with their subject (internal).

    Values are encrypted here, once per statement's cipher lookup, and handed to
    the type's bind processor sealed; blind indexes go into companion columns.
    """
    out: Any = row if in_place else dict(row)
    subject_col = facts.subject_col
    subject: object = None
    if subject_col is not None:
        subject = row.get(subject_col.key)
        if subject is None:
            subject = row.get(subject_col._label, extra_subject)  # noqa: SLF001
    for key, companion, b in facts.searchable:
        if key not in row:
            continue
        value = row[key]
        if value.__class__ in _LOADED:
            continue  # written back as loaded: its index stands
        if value.__class__ is _Bound:
            value = value.value
        if value is None:
            out[companion] = None
            continue
        bidx = indexes.get(companion)
        if bidx is None:
            bidx = indexes[companion] = b.blind_index(custodian)
        out[companion] = bidx.compute(value)
    sealers = indexes.get("\x00sealers")
    if sealers is None:
        sealers = indexes["\x00sealers"] = [
            (key, b.cipher(custodian).encrypt, b.subject_key is not None, text, b)
            for key, b, text in facts.sealing
        ]
    canonical: object = None
    written = _FLUSHED.get()
    row_tail: bytes | None = None
    try:
        for key, encrypt, bound, text, b in sealers:
            value = row.get(key)
            if value is None or value.__class__ in _STORED:
                continue
            given = value
            if value.__class__ is _Bound:
                own = value.subject
                value = value.value
                if value is None:
                    continue
                blob = (
                    encrypt(value, subject=subject_value(own, b.subject_kind))
                    if bound
                    else encrypt(value)
                )
            elif not bound:
                blob = encrypt(value)
            else:
                if canonical is None:
                    if subject is None:
                        raise ConfigurationError(
                            f"{b.where}: the row's subject id is missing; include {b.subject_key!r} "
                            "in the statement or use bind_subject()"
                        )
                    canonical = subject_value(subject, b.subject_kind)
                blob = encrypt(value, subject=canonical)
            out[key] = _sealed(b, blob, text)
            if written is not None and given.__class__ is not _Bound:
                if bound and row_tail is None:
                    row_tail = subject_tail(subject, b.subject_kind)
                _written(written, b, text).add(
                    [given], [blob], [row_tail] if bound else None
                )
    except ValueTypeError as exc:
        raise ValueTypeError(f"{b.where}: {exc}") from None
    result: Mapping[str, Any] = out
    return result


def _prepare_rows(
    rows: Sequence[Mapping[str, Any]],
    facts: _TableFacts,
    custodian: Any,
    extra_subject: object,
    indexes: dict[str, Any],
    *,
    in_place: bool = False,
    tails: list[bytes | None] | None = None,
) -> list[Mapping[str, Any]]:
    """:func:`_prepare_row` for many parameter sets, one column at a time.

    Each column's values are encrypted by one call (one read of the system's
    random source for all nonces), each row's subject encoded once for all
    its columns.
    """
    outs: list[Any] = [row if in_place else dict(row) for row in rows]
    for key, companion, b in facts.searchable:
        bidx = indexes.get(companion)
        for row, out in zip(rows, outs, strict=True):
            if key not in row:
                continue
            value = row[key]
            if value.__class__ in _LOADED:
                continue  # written back as loaded: its index stands
            if value.__class__ is _Bound:
                value = value.value
            if value is None:
                out[companion] = None
                continue
            if bidx is None:
                bidx = indexes[companion] = b.blind_index(custodian)
            out[companion] = bidx.compute(value)
    subject_col = facts.subject_col
    everything = range(len(rows))
    for key, b, text in facts.sealing:
        todo: Sequence[int] = everything
        values: list[Any] = [row.get(key) for row in rows]
        if not _SPECIAL.isdisjoint({v.__class__ for v in values}):
            todo, values = _gather(rows, key, outs, b, text, custodian)
            if not values:
                continue
        chosen: list[bytes] | None = None
        if b.subject_key is not None:
            if tails is None:
                kind = b.subject_kind
                tails = []
                for row in rows:
                    subject = (
                        None
                        if subject_col is None
                        else row_subject(row, subject_col, extra_subject)
                    )
                    tails.append(
                        None if subject is None else subject_tail(subject, kind)
                    )
            picked = tails if todo is everything else [tails[i] for i in todo]
            if None in picked:
                raise ConfigurationError(
                    f"{b.where}: the row's subject id is missing; include {b.subject_key!r} "
                    "in the statement or use bind_subject()"
                )
            chosen = picked  # type: ignore[assignment]
        try:
            blobs: list[Any] = b.cipher(custodian).seal_many(values, chosen)
        except ValueTypeError as exc:
            raise ValueTypeError(f"{b.where}: {exc}") from None
        written = _FLUSHED.get()
        if written is not None:
            _written(written, b, text).add(values, blobs, chosen)
        if text:
            blobs = [b64encode(blob) for blob in blobs]
        if not b.raw_sealed:
            blobs = [_Sealed(blob.decode("ascii") if text else blob) for blob in blobs]
        if todo is everything:
            for out, blob in zip(outs, blobs, strict=True):
                out[key] = blob
        else:
            for i, blob in zip(todo, blobs, strict=True):
                outs[i][key] = blob
    return outs


def _sealed(b: FieldBinding, blob: bytes, text: bool) -> object:
    """One sealed value as the column's bind processor takes it.

    Bare ``bytes`` (the envelope, or its base64 text as ASCII bytes) where the
    plaintext can never be bytes; otherwise wrapped, so it cannot be mistaken
    for a plaintext.
    """
    if text:
        blob = b64encode(blob)
    if b.raw_sealed:
        return blob
    return _Sealed(blob.decode("ascii") if text else blob)


class _Written:
    """What a flush encrypted for one column: the objects' values and their envelopes.

    Lists aligned by position (no object per value): the values as the
    objects hold them, the envelopes written for them and, for a
    subject-bound column, each row's associated-data tail.
    """

    __slots__ = ("blobs", "index", "tails", "text", "values")

    def __init__(self, text: bool, bound: bool) -> None:
        self.text = text
        self.values: list[Any] = []
        self.blobs: list[bytes] = []
        self.tails: list[bytes | None] | None = [] if bound else None
        #: id(value) -> position, built when the flush is over.
        self.index: dict[int, int] | None = None

    def add(
        self,
        values: Sequence[Any],
        blobs: Sequence[bytes],
        tails: Sequence[bytes | None] | None,
    ) -> None:
        self.values.extend(values)
        self.blobs.extend(blobs)
        if self.tails is not None and tails is not None:
            self.tails.extend(tails)

    def find(
        self, value: Any, subject: object, kind: SubjectKind
    ) -> tuple[Any, bytes | None] | None:
        """The stored form and tail of the envelope written for *value*, if any.

        *subject* is the object's own subject id: where one value object was
        the value of several rows, the envelope of the object's own row.
        """
        index = self.index
        if index is None:
            index = self.index = {id(v): i for i, v in enumerate(self.values)}
        i = index.get(id(value))
        if i is None or self.values[i] is not value:
            return None
        tails = self.tails
        if tails is not None and len(index) != len(self.values):
            mine = None if subject is None else subject_tail(subject, kind)
            if tails[i] != mine:
                found = next(
                    (
                        j
                        for j, v in enumerate(self.values)
                        if v is value and tails[j] == mine
                    ),
                    None,
                )
                if found is None:
                    return None
                i = found
        blob = self.blobs[i]
        return (
            b64encode(blob).decode("ascii") if self.text else blob,
            None if tails is None else tails[i],
        )


#: While a session flushes (see :func:`_seal_flushed`): per binding, what the
#: flush encrypted and wrote. ``None`` outside a flush.
_FLUSHED: contextvars.ContextVar[dict[FieldBinding, _Written] | None] = (
    contextvars.ContextVar("custdata_flushed", default=None)
)


def _written(
    written: dict[FieldBinding, _Written], b: FieldBinding, text: bool
) -> _Written:
    found = written.get(b)
    if found is None:
        found = written[b] = _Written(text, b.subject_key is not None)
    return found


#: Classes of values an object holds sealed (loaded, or flushed).
_LOADED = frozenset({SealedValue, SealedRow})
#: Classes of parameter values that are not plain values to encrypt.
_SPECIAL = frozenset({type(None), _Sealed, _Bound, SealedValue, SealedRow})
#: Classes of parameter values that are already envelopes: written as they are.
_STORED = frozenset({_Sealed, SealedValue, SealedRow})


def _gather(  # noqa: PLR0917
    rows: Sequence[Mapping[str, Any]],
    key: str,
    outs: list[Any],
    b: FieldBinding,
    text: bool,
    custodian: Any,
) -> tuple[list[int], list[Any]]:
    """The rows whose *key* value is to be encrypted, and those values.

    Values bound to their own subject (:func:`bind_subject`) are encrypted
    here, one at a time; ``None`` and already sealed values stay as they are.
    """
    todo: list[int] = []
    values: list[Any] = []
    for i, row in enumerate(rows):
        value = row.get(key)
        if value is None or value.__class__ in _STORED:
            continue
        if value.__class__ is _Bound:
            own = value.subject
            value = value.value
            if value is None:
                continue
            cipher = b.cipher(custodian)
            blob = (
                cipher.encrypt(value, subject=subject_value(own, b.subject_kind))
                if b.subject_key is not None
                else cipher.encrypt(value)
            )
            outs[i][key] = _sealed(b, blob, text)
            continue
        todo.append(i)
        values.append(value)
    return todo, values


def _authorize_write(
    facts: _TableFacts,
    custodian: Any,
    rows: Sequence[Mapping[str, Any]],
    embedded: Mapping[Any, Any] | None,
    extra_subject: object,
    *,
    is_insert: bool,
    texts: Sequence[str] | None = None,
    action: Action = Action.WRITE,
) -> None:
    """Authorize writing the customer-data columns a statement sets (internal).

    One :meth:`custdata.Custodian.authorize` call with ``Action.WRITE`` per
    statement (an ORM flush sends one per table and batch of rows), naming the
    written fields, the rows' subject ids and the number of values. An INSERT
    that leaves a column NULL does not write it; an UPDATE to NULL erases it,
    which is a write. An ORM bulk ``update()`` is the same check recorded as
    *action* ``Action.UPDATE`` (``record.bulk_update``).

    Raises:
        AccessDeniedError: If the access context may not write them.
    """
    written = tuple(
        k
        for k, _b in facts.encrypted
        if (embedded is not None and k in embedded)
        or any(k in row and (not is_insert or row[k] is not None) for row in rows)
    )
    if not written:
        return
    fields = facts.write_fields.get(written)
    if fields is None:
        bindings = dict(facts.encrypted)
        # Writing is never masked: a field may be written only for a purpose
        # permitted for it, whatever it does on an out-of-purpose read.
        fields = facts.write_fields[written] = {
            (bindings[k].column or k): _strict(bindings[k].field) for k in written
        }
    subjects: list[object] = []
    subject_col = facts.subject_col
    if texts is not None:
        subjects = list(dict.fromkeys(texts))
    elif subject_col is not None:
        if rows:
            subjects = [row_subject(row, subject_col, extra_subject) for row in rows]
        elif embedded is not None:
            subjects = [embedded.get(subject_col.key, extra_subject)]
        else:
            subjects = [extra_subject]
        # Canonical text (what the decision records) before deduplicating:
        # cheaper to hash than UUID objects.
        subjects = list(dict.fromkeys(str(s) for s in subjects if s is not None))
    custodian.authorize(
        action=action,
        entity=facts.name,
        fields=fields,
        subjects=subjects,
        count=max(len(rows), 1) * len(written),
    )


def _authorize_delete(
    conn: Connection,
    statement: Any,
    multiparams: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
) -> None:
    """Authorize erasing the records a DELETE removes (internal).

    ``session.delete()`` + flush, Core ``delete()`` and ORM bulk ``delete()``
    all arrive here. The records' subjects come from the parameters (a
    flush names each primary key) or, for a DELETE by condition, from a
    ``SELECT`` of the subject column under the same condition, run first;
    one ``Action.DELETE`` decision (``record.delete``) names them and their
    number, allowed only for a purpose that ``may_erase``.

    Raises:
        AccessDeniedError: If the context may not erase these records (the
            denial is recorded with their subjects; nothing is deleted).
    """
    facts = _facts(_unannotated(statement.table))
    if facts is None:
        return
    custodian = _require_custodian()
    subject_col = facts.subject_col
    rows = list(multiparams) or ([params] if params else [])
    raw: list[Any]
    if (
        subject_col is not None
        and rows
        and all(r.get(subject_col.key) is not None for r in rows)
    ):
        raw = [r[subject_col.key] for r in rows]
        count = len(raw)
    else:
        # A DELETE by condition: find what it will erase, by the same condition.
        where = statement.whereclause
        query: Any = (
            select(subject_col)
            if subject_col is not None
            else select(func.count()).select_from(facts.table)
        )
        if where is not None:
            query = query.where(where)
        found = list(conn.execute(query, dict(params or {})).scalars())
        if subject_col is None:
            raw, count = [], int(found[0]) if found else 0
        else:
            raw, count = found, len(found)
    kind = facts.subject_kind
    texts = (
        [t for t in subject_batch(raw, kind)[0] if t is not None]
        if kind is not None
        else [str(v) for v in raw if v is not None]
    )
    custodian.authorize(
        action=Action.DELETE,
        entity=facts.name,
        fields=facts.erased,
        subjects=list(dict.fromkeys(texts)),
        count=count,
    )


def _refuse_bulk_values(facts: _TableFacts, values: Mapping[str, Any]) -> None:
    """Refuse an ORM bulk ``update().values()`` of subject-bound or searchable columns.

    One value set for every matched row cannot be bound to each row's subject
    nor indexed per row.

    Raises:
        UnsupportedOperationError: Naming the columns, never a value.
    """
    special = sorted(
        k
        for k, b in facts.encrypted
        if k in values and (b.subject_key is not None or b.companion_key is not None)
    )
    if special:
        names = ", ".join(f"{facts.name}.{k}" for k in special)
        raise UnsupportedOperationError(
            f"{names}: a bulk update() cannot set subject-bound or searchable "
            "encrypted columns; load the objects and assign, or pass per-row "
            "parameters"
        )


def _unannotated(table: Any) -> Any:
    """The table itself, where the ORM handed over an annotated copy of it."""
    return getattr(table, "__element__", table)


def _strict(field: FieldPolicy | None) -> FieldPolicy | None:
    if field is None or field.on_violation == "raise":
        return field
    return attrs.evolve(field, on_violation="raise")


#: What :func:`_before_execute` does with a statement of each class: one
#: dictionary lookup per statement (a SELECT passes) instead of three
#: ``isinstance`` tests.
_PASS, _WRITE, _DELETE, _TEXT = range(4)
_ROUTES: dict[type, int] = {}


def _route(cls: type) -> int:
    if issubclass(cls, (Insert, Update)):
        route = _WRITE
    elif issubclass(cls, Delete):
        route = _DELETE
    elif issubclass(cls, TextClause):
        route = _TEXT
    else:
        route = _PASS
    _ROUTES[cls] = route
    return route


@event.listens_for(Engine, "before_execute", retval=True)
def _before_execute(
    conn: Connection,
    clauseelement: Any,
    multiparams: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    execution_options: Mapping[str, Any],
) -> tuple[Any, Sequence[Mapping[str, Any]], Mapping[str, Any]]:
    route = _ROUTES.get(clauseelement.__class__)
    if route is None:
        route = _route(clauseelement.__class__)
    if route != _WRITE:
        if route == _DELETE:
            _authorize_delete(conn, clauseelement, multiparams, params)
        elif route == _TEXT:
            refuse_raw_write(clauseelement.text)
        return clauseelement, multiparams, params
    facts = _facts(clauseelement.table)
    if facts is None or not facts.encrypted:
        return clauseelement, multiparams, params
    custodian = _require_custodian()
    indexes: dict[str, Any] = {}
    subject_col = facts.subject_col
    is_insert = isinstance(clauseelement, Insert)
    if is_insert:
        refuse_insert_forms(clauseelement, facts)
    values = getattr(clauseelement, "_values", None) or getattr(
        clauseelement, "_ordered_values", None
    )
    # An ORM bulk update(), by .values() or by primary key (per-row parameter
    # sets, as the ORM hands them over one statement per set of written keys).
    bulk = not is_insert and (
        clauseelement._propagate_attrs.get("compile_state_plugin") == "orm"  # noqa: SLF001
    )
    embedded: dict[str, Any] | None = None
    sources: list[tuple[str, str, object]] = []
    subject_source: Any = None
    if values and bulk:
        embedded = {column_key(col): v for col, v in dict(values).items()}
        _refuse_bulk_values(facts, embedded)
    elif values:
        clauseelement, sources, subject_source = embedded_sources(clauseelement, facts)
    set_subject = subject_source
    pinned: Any = None
    if subject_col is not None and not is_insert:
        pinned = where_subject(clauseelement, subject_col)
        if subject_source is None:
            subject_source = pinned
    # Every row's subject (a literal), or the parameter each row's is read from.
    extra_subject: object = None
    subject_param: str | None = None
    subject_default: object = None
    if subject_source is not None and subject_source is not AMBIGUOUS:
        subject_param, subject_default = subject_source
        if subject_param is None:
            extra_subject = subject_default
    # The ORM's flush hands over parameter sets it built for this call alone
    # (and marks the call with its mapper's compiled cache): no need to copy.
    in_place = execution_options.get("compiled_cache") is not None
    # A new row's subject id defaults to a client-generated UUIDv7, unless
    # the statement sets the subject column itself.
    inject = (
        is_insert
        and subject_col is not None
        and facts.subject_default
        and subject_source is None
    )
    if multiparams:
        rows: list[Mapping[str, Any]] = []
        for given in multiparams:
            row = given
            if inject and row.get(subject_col.key) is None:
                row = {**row, subject_col.key: uuid7()}
            rows.append(row)
    elif params:
        row = params
        if inject and row.get(subject_col.key) is None:
            row = {**row, subject_col.key: uuid7()}
        rows = [row]
    elif inject:
        params = {subject_col.key: uuid7()}
        rows = [params]
    else:
        rows = []
    given_rows = rows
    if sources or (
        subject_param is not None
        and subject_param not in {subject_col.key, subject_col._label}  # noqa: SLF001
    ):
        # Values the statement reads from named parameters (or embedded
        # literals, now parameters): each row as the columns see it.
        if not rows:
            given_rows = [{}]
        rows = logical_rows(
            given_rows,
            sources,
            None if subject_col is None else subject_col.key,
            subject_param,
            subject_default,
        )
        embedded = None
    if not is_insert and facts.subject_kind is not None:
        refuse_unpinned(facts, rows, extra_subject)
        if not in_place:
            # (A flush checks the objects it writes: see _before_update.)
            stated = {column_key(c): v for c, v in dict(values or {}).items()}
            refuse_subject_change(
                facts, rows or [{}], given_rows or [{}], stated, (set_subject, pinned)
            )
    texts: list[str | None] | None = None
    tails: list[bytes | None] | None = None
    if multiparams and subject_col is not None and facts.subject_kind is not None:
        # Each row's subject, as the decision names it and as the associated
        # data binds it, worked out once for both.
        key, label = subject_col.key, subject_col._label  # noqa: SLF001
        texts, tails = subject_batch(
            [
                row[key] if row.get(key) is not None else row.get(label, extra_subject)
                for row in rows
            ],
            facts.subject_kind,
        )
    _authorize_write(
        facts,
        custodian,
        rows,
        embedded,
        extra_subject,
        is_insert=is_insert,
        texts=None if texts is None else [t for t in texts if t is not None],
        action=Action.UPDATE if bulk else Action.WRITE,
    )
    if facts.subject_kind is not None and (rows or embedded):
        # Every subject's key made (or found) for the whole statement at once.
        held = rows or [embedded or {}]
        hold_subject_keys(
            conn, custodian, facts, held, tails, extra_subject, fresh=is_insert
        )
    if rows is given_rows:
        if multiparams:
            return (
                clauseelement,
                _prepare_rows(
                    rows,
                    facts,
                    custodian,
                    extra_subject,
                    indexes,
                    in_place=in_place,
                    tails=tails,
                ),
                params,
            )
        if rows:
            return (
                clauseelement,
                multiparams,
                _prepare_row(rows[0], facts, custodian, extra_subject, indexes),
            )
        return clauseelement, multiparams, params
    subject_key = None if subject_col is None else subject_col.key
    if len(rows) > 1:
        prepared = _prepare_rows(
            rows, facts, custodian, extra_subject, indexes, in_place=True, tails=tails
        )
        return (
            clauseelement,
            [
                to_params(p, g, sources, subject_key)
                for p, g in zip(prepared, given_rows, strict=True)
            ],
            {},
        )
    prepared_row = _prepare_row(
        rows[0], facts, custodian, extra_subject, indexes, in_place=True
    )
    return (
        clauseelement,
        [],
        to_params(prepared_row, given_rows[0], sources, subject_key),
    )


# -- reads: one authorization per fetched batch ------------------------------------------


def _memo_fits(
    memo: tuple[object, ...] | None,
    custodian: Any,
    keyring: Any,
    denied: tuple[str, ...],
) -> bool:
    """Whether a per-plan memo was made for this custodian, keyring and denial set."""
    return (
        memo is not None
        and memo[0] is custodian
        and memo[1] is keyring
        and memo[2] == denied
    )


class _Part:
    """The fields of one table among a statement's fetched columns.

    Every decision names one table (the audit schema's ``entity`` is one
    identifier): a statement that reads several tables makes one decision per
    table, each with the subjects of that table's rows.
    """

    __slots__ = (
        "bindings",
        "entity",
        "fields",
        "keyed",
        "names",
        "sources",
        "visible",
    )

    def __init__(
        self, entity: str, bindings: list[FieldBinding], names: list[str]
    ) -> None:
        self.entity = entity
        self.bindings = bindings
        #: The names the plan knows these fields by (qualified in a join).
        self.names = names
        self.fields: dict[str, FieldPolicy | None] = {
            (b.column or "?"): b.field for b in bindings
        }
        #: The subject sources of this table's columns.
        self.sources: list[int] = []
        #: Per subject source of a per-subject-key column: one such binding
        #: (its cipher fetches the batch's keys).
        self.keyed: list[tuple[FieldBinding, int]] = []
        #: Per (policy, role, purpose): the fields an entity load announces
        #: (permitted or masked), one mapping object each.
        self.visible: dict[tuple[object, ...], dict[str, FieldPolicy | None]] = {}

    def announced(self, policy: Any, ctx: Any) -> dict[str, FieldPolicy | None]:
        """The fields a sealed load announces under *ctx*: those it may read or mask."""
        key = (policy, ctx.role, ctx.purpose)
        fields = self.visible.get(key)
        if fields is None:
            fields = {
                name: field
                for name, field in self.fields.items()
                if field is not None
                and bool(field.purposes)
                and (field.on_violation == "mask" or policy.permits(field, ctx.purpose))
            }
            if len(self.visible) > 64:  # noqa: PLR2004 - a bound, not a tuning knob
                self.visible.clear()
            self.visible[key] = fields
        return fields


class _Plan:
    """The encrypted columns a compiled statement fetches (cached on the compiled).

    ``fields`` is one mapping object for the life of the plan, so
    :meth:`custdata.Custodian.authorize` can memoise its verdict by identity.
    A plan that ``seal``s (an ORM statement loading entities) hands its
    values over as :class:`~custdata.sqlalchemy._sealed.SealedValue`; any
    other hands them over decrypted, after the batch's decision.
    """

    __slots__ = (
        "_granted",
        "_grants",
        "_held_layout",
        "_keyed_by",
        "_rebuilds",
        "_released",
        "_valid",
        "at",
        "bindings",
        "columns",
        "entity",
        "envelopes",
        "fields",
        "keyed",
        "lone",
        "mappers",
        "names",
        "parts",
        "positions",
        "seal",
        "searches",
        "sources",
    )

    def __init__(
        self,
        bindings: list[FieldBinding],
        columns: Sequence[tuple[int, FieldBinding, bool, int]] = (),
        sources: Sequence[tuple[int, SubjectKind, bool]] = (),
        *,
        seal: bool = False,
        searched: Sequence[FieldBinding] = (),
        mappers: Sequence[Mapper[Any]] = (),
    ) -> None:
        self.bindings = bindings
        self.seal = seal
        #: Whether a fetched column has per-subject keys (whose lookups may
        #: read through the statement's connection; see :func:`_key_reads_via`).
        self.keyed = any(b.key_scope == "subject" for b in bindings)
        #: A column it reads under per-subject keys (its cipher's scope is
        #: the statement's), or ``None``.
        #: (grant, the columns whose keys a batch it opens holds: see _held_keys).
        self._held_layout: (
            tuple[Grant, list[tuple[FieldBinding, int, str, Any]]] | None
        ) = None
        self._keyed_by = next(
            (
                b
                for b in bindings
                if b.key_scope == "subject" and not b.legacy_plaintext
            ),
            None,
        )
        #: The mapped classes with customer-data fields an ORM select names at
        #: its top level: validated against the policy before it runs.
        self.mappers = list(mappers)
        #: The policy they were validated against last (a weak reference).
        self._valid: weakref.ref[Any] | None = None
        #: Per table the statement searches through a blind index: (table,
        #: the searched fields, strict: a search is never masked).
        self.searches: list[tuple[str, dict[str, FieldPolicy | None]]] = []
        for table in sorted({b.table or "?" for b in searched}):
            self.searches.append(
                (
                    table,
                    {
                        (b.column or "?"): _strict(b.field)
                        for b in searched
                        if (b.table or "?") == table
                    },
                )
            )
        tables = sorted({b.table or "?" for b in bindings})
        single = len(tables) == 1
        self.entity = tables[0] if single else ", ".join(tables)
        self.names = [(b.column or "?") if single else b.where for b in bindings]
        self.fields: dict[str, FieldPolicy | None] = dict(
            zip(self.names, (b.field for b in bindings), strict=True)
        )
        self.parts: list[_Part] = []
        for table in tables:
            chosen = [
                (b, name)
                for b, name in zip(bindings, self.names, strict=True)
                if (b.table or "?") == table
            ]
            part = _Part(table, [b for b, _ in chosen], [n for _, n in chosen])
            part.sources = sorted(
                {src for _, b, _, src in columns if src >= 0 and b in part.bindings}
            )
            keyed: dict[int, FieldBinding] = {}
            for _, b, _, src in columns:
                if (
                    src >= 0
                    and b in part.bindings
                    and b.key_scope == "subject"
                    and not b.legacy_plaintext
                ):
                    keyed.setdefault(src, b)
            part.keyed = [(b, src) for src, b in sorted(keyed.items())]
            self.parts.append(part)
        #: The encrypted columns of a fetched row: (position, binding, text
        #: storage, index of the subject source or -1 for no subject).
        self.columns = list(columns)
        #: Where the subject ids of a fetched row are read: (position, kind,
        #: packed) -- a subject column of the row, or a value fetched as
        #: ``subject || '|' || envelope``.
        self.sources = list(sources)
        #: (position, kind) of the one subject column of a row whose
        #: subject-bound values all name it; ``None`` otherwise.
        self.lone: tuple[int, SubjectKind] | None = (
            (sources[0][0], sources[0][1])
            if len(sources) == 1 and not sources[0][2] and single
            else None
        )
        #: For a sealed load whose rows have at most one subject, each fetched
        #: as a column of the row: one :class:`SealedRow` per row, holding the
        #: row's envelopes (taken by ``envelopes``) at ``at[table.column]``.
        self.positions = [pos for pos, _b, _text, _src in columns]
        self.at: dict[str, int] = {
            b.where: i for i, (_pos, b, _text, _src) in enumerate(columns)
        }
        self.envelopes: Any = None
        if seal and len(sources) <= 1 and not any(p for _, _, p in sources):
            self.envelopes = (
                itemgetter(*self.positions)
                if len(self.positions) > 1
                else (lambda row, pos=self.positions[0]: (row[pos],))
            )
        #: (custodian, keyring, denied fields, grants): the last grants built.
        self._grants: tuple[object, object, object, dict[object, Any]] | None = None
        #: The same for fetched batches: (..., what :meth:`released` returns).
        self._released: tuple[object, object, object, Any] | None = None
        #: (context, custodian, grant, announced parts) of the last sealed batch.
        self._granted: tuple[object, Any, Grant, Any] | None = None
        #: Row width -> what makes a sealed row's result row (see :meth:`rebuild`).
        self._rebuilds: dict[int, Callable[[tuple[Any, ...]], tuple[Any, ...]]] = {}

    def rebuild(self, width: int) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
        """What turns ``row + (sealed,)`` into the row a sealed load hands over.

        For a fetched row of *width* columns with its :class:`SealedRow`
        appended, an ``itemgetter`` that picks every column of the row but
        puts the sealed row at each customer-data position: one call in C
        per row, no list and no Python loop over the positions.
        """
        build = self._rebuilds.get(width)
        if build is None:
            at = set(self.positions)
            picks = [width if i in at else i for i in range(width)]
            build = (
                itemgetter(*picks)
                if width > 1
                else (lambda row, pick=picks[0]: (row[pick],))
            )
            self._rebuilds[width] = build
        return build

    def validate(self, policy: Any) -> None:
        """Validate the statement's mapped classes against *policy* (once per policy).

        Raises:
            ConfigurationError: On an unknown category, purpose or retention rule.
        """
        valid = self._valid
        if valid is not None and valid() is policy:
            return
        for mapper in self.mappers:
            validate_mapper(mapper, policy)
        self._valid = weakref.ref(policy)

    def search(self, custodian: Any, count: int) -> None:
        """Authorize and record the statement's blind-index searches (one decision per table).

        Raises:
            AccessDeniedError: If the context may not search these fields.
        """
        for entity, fields in self.searches:
            custodian.authorize(
                action=Action.SEARCH, entity=entity, fields=fields, count=count
            )

    def subject_scope(self, custodian: Any) -> Any:
        """The per-subject key scope of the statement's columns, or ``None``."""
        b = self._keyed_by
        return None if b is None else b.cipher(custodian).subject_keys

    def decide(
        self,
        custodian: Any,
        subjects: Sequence[Sequence[str]] | None,
        extra: Sequence[object],
        rows: int,
        withheld: dict[str, frozenset[str]] | None = None,
        *,
        batch: tuple[Sequence[Any], list[list[bytes | None]]] | None = None,
    ) -> tuple[str, ...]:
        """Authorize reading every part (one decision each), before any value is opened.

        Args:
            custodian: The deciding custodian.
            subjects: Per subject source, the batch's distinct subject ids
                (``None``: the plan's parts share them all).
            extra: Subjects named by the load (rows without their own).
            rows: The number of rows fetched.
            withheld: Filled with table -> the subjects a decision withheld
                (revealed only as masks), if given.
            batch: The fetched rows and their subject tails, when the batch
                is opened whole (a Core result): a crypto-shredded subject
                among them refuses the batch (see :func:`_shredded`).

        Returns:
            The plan's names of the fields revealed only as their mask.

        Raises:
            AccessDeniedError: If the context may not read a part's fields.
            KeyDestroyedError: A subject of the batch was crypto-shredded
                (recorded as denied; nothing recorded as revealed).
        """
        denied: list[str] = []
        # A join: the tables' allowed decisions are recorded once all are
        # decided, so one refused table leaves no reveal of another.
        pending: list[Any] | None = [] if len(self.parts) > 1 else None
        for part in self.parts:
            named: list[str] = []
            if subjects is not None:
                for src in part.sources:
                    named.extend(subjects[src])
                if len(part.sources) > 1:
                    named = list(dict.fromkeys(named))
            if not named and extra:
                named = list(map(str, extra))
            gone = (
                _shredded(self, part, custodian, *batch)
                if batch is not None and part.keyed
                else ()
            )
            decision = custodian.authorize(
                action=Action.READ,
                entity=part.entity,
                fields=part.fields,
                subjects=named,
                count=rows * len(part.bindings),
                unreadable=gone,
                whole_batch=True,
                pending=pending,
            )
            if decision.withheld and withheld is not None:
                withheld[part.entity] = frozenset(decision.withheld)
            if decision.denied_fields:
                by_column = dict(
                    zip(
                        (b.column or "?" for b in part.bindings),
                        part.names,
                        strict=True,
                    )
                )
                denied.extend(by_column[f] for f in decision.denied_fields)
        if pending:
            custodian.record_pending(pending)
        return tuple(denied)

    def grants(self, custodian: Any, denied: tuple[str, ...]) -> dict[object, Any]:
        """The grants of an allowed decision: binding -> cipher, or the mask."""
        memo = self._grants
        keyring = custodian.keyring
        if _memo_fits(memo, custodian, keyring, denied):
            return memo[3]  # type: ignore[index]
        grants: dict[object, Any] = {}
        for name, b in zip(self.names, self.bindings, strict=True):
            grants[b] = MASK_TEXT if denied and name in denied else b.cipher(custodian)
        self._grants = (custodian, keyring, denied, grants)
        return grants

    def released(
        self, custodian: Any, denied: tuple[str, ...]
    ) -> tuple[
        dict[object, Any],
        list[tuple[int, Any, bool, int]],
        list[tuple[int, Any]] | None,
        list[int],
    ]:
        """The grants of a fetched batch and the columns its cursor decrypts.

        Returns:
            Binding -> :data:`RELEASED` or the mask text; (position, cipher,
            text storage, subject source) of every column to decrypt; when
            every one of them is binary and bound to the row's one subject,
            their (position, cipher) for :func:`open_in_place`; and the
            positions of the columns revealed only as their mask.
        """
        memo = self._released
        keyring = custodian.keyring
        if _memo_fits(memo, custodian, keyring, denied):
            return memo[3]  # type: ignore[index,no-any-return]
        masked = {
            b
            for name, b in zip(self.names, self.bindings, strict=True)
            if name in denied
        }
        grants: dict[object, Any] = {
            b: MASK_TEXT if b in masked else RELEASED for b in self.bindings
        }
        opens = [
            (pos, b.cipher(custodian), text, src)
            for pos, b, text, src in self.columns
            if b not in masked
        ]
        masks = [pos for pos, b, _, _ in self.columns if b in masked]
        bound = (
            [(pos, cipher) for pos, cipher, _, _ in opens]
            if self.lone is not None
            and all(
                not text and src >= 0 and type(cipher) is FieldCipher
                for _, cipher, text, src in opens
            )
            else None
        )
        result = (grants, opens, bound, masks)
        self._released = (custodian, keyring, denied, result)
        return result

    def search_allowed(self, custodian: Any) -> bool:
        """Predict whether the context in force may search this plan's fields."""
        ctx = _access_now()
        policy = custodian.policy
        return _context_ok(policy) and all(
            field is not None
            and bool(field.purposes)
            and policy.permits(field, ctx.purpose)
            for _entity, fields in self.searches
            for field in fields.values()
        )


_NO_PLAN = _Plan([])
_PLAN_ATTR = "_custdata_plan"


def _is_encrypted(expr: Any) -> bool:
    while isinstance(expr, (Label, UnaryExpression)):
        expr = expr.element
    return isinstance(getattr(expr, "type", None), EncryptedType)


def _packed_in(objects: Sequence[Any]) -> _SubjectPacked | None:
    for obj in objects:
        element = getattr(obj, "element", None)
        if isinstance(element, _SubjectPacked):
            return element
    return None


def _subject_index(entries: Sequence[Any], subject: Any) -> int:
    """The position of *subject* (a column) among a compiled statement's result columns."""
    table, key = subject.table, subject.key
    for index, entry in enumerate(entries):
        if isinstance(entry[3], EncryptedType):
            continue
        for obj in entry[2]:
            while isinstance(obj, Label):
                obj = obj.element  # noqa: PLW2901 - unwrapped in place
            if (
                getattr(obj, "table", None) is table
                and getattr(obj, "key", None) == key
            ):
                return index
    raise UnsupportedOperationError(
        f"{getattr(table, 'name', '?')}.{key}: the subject column is not among the fetched columns"
    )


def _loads_entities(compiled: Any) -> bool:
    """Whether an ORM statement loads entities (whose values then stay sealed).

    Raises:
        UnsupportedOperationError: If it also selects a customer-data column
            on its own: the two would share the fetched value.
    """
    entities = getattr(getattr(compiled, "compile_state", None), "_entities", None)
    if not entities:
        return False
    from sqlalchemy.orm.context import _MapperEntity  # noqa: PLC0415

    if not any(isinstance(e, _MapperEntity) for e in entities):
        return False
    for e in entities:
        column = getattr(e, "column", None)
        if column is not None and _is_encrypted(column):
            raise UnsupportedOperationError(
                "a statement that loads entities cannot also select a customer-data "
                "column on its own; read the attribute of the loaded object instead"
            )
    return True


def _encrypted_column(element: Any) -> FieldBinding | None:
    """The binding of *element* if it is an encrypted column (labelled or not)."""
    while isinstance(element, (Label, Grouping)):
        element = element.element
    if isinstance(element, ColumnClause) and isinstance(element.type, EncryptedType):
        return element.type._binding  # noqa: SLF001 - the package's own type
    return None


def _refuse_expressions(where: Any, entries: Sequence[Any]) -> None:
    """Refuse SQL that would compute on ciphertext and silently match or return garbage.

    In a WHERE clause an encrypted column may only be tested for NULL (its
    ``==`` and ``in_()`` compile to the blind index); ``func.lower(email) ==
    v`` would compare a function of the ciphertext. Among the fetched
    columns, an expression over an encrypted column (``func.lower(email)``,
    a ``column_property()`` over one) would return a function of the
    ciphertext; ``count()`` alone is harmless.

    Raises:
        UnsupportedOperationError: Naming the column, never a value.
    """
    if where is not None:
        tested: set[int] = set()
        for element in visitors.iterate(where):
            if (
                isinstance(element, BinaryExpression)
                and element.operator in _NULL_TESTS
            ):
                tested.add(id(element.left))
                continue
            b = _encrypted_column(element)
            if b is not None and id(element) not in tested:
                raise UnsupportedOperationError(
                    f"{b.where}: an encrypted column in a WHERE clause can only be "
                    "compared with == / in_() (searchable) or tested for NULL"
                )
    for entry in entries:
        if isinstance(entry[3], EncryptedType):
            continue
        for obj in entry[2]:
            inner = obj
            while isinstance(inner, Label):
                inner = inner.element
            if not hasattr(inner, "get_children") or (
                isinstance(inner, FunctionElement) and inner.name == "count"
            ):
                continue
            for element in visitors.iterate(obj):
                b = _encrypted_column(element)
                if b is not None:
                    raise UnsupportedOperationError(
                        f"{b.where}: an expression over an encrypted column cannot "
                        "work on ciphertext; select the column itself"
                    )


_NULL_TESTS = frozenset({operators.is_, operators.is_not})


def _searched(statement: Any) -> list[FieldBinding]:
    """The searchable fields whose blind index a statement compares, anywhere in it.

    In the WHERE clause, a join's ON clause, HAVING or a subquery: every
    comparison with a companion column is a search of its field.
    """
    if statement is None:
        return []
    found: dict[FieldBinding, None] = {}
    for element in visitors.iterate(statement):
        if not isinstance(element, BinaryExpression):
            continue
        for side in (element.left, element.right):
            table = _unannotated(getattr(side, "table", None))
            if not isinstance(table, Table):
                continue
            facts = _facts(table)
            if facts is None:
                continue
            key = getattr(side, "key", None)
            for _key, companion, b in facts.searchable:
                if key == companion:
                    found[b] = None
    return list(found)


def _statement_mappers(statement: Any) -> list[Mapper[Any]]:
    """The mapped classes with customer-data fields at the top level of an ORM select."""
    mappers: list[Mapper[Any]] = []
    for select_ in getattr(statement, "selects", None) or (statement,):
        for element in getattr(select_, "_raw_columns", ()):
            entity = element._annotations.get("parententity")  # noqa: SLF001
            mapper = getattr(entity, "mapper", None)
            if (
                mapper is not None
                and mapper not in mappers
                and _mapper_facts(mapper).fields
            ):
                mappers.append(mapper)
    return mappers


def _plan_for(compiled: Any) -> _Plan:
    plan: _Plan | None = compiled.__dict__.get(_PLAN_ATTR)
    if plan is not None:
        return plan
    statement = getattr(compiled, "statement", None)
    if isinstance(statement, Select):
        for clause in (*statement._order_by_clauses, *statement._group_by_clauses):  # noqa: SLF001
            if _is_encrypted(clause):
                raise UnsupportedOperationError(
                    "ordering or grouping by an encrypted column cannot work on ciphertext"
                )
    seen: dict[FieldBinding, None] = {}
    entries = list(getattr(compiled, "_result_columns", ()) or ())
    _refuse_expressions(getattr(statement, "whereclause", None), entries)
    columns: list[tuple[int, FieldBinding, bool, int]] = []
    sources: list[tuple[int, SubjectKind, bool]] = []
    by_position: dict[int, int] = {}
    for index, entry in enumerate(entries):
        type_ = entry[3]
        if not isinstance(type_, EncryptedType):
            continue
        b = type_._binding  # noqa: SLF001
        seen[b] = None
        text = type_.storage == "text"
        if b.subject_key is None:
            columns.append((index, b, text, -1))
            continue
        packed = _packed_in(entry[2])
        if packed is not None and packed.custdata_row:
            position = _subject_index(entries, packed.clauses.clauses[0])
            src = by_position.get(position)
            if src is None:
                src = by_position[position] = len(sources)
                sources.append((position, b.subject_kind, False))
        else:
            src = len(sources)
            sources.append((index, b.subject_kind, True))
        columns.append((index, b, text, src))
    searched = _searched(statement)
    mappers = _statement_mappers(statement)
    plan = (
        _Plan(
            list(seen),
            columns,
            sources,
            seal=bool(seen) and _loads_entities(compiled),
            searched=searched,
            mappers=mappers,
        )
        if seen or searched or mappers
        else _NO_PLAN
    )
    with contextlib.suppress(AttributeError):  # no __dict__: no cache
        setattr(compiled, _PLAN_ATTR, plan)
    return plan


def _require_custodian() -> Any:
    custodian = _current_custodian()
    if custodian is None:
        raise ConfigurationError(
            "no custodian is current: call custodian.make_current() or use custodian.activate()"
        )
    return custodian


def authorize_read(
    plan: _Plan,
    custodian: Any,
    *,
    subjects: Sequence[object] = (),
    count: int = 0,
) -> dict[object, Any]:
    """Authorize reading *plan*'s fields now and put the grants in force (internal).

    For values SQLAlchemy fetches and processes itself (``RETURNING``): the
    result processors decrypt them.

    Returns:
        The grants now in force: binding -> cipher, or the mask text.

    Raises:
        AccessDeniedError: If the access context may not read them.
    """
    denied = plan.decide(custodian, None, subjects, 0)
    grants = plan.grants(custodian, denied)
    _GRANTS.set(grants)
    return grants


_HEX_UUID = 32
_UUID_TEXT = 36
_UUID_BYTES = 16


def _batch_subjects(
    rows: Sequence[Any], plan: _Plan
) -> tuple[list[list[str]], list[list[bytes | None]], dict[int, list[Any]]]:
    """The subjects of a fetched batch, before anything in it is decrypted.

    Returns:
        Per subject source, the distinct canonical subject ids (what the
        decisions name) and each row's associated-data tail (``None`` where
        the row has no subject); and per packed source, each row's envelope.
    """
    named: list[list[str]] = []
    tails: list[list[bytes | None]] = []
    blobs: dict[int, list[Any]] = {}
    if len(rows) == 1:
        # One row (a get, a refresh): no memo.
        first = rows[0]
        for src, (index, kind, packed) in enumerate(plan.sources):
            raw = first[index]
            named.append([])
            if packed and raw is not None:
                raw, _, blob = raw.partition(b"|" if raw.__class__ is bytes else "|")
                blobs[src] = [blob]
            elif packed:
                blobs[src] = [None]
            if raw is None:
                tails.append([None])
                continue
            text, tail = subject_parts(raw, kind)
            named[src] = [text]
            tails.append([tail])
        return named, tails, blobs
    for src, (index, kind, packed) in enumerate(plan.sources):
        memo: dict[object, tuple[str, bytes]] = {}
        seen: dict[str, None] = {}
        out: list[bytes | None] = []
        append = out.append
        if packed:
            envelopes: list[Any] = []
            keep = envelopes.append
            for row in rows:
                value = row[index]
                if value is None:
                    append(None)
                    keep(None)
                    continue
                raw, _, blob = value.partition(
                    b"|" if value.__class__ is bytes else "|"
                )
                keep(blob)
                parts = memo.get(raw)
                if parts is None:
                    parts = memo[raw] = subject_parts(raw, kind)
                    seen[parts[0]] = None
                append(parts[1])
            blobs[src] = envelopes
        elif (
            kind == "uuid"
            and (native := _crypto_accel.native) is not None
            and (done := native.uuid_subjects(list(map(itemgetter(index), rows))))
            is not None
        ):
            # The whole column in one native call (the same texts and tails
            # as the loop below; anything unusual is left to it).
            named.append(done[0])
            tails.append(done[1])
            continue
        elif kind == "uuid":
            fromhex = bytes.fromhex
            tails_of: dict[object, bytes] = {}
            for row in rows:
                raw = row[index]
                if raw is None:
                    append(None)
                    continue
                if raw.__class__ is UUID:
                    # A native UUID column: no memo (UUIDs hash in Python).
                    number = raw.int
                    h = f"{number:032x}"
                    text = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
                    seen[text] = None
                    append(_UUID_TAIL + number.to_bytes(_UUID_BYTES, "big"))
                    continue
                found = tails_of.get(raw)
                if found is None:
                    # subject_parts() inlined for 32 hex digits (CHAR(32) storage)
                    # and for the canonical text itself (MariaDB's UUID type);
                    # no tuple per row (fewer objects for the garbage collector).
                    size = len(raw) if raw.__class__ is str else 0
                    data = b""
                    if size == _HEX_UUID:
                        data = fromhex(raw)
                        if len(data) == _UUID_BYTES:
                            h = data.hex()
                            text = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
                    elif (
                        size == _UUID_TEXT
                        and raw[8] == raw[13] == raw[18] == raw[23] == "-"
                        and raw.islower()
                    ):
                        data = fromhex(raw.replace("-", ""))
                        text = raw
                    if len(data) == _UUID_BYTES:
                        seen[text] = None
                        found = _UUID_TAIL + data
                    else:
                        text, found = subject_parts(raw, kind)
                        seen[text] = None
                    tails_of[raw] = found
                append(found)
        else:
            for row in rows:
                raw = row[index]
                if raw is None:
                    append(None)
                    continue
                parts = memo.get(raw)
                if parts is None:
                    parts = memo[raw] = subject_parts(raw, kind)
                    seen[parts[0]] = None
                append(parts[1])
        tails.append(out)
        named.append(list(seen))
    return named, tails, blobs


def _open_rows(
    rows: Sequence[Any],
    opens: Sequence[tuple[int, Any, bool, int]],
    tails: list[list[bytes | None]],
    blobs: dict[int, list[Any]],
    masks: Sequence[int] = (),
) -> list[Any]:
    """Decrypt the released columns of a fetched batch, column by column.

    Columns revealed only as their mask get the mask text (never decrypted).
    """
    if len(rows) == 1:
        # One row (a get, a refresh): no transposing.
        row = list(rows[0])
        for pos, cipher, text, src in opens:
            if src >= 0:
                tail = tails[src][0]
                packed = blobs.get(src)
                value = row[pos] if packed is None else packed[0]
                if tail is None:
                    row[pos] = None
                    continue
            else:
                tail = None
                value = row[pos]
            if value is not None:
                row[pos] = cipher.open_value(
                    _b64(value, cipher) if text else value, tail
                )
            else:
                row[pos] = None
        for pos in masks:
            if row[pos] is not None:
                row[pos] = MASK_TEXT
        return [tuple(row)]
    columns = _columns(rows)
    for pos in masks:
        columns[pos] = [None if v is None else MASK_TEXT for v in columns[pos]]
    sliced: list[tuple[int, FieldCipher[Any], list[Any], list[bytes | None]]] = []
    for pos, cipher, text, src in opens:
        values = blobs.get(src) if src >= 0 else None
        if values is None:
            values = columns[pos]
        if text:
            values = [None if v is None else _b64(v, cipher) for v in values]
        if (
            src >= 0
            and len(rows) > ROW_SLICE
            and cipher.subject_keys is not None
            and cipher.legacy is None
        ):
            sliced.append((pos, cipher, values, tails[src]))
            continue
        columns[pos] = cipher.open_fetched(values, tails[src] if src >= 0 else None)
    if sliced:
        _open_by_slices(sliced, columns, len(rows))
    return _in_place(rows, zip(*columns, strict=True))


#: Rows per slice in which a large fetched batch's per-subject-key columns
#: are opened together (see :func:`_open_by_slices`): the keys of this many
#: subjects (about 1.2 KiB each) stay in a core's own cache.
ROW_SLICE = 128


def _open_by_slices(
    sliced: Sequence[tuple[int, FieldCipher[Any], list[Any], list[bytes | None]]],
    columns: list[Any],
    count: int,
) -> None:
    """Open a batch's per-subject-key columns a slice of :data:`ROW_SLICE` rows at a time.

    Each subject's key is an AES-GCM context of its own. Opened column by
    column, a batch of thousands of subjects goes through all of them once
    per column, and each pass finds them evicted from the processor's caches
    by the one before; slice by slice, a row's values meet its subject's key
    while it is still cached. The whole batch's keys are fetched first, once
    (one lookup per chunk of subjects, as for any batch).

    Args:
        sliced: ``(position, cipher, values, tails)`` of each such column.
        columns: The batch's columns; each position is replaced by its
            opened values.
        count: The number of rows.
    """
    jobs = []
    for pos, cipher, values, tails in sliced:
        opened: list[Any] = [None] * count
        columns[pos] = opened
        jobs.append(
            (cipher.open_held_many, values, tails, cipher.held_keys(tails), opened)
        )
    for start in range(0, count, ROW_SLICE):
        stop = start + ROW_SLICE
        for open_many, values, tails, by_tail, opened in jobs:
            opened[start:stop] = open_many(
                values[start:stop], tails[start:stop], by_tail
            )


def _columns(rows: Sequence[Any]) -> list[Any]:
    """The columns of a fetched batch, one list each.

    Not ``zip(*rows)``: that makes one iterator object per row, which the
    garbage collector counts (a collection per 700 rows).
    """
    return [list(map(itemgetter(i), rows)) for i in range(len(rows[0]))]


def _in_place(rows: Sequence[Any], new: Iterable[Any]) -> list[Any]:
    """The fetched batch *rows* (a list), each row replaced by its counterpart in *new*.

    Each new row takes its fetched row's place as soon as it is made, so the
    fetched row is freed at once: the batch never lives twice. The cyclic
    garbage collector runs after every 700 container objects allocated and
    not freed; a second copy of a large batch, alive until the first is
    dropped, would add a collection per 700 rows (and, as the heap grows,
    full ones), a cost that grows with the batch.
    """
    out = rows if rows.__class__ is list else list(rows)
    deque(map(out.__setitem__, range(len(out)), new), maxlen=0)
    return out


def _b64(value: Any, cipher: Any) -> Any:
    """The envelope of a text-storage value (see :func:`stored_envelope`)."""
    return stored_envelope(value)


def _part_subjects(
    part: _Part, named: list[list[str]], extra: Sequence[object]
) -> list[str]:
    """The subjects of one table's rows in a batch (or those the load names)."""
    sources = part.sources
    if len(sources) == 1:
        subjects = named[sources[0]]
    else:
        subjects = list(dict.fromkeys(s for src in sources for s in named[src]))
    if not subjects and extra:
        return list(map(str, extra))
    return subjects


def _shredded(
    plan: _Plan,
    part: _Part,
    custodian: Any,
    rows: Sequence[Any],
    tails: list[list[bytes | None]],
) -> tuple[str, ...]:
    """The subjects of *part*'s rows in a fetched batch whose data key was destroyed.

    Asked before the batch's decision, so that a crypto-shredded subject is
    refused, and recorded as refused, instead of being announced as revealed.
    The keys are the batch's own fetch (one lookup per chunk of subjects,
    kept for the batch), which its values are then opened with: a batch
    without shredded subjects pays one scan of its keys.
    """
    gone: dict[str, None] = {}
    for b, src in part.keyed:
        column = tails[src]
        by_tail = b.cipher(custodian).held_keys(column)
        if DESTROYED not in by_tail.values():
            continue
        index, kind, packed = plan.sources[src]
        for row, tail in zip(rows, column, strict=True):
            if tail is not None and by_tail.get(tail) is DESTROYED:
                raw = row[index]
                if packed:
                    raw = raw.partition(b"|" if raw.__class__ is bytes else "|")[0]
                gone[subject_parts(raw, kind)[0]] = None
    return tuple(gone)


def _held_keys(
    plan: Any, grant: Grant | None, tails: list[list[bytes | None]]
) -> dict[tuple[FieldBinding, int], dict[bytes | None, Any]]:
    """The subject keys of a fetched batch, fetched once per subject column.

    Per (binding, subject source) of a per-subject-key column the grant opens,
    the batch's keys (one chunked lookup for the whole batch), so reading the
    objects' values later needs no lookup per value.
    """
    held: dict[tuple[FieldBinding, int], dict[bytes | None, Any]] = {}
    by_source: dict[int, dict[bytes | None, Any]] = {}
    for b, src, _where, opener in _held_layout(plan, grant):
        keys = by_source.get(src)
        if keys is None:
            keys = by_source[src] = opener.held_keys(tails[src])
        held[b, src] = keys
    return held


def _held_by_where(
    plan: Any, grant: Grant | None, tails: list[list[bytes | None]]
) -> dict[str, dict[bytes | None, Any]] | None:
    """:func:`_held_keys` per ``table.column``, for a :class:`SealedRow` (``None``: none)."""
    held: dict[str, dict[bytes | None, Any]] = {}
    by_source: dict[int, dict[bytes | None, Any]] = {}
    for _b, src, where, opener in _held_layout(plan, grant):
        keys = by_source.get(src)
        if keys is None:
            keys = by_source[src] = opener.held_keys(tails[src])
        held[where] = keys
    return held or None


def _held_layout(
    plan: Any, grant: Grant | None
) -> list[tuple[FieldBinding, int, str, Any]]:
    """``(binding, subject source, table.column, cipher)`` of the columns whose keys a batch holds.

    The per-subject-key columns *grant* opens, worked out once per grant
    (its openers never change) and kept on the plan.
    """
    if grant is None or not plan.keyed:
        return []
    memo = plan._held_layout  # noqa: SLF001 - the plan's own memo
    if memo is not None and memo[0] is grant:
        return memo[1]  # type: ignore[no-any-return]
    layout: list[tuple[FieldBinding, int, str, Any]] = []
    for _pos, b, _text, src in plan.columns:
        opener: Any = grant.opens.get(b)
        if (
            src >= 0
            and getattr(opener, "subject_keys", None) is not None
            and getattr(opener, "legacy", None) is None
        ):
            layout.append((b, src, b.where, opener))
    plan._held_layout = (grant, layout)  # noqa: SLF001
    return layout


def _sealed_rows(
    rows: Sequence[Any],
    plan: _Plan,
    grant: Grant | None,
    tails: list[list[bytes | None]],
    keys: dict[str, dict[bytes | None, Any]] | None,
) -> list[Any]:
    """The rows of a sealed load, each row's customer values in one :class:`SealedRow`.

    Every customer-data column of a row carries the same object (one per
    row, not one per value: the objects a load leaves behind for the garbage
    collector do not grow with the number of fields). Each row is rebuilt
    by one C call (:meth:`_Plan.rebuild`), not a list patched per position.
    """
    envelopes = plan.envelopes
    at = plan.at
    # Each row is replaced in the fetched list itself (see _in_place).
    out: list[Any] = rows if rows.__class__ is list else list(rows)
    if not out:
        return out
    build = plan.rebuild(len(out[0]))
    if plan.sources:
        index = plan.sources[0][0]
        for i, (row, tail) in enumerate(zip(out, tails[0], strict=True)):
            sealed = SealedRow(envelopes(row), at, tail, row[index], grant, keys)
            out[i] = build((*row, sealed))
        return out
    for i, row in enumerate(out):
        out[i] = build((*row, SealedRow(envelopes(row), at, None, None, grant, keys)))
    return out


#: What :meth:`_AnnouncingCursor._seal_one` returns for a withheld subject.
_WITHHELD: list[Any] = []


class _AnnouncingCursor:
    """A DBAPI cursor whose fetches authorize, then decrypt, each batch.

    SQLAlchemy turns raw rows into result rows only after the cursor's
    ``fetch*`` returns them. This proxy makes one
    :meth:`custdata.Custodian.authorize` call per fetched batch, with the
    batch's subject ids and value count, so every batch is announced (and a
    denial raised) before any of its values is decrypted; it then decrypts the
    batch's released values column by column, each with the subject of its own
    row, and the result processors pass them through.
    """

    __slots__ = (
        "_announced",
        "_buffer",
        "_cursor",
        "_custodian",
        "_drained",
        "_extra",
        "_grants",
        "_keys",
        "_plan",
        "_quiet",
        "_searched",
        "_via",
        "_withheld",
    )

    #: Rows read ahead per announced batch when the rows are fetched one by one.
    chunk = 100

    def __init__(
        self,
        cursor: Any,
        plan: _Plan,
        custodian: Any,
        extra: Sequence[object],
        *,
        quiet: bool = False,
        via: Connection | None = None,
        keys: KeysWithRows | None = None,
    ) -> None:
        self._cursor = cursor
        #: The connection the rows come through, offered for their key lookups.
        self._via = via
        #: What the statement reads of the key store before its own columns.
        self._keys = keys
        #: A sealed load that announces nothing (a refresh): reads decide.
        self._quiet = quiet
        self._searched = False
        self._extra = extra
        self._plan = plan
        self._custodian = custodian
        self._announced = False
        self._grants: dict[object, Any] | None = None
        self._buffer: list[Any] = []
        #: Whether a read-ahead batch came back short: the rows are all fetched.
        self._drained = False
        #: Table -> the subjects the last sealed batch's decisions withheld.
        self._withheld: dict[str, frozenset[str]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    # What SQLAlchemy reads of every cursor, without the __getattr__ detour.
    @property
    def description(self) -> Any:
        """The wrapped cursor's ``description`` (without the shred epoch's column)."""
        description = self._cursor.description
        if self._keys is not None and description is not None:
            return description[self._keys.lead :]
        return description

    def close(self) -> None:
        """Close the wrapped cursor."""
        self._cursor.close()

    def __repr__(self) -> str:
        return f"<custdata announcing cursor {self._plan.entity}>"

    def _release(self, rows: Sequence[Any]) -> Sequence[Any]:
        """:meth:`_release_batch`, the batch's subject keys looked up on its connection.

        Where the key store allows it (``reads_committed_on``), a batch's
        uncached keys and the shred epoch are read on the connection the batch
        came through: no second connection is checked out for them. Where the
        statement read the shred epoch as its first column, that column is
        taken off every row here (SQLAlchemy never sees it), and a batch
        whose keys are all cached is checked against it.
        """
        via = self._via
        keys = self._keys
        if keys is not None and rows:
            # What the statement read of the key store, before its columns.
            rows, epoch, found = keys.take(rows)
            token = reading_through(via, store=keys.store, epoch=epoch, found=found)
        elif via is None or not rows:
            return self._release_batch(rows)
        else:
            token = reading_through(via)
        try:
            return self._release_batch(rows)
        finally:
            done_reading_through(token)

    def _release_batch(self, rows: Sequence[Any]) -> Sequence[Any]:
        """Announce a fetched batch, then decrypt what it releases."""
        plan = self._plan
        if plan.searches and (rows or not self._searched):
            # The rows a search found are its result: recorded before release.
            self._searched = True
            plan.search(self._custodian, len(rows))
        if plan.seal:
            return self._seal(rows)
        if len(rows) == 1 and plan.lone is not None:
            # One row whose values are all bound to one subject column (a get,
            # a refresh): the same steps without the batch bookkeeping.
            index, kind = plan.lone
            row = rows[0]
            raw = row[index]
            if raw is not None:
                text, tail = subject_parts(raw, kind)
                part = plan.parts[0]
                # Per-subject keys: the row's keys, fetched before the
                # decision (a shredded subject is refused) and kept to open it.
                one: list[bytes | None] | None = [tail] if part.keyed else None
                decision = self._custodian.authorize(
                    action=Action.READ,
                    entity=plan.entity,
                    fields=plan.fields,
                    subjects=(text,),
                    count=len(plan.bindings),
                    unreadable=()
                    if one is None
                    else _shredded(plan, part, self._custodian, rows, [one]),
                    whole_batch=True,
                )
                memo = plan._released  # noqa: SLF001 - the plan's own memo, inlined
                if (
                    memo is not None
                    and memo[0] is self._custodian  # (whose keyring is fixed)
                    and memo[2] == decision.denied_fields
                ):
                    grants, opens, bound, masks = memo[3]
                else:
                    grants, opens, bound, masks = plan.released(
                        self._custodian, decision.denied_fields
                    )
                self._announced = True
                self._grants = grants
                _GRANTS.set(grants)
                if decision.withheld:
                    # The row's one subject is withheld: masks, nothing opened.
                    hide = {plan.entity: frozenset(decision.withheld)}
                    return open_withheld(
                        rows, plan, (), [[tail]], {}, (), hide, _open_rows
                    )
                if bound is None:
                    # Text storage or a custom cipher: the general one-row path.
                    return _open_rows(rows, opens, [[tail]], {}, masks)
                out = list(row)
                open_in_place(out, bound, tail, one)
                for pos in masks:
                    if out[pos] is not None:
                        out[pos] = MASK_TEXT
                return [tuple(out)]
        if not rows:
            if self._announced:
                return rows
            named: list[list[str]] | None = None
            tails: list[list[bytes | None]] = []
            blobs: dict[int, list[Any]] = {}
        else:
            named, tails, blobs = _batch_subjects(rows, plan)
        self._announced = True
        withheld: dict[str, frozenset[str]] = {}
        denied = plan.decide(
            self._custodian,
            named,
            self._extra,
            len(rows),
            withheld,
            batch=(rows, tails) if rows else None,
        )
        grants, opens, _, masks = plan.released(self._custodian, denied)
        self._grants = grants
        _GRANTS.set(grants)
        if rows and withheld:
            return open_withheld(
                rows, plan, opens, tails, blobs, masks, withheld, _open_rows
            )
        if rows and (opens or masks):
            return _open_rows(rows, opens, tails, blobs, masks)
        return rows

    def _seal(self, rows: Sequence[Any]) -> Sequence[Any]:
        """Announce a batch an entity load fetched, and hand its values over sealed."""
        if not rows:
            return rows
        plan = self._plan
        if len(rows) == 1 and plan.lone is not None and not self._quiet:
            sealed = self._seal_one(rows[0], plan)
            if sealed is _WITHHELD:
                # Announced, and the row's subject withheld: it opens as masks.
                _named, tails, blobs = _batch_subjects(rows, plan)
                announced: Grant = plan._granted[2]  # type: ignore[index]  # noqa: SLF001
                return self._seal_withheld(rows, tails, blobs, announced)
            if sealed is not None:
                return sealed
        named, tails, blobs = _batch_subjects(rows, plan)
        grant = None if self._quiet else self._announce(named, rows, tails)
        if self._withheld and grant is not None:
            return self._seal_withheld(rows, tails, blobs, grant)
        return self._seal_rows(rows, tails, blobs, grant)

    def _seal_one(self, row: Any, plan: _Plan) -> list[Any] | None:
        """:meth:`_seal` of one row with one subject column (a ``get``), announced again.

        The same decision as :meth:`_announce` makes for a batch of one, for
        the context and custodian that announced this plan's last batch (its
        memo), without the batch bookkeeping. ``None`` when it does not apply
        (nothing announced yet; no subject);
        :data:`_WITHHELD` (by identity) when the decision (made and recorded) withheld the
        row's subject, which :attr:`_withheld` then names. Under per-subject
        keys the row's key is fetched before the decision (a shredded subject
        is refused) and kept in the sealed row, as :meth:`_announce` and
        :func:`_sealed_rows` do for a batch.
        """
        memo = plan._granted  # noqa: SLF001 - the plan's own memo
        custodian = self._custodian
        if (
            memo is None
            or memo[0] is not _access_now()
            or memo[1] is not custodian
            or len(memo[3]) != 1
            or plan.envelopes is None
        ):
            return None
        index, kind = plan.lone  # type: ignore[misc]
        raw = row[index]
        if raw is None:
            return None
        text, tail = subject_parts(raw, kind)
        part, fields = memo[3][0]
        self._withheld.clear()
        tails: list[list[bytes | None]] = [[tail]]
        decision = custodian.authorize(
            action=Action.READ,
            entity=part.entity,
            fields=fields,
            subjects=(text,),
            count=len(fields),
            unreadable=_shredded(plan, part, custodian, (row,), tails)
            if part.keyed
            else (),
        )
        if decision.withheld:
            self._withheld[part.entity] = frozenset(decision.withheld)
            return _WITHHELD
        # _sealed_rows, for one row.
        keys = None
        if plan.keyed:
            keys = _held_by_where(plan, memo[2], tails)
        sealed = SealedRow(plan.envelopes(row), plan.at, tail, raw, memo[2], keys)
        return [plan.rebuild(len(row))((*row, sealed))]

    def _seal_withheld(
        self,
        rows: Sequence[Any],
        tails: list[list[bytes | None]],
        blobs: dict[int, list[Any]],
        grant: Grant,
    ) -> Sequence[Any]:
        """Seal an announced batch some of whose subjects its decisions withheld."""
        flags = split_withheld(rows, self._plan, self._withheld)
        if any(flags):
            return self._seal_split(rows, flags, tails, blobs, grant)
        return self._seal_rows(rows, tails, blobs, grant)

    def _seal_split(
        self,
        rows: Sequence[Any],
        flags: list[bool],
        tails: list[list[bytes | None]],
        blobs: dict[int, list[Any]],
        grant: Grant,
    ) -> Sequence[Any]:
        """Seal a batch whose flagged rows hold withheld subjects: those open as masks."""
        out: list[Any] = [None] * len(rows)
        for hide, given in ((False, grant), (True, mask_grant(grant))):
            picked = [i for i, flag in enumerate(flags) if flag is hide]
            if not picked:
                continue
            sealed = self._seal_rows(
                [rows[i] for i in picked],
                [[t[i] for i in picked] for t in tails],
                {src: [v[i] for i in picked] for src, v in blobs.items()},
                given,
            )
            for i, row in zip(picked, sealed, strict=True):
                out[i] = row
        return out

    def _seal_rows(
        self,
        rows: Sequence[Any],
        tails: list[list[bytes | None]],
        blobs: dict[int, list[Any]],
        grant: Grant | None,
    ) -> Sequence[Any]:
        """Hand a batch's values over sealed, each opened through *grant*."""
        plan = self._plan
        if plan.envelopes is not None:
            by_where = _held_by_where(plan, grant, tails)
            return _sealed_rows(rows, plan, grant, tails, by_where)
        held = _held_keys(plan, grant, tails)
        if len(rows) == 1 and not blobs:
            # One row (a get, a refresh): no transposing.
            row = list(rows[0])
            sources = plan.sources
            for pos, b, _text, src in plan.columns:
                if src < 0:
                    row[pos] = SealedValue(row[pos], None, None, grant)
                else:
                    row[pos] = SealedValue(
                        row[pos],
                        tails[src][0],
                        row[sources[src][0]],
                        grant,
                        held.get((b, src)),
                    )
            return [tuple(row)]
        columns = _columns(rows)
        raws = [None if packed else columns[index] for index, _, packed in plan.sources]
        # NULL is sealed too: whether a field is set is for its purposes only.
        for pos, _b, _text, src in plan.columns:
            if src < 0:
                columns[pos] = [SealedValue(v, None, None, grant) for v in columns[pos]]
                continue
            values = blobs.get(src) or columns[pos]
            subjects = raws[src] or [None] * len(rows)
            keys = held.get((_b, src))
            columns[pos] = [
                SealedValue(v, tail, subject, grant, keys)
                for v, tail, subject in zip(values, tails[src], subjects, strict=True)
            ]
        return _in_place(rows, zip(*columns, strict=True))

    def _announce(
        self,
        named: list[list[str]],
        batch: Sequence[Any],
        tails: list[list[bytes | None]],
    ) -> Grant | None:
        """Record one decision per table for the fields the context may read (or mask).

        Fields it may not read are not announced: they stay sealed, and
        reading one decides (and records the denial) then. Crypto-shredded
        subjects are not announced either: their refusal is recorded instead
        (:func:`_shredded`), and reading one of their values raises
        :class:`~custdata.KeyDestroyedError`.
        """
        custodian: Any = self._custodian
        policy = custodian.policy
        ctx = _access_now()
        plan = self._plan
        rows = len(batch)
        self._withheld.clear()
        memo = plan._granted  # noqa: SLF001 - the plan's own memo
        if memo is not None and memo[0] is ctx and memo[1] is custodian:
            # The same (immutable) context and custodian as the last batch:
            # the same fields are announced, and the same grant opens them.
            grant, parts = memo[2], memo[3]
            held: list[Any] | None = [] if len(parts) > 1 else None
            for part, fields in parts:
                decision = custodian.authorize(
                    action=Action.READ,
                    entity=part.entity,
                    fields=fields,
                    subjects=_part_subjects(part, named, self._extra),
                    count=rows * len(fields),
                    unreadable=_shredded(plan, part, custodian, batch, tails)
                    if part.keyed
                    else (),
                    pending=held,
                )
                if decision.withheld:
                    self._withheld[part.entity] = frozenset(decision.withheld)
            if held:
                custodian.record_pending(held)
            return grant
        if not _context_ok(policy):
            return None
        opens: dict[FieldBinding, Any] = {}
        announced: list[tuple[_Part, dict[str, FieldPolicy | None]]] = []
        pending: list[Any] | None = [] if len(plan.parts) > 1 else None
        for part in plan.parts:
            fields = part.announced(policy, ctx)
            if not fields:
                continue
            announced.append((part, fields))
            decision = custodian.authorize(
                action=Action.READ,
                entity=part.entity,
                fields=fields,
                subjects=_part_subjects(part, named, self._extra),
                count=rows * len(fields),
                unreadable=_shredded(plan, part, custodian, batch, tails)
                if part.keyed
                else (),
                pending=pending,
            )
            if decision.withheld:
                self._withheld[part.entity] = frozenset(decision.withheld)
            masked = decision.denied_fields
            for b in part.bindings:
                name = b.column or "?"
                if name in fields:
                    opens[b] = MASK_TEXT if name in masked else b.cipher(custodian)
        if pending:
            custodian.record_pending(pending)
        grant = Grant(ctx, custodian, opens)
        plan._granted = (ctx, custodian, grant, announced)  # noqa: SLF001
        return grant

    def _in_force(self) -> None:
        # Another statement may have put its own grants in force since this
        # batch was announced (results read alternately): restore ours.
        if _GRANTS.get() is not self._grants:
            _GRANTS.set(self._grants)

    def fetchall(self) -> Any:
        rows = self._release(self._cursor.fetchall())
        if self._buffer:
            rows = [*self._buffer, *rows]
            self._buffer = []
        if _GRANTS.get() is not self._grants:  # _in_force(), inlined
            _GRANTS.set(self._grants)
        return rows

    def fetchmany(self, size: int | None = None) -> Any:
        if self._buffer:
            want = self._cursor.arraysize if size is None else size
            rows, self._buffer = self._buffer[:want], self._buffer[want:]
            self._in_force()
            return rows
        fetched: Any = self._release(
            self._cursor.fetchmany() if size is None else self._cursor.fetchmany(size)
        )
        self._in_force()
        return fetched

    def fetchone(self) -> Any:
        if not self._buffer:
            if self._drained:
                # The last read-ahead came back short (PEP 249: fewer rows
                # only when no more are available): no call to the driver,
                # nor an empty batch to release.
                return None
            fetched = self._cursor.fetchmany(self.chunk)
            self._buffer = list(self._release(fetched))
            self._drained = len(fetched) < self.chunk
            if not self._buffer:
                return None
        if _GRANTS.get() is not self._grants:  # _in_force(), inlined
            _GRANTS.set(self._grants)
        return self._buffer.pop(0)


class _RowsUnlogged:
    """An engine, as one execution's result sees it: no row logging."""

    __slots__ = ("_engine",)

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def _should_log_debug(self) -> bool:
        return False


class _ProcessorsOf:
    """``context.get_result_processor`` without the encrypted columns' processors."""

    __slots__ = ("_original",)

    def __init__(self, original: Any) -> None:
        self._original = original

    def __call__(self, type_: Any, colname: str, coltype: Any) -> Any:
        if isinstance(type_, EncryptedType):
            return None
        return self._original(type_, colname, coltype)


@event.listens_for(Engine, "before_cursor_execute", retval=True)
def _before_cursor_execute(  # noqa: PLR0917
    conn: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> tuple[str, Any]:
    # retval=True: SQLAlchemy calls this directly (without the wrapper it puts
    # around a listener that returns nothing), once per statement.
    compiled = context.compiled
    if compiled is None:
        # Connection.exec_driver_sql (no before_execute event): SQL text.
        refuse_raw_write(statement)
        return statement, parameters
    plan = compiled.__dict__.get(_PLAN_ATTR) or _plan_for(compiled)
    if plan is _NO_PLAN:
        # No customer data: one dictionary lookup per statement, from the
        # second execution of a compiled statement on.
        return statement, parameters
    custodian = _custodian.get() or _default_custodian[0] or _require_custodian()
    if plan.mappers:
        plan.validate(custodian.policy)
    if not plan.bindings and not plan.searches:
        return statement, parameters
    if plan.searches:
        if context.is_crud or executemany or not plan.search_allowed(custodian):
            # Refused before the statement runs; or a DML statement, whose
            # matched rows are not fetched: decided now, count unknown.
            plan.search(custodian, 0)
        if not plan.bindings:
            if not (context.is_crud or executemany):
                context.cursor = _AnnouncingCursor(cursor, plan, custodian, ())
            return statement, parameters
    keys = None
    if plan.keyed and not (context.is_crud or executemany):
        statement, parameters, keys = keys_first(
            conn,
            statement,
            parameters,
            compiled,
            context,
            plan.lone,
            custodian,
            plan.subject_scope(custodian),
        )
    if plan.seal and not context.is_crud:
        # An entity load: its values are handed over sealed, and each is
        # decided when it is read (the batch announces what may be).
        if compiled._cached_metadata is None:  # noqa: SLF001
            context.get_result_processor = _ProcessorsOf(context.get_result_processor)
        load = context.execution_options.get("_sa_orm_load_options")
        refresh = None if load is None else load._refresh_state  # noqa: SLF001
        context.cursor = _AnnouncingCursor(
            cursor,
            plan,
            custodian,
            () if load is None else _load_subjects(load, refresh),
            quiet=refresh is not None,
            via=_key_reads_via(conn, context) if plan.keyed else None,
            keys=keys,
        )
        return statement, parameters
    if context.is_crud or executemany:
        # RETURNING rows are fetched by SQLAlchemy itself: authorize them now.
        authorize_read(plan, custodian, subjects=_subjects_of(context))
        return statement, parameters
    if compiled._cached_metadata is None:  # noqa: SLF001
        # The result columns of this statement are being described for the
        # first time (then cached on the compiled statement): the announcing
        # cursor hands over their values decrypted or masked, so they need
        # no result processor (one Python call less per value).
        context.get_result_processor = _ProcessorsOf(context.get_result_processor)
    if conn._echo and context.engine._should_log_debug():  # noqa: SLF001
        # SQLAlchemy's row logging (echo="debug") would log the decrypted
        # values of this statement's rows: not for these rows.
        context.engine = _RowsUnlogged(context.engine)
        conn._log_debug(  # noqa: SLF001
            "Rows of %s are not logged: they hold customer data", plan.entity
        )
    # SQLAlchemy executes on the cursor it passed here and reads the results
    # through ``context.cursor``: from now on, through the announcing proxy.
    context.cursor = _AnnouncingCursor(
        cursor,
        plan,
        custodian,
        _subjects_of(context),
        via=_key_reads_via(conn, context) if plan.keyed else None,
        keys=keys,
    )
    return statement, parameters


def _subjects_of(context: Any) -> Sequence[object]:
    """The subjects an ORM load names for its rows (see :func:`_load_subjects`)."""
    load = context.execution_options.get("_sa_orm_load_options")
    if load is None:
        return ()
    return _load_subjects(load, load._refresh_state)  # noqa: SLF001


def _load_subjects(load: Any, refresh: Any) -> Sequence[object]:
    """The subject a load of one object's rows names in its decisions.

    A lazy load names the subject of the object it loads for; a refresh
    (after ``commit()``, ``refresh()`` or expiry) the refreshed object's.
    Decisions name them where the fetched rows carry no subject of their own.
    """
    source = load._lazy_loaded_from or refresh  # noqa: SLF001 - SQLAlchemy's load options
    if source is None:
        return ()
    facts = _facts(source.mapper.local_table)
    if facts is None or facts.subject_col is None:
        return ()
    prop = source.mapper.get_property_by_column(facts.subject_col)
    subject = source.dict.get(prop.key)
    return () if subject is None else (subject,)


def _key_reads_via(conn: Connection, context: Any) -> Connection | None:
    """The connection a statement's rows may have their subject keys read on.

    Not while its rows are streamed: a driver's unbuffered cursor (MySQL's)
    allows no other statement on the connection until it is exhausted.
    """
    if context.execution_options.get("stream_results"):
        return None
    return conn


# -- ORM: entity loads, bulk update/delete, validation -----------------------------------


class _MapperFacts:
    __slots__ = (
        "fields",
        "last_valid",
        "sealed",
        "sealed_at",
        "subject_attr",
        "validated",
    )

    def __init__(self, mapper: Mapper[Any]) -> None:
        self.fields: list[tuple[str, FieldPolicy]] = []
        #: (attribute key, binding) of every encrypted column attribute.
        self.sealed: list[tuple[str, FieldBinding]] = []
        #: The attribute key of the data-subject column, if any.
        self.subject_attr: str | None = None
        for prop in mapper.column_attrs:
            for col in prop.columns:
                if (getattr(col, "info", None) or {}).get("custdata_subject"):
                    self.subject_attr = self.subject_attr or prop.key
                info = (getattr(col, "info", None) or {}).get(INFO_KEY)
                if isinstance(info, CustomerDataInfo):
                    self.fields.append((prop.key, info.field))
                type_ = getattr(col, "type", None)
                if isinstance(type_, EncryptedType):
                    self.sealed.append((prop.key, type_._binding))  # noqa: SLF001
        #: ``table.column`` -> position in :attr:`sealed` (a flushed object's row).
        self.sealed_at = {b.where: i for i, (_key, b) in enumerate(self.sealed)}
        self.validated: weakref.WeakSet[Any] = weakref.WeakSet()
        #: The policy validated last (a weak reference): the per-statement
        #: check is one call and one identity test, not a WeakSet lookup.
        self.last_valid: weakref.ref[Any] | None = None


#: Where a mapper keeps its facts: an attribute of the mapper itself (a
#: plain dict lookup per statement; they go with the mapper).
_FACTS_ATTR = "_custdata_facts"


def _mapper_facts(mapper: Mapper[Any]) -> _MapperFacts:
    facts: _MapperFacts | None = mapper.__dict__.get(_FACTS_ATTR)
    if facts is None:
        facts = _MapperFacts(mapper)
        setattr(mapper, _FACTS_ATTR, facts)
    return facts


def validate_mapper(mapper: Mapper[Any], policy: Any) -> None:
    """Check a mapped class's customer-data fields against *policy*.

    Raises:
        ConfigurationError: On an unknown category, purpose or retention rule.
    """
    facts = _mapper_facts(mapper)
    if policy in facts.validated:
        facts.last_valid = weakref.ref(policy)
        return
    table = getattr(mapper.local_table, "name", mapper.class_.__name__)
    for key, field in facts.fields:
        policy.validate_field(field, where=f"{table}.{key}")
    facts.validated.add(policy)
    facts.last_valid = weakref.ref(policy)


def _seal_attributes(mapper: Mapper[Any]) -> None:
    """Make each customer-data attribute open its sealed values when read."""
    manager = mapper.class_manager
    for prop in mapper.column_attrs:
        for col in prop.columns:
            type_ = getattr(col, "type", None)
            if isinstance(type_, EncryptedType):
                attribute = manager.get(prop.key)
                if attribute is not None:
                    seal_attribute(
                        attribute,
                        type_._binding,  # noqa: SLF001 - the package's own type
                        text=type_.storage == "text",
                    )


def _refuse_unclassified(mapper: Mapper[Any]) -> None:
    """Every encrypted or custdata-tagged mapped column must come from ``customer_data()``.

    Raises:
        UnclassifiedFieldError: Naming the table and column.
    """
    for prop in mapper.column_attrs:
        for col in prop.columns:
            info = getattr(col, "info", None) or {}
            encrypted = isinstance(getattr(col, "type", None), EncryptedType)
            if (encrypted or INFO_KEY in info) and not isinstance(
                info.get(INFO_KEY), CustomerDataInfo
            ):
                table = getattr(mapper.local_table, "name", mapper.class_.__name__)
                raise UnclassifiedFieldError(
                    "an encrypted or custdata-tagged column must be declared with "
                    "customer_data(category, purposes=...)",
                    key_path=f"{table}.{prop.key}",
                )


@event.listens_for(Mapper, "mapper_configured")
def _on_mapper_configured(mapper: Mapper[Any], class_: type[Any]) -> None:
    _refuse_unclassified(mapper)
    facts = _mapper_facts(mapper)
    if not facts.fields and not any(
        isinstance(c.type, EncryptedType) for c in mapper.local_table.columns
    ):
        return
    for table in mapper.tables:
        if isinstance(table, Table):
            settle_table(table)
    _seal_attributes(mapper)
    custodian = _current_custodian()
    if custodian is not None:
        validate_mapper(mapper, custodian.policy)
    else:
        from custdata._taxonomy import Taxonomy  # noqa: PLC0415

        taxonomy = Taxonomy.default()
        for key, field in facts.fields:
            if field.category not in taxonomy:
                raise ConfigurationError(
                    f"unknown category {field.category!r}",
                    key_path=f"{mapper.local_table.name}.{key}",  # type: ignore[attr-defined]
                )


def _context_ok(policy: Any) -> bool:
    ctx = current_access()
    if ctx.actor is None or ctx.purpose is None or ctx.role is None:
        return False
    return ctx.purpose in policy.purposes and bool(
        policy.may_claim(ctx.role, ctx.purpose)
    )


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, flush_context: Any, instances: Any) -> None:
    _FLUSHED.set({})


#: Sessions committing their outermost transaction with ``expire_on_commit``:
#: the commit expires every object right after its flush, so that flush
#: leaves nothing to seal.
_EXPIRING: weakref.WeakSet[Session] = weakref.WeakSet()


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    if session.expire_on_commit and not session.in_nested_transaction():
        _EXPIRING.add(session)


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, flush_context: Any) -> None:
    written = _FLUSHED.get()
    _FLUSHED.set(None)
    if written and session not in _EXPIRING:
        _seal_flushed(flush_context, written)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    _EXPIRING.discard(session)


@event.listens_for(Session, "after_soft_rollback")
def _after_soft_rollback(session: Session, previous_transaction: Any) -> None:
    # A flush that failed: what it noted is not needed any more.
    _FLUSHED.set(None)
    _EXPIRING.discard(session)


def _seal_flushed(flush_context: Any, written: dict[FieldBinding, _Written]) -> None:
    """Seal the values a flush wrote in the objects that hold them.

    A value the application assigned is its own until it is flushed; from
    then on the object holds the envelope that was written, sealed like a
    loaded value (no grant: whoever reads it next decides, under the context
    in force then, and the read is recorded).
    """
    for state, (isdelete, _listonly) in flush_context.states.items():
        if isdelete:
            continue
        facts = _mapper_facts(state.mapper)
        if not facts.sealed:
            continue
        held = state.dict
        subject = None if facts.subject_attr is None else held.get(facts.subject_attr)
        stored: list[Any] | None = None
        keys: list[str] = []
        tail: bytes | None = None
        for i, (key, b) in enumerate(facts.sealed):
            value = held.get(key)
            if value is None or value.__class__ in _LOADED:
                continue
            chunk = written.get(b)
            if chunk is None:
                continue
            found = chunk.find(value, subject, b.subject_kind)
            if found is None:
                continue
            if stored is None:
                stored = [None] * len(facts.sealed)
            stored[i], own = found
            if own is not None:
                tail = own
            keys.append(key)
        if stored is not None:
            # One sealed row per object, as a load leaves it (no grant).
            sealed = SealedRow(
                tuple(stored), facts.sealed_at, tail, None if tail is None else subject
            )
            for key in keys:
                held[key] = sealed


def known_tables() -> list[Table]:
    """Return every table with an encrypted or subject column (internal)."""
    return sorted(KNOWN_TABLES, key=lambda t: t.fullname)


def validate_models(base: Any, policy: Any) -> None:
    """Validate every customer-data field of a declarative base against *policy*.

    Mappers also validate themselves when they configure (against the current
    custodian's policy, if one is current then) and before their first query.

    Raises:
        ConfigurationError: On an unknown category, purpose or retention rule.
    """
    registry = getattr(base, "registry", base)
    for mapper in registry.mappers:
        validate_mapper(mapper, policy)


@event.listens_for(Mapper, "before_update")
def _before_update(mapper: Mapper[Any], connection: Connection, target: Any) -> None:
    facts = _facts(mapper.local_table)
    if facts is None or facts.subject_col is None:
        return
    from sqlalchemy import inspect  # noqa: PLC0415
    from sqlalchemy.orm.attributes import flag_modified  # noqa: PLC0415

    insp = inspect(target)
    changed = insp.committed_state
    bound = {
        mapper.get_property_by_column(mapper.local_table.c[k]).key
        for k, b in facts.subject_bound
    }
    refuse_moved_object(mapper, facts, insp, bound)
    if facts.subject_col.primary_key:
        return
    if bound & set(changed):
        # The UPDATE must carry the subject id so the new values can be bound to it.
        key = mapper.get_property_by_column(facts.subject_col).key
        if key not in changed and key in insp.dict:
            flag_modified(target, key)


def install() -> None:
    """Install the hooks (they are installed on import; idempotent)."""
    for target, name, fn, kw in (
        (Engine, "before_execute", _before_execute, {"retval": True}),
        (Engine, "before_cursor_execute", _before_cursor_execute, {"retval": True}),
        (Mapper, "mapper_configured", _on_mapper_configured, {}),
        (Session, "before_flush", _before_flush, {}),
        (Session, "after_flush", _after_flush, {}),
        (Session, "before_commit", _before_commit, {}),
        (Session, "after_commit", _after_commit, {}),
        (Session, "after_soft_rollback", _after_soft_rollback, {}),
    ):
        if not event.contains(target, name, fn):
            event.listen(target, name, fn, **kw)
