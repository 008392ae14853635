"""The guard on SQL text that writes to encrypted columns.

custdata encrypts the values of Core and ORM statements; it cannot encrypt a
value written inside SQL text (``text()``, ``Connection.exec_driver_sql``),
which would reach the database as plaintext, or as an envelope no row can
open. An ``INSERT``, ``UPDATE``, ``REPLACE``, ``MERGE`` or ``UPSERT`` (also
after a ``WITH`` clause) whose text names a table with encrypted columns (of the tables declared in this process)
is refused when it names one of those columns, or inserts without a column
list. It is a guard against mistakes, reading names in the text (not a SQL
parser): a statement that reaches such a table in a way the text does not
spell out (a view, a stored procedure) is not seen. Names inside comments and
single-quoted string literals are not names: ``SET note = 'card declined'``
does not write ``card``. (A MySQL literal with a backslash-escaped quote may
end, for the guard, before it does for the server: the guard then sees more of
the text as names, never less.)
"""

from __future__ import annotations

import re
import weakref

from custdata._errors import UnsupportedOperationError

from ._declare import KNOWN_TABLES
from ._types import EncryptedType


__all__ = ["refuse_raw_write"]

#: The first keyword of a writing statement, after any comments.
_WRITES = re.compile(
    r"\A(?:\s+|/\*.*?\*/|--[^\n]*(?:\n|\Z))*(insert|update|replace|merge|upsert|with)\b",
    re.IGNORECASE | re.DOTALL,
)

#: The writing statement after ``WITH ... AS (...)``.
_WRITE_AFTER_WITH = re.compile(
    r"\b(insert|update|replace|merge|upsert)\b", re.IGNORECASE
)

#: Comments and single-quoted literals (``''`` escapes a quote inside one).
_NOT_NAMES = re.compile(r"'(?:[^']|'')*'|--[^\n]*|/\*.*?\*/", re.DOTALL)

#: Per table: (pattern of its name, its encrypted columns and their patterns).
_PATTERNS: weakref.WeakKeyDictionary[
    object, tuple[re.Pattern[str], list[tuple[str, re.Pattern[str]]]]
] = weakref.WeakKeyDictionary()


def _word(name: str) -> str:
    """A pattern for *name* as an identifier, bare or quoted."""
    return rf"""(?<![\w$])[`"\[]?{re.escape(name)}[`"\]]?(?![\w$])"""


def _patterns(
    table: object,
) -> tuple[re.Pattern[str], list[tuple[str, re.Pattern[str]]]]:
    found = _PATTERNS.get(table)
    if found is None:
        name = table.name  # type: ignore[attr-defined]
        columns = [
            (col.name, re.compile(_word(col.name), re.IGNORECASE))
            for col in table.columns  # type: ignore[attr-defined]
            if isinstance(col.type, EncryptedType)
        ]
        found = _PATTERNS[table] = (re.compile(_word(name), re.IGNORECASE), columns)
    return found


def refuse_raw_write(sql: str) -> None:
    """Refuse SQL text that writes to encrypted columns of a declared table.

    Raises:
        UnsupportedOperationError: Naming the table and columns (never values).
    """
    start = _WRITES.match(sql)
    if start is None:
        return
    verb = start.group(1).lower()
    if "'" in sql or "--" in sql or "/*" in sql:
        # (Without a quote or a comment there is nothing to blank out: a long
        # multi-row INSERT is not scanned once more for nothing.)
        sql = _NOT_NAMES.sub(" '' ", sql)
    # For ASCII text, a table's name in any case is a plain substring of the
    # lowered text wherever its pattern matches: the pattern's scan runs only
    # where the substring is found.
    lowered = sql.lower() if sql.isascii() else None
    if verb == "with":
        # A common table expression: a write only if a writing statement follows.
        found = _WRITE_AFTER_WITH.search(sql, start.end())
        if found is None:
            return
        verb = found.group(1).lower()
    for table in list(KNOWN_TABLES):
        table_pattern, columns = _patterns(table)
        if not columns:
            continue
        name = table.name
        if lowered is not None and name.isascii() and name.lower() not in lowered:
            continue
        mention = table_pattern.search(sql)
        if mention is None:
            continue
        hit = [name for name, pattern in columns if pattern.search(sql)]
        if not hit and verb in {"insert", "replace", "upsert"}:
            # INSERT INTO t VALUES (...) / SELECT ...: positional, every column.
            after = sql[mention.end() :].lstrip()
            if not after.startswith("("):
                hit = [name for name, _pattern in columns]
        if hit:
            names = ", ".join(f"{table.name}.{name}" for name in hit)
            raise UnsupportedOperationError(
                f"{names}: SQL text cannot write encrypted columns (custdata encrypts "
                "the values of Core and ORM statements only); use insert()/update() "
                "on the table"
            )
