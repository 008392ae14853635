"""Retention and consent benchmark: consent check cost per batch, sweep rows/s.

1. **Consent check** -- :meth:`custdata.Custodian.authorize` for one fetched
   batch of N subjects (N = 1, 100, 1,000) under a purpose that needs consent,
   with the ledger in memory and in SQL (SQLite file; PostgreSQL when
   ``CUSTDATA_TEST_POSTGRES_URL`` is set), beside the same decision under a
   purpose that needs none. Printed: microseconds per batch and per subject.
2. **Sweep** -- rows per second of :func:`custdata.sqlalchemy.sweep` on
   PostgreSQL with 1 and 2 workers (``FOR UPDATE SKIP LOCKED``), on N rows of
   which half have expired (deleted); the other half are read and kept.

Medians of interleaved repetitions, in one process.

Usage::

    CUSTDATA_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        python benchmarks/bench_retention.py [--rows 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
import uuid

from pathlib import Path
from typing import Any

from sqlalchemy import LargeBinary, Uuid, column, create_engine, insert, table
from sqlalchemy.orm import DeclarativeBase, Mapped


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import custdata  # noqa: E402

from custdata import Action, FieldPolicy  # noqa: E402
from custdata.crypto import Keyring  # noqa: E402
from custdata.governance import ConsentLedger  # noqa: E402
from custdata.sqlalchemy import (  # noqa: E402
    SqlConsentStore,
    UtcDateTime,
    customer_data,
    retention_anchor,
    subject_key,
    sweep,
)


UTC = dt.timezone.utc
T0 = dt.datetime(2020, 3, 1, tzinfo=UTC)
NOW = dt.datetime(2026, 12, 1, tzinfo=UTC)
POLICY = custdata.Policy.from_toml(ROOT / "examples" / "custdata.toml")
EMAIL = {
    "email": FieldPolicy(category="contact.email", purposes=["billing", "marketing"])
}


def _time(fn: Any, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def consent_costs(repeat: int) -> None:
    print("consent check per fetched batch (authorize, one decision):")
    stores: list[tuple[str, Any]] = [("memory", None)]
    tmp = tempfile.mkdtemp()
    sqlite = create_engine(f"sqlite:///{tmp}/consent.db")
    stores.append(("sqlite", sqlite))
    pg_url = os.environ.get("CUSTDATA_TEST_POSTGRES_URL")
    pg = create_engine(pg_url) if pg_url else None
    if pg is not None:
        stores.append(("postgresql", pg))
    print(
        f"  {'store':<11} {'subjects':>8} {'no consent':>12} {'consent':>12} "
        f"{'added/batch':>12} {'added/subject':>14}"
    )
    for name, engine in stores:
        store = None
        if engine is not None:
            store = SqlConsentStore(
                engine, table_name=f"bench_consent_{uuid.uuid4().hex[:6]}"
            )
            store.create_table()
        ledger = ConsentLedger.for_policy(POLICY, store)
        custodian = custdata.Custodian(policy=POLICY, consent=ledger, clock=lambda: NOW)
        try:
            for n in (1, 100, 1000):
                subjects = [str(uuid.uuid4()) for _ in range(n)]
                for s in subjects:
                    ledger.grant(
                        s, "marketing", method="web", notice_version="v", now=T0
                    )

                def decide(
                    role: str,
                    purpose: str,
                    subjects: list[str] = subjects,
                    custodian: custdata.Custodian = custodian,
                ) -> None:
                    with custdata.acting_as("u", role=role), custdata.purpose(purpose):
                        for _ in range(20):
                            custodian.authorize(
                                action=Action.READ,
                                entity="customers",
                                fields=EMAIL,
                                subjects=subjects,
                                count=len(subjects),
                            )

                with custodian.activate():
                    plain = (
                        _time(lambda: decide("billing_clerk", "billing"), repeat) / 20
                    )
                    checked = (
                        _time(lambda: decide("marketer", "marketing.email"), repeat)
                        / 20
                    )
                added = checked - plain
                print(
                    f"  {name:<11} {n:>8} {plain * 1e6:>10.1f}µs {checked * 1e6:>10.1f}µs "
                    f"{added * 1e6:>10.1f}µs {added / n * 1e6:>12.2f}µs"
                )
        finally:
            if store is not None and engine is not None:
                store.table.drop(engine)
    sqlite.dispose()
    if pg is not None:
        pg.dispose()


def expiry_cost(repeat: int) -> None:
    """The added cost of the expired-is-not-readable check per fetched batch."""
    from custdata.sqlalchemy import SqlRetentionGuard

    print("expired-is-not-readable check per fetched batch (SqlRetentionGuard):")
    urls = [("sqlite", f"sqlite:///{tempfile.mkdtemp()}/expiry.db")]
    if os.environ.get("CUSTDATA_TEST_POSTGRES_URL"):
        urls.append(("postgresql", os.environ["CUSTDATA_TEST_POSTGRES_URL"]))
    fields = {"name": FieldPolicy(category="name", purposes=["support"])}
    for name, url in urls:
        engine = create_engine(url)
        suffix = uuid.uuid4().hex[:8]

        class Base(DeclarativeBase):
            pass

        class Customer(Base):
            __tablename__ = f"bench_expiry_{suffix}"
            id: Mapped[uuid.UUID] = subject_key()
            last_tx: Mapped[dt.datetime | None] = retention_anchor("last_transaction")
            name: Mapped[str] = customer_data("name", purposes=["support"])

        Base.metadata.create_all(engine)
        try:
            ids = [uuid.uuid4() for _ in range(1000)]
            # Rows written through a plain view: the check reads only the
            # subject and anchor columns.
            raw = table(
                Customer.__tablename__,
                column("id", Uuid()),
                column("last_tx", UtcDateTime()),
                column("name", LargeBinary()),
            )
            with engine.begin() as conn:
                conn.execute(
                    insert(raw), [{"id": i, "last_tx": NOW, "name": b"x"} for i in ids]
                )
            guard = SqlRetentionGuard(engine, POLICY, tables=Base)
            for n in (1, 100, 1000):
                subjects = [str(i) for i in ids[:n]]
                plain = custdata.Custodian(policy=POLICY, clock=lambda: NOW)
                guarded = custdata.Custodian(
                    policy=POLICY, retention=guard, clock=lambda: NOW
                )

                def decide(
                    c: custdata.Custodian, subjects: list[str] = subjects
                ) -> None:
                    with (
                        c.activate(),
                        custdata.acting_as("u", role="support_agent"),
                        custdata.purpose("support"),
                    ):
                        for _ in range(20):
                            c.authorize(
                                action=Action.READ,
                                entity=Customer.__tablename__,
                                fields=fields,
                                subjects=subjects,
                                count=len(subjects),
                            )

                base = _time(lambda c=plain: decide(c), repeat) / 20
                checked = _time(lambda c=guarded: decide(c), repeat) / 20
                added = checked - base
                print(
                    f"  {name:<11} {n:>5} subjects: +{added * 1e6:,.0f}µs per batch, "
                    f"{added / n * 1e6:,.1f}µs per subject"
                )
        finally:
            Base.metadata.drop_all(engine)
            engine.dispose()


def sweep_rate(rows: int, repeat: int) -> None:
    url = os.environ.get("CUSTDATA_TEST_POSTGRES_URL")
    if not url:
        print("sweep: set CUSTDATA_TEST_POSTGRES_URL to measure on PostgreSQL")
        return
    engine = create_engine(url, pool_size=8)
    keyring = Keyring.generate()
    custodian = custdata.Custodian(policy=POLICY, keyring=keyring, clock=lambda: NOW)
    print(f"sweep on PostgreSQL, {rows} rows (half expired), batch 500:")
    results: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repeat):
        for workers in (1, 2):
            suffix = uuid.uuid4().hex[:8]

            class Base(DeclarativeBase):
                pass

            class Customer(Base):
                __tablename__ = f"bench_sweep_{suffix}"
                id: Mapped[uuid.UUID] = subject_key()
                last_tx: Mapped[dt.datetime | None] = retention_anchor(
                    "last_transaction"
                )
                name: Mapped[str] = customer_data("name", purposes=["support"])
                email: Mapped[str | None] = customer_data(
                    "contact.email", purposes=["support"]
                )

            Base.metadata.create_all(engine)
            try:
                with (
                    custodian.activate(),
                    custdata.acting_as("b", role="support_agent"),
                    custdata.purpose("support"),
                    engine.begin() as conn,
                ):
                    conn.execute(
                        insert(Customer.__table__),
                        [
                            {
                                "id": uuid.uuid4(),
                                "last_tx": T0 if i % 2 else NOW,
                                "name": "Hanako",
                                "email": "h@example.jp",
                            }
                            for i in range(rows)
                        ],
                    )
                start = time.perf_counter()
                report = sweep(engine, custodian, tables=Base, now=NOW, workers=workers)
                elapsed = time.perf_counter() - start
                if report.total("delete_row") != rows // 2:
                    raise RuntimeError(f"unexpected sweep result: {report}")
                results[workers].append(rows / elapsed)
            finally:
                Base.metadata.drop_all(engine)
    for workers, rates in results.items():
        print(
            f"  {workers} worker(s): {statistics.median(rates):>10,.0f} rows/s scanned"
        )
    ratio = statistics.median(
        b / a for a, b in zip(results[1], results[2], strict=True)
    )
    print(f"  2 workers / 1 worker: {ratio:.2f}x")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    consent_costs(args.repeat)
    expiry_cost(args.repeat)
    sweep_rate(args.rows, max(3, args.repeat // 2))


if __name__ == "__main__":
    main()
