"""reencrypt() and index_usage(): what is left is counted, index entries by key."""

from __future__ import annotations

import sys

from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlalchemy import LargeBinary, column, create_engine, select, table, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import custdata

from custdata.audit import AuditTrail, MemorySink
from custdata.crypto import Keyring
from custdata.sqlalchemy import index_usage, key_usage, reencrypt


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from examples.shop.models import Base, Customer  # noqa: E402


@pytest.fixture
def shop(
    db_url: str, sample_policy: custdata.Policy
) -> Iterator[tuple[Engine, custdata.Custodian]]:
    """The example shop's tables with five customers, and their custodian."""
    engine = create_engine(db_url)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    custodian = custdata.Custodian(policy=sample_policy, keyring=Keyring.generate())
    with (
        custodian.activate(),
        Session(engine) as session,
        custdata.acting_as("c-1", role="billing_clerk"),
        custdata.purpose("billing"),
    ):
        session.add_all(
            Customer(name=f"n{i}", email=f"m{i}@example.jp") for i in range(5)
        )
        session.commit()
    try:
        yield engine, custodian
    finally:
        Base.metadata.drop_all(engine)
        engine.dispose()


class TestWhatIsLeft:
    """A value that does not decrypt is left alone, counted, and the run is not complete."""

    def test_damaged_value_counted_as_failed(
        self, shop: tuple[Engine, custdata.Custodian]
    ) -> None:
        """One damaged envelope: failed 1, remaining 1, the other values moved."""
        engine, custodian = shop
        raw = table("shop_customers", column("id"), column("name", LargeBinary()))
        with engine.begin() as conn:
            first_id, stored = conn.execute(
                select(raw.c.id, raw.c.name).order_by(raw.c.id)
            ).first()  # type: ignore[misc]
            damaged = bytes(stored)[:-1] + bytes([bytes(stored)[-1] ^ 1])
            conn.execute(update(raw).where(raw.c.id == first_id).values(name=damaged))
        custodian.keyring.rotate()
        report = reencrypt(engine, custodian, tables=Base)
        assert (1, 1, 9, False) == (
            report.failed,
            report.remaining,
            report.reencrypted,
            report.complete,
        )
        with engine.connect() as conn:
            assert damaged == bytes(
                conn.execute(
                    select(raw.c.name).where(raw.c.id == first_id)
                ).scalar_one()
            )

    def test_index_key_alone(self, shop: tuple[Engine, custdata.Custodian]) -> None:
        """Only the index key rotated: every entry recomputed, no value re-encrypted."""
        engine, custodian = shop
        old = custodian.keyring.primary_index_key_id
        custodian.keyring.rotate_index_key()
        assert [("email_bidx", old, 5)] == [
            (u.column, u.key_id, u.count)
            for u in index_usage(engine, custodian, tables=Base)
        ]
        report = reencrypt(engine, custodian, tables=Base)
        assert (0, 5, True) == (report.reencrypted, report.reindexed, report.complete)
        new = custodian.keyring.primary_index_key_id
        assert [("email_bidx", new, 5)] == [
            (u.column, u.key_id, u.count)
            for u in index_usage(engine, custodian, tables=Base)
        ]


class TestIndexUsage:
    """index_usage decrypts, so it records its batches first."""

    def test_batches_recorded(
        self, shop: tuple[Engine, custdata.Custodian], tmp_path: Path
    ) -> None:
        """One record.bulk_update per batch, by the index-usage actor, naming the field."""
        engine, custodian = shop
        sink = MemorySink()
        trail = AuditTrail(custodian.keyring, sinks=[sink], checkpoint_interval=None)

        class Keys:
            keyring = custodian.keyring
            subject_keys = None
            audit = trail

        try:
            usage = index_usage(engine, Keys(), tables=Base, batch_size=2)
        finally:
            trail.close()
        assert 5 == sum(u.count for u in usage)
        batches = [
            (r.fields["actor"]["id"], r.fields["fields"], r.fields["count"])
            for r in sink.records
            if r.fields["action"] == "record.bulk_update"
        ]
        assert [("custdata.index-usage", ["email"], n) for n in (2, 2, 1)] == batches
        assert {u.key_id for u in key_usage(engine, tables=Base)} == {
            custodian.keyring.primary_key_id
        }
