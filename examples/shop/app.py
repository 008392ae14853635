"""The shop example: encrypted customer data with purpose checks, search and rotation.

Runs on SQLite in a temporary folder::

    python examples/shop/app.py
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import sys
import tempfile

from pathlib import Path

from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.orm import Session


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from models import Base, Customer, Order  # noqa: E402

import custdata  # noqa: E402

from custdata.crypto import Keyring  # noqa: E402
from custdata.governance import ConsentLedger, LegalHolds, Restrictions  # noqa: E402
from custdata.sqlalchemy import (  # noqa: E402
    disclose_subject,
    erase_subject,
    key_usage,
    locate_subject,
    reencrypt,
    replay_deletions,
    sweep,
)


class PrintRecorder:
    """Prints every access decision (a real application uses custdata.audit)."""

    def record_decision(self, decision: custdata.AccessDecision) -> None:
        """Print the decision: names and outcome only, never values."""
        print(
            f"  audit: {decision.outcome.value:7} {decision.action.value:6} "
            f"{decision.entity or '-'} {list(decision.fields)} purpose={decision.purpose}"
        )


def find_hanako(engine: Engine) -> str:
    """Find Hanako by e-mail through the blind index; her name, read as a support agent."""
    with (
        Session(engine) as session,
        custdata.acting_as("u-102", role="support_agent"),
        custdata.purpose("support"),
    ):
        found = session.scalars(
            select(Customer).where(Customer.email == "hanako@EXAMPLE.jp")
        ).one()
        return found.name


def main() -> None:
    """Run the walkthrough."""
    policy = custdata.Policy.from_toml(HERE.parent / "custdata.toml")
    keyring = Keyring.generate()
    consent = ConsentLedger.for_policy(policy)
    holds = LegalHolds()
    restrictions = Restrictions.for_policy(policy)
    custodian = custdata.Custodian(
        policy=policy,
        keyring=keyring,
        audit=PrintRecorder(),
        consent=consent,
        holds=holds,
        restrictions=restrictions,
    )
    custodian.make_current()

    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(
            f"sqlite:///{Path(tmp) / 'shop.db'}", hide_parameters=True
        )
        Base.metadata.create_all(engine)

        print("1. sign-up: values are written for a purpose and encrypted on write")
        # Each value is written by an actor for a purpose that permits it: the
        # billing clerk enters the billing details, support the contact phone
        # and the order note. A write without an actor is refused.
        with (
            Session(engine, expire_on_commit=False) as session,
            custdata.acting_as("c-9", role="billing_clerk"),
            custdata.purpose("billing"),
        ):
            hanako = Customer(
                name="Yamada Hanako",
                email="Hanako@example.jp",
                card="4111111111111111",
                last_order_at=dt.datetime(2026, 11, 3, tzinfo=dt.timezone.utc),
            )
            order = Order(total=decimal.Decimal(3980))
            hanako.orders.append(order)
            session.add(hanako)
            session.commit()
            hanako_id = hanako.id
        with (
            Session(engine) as session,
            custdata.acting_as("u-102", role="support_agent"),
            custdata.purpose("support"),
        ):
            loaded = session.get(Customer, hanako_id)
            assert loaded is not None
            loaded.phone = "090-1234-5678"
            loaded.orders[0].note = "gift wrap"
            session.commit()

        print("2. at rest: raw SQL sees only ciphertext")
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT email FROM shop_customers")).scalar_one()
            print(f"  stored email: {len(stored)} bytes, starts {stored[:6].hex()}")

        print("3. support agent: allowed fields read, the card is refused")
        with (
            Session(engine) as session,
            custdata.acting_as("u-102", role="support_agent"),
            custdata.purpose("support"),
        ):
            c = session.get(Customer, hanako_id)
            assert c is not None
            print(f"  {c.name} <{c.email}> {c.phone}")
            try:
                print(c.card)
            except custdata.PurposeViolationError as exc:
                print(f"  refused: {exc}")
            # The object holds sealed values, not the plaintexts just read.
            print(f"  the object holds: email={c.__dict__['email']!r}")
        # Carried out of its with block, the object reveals nothing.
        try:
            print(c.email)
        except custdata.ActorRequiredError as exc:
            print(f"  outside the block: refused ({exc})")

        print("4. warehouse: the phone is shown only as a mask")
        with (
            Session(engine) as session,
            custdata.acting_as("w-7", role="warehouse"),
            custdata.purpose("shipping"),
        ):
            print(f"  phone: {session.scalars(select(Customer.phone)).one()}")

        print("5. search by e-mail through the blind index")
        print(f"  found {find_hanako(engine)}")

        print("6. erasure: only a purpose that may_erase deletes records")
        with Session(engine) as session:
            with (
                custdata.acting_as("c-9", role="billing_clerk"),
                custdata.purpose("billing"),
            ):
                order = session.scalars(select(Order)).one()
                try:
                    session.delete(order)
                    session.flush()
                except custdata.PurposeViolationError as exc:
                    print(f"  refused: {exc}")
                    session.rollback()
            with (
                custdata.acting_as("u-102", role="support_agent"),
                custdata.purpose("support"),
            ):
                session.delete(session.scalars(select(Order)).one())
                session.commit()
                print("  the order is erased (record.delete names its subject)")

        print("7. rotate the data and index keys, re-encrypt and re-index in one run")
        old, old_index = keyring.primary_key_id, keyring.primary_index_key_id
        keyring.rotate()
        keyring.rotate_index_key()
        report = reencrypt(engine, custodian, tables=Base)
        print(
            f"  re-encrypted {report.reencrypted} values from key {old} to "
            f"{keyring.primary_key_id}, re-indexed {report.reindexed}; "
            f"nothing left under older keys: {report.complete}"
        )
        # Nothing depends on the old keys any more: retire them, and search again.
        keyring.retire(old)
        keyring.retire(old_index)
        print(f"  after retiring both old keys, found {find_hanako(engine)}")
        for usage in key_usage(engine, tables=Base):
            print(
                f"  {usage.table}.{usage.column}: key {usage.key_id} holds {usage.count}"
            )

        print("8. marketing needs consent: granted, read; withdrawn, refused")
        granted = consent.grant(
            hanako_id, "marketing", method="web_form", notice_version="2026-10"
        )
        with (
            Session(engine) as session,
            custdata.acting_as("m-3", role="marketer"),
            custdata.purpose("marketing.email"),
        ):
            email = session.scalars(select(Customer.email)).one()
            print(f"  with consent {granted.id[:12]}...: {email}")
        consent.withdraw(granted.id)
        with (
            Session(engine) as session,
            custdata.acting_as("m-3", role="marketer"),
            custdata.purpose("marketing.email"),
        ):
            try:
                session.scalars(select(Customer.email)).one()
            except custdata.ConsentRequiredError as exc:
                print(f"  after the withdrawal: refused ({exc})")

        print(
            "9. restriction of use (利用停止): support refused, billing allowed, lifted"
        )
        restrictions.restrict(
            hanako_id,
            allowed_purposes={"billing"},
            reason="asked us to stop contacting her",
            actor="dpo-1",
            request_id="dsr-7",
        )
        with (
            Session(engine) as session,
            custdata.acting_as("u-102", role="support_agent"),
            custdata.purpose("support"),
        ):
            try:
                session.scalars(select(Customer.name)).one()
            except custdata.SubjectRestrictedError as exc:
                print(f"  support while restricted: refused ({exc})")
        with (
            Session(engine) as session,
            custdata.acting_as("c-9", role="billing_clerk"),
            custdata.purpose("billing"),
        ):
            name = session.scalars(select(Customer.name)).one()
            print(f"  billing (allowed by the restriction): {name}")
        restrictions.lift(hanako_id, reason="request withdrawn", actor="dpo-1")

        print("10. the retention sweep, years later: a dry run, a hold, then disposal")
        later = dt.datetime(2034, 1, 1, tzinfo=dt.timezone.utc)
        report = sweep(engine, custodian, tables=Base, now=later, dry_run=True)
        for c in report.counts:
            print(f"  dry run: {c.table} {c.field} {c.action} {c.count}")
        hold = holds.place(
            case="case-41", subjects=[hanako_id], reason="dispute", actor="legal-1"
        )
        report = sweep(engine, custodian, tables=Base, now=later)
        print(f"  under a legal hold: held {report.total('held')} values")
        holds.release(hold, reason="dispute settled", actor="legal-1")
        log = Path(tmp) / "deletions.jsonl"
        report = sweep(engine, custodian, tables=Base, now=later, log=log)
        print(f"  released: deleted {report.total('delete_row')} customer rows")
        again = sweep(engine, custodian, tables=Base, now=later)
        print(f"  a second run deletes {again.total('delete_row')}")
        print(
            f"  the deletion log, kept apart: {len(log.read_text().splitlines())} line(s)"
        )
        print(
            f"  replayed on this database: {replay_deletions(engine, log, tables=Base)} changes"
        )
        print("10. a data-subject request: a copy of Taro's data, then erasure")
        answer_request(engine)
        engine.dispose()


def answer_request(engine: Engine) -> None:
    """Disclose a customer's data to him (開示), then erase it (消去)."""
    with (
        Session(engine) as session,
        custdata.acting_as("c-9", role="billing_clerk"),
        custdata.purpose("billing"),
    ):
        taro = Customer(
            name="Suzuki Taro",
            email="taro@example.jp",
            last_order_at=dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc),
        )
        taro.orders.append(Order(total=decimal.Decimal(2400)))
        session.add(taro)
        session.commit()
    with (
        Session(engine) as session,
        custdata.acting_as("p-1", role="privacy_desk"),
        custdata.purpose("support"),
    ):
        # Found by the e-mail he wrote from, through the blind index.
        footprint = locate_subject(
            session, identifier=("contact.email", "TARO@example.jp"), tables=Base
        )
        print(
            f"  found {footprint.row_count} rows: {[r.table for r in footprint.rows]}"
        )
        copy = io.StringIO()
        disclosure = disclose_subject(session, footprint, "json", copy)
        print(
            f"  disclosed {disclosure.values} values as JSON ({len(copy.getvalue())} bytes)"
        )
        result = erase_subject(session, footprint, request_id="req-1")
        for c in result.counts:
            print(f"  erased: {c.table}.{c.field} {c.action} {c.count}")
        for k in result.kept:
            print(f"  kept: {k.table}.{k.field} ({k.reason}, {k.rule})")


if __name__ == "__main__":
    main()
