"""The write side of the statement hooks: where each written value's subject comes from.

:func:`custdata.sqlalchemy._runtime._before_execute` encrypts every value of
an ``INSERT`` or ``UPDATE`` for the subject of its own row. This module reads
a statement for that: which columns it sets and from where (a parameter set,
a named :func:`~sqlalchemy.sql.expression.bindparam`, a literal turned into a
per-row parameter), where each row's subject id comes from (the same
parameter set, the subject column set by the statement, or ``WHERE
subject_col = ...``), and refuses, with
:class:`~custdata.UnsupportedOperationError` naming the columns, every write
whose values cannot be encrypted for the right subject.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import (
    BinaryExpression,
    BindParameter,
    BooleanClauseList,
    Grouping,
    Null,
)
from sqlalchemy.util import immutabledict

from custdata._errors import UnsupportedOperationError

from ._binding import subject_parts
from ._types import _Bound, _Sealed


if TYPE_CHECKING:
    from ._runtime import _TableFacts

__all__ = [
    "AMBIGUOUS",
    "REQUIRED",
    "column_key",
    "embedded_sources",
    "logical_rows",
    "refuse_insert_forms",
    "refuse_moved_object",
    "refuse_subject_change",
    "refuse_unpinned",
    "row_subject",
    "to_params",
    "where_subject",
]


#: A bound parameter without a default: its value must come with each row.
REQUIRED: Any = object()
#: A WHERE clause that names more than one subject.
AMBIGUOUS: Any = object()


def column_key(col: Any) -> str:
    return str(getattr(col, "key", col))


def where_subject(statement: Any, subject_col: Any) -> Any:
    """Where the subject id pinned by ``WHERE subject_col = ...`` comes from.

    Only the conjuncts of the WHERE clause are considered (``a AND b``); a
    subject compared under ``OR``, ``IN``, a range or a subquery pins nothing.

    Returns:
        ``None`` when the WHERE pins no subject, :data:`AMBIGUOUS` when it
        compares the subject column with more than one value, otherwise
        ``(param, value)``: the parameter key each row's subject is read from
        (``None`` for a literal) and the literal or the parameter's default.
    """
    where = getattr(statement, "whereclause", None)
    if where is None:
        return None
    found: list[tuple[str | None, object]] = []
    stack = [where]
    while stack:
        clause = stack.pop()
        if isinstance(clause, BooleanClauseList) and clause.operator is operators.and_:
            stack.extend(clause.clauses)
            continue
        if isinstance(clause, Grouping):
            stack.append(clause.element)
            continue
        if not (
            isinstance(clause, BinaryExpression) and clause.operator is operators.eq
        ):
            continue
        for side, other in ((clause.left, clause.right), (clause.right, clause.left)):
            if (
                isinstance(other, BindParameter)
                and getattr(side, "key", None) == subject_col.key
                and getattr(side, "table", None) is subject_col.table
            ):
                found.append(_param_source(other))
    distinct = list(dict.fromkeys((p, _hashable(v)) for p, v in found))
    if not distinct:
        return None
    if len(distinct) > 1:
        return AMBIGUOUS
    return found[0]


def _hashable(value: object) -> object:
    try:
        hash(value)
    except TypeError:
        return id(value)
    return value


def _param_source(bind: BindParameter[Any]) -> tuple[str | None, object]:
    """``(param, value)`` of a bound parameter: a named one is read per row."""
    if bind.unique:
        return None, bind.effective_value
    return bind.key, REQUIRED if bind.required else bind.effective_value


def refuse_insert_forms(statement: Any, facts: _TableFacts) -> None:
    """Refuse the INSERT forms whose customer values custdata cannot encrypt.

    ``INSERT ... SELECT`` would copy envelopes bound to another column (or
    plaintext) into an encrypted column; multi-row ``VALUES`` and upsert
    ``SET`` clauses carry values (or expressions) no row's subject can be
    told for.

    Raises:
        UnsupportedOperationError: Naming the encrypted columns concerned.
    """
    sealed = {k for k, _b in facts.encrypted} | {c for _k, c, _b in facts.searchable}
    names = getattr(statement, "_select_names", None)
    if names:
        hit = [str(n) for n in names if column_key(n) in sealed]
        if hit:
            raise UnsupportedOperationError(
                f"{_columns(facts, hit)}: INSERT ... SELECT cannot fill encrypted columns "  # noqa: S608 - a message, no SQL
                "(values are encrypted for their own table, column and subject); insert "
                "the values themselves, with one parameter set per row"
            )
    multi = getattr(statement, "_multi_values", None)
    if multi:
        hit = sorted(
            {
                column_key(k)
                for rows in multi
                for row in rows
                for k in (row if isinstance(row, Mapping) else ())
                if column_key(k) in sealed
            }
        )
        if hit or any(not isinstance(row, Mapping) for rows in multi for row in rows):
            raise UnsupportedOperationError(
                f"{_columns(facts, hit or [k for k, _b in facts.encrypted])}: a multi-row "
                "VALUES clause is not encrypted; pass the rows as execute() parameters "
                "(conn.execute(insert(t), [{...}, ...]))"
            )
    post = getattr(statement, "_post_values_clause", None)
    if post is not None:
        sets = getattr(post, "update_values_to_set", None) or getattr(
            post, "update", None
        )
        items = sets.items() if isinstance(sets, Mapping) else (sets or ())
        hit = sorted({column_key(k) for k, _v in items if column_key(k) in sealed})
        if hit:
            raise UnsupportedOperationError(
                f"{_columns(facts, hit)}: an upsert cannot set encrypted columns (the "
                "conflicting row may belong to another subject); insert, then update the "
                "row by its subject id"
            )


def _columns(facts: _TableFacts, keys: Sequence[str]) -> str:
    return ", ".join(f"{facts.name}.{k}" for k in keys)


def embedded_sources(
    statement: Any, facts: _TableFacts
) -> tuple[Any, list[tuple[str, str, object]], tuple[str | None, object] | None]:
    """Turn the values a statement embeds for encrypted columns into per-row parameters.

    Each row's value of an encrypted column must be encrypted for that row's
    subject, so it cannot stay a literal in the SQL: a literal becomes a named
    parameter (``custdata_<column>``) filled per row; a named
    :func:`~sqlalchemy.sql.expression.bindparam` is read from each row under
    its own name.

    Returns:
        The statement (rewritten where literals were replaced), the sources
        ``(column key, parameter key, default or REQUIRED)`` of the encrypted
        columns it sets, and where the subject column's value comes from
        (``(param, value)`` as :func:`_param_source` gives, or ``None``).

    Raises:
        UnsupportedOperationError: If an encrypted column (or a blind-index
            companion) is set to a SQL expression -- a function, another
            column, a subquery -- which cannot be encrypted.
    """
    values = statement._values  # noqa: SLF001
    ordered = getattr(statement, "_ordered_values", None)
    pairs = list(values.items()) if values else list(ordered or ())
    encrypted = {k for k, _b in facts.encrypted}
    companions = {c: k for k, c, _b in facts.searchable}
    subject_col = facts.subject_col
    sources: list[tuple[str, str, object]] = []
    subject: tuple[str | None, object] | None = None
    replace: dict[Any, Any] = {}
    for col, value in pairs:
        key = column_key(col)
        if subject_col is not None and key == subject_col.key:
            if isinstance(value, BindParameter):
                subject = _param_source(value)
            continue
        if key in companions:
            if isinstance(value, Null) or (
                isinstance(value, BindParameter)
                and value.unique
                and value.effective_value is None
            ):
                continue  # erasing the index (blind_index_eraser)
            raise UnsupportedOperationError(
                f"{facts.name}.{key}: the blind index of {companions[key]!r} is computed "
                "by custdata; set the column itself"
            )
        if key not in encrypted:
            continue
        if isinstance(value, Null):
            # NULL: a value like any other (the blind index is erased with it).
            param, default = None, None
        elif isinstance(value, BindParameter):
            param, default = _param_source(value)
        else:
            raise UnsupportedOperationError(
                f"{facts.name}.{key}: a SQL expression cannot be encrypted (a value "
                "copied from another column or computed by the database would be stored "
                "unencrypted or bound to the wrong column); set the value itself"
            )
        if param is None:
            param = f"custdata_{key}"
            replace[col] = BindParameter(param, None, type_=value.type, required=False)
        sources.append((key, param, default))
    if replace:
        statement = statement._generate()  # noqa: SLF001
        if values:
            statement._values = immutabledict(  # noqa: SLF001
                {k: replace.get(k, v) for k, v in values.items()}
            )
        else:
            statement._ordered_values = tuple(  # noqa: SLF001
                (k, replace.get(k, v)) for k, v in ordered or ()
            )
    return statement, sources, subject


def logical_rows(
    rows: Sequence[Mapping[str, Any]],
    sources: Sequence[tuple[str, str, object]],
    subject_key: str | None,
    subject_param: str | None,
    subject_default: object,
) -> list[Mapping[str, Any]]:
    """Each parameter set as the table's columns see it: column key -> value."""
    out: list[Mapping[str, Any]] = []
    for row in rows:
        view = dict(row)
        for key, param, default in sources:
            if param in row:
                view[key] = row[param]
            elif default is not REQUIRED:
                view[key] = default
            else:
                view.pop(key, None)
        if (
            subject_key is not None
            and subject_param is not None
            and view.get(subject_key) is None
        ):
            found = row.get(subject_param, subject_default)
            if found is not REQUIRED:
                view[subject_key] = found
        out.append(view)
    return out


def to_params(
    prepared: Mapping[str, Any],
    given: Mapping[str, Any],
    sources: Sequence[tuple[str, str, object]],
    subject_key: str | None,
) -> dict[str, Any]:
    """A prepared logical row back as the statement's parameter set."""
    out = dict(prepared)
    for key, param, _default in sources:
        # (A value given under the column's name too is dropped: the
        # statement sets the column from its own parameter.)
        value = out.pop(key, REQUIRED)
        if value is not REQUIRED:
            out[param] = value
    if subject_key is not None and subject_key not in given:
        # The subject was read from the WHERE clause or another parameter:
        # it is not a value the statement sets.
        out.pop(subject_key, None)
    return out


def refuse_unpinned(
    facts: _TableFacts, rows: Sequence[Mapping[str, Any]], extra_subject: object
) -> None:
    """Refuse an UPDATE of subject-bound columns that does not name each row's subject.

    Raises:
        UnsupportedOperationError: Naming the columns.
    """
    subject_col = facts.subject_col
    bound = [k for k, _b in facts.subject_bound]
    for row in rows:
        if row_subject(row, subject_col, extra_subject) is not None:
            continue
        hit = [
            k
            for k in bound
            if row.get(k) is not None
            and row[k].__class__ is not _Sealed
            and not (row[k].__class__ is _Bound and row[k].subject is not None)
        ]
        if hit:
            raise UnsupportedOperationError(
                f"{_columns(facts, hit)}: this UPDATE does not name exactly one subject "
                f"(WHERE {subject_col.key} = <value>, joined by AND); a value bound to one "
                "customer would be written to another's row. Update one subject per "
                "statement, pass the subject id per row, or use bind_subject()"
            )


def refuse_subject_change(
    facts: _TableFacts,
    rows: Sequence[Mapping[str, Any]],
    given_rows: Sequence[Mapping[str, Any]],
    stated: Mapping[str, Any],
    subjects: tuple[Any, Any],
) -> None:
    """Refuse an UPDATE that moves a row to another subject but leaves values bound to the old one.

    The subject-bound values the statement does not rewrite (or erase) would
    stay bound to the row's old subject and never decrypt again. Setting the
    subject column to the value the WHERE clause pins is no change. *stated*
    are the statement's own ``values()``; *subjects* where the new subject is
    set (:func:`embedded_sources`) and where the WHERE pins the old one
    (:func:`where_subject`).

    Raises:
        UnsupportedOperationError: Naming the columns left behind.
    """
    subject_col = facts.subject_col
    key = subject_col.key
    kind = facts.subject_kind
    bound = [k for k, _b in facts.subject_bound]
    set_subject, pinned = subjects
    for row, given in zip(rows, given_rows, strict=True):
        written = set(row) | set(stated)
        if key not in written:
            continue
        left = [k for k in bound if k not in written]
        if not left:
            continue
        new = row.get(key)
        if new is None and set_subject is not None and set_subject is not AMBIGUOUS:
            param, literal = set_subject
            new = literal if param is None else given.get(param)
        if new is None:
            new = getattr(stated.get(key), "effective_value", None)
        old: object = None
        if pinned is not None and pinned is not AMBIGUOUS:
            param, literal = pinned
            old = literal if param is None else given.get(param)
        if _same_subject(new, old, kind):
            continue
        raise UnsupportedOperationError(
            f"{_columns(facts, left)}: this UPDATE changes the row's subject "  # noqa: S608 - a message, no SQL
            f"({key}) but not these subject-bound values, which would stay bound to the "
            "old subject and never decrypt again; set them (or NULL) in the same statement"
        )


def _same_subject(a: object, b: object, kind: Any) -> bool:
    if a is None or b is None or a is REQUIRED or b is REQUIRED:
        return False
    try:
        return subject_parts(a, kind)[0] == subject_parts(b, kind)[0]
    except (TypeError, ValueError):
        return False


def row_subject(row: Mapping[str, Any], subject_col: Any, extra: object) -> object:
    subject = row.get(subject_col.key)
    if subject is None:
        subject = row.get(subject_col._label, extra)  # noqa: SLF001
    return subject


def refuse_moved_object(
    mapper: Any, facts: _TableFacts, insp: Any, bound: set[str]
) -> None:
    """Refuse flushing an object moved to another subject with values left bound to the old one.

    Values the flush rewrites are encrypted for the new subject; a value it
    does not rewrite and that is not known to be empty would stay bound to the
    old subject and never decrypt again.

    Raises:
        UnsupportedOperationError: Naming the columns left behind.
    """
    key = mapper.get_property_by_column(facts.subject_col).key
    history = insp.attrs[key].history
    if not history.deleted or list(history.deleted) == list(history.added):
        return
    changed = insp.committed_state
    left = sorted(
        k for k in bound if k not in changed and insp.dict.get(k, REQUIRED) is not None
    )
    if left:
        table = mapper.local_table.name
        names = ", ".join(f"{table}.{k}" for k in left)
        raise UnsupportedOperationError(
            f"{names}: the object moves to another subject ({key}) but these "
            "subject-bound values are not rewritten, and would stay bound to the old "
            "subject; assign them (or None) in the same flush"
        )
