"""Subject keys read in the same statement as the rows they decrypt (internal).

A statement that fetches values under per-subject keys needs, before they are
opened, the shred epoch of the key store (to check the keys cached so far) and
the wrapped keys of subjects not cached. Where the key store shares the
statement's database and a read on its connection sees the latest committed
keys (:meth:`SqlSubjectKeyStore.reads_committed_on`), a plain ``SELECT`` reads
them itself: scalar subqueries go first in its select list, and the announcing
cursor takes those columns off every row before SQLAlchemy sees it.

- the shred epoch, always;
- the wrapped key of the subject, when the statement names its one subject
  with ``subject_column = :value`` in its ``WHERE`` (a ``get``, a refresh)
  and its key is not cached: the value is bound once more per subquery.

So a batch whose keys are cached, and a ``get`` of an uncached subject, issue
no statement of the store's. Any other shape keeps the batched lookup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select, operators
from sqlalchemy.sql.elements import (
    BinaryExpression,
    BindParameter,
    BooleanClauseList,
    ColumnElement,
)

from ._binding import blob_binder, subject_tail


__all__ = ["KeysWithRows", "keys_first"]

#: The parameter styles whose parameters are bound here: positional or not.
_STYLES: Mapping[str, bool] = {
    "qmark": True,
    "format": True,
    "pyformat": False,
    "named": False,
}


class KeysWithRows:
    """What a statement reads before its own columns: the shred epoch, maybe a key."""

    __slots__ = ("lead", "store", "subject")

    def __init__(self, store: object, subject: bytes | None) -> None:
        #: The key store whose epoch (and key) the statement reads.
        self.store = store
        #: The canonical id of the subject whose key it reads, or ``None``.
        self.subject = subject
        #: How many leading columns to take off each row.
        self.lead = 1 if subject is None else 4

    def __repr__(self) -> str:
        return f"<custdata keys read with the rows: {self.lead} columns>"

    def take(
        self, rows: Sequence[Any]
    ) -> tuple[list[Any], int, dict[bytes, Any] | None]:
        """Take the leading columns off ``rows`` (not empty).

        Returns:
            The rows as the statement's own columns, the shred epoch, and the
            named subject's wrapped key (``None`` for no record) when read.
        """
        first = rows[0]
        lead = self.lead
        epoch = int(first[0] or 0)
        found = None
        subject = self.subject
        if subject is not None:
            found = {
                subject: None
                if first[1] is None
                else (subject, first[1], first[2], first[3])
            }
        return [row[lead:] for row in rows], epoch, found


def keys_first(  # noqa: PLR0917
    conn: Connection,
    statement: str,
    parameters: Any,
    compiled: Any,
    context: Any,
    lone: tuple[int, Any] | None,
    custodian: Any,
    scope: Any = None,
) -> tuple[str, Any, KeysWithRows | None]:
    """``statement`` (and its parameters) reading the shred epoch first, maybe a key.

    For a plain ``SELECT`` on a connection the store shares and reads
    committed rows on (:meth:`SqlSubjectKeyStore.epoch_column`). Anything
    else (a ``UNION``, a ``WITH``, prefixes, ``DISTINCT ON``, ``FOR UPDATE``,
    another store or dialect) is left as it is, with ``None``.

    Args:
        conn: The statement's connection.
        statement: Its SQL.
        parameters: Its parameters (one set).
        compiled: Its compiled form.
        context: Its execution context.
        lone: ``(position, kind)`` of the one subject column of its rows, if so.
        custodian: The custodian in force.
        scope: The per-subject key scope of the statement's columns, if
            known: a named subject whose key it caches has only the epoch
            read (its key record is not).
    """
    store = custodian.subject_keys
    epoch_column = getattr(store, "epoch_column", None)
    select_ = compiled.statement
    if (
        epoch_column is None
        or not isinstance(select_, Select)
        or select_._prefixes  # noqa: SLF001
        or select_._for_update_arg is not None  # noqa: SLF001
        or not statement.startswith("SELECT ")
        or statement.startswith("SELECT DISTINCT ON")
    ):
        return statement, parameters, None
    column = epoch_column(conn)
    if column is None:
        return statement, parameters, None
    head = 16 if statement.startswith("SELECT DISTINCT ") else 7
    column = f"{column} AS custdata_shred_epoch"
    subject = None
    positional = _STYLES.get(conn.dialect.paramstyle)
    if lone is not None and positional is not None:
        subject = _named_subject(select_, compiled, context, lone)
        if subject is not None and scope is not None and scope.caches(subject):
            # Its key is cached: the epoch alone checks it (a warm ``get``).
            subject = None
    if subject is not None:
        column = f"{column}, {store.key_columns(conn)}"
        to_blob = blob_binder(conn.dialect)
        bound = subject if to_blob is None else to_blob(subject)
        if positional:
            parameters = (bound, bound, bound, *parameters)
        else:
            parameters = {**parameters, "custdata_subject": bound}
    sql = f"{statement[:head]}{column}, {statement[head:]}"
    return sql, parameters, KeysWithRows(store, subject)


#: Where a compiled statement keeps the name of the parameter its ``WHERE
#: subject = :value`` binds (``None``: it names no one subject): worked out
#: once per compiled form, an attribute of it (a ``get`` reuses SQLAlchemy's
#: cached compilation; one dictionary lookup per statement).
_SUBJECT_ATTR = "_custdata_subject_parameter"
_UNKNOWN = object()


def _named_subject(
    select_: Select[Any], compiled: Any, context: Any, lone: tuple[int, Any]
) -> bytes | None:
    """The canonical id of the subject a ``WHERE subject = :value`` names, if one does.

    A wrong guess costs nothing but a wasted read: the key read is used only
    for rows of that subject, as a lookup of it would be.
    """
    name = compiled.__dict__.get(_SUBJECT_ATTR, _UNKNOWN)
    if name is _UNKNOWN:
        name = _subject_parameter(select_, compiled, lone[0])
        setattr(compiled, _SUBJECT_ATTR, name)
    if name is None:
        return None
    value = context.compiled_parameters[0].get(name)
    if value is None:
        return None
    try:
        return subject_tail(value, lone[1])[4:]
    except (TypeError, ValueError):
        return None


def _subject_parameter(
    select_: Select[Any], compiled: Any, position: int
) -> str | None:
    """The parameter name :func:`_named_subject` reads, or ``None``."""
    where = select_.whereclause
    if where is None:
        return None
    try:
        objects = compiled._result_columns[position][2]  # noqa: SLF001
    except (AttributeError, IndexError, TypeError):
        return None
    clauses: Sequence[Any] = (
        where.clauses
        if isinstance(where, BooleanClauseList) and where.operator is operators.and_
        else (where,)
    )
    for clause in clauses:
        if not (
            isinstance(clause, BinaryExpression)
            and clause.operator is operators.eq
            and isinstance(clause.right, BindParameter)
            and isinstance(clause.left, ColumnElement)
        ):
            continue
        if not any(
            isinstance(o, ColumnElement) and clause.left.shares_lineage(o)
            for o in objects
        ):
            continue
        name = compiled.bind_names.get(clause.right)
        return name if isinstance(name, str) else None
    return None
