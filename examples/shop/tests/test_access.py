"""The shop's access rules, tested with custdata's pytest fixtures.

``custdata_custodian`` is current for each test (policy from ``../custdata.toml``
via the ``custdata_policy`` ini option, an in-memory keyring, every decision
kept in ``custdata_decisions``); ``custdata_acting`` enters an actor, a role and
a purpose at once.
"""

from __future__ import annotations

import decimal
import uuid

import pytest

from models import Customer, Order
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

import custdata

from custdata.testing import Acting, RecordedDecisions, assert_denied, assert_revealed


pytestmark = pytest.mark.usefixtures("custdata_custodian")


@pytest.fixture
def hanako(engine: Engine, custdata_acting: Acting, custdata_decisions) -> uuid.UUID:
    """One customer with an order, written by a billing clerk."""
    cid = uuid.uuid4()
    with (
        Session(engine) as session,
        custdata_acting("clerk-1", role="billing_clerk", purpose="billing"),
    ):
        session.add(
            Customer(
                id=cid,
                name="Yamada Hanako",
                email="hanako@example.jp",
                card="4111 1111 1111 1111",
            )
        )
        session.add(Order(customer_id=cid, total=decimal.Decimal(1200)))
        session.commit()
    custdata_decisions.clear()
    return cid


def test_support_reads_the_name_and_it_is_recorded(
    engine: Engine,
    hanako: uuid.UUID,
    custdata_acting: Acting,
    custdata_decisions: RecordedDecisions,
) -> None:
    with (
        Session(engine) as session,
        custdata_acting("u-102", role="support_agent", purpose="support"),
    ):
        assert session.get(Customer, hanako).name == "Yamada Hanako"
    decision = assert_revealed(custdata_decisions, actor="u-102", purpose="support")
    assert str(hanako) in decision.subjects


def test_support_may_not_read_the_card(
    engine: Engine,
    hanako: uuid.UUID,
    custdata_acting: Acting,
    custdata_decisions: RecordedDecisions,
) -> None:
    with (
        Session(engine) as session,
        custdata_acting("u-102", role="support_agent", purpose="support"),
    ):
        customer = session.get(Customer, hanako)
        with pytest.raises(custdata.PurposeViolationError):
            _ = customer.card
    assert_denied(
        custdata_decisions,
        fields=["card"],
        actor="u-102",
        purpose="support",
        subjects=[hanako],
        reason=custdata.DenyReason.PURPOSE_NOT_PERMITTED,
    )


def test_no_actor_no_read(engine: Engine, hanako: uuid.UUID) -> None:
    with Session(engine) as session, pytest.raises(custdata.ActorRequiredError):
        session.scalars(select(Customer)).one().name  # noqa: B018


def test_a_marketer_cannot_claim_billing(
    custdata_acting: Acting,
    custdata_decisions: RecordedDecisions,
) -> None:
    with (
        pytest.raises(custdata.PurposeNotGrantedError),
        custdata_acting("m-7", role="marketer", purpose="billing"),
    ):
        pass
    assert_denied(
        custdata_decisions,
        actor="m-7",
        purpose="billing",
        reason=custdata.DenyReason.PURPOSE_NOT_GRANTED,
    )
