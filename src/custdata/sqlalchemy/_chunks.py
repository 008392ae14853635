"""Queries over many subjects, one ``IN (...)`` list of bounded size at a time.

The stores of holds, consents and restrictions and the expiry check look up
the records of a batch of subjects; a batch can hold thousands, more than a
driver binds in one statement (SQLite's limit, MariaDB's packet size). The
lookup runs once per :data:`IN_CHUNK` subjects instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Select
from sqlalchemy.sql.elements import ColumnElement


__all__ = ["IN_CHUNK", "rows_in_chunks"]

#: Values per ``IN (...)`` list: well under every driver's bind limit.
IN_CHUNK = 500


def rows_in_chunks(
    conn: Connection,
    query: Select[Any],
    column: ColumnElement[Any],
    values: Sequence[Any],
) -> Iterator[Any]:
    """The rows of *query* where *column* is one of *values*.

    One statement per :data:`IN_CHUNK` values (none for no values), the
    chunk's ``column IN (...)`` added to the query's other conditions.
    Yields SQLAlchemy rows (typed ``Any`` so callers unpack them as they do
    the rows of ``Connection.execute``).
    """
    for start in range(0, len(values), IN_CHUNK):
        yield from conn.execute(
            query.where(column.in_(values[start : start + IN_CHUNK]))
        )
