"""Investigation queries over millions of audit events on PostgreSQL.

Loads N synthetic events (and their subject fan-out) with COPY into fresh tables,
builds the indexes, then times each query of :class:`custdata.audit.AuditQuery`.
Run: ``python benchmarks/bench_audit_queries.py [--events 2000000] [--db URL]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import time

import sqlalchemy as sa

from custdata.audit import AuditQuery, audit_tables


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--db", default=os.environ.get("CUSTDATA_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    if not args.db or not args.db.startswith("postgresql"):
        raise SystemExit(
            "pass --db postgresql+psycopg://... or set CUSTDATA_TEST_POSTGRES_URL"
        )
    prefix = f"bench_q_{os.urandom(3).hex()}"
    engine = sa.create_engine(args.db)
    md = sa.MetaData()
    tables = audit_tables(md, prefix=prefix)
    # Load first, index afterwards (as a bulk restore would).
    indexes = [ix for t in (tables.event, tables.subject) for ix in t.indexes]
    for t in (tables.event, tables.subject):
        t.indexes.clear()
    md.create_all(engine)
    rng = random.Random(7)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    actors = [f"u-{i}" for i in range(2_000)]
    subjects = [f"sr_{i:026d}"[:29] for i in range(200_000)]
    purposes = ["support", "billing", "marketing", "shipping"]
    n = args.events
    start = time.perf_counter()
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        zero = bytes(32)
        with cur.copy(  # type: ignore[attr-defined]
            f"COPY {tables.event.name} (chain, seq, key_ref, prev, mac, body_sha256, body, ts,"
            " action, outcome, actor_id, subject_ref, entity, purpose) FROM STDIN"
        ) as copy:
            for i in range(n):
                chain = f"bench/app/{i % 16}"
                ts = t0 + dt.timedelta(seconds=i * 15)
                action = (
                    "field.reveal"
                    if i % 10
                    else ("export.third_party" if i % 20 == 0 else "purpose.check")
                )
                copy.write_row(
                    (
                        chain,
                        i // 16 + 1,
                        "1",
                        i.to_bytes(32, "big"),
                        os.urandom(4) + zero[4:],
                        zero,
                        b"{}",
                        ts,
                        action,
                        "allowed",
                        rng.choice(actors),
                        rng.choice(subjects),
                        "customers",
                        rng.choice(purposes),
                    )
                )
        with cur.copy(  # type: ignore[attr-defined]
            f"COPY {tables.subject.name} (chain, seq, subject_ref, actor_id, ts, action, purpose)"
            " FROM STDIN"
        ) as fan:
            rng = random.Random(7)
            for i in range(n):
                chain = f"bench/app/{i % 16}"
                ts = t0 + dt.timedelta(seconds=i * 15)
                action = (
                    "field.reveal"
                    if i % 10
                    else ("export.third_party" if i % 20 == 0 else "purpose.check")
                )
                actor = rng.choice(actors)
                for ref in {rng.choice(subjects) for _ in range(1 + (i % 3 == 0))}:
                    fan.write_row(
                        (
                            chain,
                            i // 16 + 1,
                            ref,
                            actor,
                            ts,
                            action,
                            rng.choice(purposes),
                        )
                    )
        raw.commit()
    finally:
        raw.close()
    load = time.perf_counter() - start
    start = time.perf_counter()
    with engine.begin() as conn:
        for ix in indexes:
            ix.create(conn)
        conn.exec_driver_sql(f"ANALYZE {tables.event.name}")
        conn.exec_driver_sql(f"ANALYZE {tables.subject.name}")
    index = time.perf_counter() - start
    q = AuditQuery(engine, prefix=prefix)
    week = (t0 + dt.timedelta(days=60), t0 + dt.timedelta(days=67))
    rows = [
        ("load (COPY)", f"{load:.1f} s", f"{n:,} events"),
        ("build indexes", f"{index:.1f} s", ""),
    ]

    def timed(name: str, fn: object) -> None:
        best = float("inf")
        result = None
        for _ in range(3):
            s = time.perf_counter()
            result = fn()  # type: ignore[operator]
            best = min(best, time.perf_counter() - s)
        rows.append(
            (
                name,
                f"{best * 1000:.1f} ms",
                f"{len(result.values):,} values, {result.event_count:,} events",
            )
        )  # type: ignore[attr-defined]

    timed(
        "subjects_revealed(actor, 1 week)",
        lambda: q.subjects_revealed("u-17", since=week[0], until=week[1]),
    )
    timed(
        "subjects_revealed(actor, whole range)",
        lambda: q.subjects_revealed(
            "u-17", since=t0, until=t0 + dt.timedelta(days=3650)
        ),
    )
    timed(
        "subjects_revealed(actor, 1 week, purpose)",
        lambda: q.subjects_revealed(
            "u-17", since=week[0], until=week[1], purposes=["billing"]
        ),
    )
    timed(
        "accessors_of(subject, whole range)",
        lambda: q.accessors_of(
            subject_ref=subjects[4242], since=t0, until=t0 + dt.timedelta(days=3650)
        ),
    )
    timed("exports(1 week)", lambda: q.exports(since=week[0], until=week[1]))
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10}  {note}")
    tables.metadata.drop_all(engine)
    engine.dispose()


if __name__ == "__main__":
    main()
