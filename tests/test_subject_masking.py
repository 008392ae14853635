"""Per-subject masking inside a batch: consent not in force, use restricted.

A batch whose fields all say ``on_violation = "mask"`` releases the subjects
who may be read and reveals the others' values only as masks (never
decrypted); the denial is recorded with the withheld subjects and the release
names only the released ones. Fields that raise still refuse the batch whole.
"""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures

from __future__ import annotations

import datetime as dt
import sys
import uuid

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session

import custdata

from custdata import Action, DenyReason, FieldPolicy, Outcome
from custdata.crypto import Keyring
from custdata.governance import ConsentLedger, Restrictions
from custdata.sqlalchemy import MASK_TEXT, customer_data, subject_key


sys.path.insert(0, str(Path(__file__).parent))
from sa_fixtures import Recorder, billing, engine, marketing  # noqa: F401


UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
MASKED = {
    "email": FieldPolicy(
        category="contact.email", purposes=["marketing"], on_violation="mask"
    )
}
CANARY = "canary-withheld-7f3a@example.jp"


def _read(custodian: custdata.Custodian, subjects: tuple[str, ...]) -> Any:
    with custdata.acting_as("m", role="marketer"), custdata.purpose("marketing.email"):
        return custodian.authorize(
            action=Action.READ,
            entity="customers",
            fields=MASKED,
            subjects=subjects,
            count=len(subjects),
        )


class TestDecision:
    """Custodian.authorize withholds subjects instead of refusing the batch."""

    def test_consent_missing_withheld_and_recorded(
        self, sample_policy: custdata.Policy
    ) -> None:
        """The denial names the withheld subject; the release names the others only."""
        recorder = Recorder()
        ledger = ConsentLedger.for_policy(sample_policy)
        c1 = ledger.grant("s1", "marketing", method="w", notice_version="v", now=T0)
        custodian = custdata.Custodian(
            policy=sample_policy, audit=recorder, consent=ledger, clock=lambda: T0
        )
        decision = _read(custodian, ("s1", "s2", "s3"))
        assert decision.allowed
        assert (("s1",), ("s2", "s3"), (c1.id,)) == (
            decision.subjects,
            decision.withheld,
            decision.consents,
        )
        denied, released = recorder.decisions[-2:]
        assert (Outcome.DENIED, DenyReason.CONSENT_MISSING, ("s2", "s3")) == (
            denied.outcome,
            denied.reason,
            denied.subjects,
        )
        assert released is decision
        assert 3 == denied.count + released.count

    def test_nobody_released_records_only_the_denial(
        self, sample_policy: custdata.Policy
    ) -> None:
        """With every subject withheld, nothing is released and nothing recorded as such."""
        recorder = Recorder()
        custodian = custdata.Custodian(
            policy=sample_policy,
            audit=recorder,
            consent=ConsentLedger.for_policy(sample_policy),
            clock=lambda: T0,
        )
        decision = _read(custodian, ("s1",))
        assert ((), ("s1",)) == (decision.subjects, decision.withheld)
        assert [Outcome.DENIED] == [d.outcome for d in recorder.decisions]

    def test_restricted_subject_withheld(self, sample_policy: custdata.Policy) -> None:
        """A restricted subject is withheld the same way, reason ``restricted``."""
        recorder = Recorder()
        ledger = ConsentLedger.for_policy(sample_policy)
        for s in ("s1", "s2"):
            ledger.grant(s, "marketing", method="w", notice_version="v", now=T0)
        register = Restrictions.for_policy(sample_policy)
        register.restrict("s2", reason="r", actor="dpo", at=T0)
        custodian = custdata.Custodian(
            policy=sample_policy,
            audit=recorder,
            consent=ledger,
            restrictions=register,
            clock=lambda: T0,
        )
        decision = _read(custodian, ("s1", "s2"))
        assert (("s1",), ("s2",)) == (decision.subjects, decision.withheld)
        assert 1 == len(decision.consents)
        assert (DenyReason.RESTRICTED, ("s2",)) == (
            recorder.decisions[-2].reason,
            recorder.decisions[-2].subjects,
        )

    def test_raising_field_still_refuses_the_batch(
        self, sample_policy: custdata.Policy
    ) -> None:
        """A field that raises on violation refuses the whole batch, as before."""
        custodian = custdata.Custodian(
            policy=sample_policy,
            consent=ConsentLedger.for_policy(sample_policy),
            clock=lambda: T0,
        )
        strict = {
            "email": FieldPolicy(category="contact.email", purposes=["marketing"])
        }
        with (
            custdata.acting_as("m", role="marketer"),
            custdata.purpose("marketing.email"),
            pytest.raises(custdata.ConsentRequiredError),
        ):
            custodian.authorize(
                action=Action.READ,
                entity="customers",
                fields=strict,
                subjects=("s1",),
                count=1,
            )

    def test_writes_are_never_masked(self, sample_policy: custdata.Policy) -> None:
        """A write for a subject without consent is refused even for mask fields."""
        custodian = custdata.Custodian(
            policy=sample_policy,
            consent=ConsentLedger.for_policy(sample_policy),
            clock=lambda: T0,
        )
        with (
            custdata.acting_as("m", role="marketer"),
            custdata.purpose("marketing.email"),
            pytest.raises(custdata.ConsentRequiredError),
        ):
            custodian.authorize(
                action=Action.WRITE,
                entity="customers",
                fields=MASKED,
                subjects=("s1",),
                count=1,
            )


class _Models:
    def __init__(self, storage: str) -> None:
        suffix = uuid.uuid4().hex[:8]

        class Base(DeclarativeBase):
            pass

        class Lead(Base):
            __tablename__ = f"mask_leads_{suffix}"
            id: Mapped[uuid.UUID] = subject_key()
            email: Mapped[str | None] = customer_data(
                "contact.email",
                purposes=["billing", "marketing"],
                on_violation="mask",
                storage=storage,  # type: ignore[arg-type]
            )

        self.Base = Base
        self.Lead = Lead


@pytest.fixture(params=["binary", "text"])
def leads(engine: Engine, request: pytest.FixtureRequest) -> Iterator[_Models]:
    m = _Models(request.param)
    m.Base.metadata.create_all(engine)
    yield m
    m.Base.metadata.drop_all(engine)


class TestReadPath:
    """Core and ORM reads on each database mask the withheld rows only."""

    def _setup(
        self, engine: Engine, leads: _Models, policy: custdata.Policy
    ) -> tuple[custdata.Custodian, Recorder, ConsentLedger, list[uuid.UUID]]:
        recorder = Recorder()
        ledger = ConsentLedger.for_policy(policy)
        custodian = custdata.Custodian(
            policy=policy, keyring=Keyring.generate(), audit=recorder, consent=ledger
        )
        with custodian.activate(), Session(engine) as session, billing():
            rows = [
                leads.Lead(email="a@example.jp"),
                leads.Lead(email=CANARY),
                leads.Lead(email=None),
            ]
            session.add_all(rows)
            session.commit()
            ids = [r.id for r in rows]
        ledger.grant(ids[0], "marketing", method="w", notice_version="v")
        return custodian, recorder, ledger, ids

    def test_core_select_masks_only_the_withheld(
        self, engine: Engine, leads: _Models, sample_policy: custdata.Policy
    ) -> None:
        """Consenting subject's value released; the other's masked; NULL stays NULL."""
        custodian, recorder, _, ids = self._setup(engine, leads, sample_policy)
        lead = leads.Lead
        with custodian.activate(), Session(engine) as session, marketing():
            got = dict(session.execute(select(lead.id, lead.email)).all())
        assert {ids[0]: "a@example.jp", ids[1]: MASK_TEXT, ids[2]: None} == got
        denied = [d for d in recorder.decisions if not d.allowed][-1]
        assert DenyReason.CONSENT_MISSING == denied.reason
        assert {str(ids[1]), str(ids[2])} == set(denied.subjects)
        assert (str(ids[0]),) == recorder.decisions[-1].subjects

    def test_orm_entities_mask_only_the_withheld(
        self, engine: Engine, leads: _Models, sample_policy: custdata.Policy
    ) -> None:
        """An entity load hands the withheld subject's value over as its mask."""
        custodian, recorder, _, ids = self._setup(engine, leads, sample_policy)
        with custodian.activate(), Session(engine) as session, marketing():
            got = {r.id: r.email for r in session.scalars(select(leads.Lead))}
            assert {ids[0]: "a@example.jp", ids[1]: MASK_TEXT, ids[2]: None} == got
            # A second batch under the same context (the announce memo) too.
            session.expunge_all()
            again = {r.id: r.email for r in session.scalars(select(leads.Lead))}
            assert got == again
        assert (str(ids[0]),) == recorder.decisions[-1].subjects

    def test_one_row_get_is_masked(
        self, engine: Engine, leads: _Models, sample_policy: custdata.Policy
    ) -> None:
        """A one-row read of a withheld subject is masked, not refused."""
        custodian, _, ledger, ids = self._setup(engine, leads, sample_policy)
        lead = leads.Lead
        with custodian.activate(), Session(engine) as session, marketing():
            assert (
                MASK_TEXT
                == session.scalars(select(lead.email).where(lead.id == ids[1])).one()
            )
            got = session.get(lead, ids[1])
            assert got is not None
            assert MASK_TEXT == got.email
        ledger.grant(ids[1], "marketing", method="w", notice_version="v")
        with custodian.activate(), Session(engine) as session, marketing():
            assert (
                CANARY
                == session.scalars(select(lead.email).where(lead.id == ids[1])).one()
            )

    def test_repeated_gets_mask_only_the_withheld(
        self, engine: Engine, leads: _Models, sample_policy: custdata.Policy
    ) -> None:
        """Gets under one context (the announce memo's one-row path) mask per subject."""
        custodian, recorder, _, ids = self._setup(engine, leads, sample_policy)
        with custodian.activate(), Session(engine) as session, marketing():
            got = []
            for subject in (ids[0], ids[1], ids[0], ids[1]):
                obj = session.get(leads.Lead, subject)
                assert obj is not None
                got.append(obj.email)
                session.expunge_all()
        assert ["a@example.jp", MASK_TEXT, "a@example.jp", MASK_TEXT] == got
        reads = [d for d in recorder.decisions if d.action is Action.READ]
        assert [
            (True, (str(ids[0]),)),
            (False, (str(ids[1]),)),
            (True, (str(ids[0]),)),
            (False, (str(ids[1]),)),
        ] == [(d.allowed, d.subjects) for d in reads[-4:]]
        assert all(
            DenyReason.CONSENT_MISSING == d.reason for d in reads[-4:] if not d.allowed
        )

    def test_restricted_subject_masked(
        self, engine: Engine, leads: _Models, sample_policy: custdata.Policy
    ) -> None:
        """Billing reads everyone but the restricted subject, whose value is masked."""
        custodian, recorder, _, ids = self._setup(engine, leads, sample_policy)
        register = Restrictions.for_policy(sample_policy)
        register.restrict(ids[1], reason="objection", actor="dpo")
        restricted = custdata.Custodian(
            policy=sample_policy,
            keyring=custodian.keyring,
            audit=recorder,
            restrictions=register,
        )
        lead = leads.Lead
        with restricted.activate(), Session(engine) as session, billing():
            got = dict(session.execute(select(lead.id, lead.email)).all())
            assert {ids[0]: "a@example.jp", ids[1]: MASK_TEXT, ids[2]: None} == got
            entities = {r.id: r.email for r in session.scalars(select(lead))}
            assert got == entities
        denied = [d for d in recorder.decisions if not d.allowed][-1]
        assert (DenyReason.RESTRICTED, (str(ids[1]),)) == (
            denied.reason,
            denied.subjects,
        )
