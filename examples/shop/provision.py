"""The shop hands customer data to third parties through the provision gate.

A delivery contractor gets names and addresses to ship orders (outsourcing,
APPI 27条5項1号: no record), a partner gets the e-mail addresses of customers
who consented (27条1項: a provision record with the consent fact), a customer
without consent is refused, and the customer's disclosure request (33条5項)
lists the records naming her. Runs on SQLite in a temporary folder::

    python examples/shop/provision.py
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import tempfile

from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.orm import Session


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from models import Base, Customer  # noqa: E402

import custdata  # noqa: E402

from custdata.audit import AuditTrail, MemorySink  # noqa: E402
from custdata.crypto import Keyring  # noqa: E402
from custdata.governance import (  # noqa: E402
    Basis,
    ConsentLedger,
    ProvisionGate,
    Recipient,
)
from custdata.sqlalchemy import (  # noqa: E402
    SqlProvisionRecordStore,
    add_custdata_tables,
    provide,
)


def main() -> None:
    """Run the walkthrough."""
    policy = custdata.Policy.from_toml(HERE.parent / "custdata.toml")
    keyring = Keyring.generate()
    sink = MemorySink()
    trail = AuditTrail(keyring, sinks=[sink], checkpoint_interval=None)
    # One consent ledger answers both the provision gate (may this leave on
    # consent?) and the read path (may this subject's data be read for a
    # consent-required purpose?).
    consent = ConsentLedger.for_policy(policy, audit=trail)
    custodian = custdata.Custodian(
        policy=policy, keyring=keyring, audit=trail, consent=consent
    )
    custodian.make_current()
    now = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.timezone.utc)

    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(
            f"sqlite:///{Path(tmp) / 'shop.db'}", hide_parameters=True
        )
        add_custdata_tables(Base.metadata, audit=False, subject_keys=False)
        Base.metadata.create_all(engine)
        records = SqlProvisionRecordStore(engine, metadata=Base.metadata)
        gate = ProvisionGate(policy=policy, records=records, consent=consent)

        with (
            Session(engine, expire_on_commit=False) as session,
            custdata.acting_as("c-9", role="billing_clerk"),
            custdata.purpose("billing"),
        ):
            hanako = Customer(
                name="Yamada Hanako", email="hanako@example.jp", address="東京都港区1-1"
            )
            taro = Customer(
                name="Suzuki Taro", email="taro@example.jp", address="大阪府北区2-2"
            )
            session.add_all([hanako, taro])
            session.commit()
        consent.grant(
            hanako.id,
            "marketing.third_party",
            method="web_form",
            notice_version="2026-04",
            actor="c-9",
            now=now - dt.timedelta(days=30),
        )

        print("1. delivery contractor (outsourcing, 27条5項1号): no provision record")
        with (
            Session(engine) as session,
            custdata.acting_as("w-7", role="warehouse"),
        ):
            shipped = provide(
                session,
                Customer,
                gate=gate,
                recipient=Recipient(id="hayate_delivery", name="はやて運輸株式会社"),
                basis=Basis.OUTSOURCING_27_5_1,
                purpose="shipping",
                subjects=[hanako.id, taro.id],
                fields=["name", "address"],
                now=now,
            )
        print(f"  handed over {len(shipped.rows)} addresses; record: {shipped.record}")

        print("2. consenting partner (27条1項): a record with the consent fact")
        partner = Recipient(
            id="partner_hoshi",
            name="星野食品株式会社",
            address="大阪府大阪市北区1-1",
            representative="代表取締役 星野 一",
        )
        with (
            Session(engine) as session,
            custdata.acting_as("p-1", role="partnership_desk"),
        ):
            given = provide(
                session,
                Customer,
                gate=gate,
                recipient=partner,
                basis=Basis.CONSENT_27_1,
                purpose="marketing.third_party",
                subjects=[hanako.id],
                fields=["email"],
                now=now,
            )
            assert given.record is not None
            print(
                f"  record {given.record.record_id}, kept until {given.record.retain_until:%Y-%m-%d}"
            )
            print(f"  consent fact: {given.record.items['consent_fact']}")

            print("3. a customer without consent: refused before anything is read")
            try:
                provide(
                    session,
                    Customer,
                    gate=gate,
                    recipient=partner,
                    basis=Basis.CONSENT_27_1,
                    purpose="marketing.third_party",
                    subjects=[taro.id],
                    fields=["email"],
                    now=now,
                )
            except custdata.ProvisionRefusedError as exc:
                print(f"  refused: {exc}")

        exports = [
            r.fields for r in sink.records if r.fields["action"] == "export.third_party"
        ]
        print(f"4. the audit trail holds {len(exports)} export.third_party events:")
        for e in exports:
            print(
                f"  {e['recipient']['basis']:20} record={e['recipient'].get('provision_record_id')}"
            )

        print("5. Hanako's disclosure request (33条5項):")
        shown = gate.disclose(hanako.id)
        print(json.dumps(shown, ensure_ascii=False, indent=2)[:600])
        trail.close()
        engine.dispose()


if __name__ == "__main__":
    main()
