"""Audit events name the consent records a decision relied on (R-CON-1)."""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid

from pathlib import Path
from typing import Any

import pytest

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import custdata

from custdata import Action, FieldPolicy
from custdata.audit import AuditTrail, JsonLinesSink
from custdata.audit._schema import consent_ids, validate_body
from custdata.audit._store import JsonLinesSource, StoredRecord
from custdata.crypto import Keyring
from custdata.governance import ConsentLedger
from custdata.sqlalchemy import SqlConsentStore


sys.path.insert(0, str(Path(__file__).parent))
from sa_fixtures import (  # noqa: F401 - pytest fixtures
    CANARIES,
    Models,
    Recorder,
    billing,
    engine,
    marketing,
    models,
)


UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
EMAIL = {"email": FieldPolicy(category="contact.email", purposes=["marketing"])}


def _bodies(path: Path) -> list[dict[str, Any]]:
    """The event bodies of a JSON-lines trail, either format."""
    return [
        json.loads(rec.body)
        for rec in JsonLinesSource(path).records()
        if isinstance(rec, StoredRecord) and rec.body is not None
    ]


def _trail(path: Path, version: int = 1) -> AuditTrail:
    return AuditTrail(
        Keyring.generate(),
        sinks=[JsonLinesSink(path, version=version)],
        checkpoint_interval=None,
    )


def test_consent_ids_recorded_form() -> None:
    """Distinct, sorted; a non-identifier id is recorded as its digest."""
    assert ["con_a", "con_b"] == consent_ids(["con_b", "con_a", "con_b"])
    (digest,) = consent_ids(["has space"])
    assert digest.startswith("sha256:")
    assert "space" not in digest


@pytest.mark.parametrize("version", [1, 2])
def test_reveal_event_names_the_consent(
    sample_policy: custdata.Policy, tmp_path: Path, version: int
) -> None:
    """A one-subject read for a consent purpose writes the consent id (both formats)."""
    path = tmp_path / "audit.jsonl"
    trail = _trail(path, version)
    ledger = ConsentLedger.for_policy(sample_policy)
    custodian = custdata.Custodian(
        policy=sample_policy, audit=trail, consent=ledger, clock=lambda: T0
    )
    c = ledger.grant("s1", "marketing", method="web", notice_version="v", now=T0)
    with custdata.acting_as("m", role="marketer"), custdata.purpose("marketing.email"):
        custodian.authorize(
            action=Action.READ,
            entity="customers",
            fields=EMAIL,
            subjects=("s1",),
            count=1,
        )
        # A read of a purpose without consent carries no key at all.
    with custdata.acting_as("m", role="billing_clerk"), custdata.purpose("billing"):
        custodian.authorize(
            action=Action.READ,
            entity="customers",
            fields={
                "email": FieldPolicy(category="contact.email", purposes=["billing"])
            },
            subjects=("s1",),
            count=1,
        )
    trail.close()
    bodies = _bodies(path)
    reveals = [b for b in bodies if b["action"] == "field.reveal"]
    assert [[c.id], None] == [b.get("consents") for b in reveals]
    for body in reveals:
        validate_body(body)


def test_bulk_events_split_their_consents(
    sample_policy: custdata.Policy, tmp_path: Path
) -> None:
    """Over 1,000 subjects: each split event names the consents of its own subjects."""
    path = tmp_path / "audit.jsonl"
    trail = _trail(path)
    ledger = ConsentLedger.for_policy(sample_policy)
    subjects = tuple(f"s{i}" for i in range(1500))
    ids = {
        s: ledger.grant(s, "marketing", method="web", notice_version="v", now=T0).id
        for s in subjects
    }
    custodian = custdata.Custodian(
        policy=sample_policy, audit=trail, consent=ledger, clock=lambda: T0
    )
    with custdata.acting_as("m", role="marketer"), custdata.purpose("marketing.email"):
        decision = custodian.authorize(
            action=Action.READ,
            entity="customers",
            fields=EMAIL,
            subjects=subjects,
            count=len(subjects),
        )
    assert len(subjects) == len(decision.consents)
    trail.close()
    reveals = [b for b in _bodies(path) if b["action"] == "field.reveal"]
    assert 2 == len(reveals)
    assert sorted(ids.values()) == sorted(c for b in reveals for c in b["consents"])
    ref_of = {trail.subject_ref(s): s for s in subjects}
    for body in reveals:
        assert sorted(ids[ref_of[r]] for r in body["subjects"]) == body["consents"]


def test_denied_event_names_no_consent(
    sample_policy: custdata.Policy, tmp_path: Path
) -> None:
    """A refused batch relied on no consent: its event has no ``consents``."""
    path = tmp_path / "audit.jsonl"
    trail = _trail(path)
    ledger = ConsentLedger.for_policy(sample_policy)
    ledger.grant("s1", "marketing", method="web", notice_version="v", now=T0)
    custodian = custdata.Custodian(
        policy=sample_policy, audit=trail, consent=ledger, clock=lambda: T0
    )
    with (
        custdata.acting_as("m", role="marketer"),
        custdata.purpose("marketing.email"),
        pytest.raises(custdata.ConsentRequiredError),
    ):
        custodian.authorize(
            action=Action.READ,
            entity="customers",
            fields=EMAIL,
            subjects=("s1", "s2"),
            count=2,
        )
    trail.close()
    (denied,) = [b for b in _bodies(path) if b.get("reason") == "consent_missing"]
    assert "consents" not in denied


def test_orm_read_events_carry_the_consent_id(
    engine: Engine, models: Models, sample_policy: custdata.Policy, tmp_path: Path
) -> None:
    """End to end on each database: SQL ledger, ORM read, JSON-lines trail, recorder."""
    store = SqlConsentStore(engine, table_name=f"conev_{uuid.uuid4().hex[:8]}")
    store.create_table()
    path = tmp_path / "audit.jsonl"
    trail = _trail(path)
    recorder = Recorder()

    class Both:
        """Hands each decision to the recorder and the trail."""

        def record_decision(self, decision: custdata.AccessDecision) -> None:
            recorder.record_decision(decision)
            trail.record_decision(decision)

    ledger = ConsentLedger.for_policy(sample_policy, store)
    custodian = custdata.Custodian(
        policy=sample_policy, keyring=Keyring.generate(), audit=Both(), consent=ledger
    )
    try:
        with custodian.activate():
            with Session(engine) as session, billing():
                first = models.Customer(name="N", email=CANARIES["email"])
                second = models.Customer(name="M", email="second@example.jp")
                session.add_all([first, second])
                session.commit()
                ids = (first.id, second.id)
            granted = [
                ledger.grant(i, "marketing", method="web", notice_version="v").id
                for i in ids
            ]
            with Session(engine) as session, marketing():
                assert 2 == len(session.scalars(select(models.Customer.email)).all())
            decision = recorder.decisions[-1]
            by_subject = dict(zip(map(str, ids), granted, strict=True))
            assert tuple(by_subject[s] for s in decision.subjects) == decision.consents
        trail.close()
        text = path.read_text()
        assert CANARIES["email"] not in text
        reveals = [b for b in _bodies(path) if b.get("purpose") == "marketing.email"]
        assert sorted(granted) == reveals[-1]["consents"]
    finally:
        store.table.drop(engine)
