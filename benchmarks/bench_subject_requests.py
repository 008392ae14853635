"""Data-subject requests: the cost of locate, disclose and erase for one subject.

A customer table of N subjects (N = 1,000 and 10,000) and an orders table with
three orders per subject. For one subject at a time, timed side by side in one
run (median of interleaved repetitions, each on a different subject):

- ``orm read``   -- the baseline: the application reads the same rows itself
  (``session.get`` of the customer, its orders by a query, every field read);
- ``locate``     -- :func:`custdata.sqlalchemy.locate_subject` by subject id;
- ``locate@``    -- the same, by e-mail through the blind index;
- ``disclose``   -- :func:`custdata.sqlalchemy.disclose_subject` to JSON;
- ``erase``      -- :func:`custdata.sqlalchemy.erase_subject` (rows deleted).

Printed: milliseconds per request and the ratio to the baseline. The audit
trail writes JSON lines to a temporary file. SQLite file always; PostgreSQL
when ``CUSTDATA_TEST_POSTGRES_URL`` is set.

Usage::

    python benchmarks/bench_subject_requests.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import statistics
import sys
import tempfile
import time
import uuid

from collections.abc import Callable
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from sqlalchemy import create_engine, select  # noqa: E402
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column  # noqa: E402

import custdata  # noqa: E402

from custdata.audit import AuditTrail, JsonLinesSink  # noqa: E402
from custdata.crypto import Keyring  # noqa: E402
from custdata.sqlalchemy import (  # noqa: E402
    customer_data,
    disclose_subject,
    erase_subject,
    locate_subject,
    retention_anchor,
    subject_key,
)


UTC = dt.timezone.utc
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)
POLICY = custdata.Policy.from_toml(ROOT / "examples" / "custdata.toml")


def _models() -> tuple[Any, Any, Any]:
    suffix = uuid.uuid4().hex[:8]

    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = f"bench_dsr_c_{suffix}"
        id: Mapped[uuid.UUID] = subject_key()
        last_order_at: Mapped[dt.datetime | None] = retention_anchor("last_transaction")
        name: Mapped[str] = customer_data("name", purposes=["support"])
        email: Mapped[str] = customer_data(
            "contact.email", purposes=["support"], searchable=True
        )

    class Order(Base):
        __tablename__ = f"bench_dsr_o_{suffix}"
        id: Mapped[int] = mapped_column(primary_key=True)
        customer_id: Mapped[uuid.UUID] = subject_key(f"bench_dsr_c_{suffix}.id")
        note: Mapped[str | None] = customer_data(
            "transaction.history", purposes=["support"]
        )

    return Base, Customer, Order


def _run(url: str, n: int, repeat: int, audit_path: Path) -> dict[str, float]:
    Base, Customer, Order = _models()  # noqa: N806 - classes
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    keyring = Keyring.generate()
    trail = AuditTrail(
        keyring, sinks=[JsonLinesSink(audit_path)], checkpoint_interval=None
    )
    custodian = custdata.Custodian(policy=POLICY, keyring=keyring, audit=trail)
    ids = [uuid.uuid4() for _ in range(n)]
    try:
        with (
            custodian.activate(),
            custdata.acting_as("p-1", role="privacy_desk"),
            custdata.purpose("support"),
        ):
            with Session(engine) as session:
                for i, cid in enumerate(ids):
                    session.add(
                        Customer(
                            id=cid,
                            last_order_at=T0,
                            name=f"Customer {i}",
                            email=f"c{i}@example.jp",
                        )
                    )
                    for k in range(3):
                        session.add(Order(customer_id=cid, note=f"order {k}"))
                    if i % 1000 == 999:
                        session.commit()
                session.commit()

            def orm_read(i: int) -> None:
                with Session(engine) as session:
                    c = session.get(Customer, ids[i])
                    if c is None:
                        raise LookupError("the customer is missing")
                    _ = (c.name, c.email)
                    for o in session.scalars(
                        select(Order).where(Order.customer_id == ids[i])
                    ):
                        _ = o.note

            def locate(i: int) -> None:
                with Session(engine) as session:
                    locate_subject(session, ids[i], tables=Base)

            def locate_by_email(i: int) -> None:
                with Session(engine) as session:
                    locate_subject(
                        session,
                        identifier=("contact.email", f"c{i}@example.jp"),
                        tables=Base,
                    )

            def disclose(i: int) -> None:
                with Session(engine) as session:
                    fp = locate_subject(session, ids[i], tables=Base)
                    disclose_subject(session, fp, "json", io.StringIO())

            def erase(i: int) -> None:
                with Session(engine) as session:
                    fp = locate_subject(session, ids[i], tables=Base)
                    erase_subject(session, fp, now=T0.replace(year=2040))

            ops: dict[str, Callable[[int], None]] = {
                "orm read": orm_read,
                "locate": locate,
                "locate@": locate_by_email,
                "disclose": disclose,
                "erase": erase,
            }
            times: dict[str, list[float]] = {k: [] for k in ops}
            subject = 0
            for _ in range(repeat):
                for name, op in ops.items():
                    # erase consumes its subject: every op gets a fresh one.
                    subject += 1
                    start = time.perf_counter()
                    op(subject)
                    times[name].append(time.perf_counter() - start)
    finally:
        trail.close()
        Base.metadata.drop_all(engine)
        engine.dispose()
    return {k: statistics.median(v) * 1000 for k, v in times.items()}


def main() -> None:
    """Run the benchmark and print ms per request and ratios to the ORM read."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        urls = {"sqlite": f"sqlite:///{Path(tmp) / 'bench.db'}"}
        if os.environ.get("CUSTDATA_TEST_POSTGRES_URL"):
            urls["postgresql"] = os.environ["CUSTDATA_TEST_POSTGRES_URL"]
        for label, url in urls.items():
            for n in (1_000, 10_000):
                result = _run(url, n, args.repeat, Path(tmp) / f"{label}{n}.jsonl")
                base = result["orm read"]
                print(f"{label}, N = {n:,}:")
                for name, ms in result.items():
                    print(f"  {name:9} {ms:7.2f} ms  {ms / base:5.2f}x")


if __name__ == "__main__":
    main()
