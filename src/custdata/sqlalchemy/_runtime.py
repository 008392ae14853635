"""The statement hooks: where writes get their subject and reads their authorization.

Three SQLAlchemy events, installed once for every engine and session when
:mod:`custdata.sqlalchemy` is imported:

``Engine.before_execute``
    For an ``INSERT`` or ``UPDATE`` on a table with encrypted columns:
    authorizes the write, encrypts each value with the row's subject id (a
    multi-row statement one column at a time) and computes the blind index of
    each searchable value into its companion column.

``Session.do_orm_execute``
    For ORM ``SELECT``: leaves out (defers) the encrypted attributes of loaded
    entities that the access context may not read, so an entity load succeeds
    and touching such an attribute later raises, through its own audited load.
    For ORM bulk ``update()``/``delete()``: authorizes the action.

``Engine.before_cursor_execute``
    For every statement that fetches encrypted columns (Core or ORM, entity,
    column, relationship or ``get``): a read the context cannot be allowed
    raises before the statement runs; otherwise the results are read through
    an announcing cursor, which makes one :meth:`custdata.Custodian.authorize`
    call per fetched batch, with the batch's subject ids and value count, and
    only then decrypts the batch (or leaves masked fields to their mask). For
    ``RETURNING`` rows, which SQLAlchemy fetches itself, the read is authorized
    before the statement runs and the result processors decrypt.
"""

from __future__ import annotations

import contextlib
import threading
import weakref

from base64 import b64encode
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import attrs

from sqlalchemy import Table, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Mapper, ORMExecuteState, Session, defer
from sqlalchemy.sql import Insert, Select, Update
from sqlalchemy.sql.elements import (
    Label,
    TextClause,
    UnaryExpression,
)

from custdata._context import _access, _custodian, _default_custodian, current_access
from custdata._decision import Action
from custdata._errors import (
    ConfigurationError,
    UnsupportedOperationError,
)
from custdata._policy import FieldPolicy
from custdata.crypto._cipher import FieldCipher, open_in_place

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
from ._keystore import hold_subject_keys
from ._raw import refuse_raw_write
from ._types import (
    _GRANTS,
    RELEASED,
    EncryptedType,
    _Bound,
    _Sealed,
    _SubjectPacked,
    stored_envelope,
)
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

#: What a field revealed only as a mask reads as. It is the same for every
#: value, because a denied value is never decrypted, not even to mask it.
MASK_TEXT = "***"

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
        "name",
        "sealing",
        "searchable",
        "subject_col",
        "subject_default",
        "subject_kind",
        "write_fields",
    )

    def __init__(self, table: Table) -> None:
        settle_table(table)
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
    for key, encrypt, bound, text, b in sealers:
        value = row.get(key)
        if value is None or value.__class__ is _Sealed:
            continue
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
        blobs: list[Any] = b.cipher(custodian).seal_many(values, chosen)
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


#: Classes of parameter values that are not plain values to encrypt.
_SPECIAL = frozenset({type(None), _Sealed, _Bound})


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
        if value is None or value.__class__ is _Sealed:
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
) -> None:
    """Authorize writing the customer-data columns a statement sets (internal).

    One :meth:`custdata.Custodian.authorize` call with ``Action.WRITE`` per
    statement (an ORM flush sends one per table and batch of rows), naming the
    written fields, the rows' subject ids and the number of values. An INSERT
    that leaves a column NULL does not write it; an UPDATE to NULL erases it,
    which is a write.

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
        action=Action.WRITE,
        entity=facts.name,
        fields=fields,
        subjects=subjects,
        count=max(len(rows), 1) * len(written),
    )


def _strict(field: FieldPolicy | None) -> FieldPolicy | None:
    if field is None or field.on_violation == "raise":
        return field
    return attrs.evolve(field, on_violation="raise")


@event.listens_for(Engine, "before_execute", retval=True)
def _before_execute(
    conn: Connection,
    clauseelement: Any,
    multiparams: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    execution_options: Mapping[str, Any],
) -> tuple[Any, Sequence[Mapping[str, Any]], Mapping[str, Any]]:
    if not isinstance(clauseelement, (Insert, Update)):
        if isinstance(clauseelement, TextClause):
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
    orm = clauseelement._propagate_attrs.get("compile_state_plugin") == "orm"  # noqa: SLF001
    embedded: dict[str, Any] | None = None
    sources: list[tuple[str, str, object]] = []
    subject_source: Any = None
    if values and orm and not is_insert:
        # ORM bulk update(): authorized and checked in do_orm_execute.
        embedded = {column_key(col): v for col, v in dict(values).items()}
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
    if not (orm and not is_insert):
        # ORM bulk update() was authorized (Action.UPDATE) in do_orm_execute.
        _authorize_write(
            facts,
            custodian,
            rows,
            embedded,
            extra_subject,
            is_insert=is_insert,
            texts=None if texts is None else [t for t in texts if t is not None],
        )
    if facts.subject_kind is not None and (rows or embedded):
        # Every subject's key made (or found) for the whole statement at once.
        held = rows or [embedded or {}]
        hold_subject_keys(conn, custodian, facts, held, tails, extra_subject)
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


class _Plan:
    """The encrypted columns a compiled statement fetches (cached on the compiled).

    ``fields`` is one mapping object for the life of the plan, so
    :meth:`custdata.Custodian.authorize` can memoise its verdict by identity.
    """

    __slots__ = (
        "_grants",
        "_last",
        "_released",
        "bindings",
        "columns",
        "entity",
        "fields",
        "lone",
        "names",
        "predicted",
        "sources",
    )

    def __init__(
        self,
        bindings: list[FieldBinding],
        columns: Sequence[tuple[int, FieldBinding, bool, int]] = (),
        sources: Sequence[tuple[int, SubjectKind, bool]] = (),
    ) -> None:
        self.bindings = bindings
        tables = sorted({b.table or "?" for b in bindings})
        single = len(tables) == 1
        self.entity = tables[0] if single else ", ".join(tables)
        self.names = [(b.column or "?") if single else b.where for b in bindings]
        self.fields: dict[str, FieldPolicy | None] = dict(
            zip(self.names, (b.field for b in bindings), strict=True)
        )
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
            if len(sources) == 1 and not sources[0][2]
            else None
        )
        #: Whether a read is expected to be allowed, per policy and context.
        self.predicted: dict[tuple[object, ...], bool] = {}
        self._last: tuple[object, object, bool] = (None, None, False)
        #: (custodian, keyring, denied fields, grants): the last grants built.
        self._grants: tuple[object, object, object, dict[object, Any]] | None = None
        #: The same for fetched batches: (..., what :meth:`released` returns).
        self._released: tuple[object, object, object, Any] | None = None

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

    def allowed(self, custodian: Any) -> bool:
        """Predict (cached) whether the context in force may read this plan's fields.

        Only a prediction: the decision itself is always made by
        :meth:`custdata.Custodian.authorize`. A read predicted to be denied is
        authorized before the statement runs, so it raises there.
        """
        ctx = _access_now()
        last = self._last
        if last[0] is ctx and last[1] is custodian:
            # The same (immutable) access context and custodian (whose policy
            # is fixed) as the last execution.
            return last[2]
        policy = custodian.policy
        key = (policy, ctx.actor is None, ctx.role, ctx.purpose)
        verdict = self.predicted.get(key)
        if verdict is None:
            verdict = _context_ok(policy) and all(
                field is not None
                and bool(field.purposes)
                and (field.on_violation == "mask" or policy.permits(field, ctx.purpose))
                for field in self.fields.values()
            )
            if len(self.predicted) > 64:  # noqa: PLR2004 - a bound, not a tuning knob
                self.predicted.clear()
            self.predicted[key] = verdict
        self._last = (ctx, custodian, verdict)
        return verdict


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
    plan = _Plan(list(seen), columns, sources) if seen else _NO_PLAN
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
    decision = custodian.authorize(
        action=Action.READ,
        entity=plan.entity,
        fields=plan.fields,
        subjects=subjects,
        count=count,
    )
    grants = plan.grants(custodian, decision.denied_fields)
    _GRANTS.set(grants)
    return grants


_HEX_UUID = 32
_UUID_BYTES = 16


def _batch_subjects(
    rows: Sequence[Any], plan: _Plan
) -> tuple[list[str], list[list[bytes | None]], dict[int, list[Any]]]:
    """The subjects of a fetched batch, before anything in it is decrypted.

    Returns:
        The distinct canonical subject ids (what the decision names); per
        subject source, each row's associated-data tail (``None`` where the row
        has no subject); and per packed source, each row's envelope.
    """
    seen: dict[str, None] = {}
    tails: list[list[bytes | None]] = []
    blobs: dict[int, list[Any]] = {}
    if len(rows) == 1:
        # One row (a get, a refresh): no memo.
        first = rows[0]
        for src, (index, kind, packed) in enumerate(plan.sources):
            raw = first[index]
            if packed and raw is not None:
                raw, _, blob = raw.partition(b"|" if raw.__class__ is bytes else "|")
                blobs[src] = [blob]
            elif packed:
                blobs[src] = [None]
            if raw is None:
                tails.append([None])
                continue
            text, tail = subject_parts(raw, kind)
            seen[text] = None
            tails.append([tail])
        return list(seen), tails, blobs
    for src, (index, kind, packed) in enumerate(plan.sources):
        memo: dict[object, tuple[str, bytes]] = {}
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
                    # subject_parts() inlined for 32 hex digits (CHAR(32) storage);
                    # no tuple per row (fewer objects for the garbage collector).
                    data = (
                        fromhex(raw)
                        if raw.__class__ is str and len(raw) == _HEX_UUID
                        else b""
                    )
                    if len(data) == _UUID_BYTES:
                        h = data.hex()
                        seen[f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"] = None
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
    return list(seen), tails, blobs


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
    columns: list[Any] = list(zip(*rows, strict=True))
    for pos in masks:
        columns[pos] = [None if v is None else MASK_TEXT for v in columns[pos]]
    for pos, cipher, text, src in opens:
        values = blobs.get(src) if src >= 0 else None
        if values is None:
            values = columns[pos]
        if text:
            values = [None if v is None else _b64(v, cipher) for v in values]
        columns[pos] = cipher.open_fetched(values, tails[src] if src >= 0 else None)
    return list(zip(*columns, strict=True))


def _b64(value: Any, cipher: Any) -> Any:
    """The envelope of a text-storage value (see :func:`stored_envelope`)."""
    return stored_envelope(value)


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
        "_extra",
        "_grants",
        "_plan",
    )

    #: Rows read ahead per announced batch when the rows are fetched one by one.
    chunk = 100

    def __init__(
        self, cursor: Any, plan: _Plan, custodian: Any, extra: Sequence[object]
    ) -> None:
        self._cursor = cursor
        self._extra = extra
        self._plan = plan
        self._custodian = custodian
        self._announced = False
        self._grants: dict[object, Any] | None = None
        self._buffer: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    # What SQLAlchemy reads of every cursor, without the __getattr__ detour.
    @property
    def description(self) -> Any:
        """The wrapped cursor's ``description``."""
        return self._cursor.description

    def close(self) -> None:
        """Close the wrapped cursor."""
        self._cursor.close()

    def __repr__(self) -> str:
        return f"<custdata announcing cursor {self._plan.entity}>"

    def _release(self, rows: Sequence[Any]) -> Sequence[Any]:
        """Announce a fetched batch, then decrypt what it releases."""
        plan = self._plan
        if len(rows) == 1 and plan.lone is not None:
            # One row whose values are all bound to one subject column (a get,
            # a refresh): the same steps without the batch bookkeeping.
            index, kind = plan.lone
            row = rows[0]
            raw = row[index]
            if raw is not None:
                text, tail = subject_parts(raw, kind)
                decision = self._custodian.authorize(
                    action=Action.READ,
                    entity=plan.entity,
                    fields=plan.fields,
                    subjects=(text,),
                    count=len(plan.bindings),
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
                if bound is None:
                    # Text storage or a custom cipher: the general one-row path.
                    return _open_rows(rows, opens, [[tail]], {}, masks)
                out = list(row)
                open_in_place(out, bound, tail)
                for pos in masks:
                    if out[pos] is not None:
                        out[pos] = MASK_TEXT
                return [tuple(out)]
        if not rows:
            if self._announced:
                return rows
            subjects: list[Any] = []
            tails: list[list[bytes | None]] = []
            blobs: dict[int, list[Any]] = {}
        else:
            subjects, tails, blobs = _batch_subjects(rows, plan)
        if not subjects and self._extra:
            # Rows without a subject column of their own (e.g. a child table
            # loaded through a relationship) name the subject they were loaded for.
            subjects = list(self._extra)
        self._announced = True
        decision = self._custodian.authorize(
            action=Action.READ,
            entity=plan.entity,
            fields=plan.fields,
            subjects=subjects,
            count=len(rows) * len(plan.bindings),
        )
        grants, opens, _, masks = plan.released(self._custodian, decision.denied_fields)
        self._grants = grants
        _GRANTS.set(grants)
        if rows and (opens or masks):
            return _open_rows(rows, opens, tails, blobs, masks)
        return rows

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
            self._buffer = list(self._release(self._cursor.fetchmany(self.chunk)))
            if not self._buffer:
                return None
        self._in_force()
        return self._buffer.pop(0)


class _ProcessorsOf:
    """``context.get_result_processor`` without the encrypted columns' processors."""

    __slots__ = ("_original",)

    def __init__(self, original: Any) -> None:
        self._original = original

    def __call__(self, type_: Any, colname: str, coltype: Any) -> Any:
        if isinstance(type_, EncryptedType):
            return None
        return self._original(type_, colname, coltype)


@event.listens_for(Engine, "before_cursor_execute")
def _before_cursor_execute(  # noqa: PLR0917
    conn: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> None:
    compiled = context.compiled
    if compiled is None:
        # Connection.exec_driver_sql (no before_execute event): SQL text.
        refuse_raw_write(statement)
        return
    plan = compiled.__dict__.get(_PLAN_ATTR) or _plan_for(compiled)
    if not plan.bindings:
        return
    custodian = _custodian.get() or _default_custodian[0] or _require_custodian()
    if context.is_crud or executemany:
        # RETURNING rows are fetched by SQLAlchemy itself: authorize them now.
        subjects = context.execution_options.get("custdata_subjects", ())
        authorize_read(plan, custodian, subjects=subjects)
        return
    last = plan._last  # noqa: SLF001 - the plan's own memo, inlined
    if not (
        last[0] is _access_now() and last[1] is custodian and last[2]
    ) and not plan.allowed(custodian):
        # Refused before the statement runs: nothing is fetched or decrypted.
        authorize_read(plan, custodian)
    if compiled._cached_metadata is None:  # noqa: SLF001
        # The result columns of this statement are being described for the
        # first time (then cached on the compiled statement): the announcing
        # cursor hands over their values decrypted or masked, so they need
        # no result processor (one Python call less per value).
        context.get_result_processor = _ProcessorsOf(context.get_result_processor)
    # SQLAlchemy executes on the cursor it passed here and reads the results
    # through ``context.cursor``: from now on, through the announcing proxy.
    context.cursor = _AnnouncingCursor(
        cursor,
        plan,
        custodian,
        context.execution_options.get("custdata_subjects", ()),
    )


# -- ORM: entity loads, bulk update/delete, validation -----------------------------------


class _MapperFacts:
    __slots__ = ("fields", "joined", "last", "validated")

    def __init__(self, mapper: Mapper[Any]) -> None:
        self.fields: list[tuple[str, FieldPolicy]] = []
        for prop in mapper.column_attrs:
            for col in prop.columns:
                info = col.info.get(INFO_KEY)
                if isinstance(info, CustomerDataInfo):
                    self.fields.append((prop.key, info.field))
        self.validated: weakref.WeakSet[Any] = weakref.WeakSet()
        #: Relationships configured to load joined (``lazy="joined"``).
        self.joined = [r for r in mapper.relationships if r.lazy == "joined"]
        #: (access context, custodian, withheld keys) of the last entity load.
        self.last: tuple[object, object, frozenset[str]] = (None, None, frozenset())


_MAPPERS: weakref.WeakKeyDictionary[Mapper[Any], _MapperFacts] = (
    weakref.WeakKeyDictionary()
)


def _mapper_facts(mapper: Mapper[Any]) -> _MapperFacts:
    facts = _MAPPERS.get(mapper)
    if facts is None:
        facts = _MapperFacts(mapper)
        _MAPPERS[mapper] = facts
    return facts


def validate_mapper(mapper: Mapper[Any], policy: Any) -> None:
    """Check a mapped class's customer-data fields against *policy*.

    Raises:
        ConfigurationError: On an unknown category, purpose or retention rule.
    """
    facts = _mapper_facts(mapper)
    if policy in facts.validated:
        return
    table = getattr(mapper.local_table, "name", mapper.class_.__name__)
    for key, field in facts.fields:
        policy.validate_field(field, where=f"{table}.{key}")
    facts.validated.add(policy)


@event.listens_for(Mapper, "mapper_configured")
def _on_mapper_configured(mapper: Mapper[Any], class_: type[Any]) -> None:
    facts = _mapper_facts(mapper)
    if not facts.fields and not any(
        isinstance(c.type, EncryptedType) for c in mapper.local_table.columns
    ):
        return
    for table in mapper.tables:
        if isinstance(table, Table):
            settle_table(table)
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


def _withheld(policy: Any, field: FieldPolicy, context_ok: bool) -> bool:
    """Whether an entity load should leave *field* unloaded."""
    if not context_ok:
        return True
    if field.on_violation == "mask":
        return False
    purpose = current_access().purpose
    return not policy.permits(field, purpose)


@event.listens_for(Session, "do_orm_execute")
def _do_orm_execute(state: ORMExecuteState) -> None:
    if state.is_select:
        _orm_select(state)
    elif state.is_update or state.is_delete:
        _orm_bulk(state)


_WITHHELD_CACHE: dict[tuple[Any, ...], frozenset[str]] = {}


def _withheld_keys(
    mapper: Mapper[Any], facts: _MapperFacts, custodian: Any
) -> frozenset[str]:
    """The customer-data attributes of *mapper* an entity load leaves unloaded (cached)."""
    ctx = _access_now()
    last = facts.last
    if last[0] is ctx and last[1] is custodian:
        # The same (immutable) access context and custodian (whose policy is
        # fixed) as the last load of this mapper.
        return last[2]
    policy = custodian.policy
    cache_key = (mapper, id(policy), ctx.actor is None, ctx.role, ctx.purpose)
    keys = _WITHHELD_CACHE.get(cache_key)
    if keys is None:
        validate_mapper(mapper, policy)
        context_ok = _context_ok(policy)
        keys = frozenset(
            key for key, field in facts.fields if _withheld(policy, field, context_ok)
        )
        if len(_WITHHELD_CACHE) > 4096:  # noqa: PLR2004 - a bound, not a tuning knob
            _WITHHELD_CACHE.clear()
        _WITHHELD_CACHE[cache_key] = keys
    facts.last = (ctx, custodian, keys)
    return keys


def _statement_mappers(state: ORMExecuteState) -> list[Mapper[Any]]:
    """The mappers at the top level of a select, cheaply (no column descriptions)."""
    raw = getattr(state.statement, "_raw_columns", None)
    if raw is None:
        return list(state.all_mappers)
    mappers: list[Mapper[Any]] = []
    for element in raw:
        entity = element._annotations.get("parententity")  # noqa: SLF001
        mapper = getattr(entity, "mapper", None)
        if mapper is not None and mapper not in mappers:
            mappers.append(mapper)
    return mappers


def _known_subject(state: ORMExecuteState) -> None:
    """Name the subject in the audit record when the load is for one object."""
    source = state.lazy_loaded_from
    if source is None:
        source = getattr(state.load_options, "_refresh_state", None)
    if source is None:
        return
    facts = _facts(source.mapper.local_table)
    if facts is None or facts.subject_col is None:
        return
    prop = source.mapper.get_property_by_column(facts.subject_col)
    subject = source.dict.get(prop.key)
    if subject is not None:
        state.update_execution_options(custdata_subjects=(subject,))


def _orm_select(state: ORMExecuteState) -> None:
    mappers = _statement_mappers(state)
    if not mappers:
        return
    custodian: Any = None
    plan: list[tuple[Mapper[Any], frozenset[str]]] = []
    # Loader options as given (before any of ours): joined eager loads to check.
    given = getattr(state.statement, "_with_options", ())
    joins = bool(given)
    for mapper in mappers:
        facts = _MAPPERS.get(mapper) or _mapper_facts(mapper)
        joins = joins or bool(facts.joined)
        if not facts.fields:
            continue
        if custodian is None:
            custodian = _custodian.get() or _default_custodian[0]
            if custodian is None:
                raise ConfigurationError(
                    "no custodian is current: call custodian.make_current() or use custodian.activate()"
                )
        keys = _withheld_keys(mapper, facts, custodian)
        if keys:
            plan.append((mapper, keys))
    if custodian is None:
        # No customer data at the top level: nothing to withhold or name,
        # except in what is eagerly joined to it.
        if joins:
            _defer_joined(state, mappers, {}, given)
        return
    load_options = state.load_options
    if (
        getattr(load_options, "_lazy_loaded_from", None) is not None
        or getattr(load_options, "_refresh_state", None) is not None
    ) and (state.is_relationship_load or state.is_column_load):
        _known_subject(state)
    if not plan:
        if joins and not state.is_relationship_load:
            _defer_joined(state, mappers, {}, given)
        return
    requested: frozenset[str] = frozenset()
    compile_options = getattr(state.statement, "_compile_options", None)
    if state.is_column_load:
        requested = getattr(compile_options, "_only_load_props", None) or frozenset()
    if requested:
        mapper, keys = plan[0]
        encrypted = {key for key, _ in _mapper_facts(mapper).fields}
        if requested <= encrypted:
            # Only customer-data attributes are left to load: one of them was
            # touched, so its load is authorized (and raises if denied)
            # instead of leaving it silently unloaded.
            return
        if hasattr(compile_options, "_only_load_props"):
            # A refresh names the attributes to load: withhold ours from the list.
            stmt: Any = state.statement
            stmt = stmt._generate()  # noqa: SLF001
            stmt._compile_options += {"_only_load_props": frozenset(requested - keys)}  # noqa: SLF001
            state.statement = stmt
            return
    if state.is_relationship_load:
        mapper, keys = plan[0]
        state.statement = state.statement.options(*_relative(state, mapper, set(keys)))
        return
    withheld = dict(plan)
    options: list[Any] = []
    from sqlalchemy import inspect  # noqa: PLC0415

    statement: Any = state.statement
    for desc in statement.column_descriptions:
        entity = desc.get("entity")
        if entity is None or desc.get("expr") is not entity:
            continue
        insp: Any = inspect(entity)
        found = withheld.get(getattr(insp, "mapper", insp))
        options.extend(defer(getattr(entity, key)) for key in sorted(found or ()))
    if options:
        state.statement = state.statement.options(*options)
    if joins:
        _defer_joined(state, mappers, withheld, given)


def _relative(state: ORMExecuteState, mapper: Mapper[Any], keys: set[str]) -> list[Any]:
    """``defaultload(A.rel)...defer(B.x)`` along the path of a relationship load."""
    path = state.loader_strategy_path
    elements: list[Any] = list(path.path) if path is not None else []
    return _along(elements, mapper, keys)


def _along(
    elements: Sequence[Any], target: Any, keys: set[str] | frozenset[str]
) -> list[Any]:
    """``defaultload(A.rel).defaultload(B.rel2)...defer(C.x)`` for each key.

    *elements* alternate owner entity and relationship, from the statement's
    top level down to *target*, the entity the keys belong to.
    """
    from sqlalchemy.orm import defaultload  # noqa: PLC0415

    opt: Any = None
    for i in range(0, len(elements) - 1, 2):
        owner, prop = elements[i], elements[i + 1]
        attr = getattr(getattr(owner, "entity", None) or owner.class_, prop.key)
        opt = defaultload(attr) if opt is None else opt.defaultload(attr)
    entity = getattr(target, "entity", None) or target.class_
    out = []
    for key in sorted(keys):
        attr = getattr(entity, key)
        out.append(defer(attr) if opt is None else opt.defer(attr))
    return out


_JOINED = (("lazy", "joined"),)
#: How deep configured ``lazy="joined"`` relationships are followed.
_JOIN_DEPTH = 4


def _joined_paths(
    given: Sequence[Any], tops: Sequence[Mapper[Any]]
) -> list[tuple[Any, ...]]:
    """The paths (entity, relationship, ..., entity) a SELECT loads joined, from the top.

    Joined eager loads named by loader options, and relationships configured
    ``lazy="joined"``, as long as every step above them is joined as well (a
    joined load below a select-in or lazy load belongs to that other query).
    """
    strategies: dict[tuple[Any, ...], Any] = {}
    for opt in given:
        for element in getattr(opt, "context", ()):
            path = getattr(getattr(element, "path", None), "path", None)
            strategy = getattr(element, "strategy", None)
            if path and strategy:
                strategies[tuple(path)] = strategy

    def joined(prefix: tuple[Any, ...]) -> bool:
        strategy = strategies.get(prefix)
        if strategy is None:
            return getattr(prefix[-2], "lazy", None) == "joined"
        return bool(strategy == _JOINED)

    paths = [
        path
        for path, strategy in strategies.items()
        if strategy == _JOINED
        and len(path) >= 3  # noqa: PLR2004 - entity, relationship, entity
        and all(joined(path[: j + 2]) for j in range(1, len(path) - 2, 2))
    ]
    stack: list[tuple[Any, ...]] = [(m,) for m in tops]
    while stack:
        path = stack.pop()
        mapper = getattr(path[-1], "mapper", path[-1])
        for rel in (_MAPPERS.get(mapper) or _mapper_facts(mapper)).joined:
            longer = (*path, rel, rel.mapper)
            if (
                len(longer) > 2 * _JOIN_DEPTH + 1
                or rel.mapper in path
                or not joined(longer)
            ):
                continue
            if longer not in paths:
                paths.append(longer)
            stack.append(longer)
    return paths


def _defer_joined(
    state: ORMExecuteState,
    tops: Sequence[Mapper[Any]],
    withheld: Mapping[Mapper[Any], frozenset[str]],
    given: Sequence[Any],
) -> None:
    """Leave unloaded the fields of eagerly joined entities the context may not read.

    The same as for the statement's own entities: the joined objects load,
    and touching such a field later raises through its own audited load.
    *given* are the statement's loader options as the application gave them.
    """
    options: list[Any] = []
    custodian: Any = None
    for path in _joined_paths(given, tops):
        target = path[-1]
        mapper = getattr(target, "mapper", target)
        facts = _MAPPERS.get(mapper) or _mapper_facts(mapper)
        if not facts.fields:
            continue
        keys = withheld.get(mapper)
        if keys is None:
            if custodian is None:
                custodian = _require_custodian()
            keys = _withheld_keys(mapper, facts, custodian)
        if keys:
            options.extend(_along(path[:-1], target, keys))
    if options:
        state.statement = state.statement.options(*options)


def _orm_bulk(state: ORMExecuteState) -> None:
    mapper = state.bind_mapper
    if mapper is None:
        return
    facts = _mapper_facts(mapper)
    table_facts = _facts(mapper.local_table)
    if not facts.fields and table_facts is None:
        return
    custodian = _current_custodian()
    if custodian is None:
        raise ConfigurationError("no custodian is current")
    statement: Any = state.statement
    if state.is_delete:
        fields = dict(facts.fields)
        action = Action.DELETE
    else:
        set_keys = {
            getattr(k, "key", k) for k in (getattr(statement, "_values", None) or {})
        }
        fields = {k: f for k, f in facts.fields if k in set_keys}
        action = Action.UPDATE
        if table_facts is not None and set_keys:
            special = {
                k
                for k, b in table_facts.encrypted
                if b.subject_key is not None or b.companion_key is not None
            }
            if special & set_keys:
                names = ", ".join(
                    f"{mapper.local_table.name}.{k}"  # type: ignore[attr-defined]
                    for k in sorted(special & set_keys)
                )
                raise UnsupportedOperationError(
                    f"{names}: a bulk update() cannot set subject-bound or searchable "
                    "encrypted columns; load the objects and assign, or pass per-row "
                    "parameters"
                )
    custodian.authorize(action=action, entity=mapper.local_table.name, fields=fields)  # type: ignore[attr-defined]


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
        (Engine, "before_cursor_execute", _before_cursor_execute, {}),
        (Session, "do_orm_execute", _do_orm_execute, {}),
        (Mapper, "mapper_configured", _on_mapper_configured, {}),
    ):
        if not event.contains(target, name, fn):
            event.listen(target, name, fn, **kw)
