"""Subject lookups run one bounded ``IN (...)`` list at a time (three databases)."""

from __future__ import annotations

import datetime as dt
import sys
import uuid

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from custdata.governance import HoldRecord, RestrictionRecord
from custdata.sqlalchemy import SqlHoldStore, SqlRestrictionStore
from custdata.sqlalchemy._chunks import IN_CHUNK


sys.path.insert(0, str(Path(__file__).parent))
from sa_fixtures import engine  # noqa: F401 - pytest fixture


T0 = dt.datetime(2024, 4, 1, 9, 0, tzinfo=dt.timezone.utc)
#: Two full chunks and one subject more: three statements.
N = 2 * IN_CHUNK + 1


@contextmanager
def _selects(bound: Engine) -> Iterator[list[int]]:
    """Collect the bind-parameter count of every SELECT the engine runs."""
    seen: list[int] = []

    def before(_conn: Any, _cursor: Any, sql: str, params: Any, *_: Any) -> None:
        if sql.lstrip().upper().startswith("SELECT"):
            seen.append(len(params))

    event.listen(bound, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(bound, "before_cursor_execute", before)


def test_hold_records_in_chunks(engine: Engine) -> None:  # noqa: F811
    """records_for over 1,001 subjects: three SELECTs, every record found once."""
    store = SqlHoldStore(engine, table_name=f"hold_{uuid.uuid4().hex[:8]}")
    store.create_table()
    try:
        subjects = [f"s{i}" for i in range(N)]
        store.add_many(
            [
                HoldRecord(
                    id="hold_1",
                    case="c",
                    subject=s,
                    reason="r",
                    placed_by="a",
                    placed_at=T0,
                )
                for s in subjects
            ]
        )
        with _selects(engine) as seen:
            records = store.records_for([*subjects, "absent"])
        assert sorted(subjects) == sorted(r.subject for r in records)
        assert [IN_CHUNK, IN_CHUNK, 2] == seen
        with _selects(engine) as seen:
            assert [] == store.records_for([])
        assert [] == seen
    finally:
        store.table.drop(engine)


def test_restrictions_in_chunks(engine: Engine) -> None:  # noqa: F811
    """in_force and records_for over 1,001 subjects: three SELECTs each."""
    store = SqlRestrictionStore(engine, table_name=f"rst_{uuid.uuid4().hex[:8]}")
    store.create_table()
    try:
        subjects = [f"s{i}" for i in range(N)]
        # Every other subject restricted.
        for i, s in enumerate(subjects[::2]):
            store.add(
                RestrictionRecord(
                    id=f"r{i}",
                    subject=s,
                    allowed_purposes=("billing",),
                    reason="r",
                    placed_by="a",
                    placed_at=T0,
                )
            )
        with _selects(engine) as seen:
            found = store.in_force(subjects, T0 + dt.timedelta(days=1))
        assert sorted(subjects[::2]) == sorted(s for s, _ in found)
        assert {("billing",)} == {p for _, p in found}
        assert 3 == len(seen)
        with _selects(engine) as seen:
            records = store.records_for(subjects)
        assert sorted(subjects[::2]) == sorted(r.subject for r in records)
        assert 3 == len(seen)
    finally:
        store.table.drop(engine)
