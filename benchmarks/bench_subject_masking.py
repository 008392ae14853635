"""Per-subject masking and restriction checks: cost per fetched batch.

A Core ``SELECT id, email`` of N rows (N = 100, 1,000) whose one customer-data
field says ``on_violation = "mask"``, fetched in one batch, under:

- ``baseline``   -- billing (no consent needed), no restriction register;
- ``restrict-0`` -- billing, a restriction register (same store kind as the
  consent ledger) in which no subject is restricted (the per-batch lookup);
- ``restrict-½`` -- billing, half the subjects restricted: masked;
- ``consent``    -- marketing (needs consent), every subject consented;
- ``consent-½``  -- marketing, half the subjects without consent: masked.

Ledger and register in memory, and in SQL (the same database as the rows).
Printed: milliseconds per batch (the best of interleaved repetitions: on a
shared machine the minimum is the least disturbed figure) and the ratio to the
baseline measured in the same run. SQLite file always;
PostgreSQL when ``CUSTDATA_TEST_POSTGRES_URL`` is set.

Usage::

    python benchmarks/bench_subject_masking.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
import uuid

from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from sqlalchemy import create_engine, select  # noqa: E402
from sqlalchemy.orm import DeclarativeBase, Mapped, Session  # noqa: E402

import custdata  # noqa: E402

from custdata.crypto import Keyring  # noqa: E402
from custdata.governance import ConsentLedger, Restrictions  # noqa: E402
from custdata.sqlalchemy import (  # noqa: E402
    SqlConsentStore,
    SqlRestrictionStore,
    customer_data,
    subject_key,
)


UTC = dt.timezone.utc
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)
POLICY = custdata.Policy.from_toml(ROOT / "examples" / "custdata.toml")


def _models() -> Any:
    suffix = uuid.uuid4().hex[:8]

    class Base(DeclarativeBase):
        pass

    class Lead(Base):
        __tablename__ = f"bench_mask_{suffix}"
        id: Mapped[uuid.UUID] = subject_key()
        email: Mapped[str | None] = customer_data(
            "contact.email", purposes=["billing", "marketing"], on_violation="mask"
        )

    return Base, Lead


def run(name: str, url: str, repeat: int, sql: bool) -> None:
    engine = create_engine(url)
    base, lead_model = _models()
    base.metadata.create_all(engine)
    keyring = Keyring.generate()
    consent_store = rst_store = half_store = half_store_r = None
    if sql:
        consent_store = SqlConsentStore(
            engine, table_name=f"bench_mc_{uuid.uuid4().hex[:6]}"
        )
        consent_store.create_table()
        rst_store = SqlRestrictionStore(
            engine, table_name=f"bench_mr_{uuid.uuid4().hex[:6]}"
        )
        rst_store.create_table()
    try:
        writer = custdata.Custodian(policy=POLICY, keyring=keyring)
        ids: list[uuid.UUID] = []
        with (
            writer.activate(),
            Session(engine) as session,
            custdata.acting_as("w", role="billing_clerk"),
            custdata.purpose("billing"),
        ):
            leads = [lead_model(email=f"user{i}@example.jp") for i in range(1000)]
            session.add_all(leads)
            session.commit()
            ids = [lead.id for lead in leads]
        full = ConsentLedger.for_policy(POLICY, consent_store)
        for i in ids[::2]:
            full.grant(i, "marketing", method="w", notice_version="v", now=T0)
        # The second half consents only to the "full" scenario: scoped grants
        # would still be looked up; a second table keeps the stores apart.
        if sql:
            half_store = SqlConsentStore(
                engine, table_name=f"bench_mh_{uuid.uuid4().hex[:6]}"
            )
            half_store.create_table()
        half = ConsentLedger.for_policy(POLICY, half_store)
        for i in ids[::2]:
            half.grant(i, "marketing", method="w", notice_version="v", now=T0)
        for i in ids[1::2]:
            full.grant(i, "marketing", method="w", notice_version="v", now=T0)
        none_restricted = Restrictions.for_policy(POLICY, rst_store)
        if sql:
            half_store_r = SqlRestrictionStore(
                engine, table_name=f"bench_mr_{uuid.uuid4().hex[:6]}"
            )
            half_store_r.create_table()
        half_restricted = Restrictions.for_policy(POLICY, half_store_r)
        for i in ids[1::2]:
            half_restricted.restrict(i, reason="r", actor="a", at=T0)
        billing = ("c", "billing_clerk", "billing")
        marketing = ("m", "marketer", "marketing.email")
        scenarios = {
            "baseline": (custdata.Custodian(policy=POLICY, keyring=keyring), billing),
            "restrict-0": (
                custdata.Custodian(
                    policy=POLICY, keyring=keyring, restrictions=none_restricted
                ),
                billing,
            ),
            "restrict-½": (
                custdata.Custodian(
                    policy=POLICY, keyring=keyring, restrictions=half_restricted
                ),
                billing,
            ),
            "consent": (
                custdata.Custodian(policy=POLICY, keyring=keyring, consent=full),
                marketing,
            ),
            "consent-½": (
                custdata.Custodian(policy=POLICY, keyring=keyring, consent=half),
                marketing,
            ),
        }
        for n in (100, 1000):
            wanted = ids[:n]
            query = select(lead_model.id, lead_model.email).where(
                lead_model.id.in_(wanted)
            )
            samples: dict[str, list[float]] = {k: [] for k in scenarios}
            for _ in range(repeat):
                for key, (custodian, (actor, role, purpose)) in scenarios.items():
                    with (
                        custodian.activate(),
                        custdata.acting_as(actor, role=role),
                        custdata.purpose(purpose),
                        engine.connect() as conn,
                    ):
                        start = time.perf_counter()
                        rows = conn.execute(query).all()
                        samples[key].append(time.perf_counter() - start)
                        if len(rows) != n:
                            raise SystemExit(f"{key}: {len(rows)} rows, not {n}")
            reference = min(samples["baseline"])
            cells = "  ".join(
                f"{key} {min(v) * 1e3:6.2f} ms (×{min(v) / reference:4.2f})"
                for key, v in samples.items()
            )
            store = "sql" if sql else "memory"
            print(f"  {name:<10} {store:<6} N={n:<5} {cells}")
    finally:
        base.metadata.drop_all(engine)
        for s in (consent_store, rst_store):
            if s is not None:
                s.table.drop(engine)
        for extra in (half_store, half_store_r):
            if extra is not None:
                extra.table.drop(engine)
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    urls = [("sqlite", f"sqlite:///{tempfile.mkdtemp()}/mask.db")]
    if os.environ.get("CUSTDATA_TEST_POSTGRES_URL"):
        urls.append(("postgresql", os.environ["CUSTDATA_TEST_POSTGRES_URL"]))
    print("one Core SELECT of N rows, one fetched batch (best of N; × baseline):")
    for name, url in urls:
        for sql in (False, True):
            run(name, url, args.repeat, sql)


if __name__ == "__main__":
    main()
