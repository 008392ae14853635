"""The shop answers a data-subject request: a disclosure, then an erasure."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import uuid

import pytest

from models import Customer, Order
from sqlalchemy import Engine, column, select, table
from sqlalchemy.orm import Session

import custdata

from custdata.sqlalchemy import disclose_subject, erase_subject, locate_subject
from custdata.testing import Acting, RecordedDecisions


pytestmark = pytest.mark.usefixtures("custdata_custodian")
NOW = dt.datetime(2027, 1, 15, tzinfo=dt.timezone.utc)


def _customer(engine: Engine, acting: Acting, name: str, email: str) -> uuid.UUID:
    cid = uuid.uuid4()
    with Session(engine) as session:
        with acting("clerk-1", role="billing_clerk", purpose="billing"):
            session.add(
                Customer(
                    id=cid,
                    name=name,
                    email=email,
                    card="4111 1111 1111 1111",
                    last_order_at=dt.datetime(2026, 11, 3, tzinfo=dt.timezone.utc),
                )
            )
            session.add(Order(customer_id=cid, total=decimal.Decimal(1200)))
            session.commit()
        with acting("u-102", role="support_agent", purpose="support"):
            customer = session.get(Customer, cid)
            customer.phone = "090-0000-0000" if name == "Other" else "090-1234-5678"
            customer.orders[0].note = f"note of {name}"
            session.commit()
    return cid


@pytest.fixture
def customers(engine: Engine, custdata_acting: Acting) -> tuple[uuid.UUID, uuid.UUID]:
    """Hanako, who asks, and another customer."""
    return (
        _customer(engine, custdata_acting, "Yamada Hanako", "hanako@example.jp"),
        _customer(engine, custdata_acting, "Other", "other@example.jp"),
    )


def test_disclosure_to_hanako(
    engine: Engine,
    customers: tuple[uuid.UUID, uuid.UUID],
    custdata_acting: Acting,
    custdata_decisions: RecordedDecisions,
) -> None:
    """開示: found by e-mail, every value of hers in the copy, none of the other's."""
    hanako, _other = customers
    out = io.StringIO()
    with (
        Session(engine) as session,
        custdata_acting("dpo-1", role="privacy_desk", purpose="support"),
    ):
        footprint = locate_subject(
            session, identifier=("contact.email", "Hanako@Example.jp")
        )
        assert footprint.subject == hanako
        disclose_subject(session, footprint, "json", out)
    copy = json.loads(out.getvalue())
    (customer,) = copy["tables"]["shop_customers"]
    assert customer["card"] == "4111 1111 1111 1111"
    assert customer["phone"] == "090-1234-5678"
    assert copy["tables"]["shop_orders"][0]["note"] == "note of Yamada Hanako"
    assert "other@example.jp" not in out.getvalue()
    assert "note of Other" not in out.getvalue()
    exports = [d for d in custdata_decisions if d.action is custdata.Action.EXPORT]
    assert {d.entity for d in exports} == {"shop_customers", "shop_orders"}
    assert all(d.purpose == "disclosure" for d in exports)


def test_erasure_of_hanako(
    engine: Engine,
    customers: tuple[uuid.UUID, uuid.UUID],
    custdata_acting: Acting,
) -> None:
    """消去: what only support needed goes; what the accounting statute needs stays."""
    hanako, other = customers
    with (
        Session(engine) as session,
        custdata_acting("dpo-1", role="privacy_desk", purpose="support"),
    ):
        footprint = locate_subject(session, hanako)
        result = erase_subject(session, footprint, request_id="req-7", now=NOW)
    assert {(c.table, c.field) for c in result.counts if c.action == "erase"} == {
        ("shop_customers", "phone"),
        ("shop_orders", "note"),
    }
    kept = {(k.table, k.field): k.reason for k in result.kept}
    assert kept[("shop_customers", "card")] == "statutory_minimum"
    assert kept[("shop_orders", "total")] == "statutory_minimum"
    raw = table("shop_customers", column("id"), column("phone"))
    with engine.connect() as conn:
        phones = {
            str(uuid.UUID(str(r.id))): r.phone for r in conn.execute(select(*raw.c))
        }
    assert phones[str(hanako)] is None
    assert phones[str(other)] is not None
