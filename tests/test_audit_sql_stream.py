"""Verifying the audit tables streams: bounded memory, pages of rows, the same findings.

No timing assertions: the memory a verification holds is measured with
``tracemalloc`` for two sizes of one trail, and a verification that reads the
tables a few rows per page must name exactly what one big page names.
"""

from __future__ import annotations

import sys
import tracemalloc

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa


sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_fixtures import T0, FakeKeys, SqlStore, Store, decision, store_for
from custdata import ConfigurationError
from custdata.audit import AuditTrail, SqlSink, SqlSource, audit_tables, verify_trail


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    for store in store_for(request.param, tmp_path, request):
        assert isinstance(store, SqlStore)
        yield store


def _write(store: SqlStore, keys: FakeKeys, n: int, *, service: str = "w") -> str:
    """Write *n* reveals of three subjects each on one new chain; return its id."""
    sink = SqlSink(store.url, prefix=store.prefix, create=False, mode="async")
    trail = AuditTrail(keys, sinks=[sink], checkpoint_interval=None, service=service)
    for i in range(n):
        trail.record_decision(
            decision("u-1", subjects=(f"a-{i}", f"b-{i}", f"c-{i}")), now=T0
        )
    trail.flush(timeout=120)
    chain = str(trail.chain)
    trail.close()
    return chain


def _peak(source: SqlSource, keys: FakeKeys) -> int:
    tracemalloc.start()
    try:
        report = verify_trail(source, keys)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.intact, report.kinds()
    assert report.events > 0
    return peak


def test_memory_does_not_grow_with_the_tables(sql_store: SqlStore) -> None:
    """Peak traced memory of verifying 5x the rows stays within 1.5x.

    Holding the rows (the algorithm before) took over 1 KB per row and the
    whole fan-out table besides; streaming holds a page, the reorder buffer
    and 32 bytes of MAC per row.
    """
    keys = FakeKeys()
    source = SqlSource(sql_store.engine, sql_store.tables, chunk=100)
    _write(sql_store, keys, 600)
    small = _peak(source, keys)
    _write(sql_store, keys, 2_400, service="w2")
    with sql_store.engine.connect() as conn:
        rows = conn.scalar(
            sa.select(sa.func.count()).select_from(sql_store.tables.event)
        )
    assert rows is not None
    assert rows >= 3_000
    large = _peak(source, keys)
    assert large < small * 1.5, (small, large)


def _kinds(store: Store, keys: FakeKeys, chunk: int) -> list[tuple[object, ...]]:
    assert isinstance(store, SqlStore)
    report = verify_trail(SqlSource(store.engine, store.tables, chunk=chunk), keys)
    return [
        (f.kind.value, f.chain, f.seq, f.last_seq, f.column, f.detail)
        for f in report.findings
    ]


def _copy(store: SqlStore, chain: str, seq: int, *, times: int) -> None:
    t = store.tables.event
    with store.engine.begin() as conn:
        row = dict(
            conn.execute(sa.select(t).where(t.c.chain == chain, t.c.seq == seq))
            .one()
            ._mapping
        )
        del row["id"]
        for _ in range(times):
            conn.execute(t.insert(), row)


def test_small_pages_name_the_same_findings(sql_store: SqlStore) -> None:
    """Duplicates, gaps, edits and orphan fan-out rows at page boundaries, 3 rows a page."""
    keys = FakeKeys()
    first = _write(sql_store, keys, 40)
    second = _write(sql_store, keys, 25, service="w2")
    # Page boundaries with 3 rows a page fall after seq 3, 6, 9, … (the
    # copies of seq 4 straddle one).
    sql_store.duplicate(first, 3)  # drops the unique constraints
    _copy(sql_store, first, 4, times=2)
    sql_store.flip_body_byte(first, 10)
    sql_store.delete(first, [20, 21])
    sql_store.set_column(second, 7, "purpose", "marketing")
    t, s = sql_store.tables.event, sql_store.tables.subject
    with sql_store.engine.begin() as conn:
        # Fan-out rows of a deleted record (an orphan) and past the last one
        # (a live writer's, not an orphan).
        for seq in (21, 99):
            conn.execute(
                s.insert().values(
                    chain=first,
                    seq=seq,
                    subject_ref="ghost",
                    actor_id="u-1",
                    ts=T0.replace(tzinfo=None),
                    action="field.reveal",
                    purpose="support",
                )
            )
        conn.execute(s.delete().where(s.c.chain == second, s.c.seq == 12))
        assert (
            conn.scalar(sa.select(sa.func.count()).select_from(t)) == 70
        )  # 65 reveals, 4 chain events, 3 copies, 2 deleted
    small = _kinds(sql_store, keys, 3)
    assert small == _kinds(sql_store, keys, 20_000)
    found = {(kind, chain, seq, column) for kind, chain, seq, _, column, _ in small}
    assert ("DUPLICATE", first, 3, None) in found
    assert ("MODIFIED", first, 10, None) in found
    assert ("MISSING", first, 20, None) in found
    assert ("COLUMN_MISMATCH", first, 21, "subject_fanout") in found
    assert ("COLUMN_MISMATCH", second, 7, "purpose") in found
    assert ("COLUMN_MISMATCH", second, 12, "subject_fanout") in found
    assert not any(seq == 99 for _, _, seq, _ in found)


@pytest.mark.parametrize("chunk", [0, -5, 2.5, True])
def test_a_page_size_that_is_no_size_is_refused(chunk: object, tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    with pytest.raises(ConfigurationError, match="chunk"):
        SqlSource(engine, audit_tables(prefix="t"), chunk=chunk)  # type: ignore[arg-type]
    engine.dispose()
