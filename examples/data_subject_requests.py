"""Data-subject requests: one request of each APPI kind, from receipt to answer.

A small shop (customers and their orders) on an embedded SQLite database keeps
its requests in the same database (``SqlRequestStore``). Each request is
opened, its requester's identity verified, granted or refused, and answered:

- 利用目的の通知 (法32条2項): the purposes are told; the answer is recorded;
- 開示 (法33条1項): ``answer_request`` writes everything held, as JSON;
- 第三者提供記録の開示 (法33条5項): ``disclose_records`` over the provision records;
- 訂正 (法34条): the correction goes through the normal, encrypted write path;
- 利用停止・消去 (法35条5項): ``erase_subject`` for the request, its result recorded;
- 第三者提供の停止 (法35条3項): refused, with the pack's ground and the reasons.

Then ``request_findings`` shows what ``custdata check --requests-url`` reports.

Run: ``python examples/data_subject_requests.py``.
"""

from __future__ import annotations

import datetime as dt
import io
import tempfile
import uuid

from pathlib import Path

from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import custdata

from custdata import Purpose, RequestSettings, RetentionRule, Role
from custdata.crypto import InMemorySubjectKeyStore, Keyring
from custdata.governance import (
    InMemoryProvisionRecordStore,
    RequestDesk,
    disclose_records,
    request_findings,
)
from custdata.sqlalchemy import (
    Disclosure,
    SqlRequestStore,
    answer_request,
    customer_data,
    erase_subject,
    locate_subject,
    retention_anchor,
    subject_key,
)


JST = dt.timezone(dt.timedelta(hours=9))
RECEIVED = dt.datetime(2026, 2, 2, 10, 0, tzinfo=JST)


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "dsr_customers"
    id: Mapped[uuid.UUID] = subject_key()
    acquired_at: Mapped[dt.datetime] = retention_anchor("acquired")
    name: Mapped[str | None] = customer_data(
        "name", purposes=["support"], key_scope="subject"
    )
    email: Mapped[str | None] = customer_data(
        "contact.email", purposes=["support"], searchable=True, key_scope="subject"
    )


class Order(Base):
    __tablename__ = "dsr_orders"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    customer_id: Mapped[uuid.UUID] = subject_key("dsr_customers.id")
    acquired_at: Mapped[dt.datetime] = retention_anchor("acquired")
    note: Mapped[str | None] = customer_data(
        "transaction.history", purposes=["support"], key_scope="subject"
    )


def _policy() -> custdata.Policy:
    return custdata.Policy.build(
        organisation="さくら通販株式会社",
        version="2026-02",
        effective_date=dt.date(2026, 1, 1),
        next_review=dt.date(2027, 1, 1),
        retention_rules=[
            RetentionRule(
                id="support", period="P1Y", anchor="acquired", action="delete"
            )
        ],
        purposes=[
            Purpose(
                id="support",
                text_ja="お問合せへの対応",
                text_en="Answering inquiries",
                retention="support",
            ),
            Purpose(
                id="disclosure",
                text_ja="本人への開示",
                text_en="Disclosure to the data subject",
                retention="support",
                subject_disclosure=True,
            ),
            Purpose(
                id="privacy_desk",
                text_ja="本人からの請求への対応",
                text_en="Answering data-subject requests",
                retention="support",
                may_erase=True,
            ),
        ],
        roles=[
            Role(id="agent", purposes=["support"]),
            Role(id="dpo", purposes=["disclosure", "privacy_desk", "support"]),
        ],
        requests=RequestSettings(sla_days=14, fee_yen=1000),
    )


def _step(desk: RequestDesk, kind: str, subject: str, **kw: object) -> str:
    """Open a request, verify the identity and grant it; return its id."""
    r = desk.open(kind, subject=subject, received_at=RECEIVED, actor="desk-1", **kw)  # type: ignore[arg-type]
    day = RECEIVED + dt.timedelta(days=1)
    desk.verify(r.request_id, method="id_document", at=day, actor="desk-1")
    if kind != "appi_stop_provision":
        desk.decide(r.request_id, grant=True, at=day, actor="dpo-1")
    return r.request_id


def main() -> None:
    policy = _policy()
    clock = RECEIVED + dt.timedelta(days=3)
    custodian = custdata.Custodian(
        policy=policy,
        keyring=Keyring.generate(),
        subject_keys=InMemorySubjectKeyStore(),
        clock=lambda: clock,
    )
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{Path(tmp) / 'shop.db'}")
        try:
            Base.metadata.create_all(engine)
            store = SqlRequestStore(engine)
            store.create_tables()
            desk = RequestDesk(
                store, settings=policy.requests, purposes=tuple(policy.purposes)
            )
            with custodian.activate():
                _run(engine, desk, policy, clock)
        finally:
            engine.dispose()


def _run(
    engine: Engine, desk: RequestDesk, policy: custdata.Policy, at: dt.datetime
) -> None:
    cid = uuid.uuid4()
    with (
        Session(engine) as session,
        custdata.acting_as("agent-1", role="agent"),
        custdata.purpose("support"),
    ):
        session.add(
            Customer(
                id=cid,
                acquired_at=RECEIVED,
                name="山田 花子",
                email="hanako@example.jp",
            )
        )
        session.add(Order(customer_id=cid, acquired_at=RECEIVED, note="緑茶 2箱"))
        session.commit()
    subject = str(cid)

    # 利用目的の通知 (法32条2項): the answer is the purposes themselves.
    rid = _step(desk, "appi_purpose_notice", subject)
    texts = [p.text_ja for p in policy.purposes.values()]
    done = desk.fulfil(rid, at=at, actor="dpo-1", result={"purposes": len(texts)})
    print(f"{done.kind}: {done.state.value}, fee {done.fee_yen} yen")

    # 開示 (法33条1項) in the electronic form the person chose.
    rid = _step(desk, "appi_disclosure", subject, disclosure_format="electronic")
    out = io.StringIO()
    with Session(engine) as session, custdata.acting_as("dpo-1", role="dpo"):
        done, disclosure = answer_request(
            desk, rid, session, at=at, out=out, tables=Base
        )
    assert isinstance(disclosure, Disclosure)
    print(f"{done.kind}: {done.state.value}, {disclosure.values} values disclosed")

    # 第三者提供記録の開示 (法33条5項): no provision was made to a third party.
    rid = _step(desk, "appi_provision_records", subject)
    records = disclose_records(InMemoryProvisionRecordStore(), subject)
    done = desk.fulfil(
        rid, at=at, actor="dpo-1", result={"records": len(records["records"])}
    )
    print(f"{done.kind}: {done.state.value}, {len(records['records'])} records")

    # 訂正 (法34条): through the normal, encrypted and audited write path.
    rid = _step(desk, "appi_correction", subject)
    with (
        Session(engine) as session,
        custdata.acting_as("dpo-1", role="dpo"),
        custdata.purpose("support"),
    ):
        customer = session.get(Customer, cid)
        assert customer is not None
        customer.email = "hanako.yamada@example.jp"
        session.commit()
    done = desk.fulfil(rid, at=at, actor="dpo-1", result={"fields_corrected": 1})
    print(f"{done.kind}: {done.state.value}")

    # 第三者提供の停止 (法35条3項): the data was never provided; refused with reasons.
    rid = _step(desk, "appi_stop_provision", subject, grounds=["35_3_art27"])
    done = desk.decide(
        rid,
        grant=False,
        grounds=["35_grounds_not_met"],
        reason="第三者への提供を行っていないため",
        at=at,
        actor="dpo-1",
    )
    print(f"{done.kind}: {done.state.value} ({', '.join(done.refusal_grounds)})")

    # 利用停止・消去 (法35条5項: no longer needed): erased for the request.
    rid = _step(desk, "appi_stop_use", subject, grounds=["35_5_no_longer_needed"])
    with (
        Session(engine) as session,
        custdata.acting_as("dpo-1", role="dpo"),
        custdata.purpose("privacy_desk"),
    ):
        footprint = locate_subject(session, subject, tables=Base)
        erasure = erase_subject(session, footprint, request_id=rid, tables=Base, now=at)
        left = session.scalars(select(Customer.id)).all()
    done = desk.fulfil(
        rid,
        at=at,
        actor="dpo-1",
        result={
            "deleted_rows": erasure.total("delete_row"),
            "shredded": erasure.shredded,
        },
    )
    print(
        f"{done.kind}: {done.state.value}, {erasure.total('delete_row')} rows "
        f"deleted, key shredded: {erasure.shredded}, customers left: {len(left)}"
    )

    # Every request is answered: custdata check has nothing to report.
    late = RECEIVED + dt.timedelta(days=30)
    findings = request_findings(desk.store.requests(), settings=desk.settings, now=late)
    print(f"open requests: {len(desk.open_requests())}; findings: {len(findings)}")


if __name__ == "__main__":
    main()
