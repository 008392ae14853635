"""Verifying the audit tables streams: bounded memory, pages of rows, the same findings.

No timing assertions: the memory a verification holds is measured with
``tracemalloc`` for two sizes of one trail, and a verification that reads the
tables a few rows per page must name exactly what one big page names.
"""

from __future__ import annotations

import sys
import tracemalloc

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from hypothesis import given, settings
from hypothesis import strategies as st


sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_fixtures import T0, FakeKeys, SqlStore, Store, decision, store_for
from custdata import ConfigurationError
from custdata.audit import (
    AuditTrail,
    Checkpointer,
    CheckpointSigner,
    CheckpointVerifier,
    FileAnchor,
    JsonLinesSink,
    JsonLinesSource,
    SqlSink,
    SqlSource,
    audit_tables,
    verify_trail,
)
from custdata.audit._merkle import MerkleAccumulator, leaf_hash


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    for store in store_for(request.param, tmp_path, request):
        assert isinstance(store, SqlStore)
        yield store


def _write(
    store: SqlStore,
    keys: FakeKeys,
    n: int,
    *,
    service: str = "w",
    also: Path | None = None,
) -> str:
    """Write *n* reveals of three subjects each on one new chain; return its id.

    With *also*, the same records go to that JSON-lines file too.
    """
    sink = SqlSink(
        store.url, prefix=store.prefix, create=False, mode="async", block_timeout=60
    )
    sinks: list[Any] = [sink] if also is None else [sink, JsonLinesSink(also)]
    trail = AuditTrail(keys, sinks=sinks, checkpoint_interval=None, service=service)
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


def _peak_of(read: Callable[[], object]) -> int:
    """Peak traced memory while *read* runs."""
    tracemalloc.start()
    try:
        read()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _drain(rows: Iterator[object]) -> int:
    """Consume *rows* one at a time, holding none; return how many there were."""
    n = 0
    for _ in rows:
        n += 1
    return n


class TestCheckpointReadsStream:
    """What the checkpointer and the fallback verifier read of the tables, page by page."""

    def test_entries_and_fanout_in_bounded_memory(self, sql_store: SqlStore) -> None:
        """Reading 5x the rows past the heads (and the fan-out) peaks within 1.5x.

        Before, both were read into one list or dict: 25,000 events took
        about five times the memory of 5,000.
        """
        keys = FakeKeys()
        source = SqlSource(sql_store.engine, sql_store.tables, chunk=200)
        _write(sql_store, keys, 5_000)
        counts: list[int] = []
        small_entries = _peak_of(
            lambda: counts.append(_drain(source.entries_after({})))
        )
        small_fanout = _peak_of(lambda: counts.append(_drain(source.subject_rows())))
        _write(sql_store, keys, 20_000, service="w2")
        large_entries = _peak_of(
            lambda: counts.append(_drain(source.entries_after({})))
        )
        large_fanout = _peak_of(lambda: counts.append(_drain(source.subject_rows())))
        # Two chain events per chain besides the reveals; three subjects each.
        assert [5_002, 15_000, 25_004, 75_000] == counts
        assert large_entries < small_entries * 1.5, (small_entries, large_entries)
        assert large_fanout < small_fanout * 1.5, (small_fanout, large_fanout)

    def test_a_checkpoint_in_bounded_memory(
        self, sql_store: SqlStore, tmp_path: Path
    ) -> None:
        """Checkpointing 25,000 new rows peaks within 1.5x of checkpointing 5,000."""
        keys = FakeKeys()
        signer = CheckpointSigner.generate("test.example/audit")
        source = SqlSource(sql_store.engine, sql_store.tables, chunk=200)
        _write(sql_store, keys, 5_000)
        small = _peak_of(
            lambda: Checkpointer(
                source, signer, FileAnchor(tmp_path / "a1.jsonl")
            ).checkpoint()
        )
        _write(sql_store, keys, 20_000, service="w2")
        anchor = FileAnchor(tmp_path / "a2.jsonl")
        large = _peak_of(lambda: Checkpointer(source, signer, anchor).checkpoint())
        assert large < small * 1.5, (small, large)
        report = verify_trail(
            source,
            keys,
            checkpoints=anchor,
            verifier=CheckpointVerifier(signer.verifier_key),
        )
        assert report.intact, report.kinds()
        assert 25_004 == report.events

    def test_the_same_checkpoints_as_the_file(
        self, sql_store: SqlStore, tmp_path: Path
    ) -> None:
        """Chains read in pages give the checkpoints the same records in a file give.

        Three chains, checkpointed after each is written (so each checkpoint
        extends from the heads of the one before), 7 rows a page.
        """
        keys = FakeKeys()
        path = tmp_path / "audit.jsonl"
        signer = CheckpointSigner.generate("test.example/audit")
        from_sql = Checkpointer(
            SqlSource(sql_store.engine, sql_store.tables, chunk=7),
            signer,
            FileAnchor(tmp_path / "sql.jsonl"),
        )
        from_file = Checkpointer(
            JsonLinesSource(path), signer, FileAnchor(tmp_path / "file.jsonl")
        )
        for n, service in ((30, "b"), (45, "a"), (12, "c")):
            _write(sql_store, keys, n, service=service, also=path)
            sql_cp, file_cp = from_sql.checkpoint(now=T0), from_file.checkpoint(now=T0)
            assert (file_cp.tree_size, file_cp.root, file_cp.heads) == (
                sql_cp.tree_size,
                sql_cp.root,
                sql_cp.heads,
            )
        assert 93 == sql_cp.tree_size

    def test_a_run_ends_at_its_first_gap(
        self, sql_store: SqlStore, tmp_path: Path
    ) -> None:
        """A chain with a missing row is checkpointed up to the row before it."""
        keys = FakeKeys()
        chain = _write(sql_store, keys, 20)
        sql_store.delete(chain, [9])
        cp = Checkpointer(
            SqlSource(sql_store.engine, sql_store.tables, chunk=3),
            CheckpointSigner.generate("test.example/audit"),
            FileAnchor(tmp_path / "a.jsonl"),
        ).checkpoint(now=T0)
        assert [(chain, 8)] == [(c, s) for c, s, _ in cp.heads]


class _Entries:
    """A trail source that yields given entries (checkpoint order is the caller's)."""

    def __init__(self, entries: list[tuple[str, int, bytes | None]]) -> None:
        self.entries = entries

    def entries_after(
        self, heads: Mapping[str, int]
    ) -> Iterator[tuple[str, int, bytes | None]]:
        return iter([e for e in self.entries if e[1] > heads.get(e[0], 0)])


def _reference(
    entries: list[tuple[str, int, bytes | None]],
) -> tuple[int, bytes, list[tuple[str, int, bytes]]]:
    """The checkpointer's algorithm as it was: every entry in a dict first."""
    by_chain: dict[str, dict[int, bytes | None]] = {}
    for chain, seq, mac in entries:
        by_chain.setdefault(chain, {})[seq] = mac
    tree = MerkleAccumulator()
    heads: list[tuple[str, int, bytes]] = []
    for chain in sorted(by_chain):
        seq = 1
        while (mac := by_chain[chain].get(seq)) is not None:
            tree.append(leaf_hash(chain, seq, mac))
            seq += 1
        if seq > 1:
            heads.append((chain, seq - 1, by_chain[chain][seq - 1]))  # type: ignore[arg-type]
    return tree.size, tree.root(), heads


_MACS = st.sampled_from([None, b"\x01" * 32, b"\x02" * 32, b"\x03" * 32])


class TestCheckpointerReadsOnce:
    """The checkpointer extends its tree from one pass over entries in checkpoint order."""

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.tuples(st.sampled_from(["a", "b", "c/1"]), st.integers(1, 8), _MACS),
            max_size=40,
        )
    )
    def test_the_same_tree_as_reading_everything_first(
        self, raw: list[tuple[str, int, bytes | None]]
    ) -> None:
        """Gaps, MAC-less records and repeated positions (the last read counts) as before."""
        entries = sorted(raw, key=lambda e: (e[0], e[1]))
        cp = Checkpointer(
            _Entries(entries),  # type: ignore[arg-type]
            CheckpointSigner.generate("test.example/audit"),
            _NoAnchor(),
        ).checkpoint(now=T0)
        size, root, heads = _reference(entries)
        assert (size, root, heads) == (cp.tree_size, cp.root, list(cp.heads))

    @pytest.mark.parametrize(
        "entries",
        [
            [("b", 1, b"\x01" * 32), ("a", 1, b"\x01" * 32)],
            [("a", 2, b"\x01" * 32), ("a", 1, b"\x01" * 32)],
        ],
        ids=["chains", "seqs"],
    )
    def test_entries_out_of_order_are_refused(
        self, entries: list[tuple[str, int, bytes | None]]
    ) -> None:
        """A source that breaks checkpoint order gets a ValueError, not a wrong root."""
        cp = Checkpointer(
            _Entries(entries),  # type: ignore[arg-type]
            CheckpointSigner.generate("test.example/audit"),
            _NoAnchor(),
        )
        with pytest.raises(ValueError, match="order"):
            cp.checkpoint(now=T0)


class _NoAnchor:
    """An anchor that keeps checkpoints in a list."""

    def __init__(self) -> None:
        self.kept: list[str] = []

    def append(self, record: str) -> None:
        self.kept.append(record)

    def records(self) -> list[str]:
        return list(self.kept)
