"""The consent ledger (R-CON-1) and its enforcement at run time (R-DEF-3)."""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlalchemy import MetaData, create_engine, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session

import custdata

from custdata import Action, ConsentRequiredError, FieldPolicy
from custdata.audit import AuditTrail, MemorySink
from custdata.crypto import Keyring
from custdata.governance import (
    Consent,
    ConsentLedger,
    ConsentStore,
    InMemoryConsentStore,
    UnknownConsentError,
    consents_in_force,
)
from custdata.sqlalchemy import SqlConsentStore, customer_data, subject_key


sys.path.insert(0, str(Path(__file__).parent))
from sa_fixtures import (  # noqa: F401 - pytest fixtures
    CANARIES,
    CountingKeyring,
    Models,
    Recorder,
    billing,
    consent_to_marketing,
    counting,
    engine,
    keyring,
    marketing,
    models,
    recorder,
    sa_custodian,
)


UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
HEALTH_CANARY = "canary-hypertension-5e1d"


def _consent(**over: Any) -> Consent:
    values: dict[str, Any] = {
        "id": "con_1",
        "subject": "s1",
        "purpose": "marketing",
        "granted_at": T0,
        "method": "web_form",
        "notice_version": "2026-10",
    }
    values.update(over)
    return Consent(**values)


class TestRules:
    """The pure rule: which consent is in force for whom."""

    def test_in_force_from_grant_until_withdrawal(self) -> None:
        """A consent serves from its grant up to (not including) its withdrawal."""
        c = _consent(withdrawn_at=T0 + dt.timedelta(days=1))
        assert [False, True, True, False] == [
            c.in_force(T0 - dt.timedelta(seconds=1)),
            c.in_force(T0),
            c.in_force(T0 + dt.timedelta(hours=23)),
            c.in_force(T0 + dt.timedelta(days=1)),
        ]

    def test_scope_covers_only_its_fields(self) -> None:
        """An empty scope covers every field; a scoped one only its own."""
        assert [True, True, False] == [
            _consent().covers(["email", "name"]),
            _consent(scope=["email"]).covers(["email"]),
            _consent(scope=["email"]).covers(["email", "name"]),
        ]

    def test_latest_grant_in_force_is_named(self) -> None:
        """Of several consents in force, the latest granted is the one used."""
        records = [
            _consent(id="old"),
            _consent(id="new", granted_at=T0 + dt.timedelta(days=2)),
            _consent(id="gone", withdrawn_at=T0 + dt.timedelta(days=1)),
            _consent(id="other", subject="s2", purpose="consultation"),
        ]
        assert {"s1": "new"} == consents_in_force(
            records, purposes={"marketing"}, at=T0 + dt.timedelta(days=3)
        )

    @pytest.mark.parametrize(
        ("over", "error"),
        [
            ({"granted_at": dt.datetime(2026, 11, 1)}, ValueError),
            ({"granted_at": "2026-11-01"}, TypeError),
            ({"withdrawn_at": dt.datetime(2026, 11, 2)}, ValueError),
        ],
        ids=["naive-grant", "text-grant", "naive-withdrawal"],
    )
    def test_bad_times_refused(self, over: dict[str, Any], error: type) -> None:
        """Naive or non-datetime times are refused with the exact error type."""
        with pytest.raises(error):
            _consent(**over)

    def test_repr_leaves_the_subject_out(self) -> None:
        """A record's repr names its id and purpose, never the subject."""
        text = repr(_consent(subject=CANARIES["email"]))
        assert "con_1" in text
        assert CANARIES["email"] not in text


class TestLedger:
    """Grant, withdraw, and what is in force, on the in-memory store."""

    def test_grant_then_withdraw(self, consent_ledger: ConsentLedger) -> None:
        """A withdrawal takes effect from its time on; the record stays."""
        subject = uuid.uuid4()
        c = consent_ledger.grant(
            subject, "marketing", method="web_form", notice_version="v3", now=T0
        )
        later = T0 + dt.timedelta(days=1)
        assert c.id == consent_ledger.consent_in_force(subject, "marketing", later)
        consent_ledger.withdraw(c.id, now=later)
        assert consent_ledger.consent_in_force(subject, "marketing", later) is None
        assert c.id == consent_ledger.consent_in_force(
            subject, "marketing", later - dt.timedelta(seconds=1)
        )
        assert [later] == [r.withdrawn_at for r in consent_ledger.history(subject)]

    def test_parent_consent_serves_child_purpose(
        self, consent_ledger: ConsentLedger
    ) -> None:
        """Consent to marketing serves marketing.email; consent to the child not the parent."""
        parent = consent_ledger.grant(
            "a", "marketing", method="paper", notice_version="v1", now=T0
        )
        consent_ledger.grant(
            "b", "marketing.email", method="paper", notice_version="v1", now=T0
        )
        assert {"a": parent.id} == consent_ledger.consents_in_force(
            ["a", "b"], "marketing", T0
        )
        assert {"a", "b"} == set(
            consent_ledger.consents_in_force(["a", "b"], "marketing.email", T0)
        )

    def test_withdraw_all(self, consent_ledger: ConsentLedger) -> None:
        """withdraw_all ends every consent of a subject for a purpose."""
        for _ in range(2):
            consent_ledger.grant(
                "s", "marketing", method="web_form", notice_version="v1", now=T0
            )
        assert 2 == len(consent_ledger.withdraw_all("s", "marketing", now=T0))
        assert consent_ledger.consent_in_force("s", "marketing", T0) is None

    @pytest.mark.parametrize(
        ("call", "error"),
        [
            (lambda lg: lg.withdraw("con_missing"), UnknownConsentError),
            (
                lambda lg: lg.grant("s", "nope", method="m", notice_version="v"),
                custdata.ConfigurationError,
            ),
            (
                lambda lg: lg.grant("s", "marketing", method="", notice_version="v"),
                ValueError,
            ),
        ],
        ids=["unknown-consent", "unknown-purpose", "no-method"],
    )
    def test_misuse(
        self, consent_ledger: ConsentLedger, call: Any, error: type
    ) -> None:
        """Misuse raises the exact error, a custdata error where it is a lookup."""
        with pytest.raises(error):
            call(consent_ledger)

    def test_unknown_consent_is_a_custdata_error(self) -> None:
        """UnknownConsentError is a CustdataError and a LookupError."""
        assert issubclass(UnknownConsentError, custdata.CustdataError)
        assert issubclass(UnknownConsentError, LookupError)

    def test_changes_recorded_in_the_audit_trail(
        self, sample_policy: custdata.Policy
    ) -> None:
        """Grant and withdrawal are consent.change events with a pseudonym, never the id."""
        sink = MemorySink()
        trail = AuditTrail(Keyring.generate(), sinks=[sink], checkpoint_interval=None)
        try:
            ledger = ConsentLedger.for_policy(sample_policy, audit=trail)
            c = ledger.grant(
                CANARIES["email"], "marketing", method="web", notice_version="v1"
            )
            ledger.withdraw(c.id, actor="cs-7")
        finally:
            trail.close()
        bodies = [json.loads(r.body) for r in sink.records]
        events = [e for e in bodies if e["action"] == "consent.change"]
        assert [None, "consent_withdrawn"] == [e.get("reason") for e in events]
        assert ["marketing", "marketing"] == [e["purpose"] for e in events]
        assert all(e["subject_ref"].startswith("sr_") for e in events)
        assert CANARIES["email"].encode() not in sink.lines()


def _decide(
    custodian: custdata.Custodian,
    role: str,
    purpose: str,
    *,
    action: Action = Action.READ,
    fields: dict[str, FieldPolicy | None],
    subjects: tuple[object, ...],
) -> custdata.AccessDecision:
    with custdata.acting_as("u-1", role=role), custdata.purpose(purpose):
        return custodian.authorize(
            action=action,
            entity="customers",
            fields=fields,
            subjects=subjects,
            count=len(subjects) * len(fields),
        )


EMAIL = {"email": FieldPolicy(category="contact.email", purposes=["marketing"])}
HEALTH = {
    "health": FieldPolicy(
        category="special_care.medical_history", purposes=["consultation", "support"]
    )
}


class TestEnforcement:
    """Custodian.authorize releases only subjects whose consent is in force."""

    @pytest.fixture
    def setup(
        self, sample_policy: custdata.Policy, consent_ledger: ConsentLedger
    ) -> tuple[custdata.Custodian, Recorder, ConsentLedger]:
        recorder = Recorder()
        c = custdata.Custodian(
            policy=sample_policy,
            audit=recorder,
            consent=consent_ledger,
            clock=lambda: T0 + dt.timedelta(days=10),
        )
        return c, recorder, consent_ledger

    def test_grant_read_withdraw_refused(self, setup: Any) -> None:
        """Grant → read allowed naming the consent; withdraw → next read refused, recorded."""
        custodian, recorder, ledger = setup
        c = ledger.grant("s1", "marketing", method="web", notice_version="v", now=T0)
        allowed = _decide(
            custodian, "marketer", "marketing.email", fields=EMAIL, subjects=("s1",)
        )
        assert (c.id,) == allowed.consents
        ledger.withdraw(c.id, now=T0 + dt.timedelta(days=1))
        with pytest.raises(ConsentRequiredError, match="1 of 1 data subject"):
            _decide(
                custodian, "marketer", "marketing.email", fields=EMAIL, subjects=("s1",)
            )
        denied = recorder.decisions[-1]
        assert (custdata.Outcome.DENIED, custdata.DenyReason.CONSENT_MISSING) == (
            denied.outcome,
            denied.reason,
        )
        assert ("s1",) == denied.subjects

    def test_one_subject_without_consent_refuses_the_batch(self, setup: Any) -> None:
        """A batch is released only if every subject consented; the others are named."""
        custodian, recorder, ledger = setup
        ledger.grant("s1", "marketing", method="web", notice_version="v", now=T0)
        with pytest.raises(ConsentRequiredError, match="1 of 2"):
            _decide(
                custodian,
                "marketer",
                "marketing.email",
                fields=EMAIL,
                subjects=("s1", "s2"),
            )
        assert ("s2",) == recorder.decisions[-1].subjects

    def test_no_ledger_fails_closed(self, sample_policy: custdata.Policy) -> None:
        """A consent-required read with no ledger configured is refused."""
        custodian = custdata.Custodian(policy=sample_policy)
        with pytest.raises(ConsentRequiredError, match="no consent ledger"):
            _decide(
                custodian, "marketer", "marketing.email", fields=EMAIL, subjects=("s",)
            )

    def test_unknown_subjects_refused(self, setup: Any) -> None:
        """Values whose subjects are not named cannot be checked, so are refused."""
        custodian, _, _ = setup
        with (
            custdata.acting_as("u-1", role="marketer"),
            custdata.purpose("marketing.email"),
            pytest.raises(ConsentRequiredError, match="unknown"),
        ):
            custodian.authorize(
                action=Action.READ, entity="customers", fields=EMAIL, count=3
            )

    def test_out_of_scope_consent_does_not_serve(self, setup: Any) -> None:
        """A consent scoped to other fields does not release these."""
        custodian, _, ledger = setup
        ledger.grant(
            "s1", "marketing", method="web", notice_version="v", scope=["name"], now=T0
        )
        with pytest.raises(ConsentRequiredError):
            _decide(
                custodian, "marketer", "marketing.email", fields=EMAIL, subjects=("s1",)
            )

    def test_purpose_without_consent_needs_none(self, setup: Any) -> None:
        """Purposes that do not say consent_required are not checked."""
        custodian, _, _ = setup
        decision = _decide(
            custodian,
            "billing_clerk",
            "billing",
            fields={
                "email": FieldPolicy(category="contact.email", purposes=["billing"])
            },
            subjects=("s1",),
        )
        assert () == decision.consents

    def test_special_care_write_needs_consent(self, setup: Any) -> None:
        """要配慮: writing special-care data for any purpose needs consent to it."""
        custodian, recorder, ledger = setup
        with pytest.raises(ConsentRequiredError, match="special-care"):
            _decide(
                custodian,
                "support_agent",
                "support",
                action=Action.WRITE,
                fields=HEALTH,
                subjects=("s1",),
            )
        assert custdata.DenyReason.CONSENT_MISSING == recorder.decisions[-1].reason
        c = ledger.grant("s1", "support", method="paper", notice_version="v", now=T0)
        written = _decide(
            custodian,
            "support_agent",
            "support",
            action=Action.WRITE,
            fields=HEALTH,
            subjects=("s1",),
        )
        assert (c.id,) == written.consents
        # Reading it back for support (no consent_required) needs no consent.
        read = _decide(
            custodian, "support_agent", "support", fields=HEALTH, subjects=("s2",)
        )
        assert read.allowed

    def test_any_consent_source_serves(self, sample_policy: custdata.Policy) -> None:
        """A plain ConsentSource (one subject at a time) is asked per subject."""

        class Source:
            def consent_in_force(
                self, subject: object, purpose: str, at: dt.datetime
            ) -> str | None:
                return "ext-1" if subject == "yes" else None

        custodian = custdata.Custodian(policy=sample_policy, consent=Source())
        assert ("ext-1",) == _decide(
            custodian, "marketer", "marketing.email", fields=EMAIL, subjects=("yes",)
        ).consents
        with pytest.raises(ConsentRequiredError):
            _decide(
                custodian, "marketer", "marketing.email", fields=EMAIL, subjects=("no",)
            )


# -- the database matrix -------------------------------------------------------------


class _Health:
    """A consultation model holding special-care data."""

    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:8]

        class Base(DeclarativeBase):
            pass

        class Patient(Base):
            __tablename__ = f"consent_patients_{suffix}"
            id: Mapped[uuid.UUID] = subject_key()
            history: Mapped[str | None] = customer_data(
                "special_care.medical_history", purposes=["consultation"]
            )

        self.Base = Base
        self.Patient = Patient


@pytest.fixture
def store(engine: Engine) -> Iterator[SqlConsentStore]:
    s = SqlConsentStore(engine, table_name=f"consent_{uuid.uuid4().hex[:8]}")
    s.create_table()
    yield s
    s.table.drop(engine)


@pytest.fixture
def sql_ledger(sample_policy: custdata.Policy, store: SqlConsentStore) -> ConsentLedger:
    return ConsentLedger.for_policy(sample_policy, store)


class TestSqlStore:
    """The ledger's records in the application's database (three databases)."""

    def test_round_trip(self, store: SqlConsentStore) -> None:
        """A record comes back equal, times aware and to the microsecond."""
        record = _consent(
            id="con_rt",
            scope=["email", "name"],
            granted_at=T0 + dt.timedelta(microseconds=123),
            evidence_ref="doc-9",
        )
        store.add(record)
        assert record == store.get("con_rt")
        later = T0 + dt.timedelta(seconds=1, microseconds=7)
        assert later == store.set_withdrawn("con_rt", later).withdrawn_at  # type: ignore[union-attr]
        # A second withdrawal keeps the first.
        again = store.set_withdrawn("con_rt", later + dt.timedelta(days=1))
        assert later == again.withdrawn_at  # type: ignore[union-attr]
        assert store.set_withdrawn("con_none", later) is None

    def test_batch_lookup(self, sql_ledger: ConsentLedger) -> None:
        """One lookup answers for many subjects, over more than one IN list."""
        subjects = [uuid.uuid4() for _ in range(1203)]
        granted = {
            str(s): sql_ledger.grant(
                s, "marketing", method="web", notice_version="v", now=T0
            ).id
            for s in subjects[::2]
        }
        assert granted == sql_ledger.consents_in_force(
            subjects, "marketing.email", T0 + dt.timedelta(days=1)
        )

    def test_orm_read_grant_withdraw(
        self,
        engine: Engine,
        models: Models,
        sample_policy: custdata.Policy,
        sql_ledger: ConsentLedger,
        recorder: Recorder,
    ) -> None:
        """Marketing reads a customer's e-mail once consented; after withdrawal it is refused."""
        custodian = custdata.Custodian(
            policy=sample_policy,
            keyring=Keyring.generate(),
            audit=recorder,
            consent=sql_ledger,
        )
        with custodian.activate():
            with Session(engine) as session, billing():
                customer = models.Customer(name="N", email=CANARIES["email"])
                session.add(customer)
                session.commit()
                cid = customer.id
            c = sql_ledger.grant(cid, "marketing", method="web", notice_version="v")
            with Session(engine) as session, marketing():
                assert [CANARIES["email"]] == session.scalars(
                    select(models.Customer.email)
                ).all()
            assert (c.id,) == recorder.decisions[-1].consents
            sql_ledger.withdraw(c.id)
            with (
                Session(engine) as session,
                marketing(),
                pytest.raises(ConsentRequiredError) as caught,
            ):
                session.scalars(select(models.Customer.email)).all()
            assert CANARIES["email"] not in str(caught.value)
            assert str(cid) not in str(caught.value)
            denied = recorder.decisions[-1]
            assert (custdata.DenyReason.CONSENT_MISSING, (str(cid),)) == (
                denied.reason,
                denied.subjects,
            )
            # The ORM entity load is refused the same way.
            with (
                Session(engine) as session,
                marketing(),
                pytest.raises(ConsentRequiredError),
            ):
                session.scalars(select(models.Customer)).all()

    def test_special_care_write_without_consent_stores_nothing(
        self,
        engine: Engine,
        sample_policy: custdata.Policy,
        sql_ledger: ConsentLedger,
        recorder: Recorder,
    ) -> None:
        """A 病歴 value written without consent is refused and nothing is stored."""
        health = _Health()
        health.Base.metadata.create_all(engine)
        custodian = custdata.Custodian(
            policy=sample_policy,
            keyring=Keyring.generate(),
            audit=recorder,
            consent=sql_ledger,
        )
        nutritionist = ("n-1", "nutritionist", "consultation")
        try:
            with custodian.activate():
                pid = uuid.uuid4()
                with (
                    Session(engine) as session,
                    custdata.acting_as(nutritionist[0], role=nutritionist[1]),
                    custdata.purpose(nutritionist[2]),
                ):
                    session.add(health.Patient(id=pid, history=HEALTH_CANARY))
                    with pytest.raises(ConsentRequiredError) as caught:
                        session.commit()
                    session.rollback()
                    assert HEALTH_CANARY not in str(caught.value)
                with engine.connect() as conn:
                    assert (
                        0
                        == conn.execute(
                            select(func.count()).select_from(health.Patient.__table__)
                        ).scalar_one()
                    )
                c = sql_ledger.grant(
                    pid, "consultation", method="paper", notice_version="v2"
                )
                with (
                    Session(engine) as session,
                    custdata.acting_as(nutritionist[0], role=nutritionist[1]),
                    custdata.purpose(nutritionist[2]),
                ):
                    session.add(health.Patient(id=pid, history=HEALTH_CANARY))
                    session.commit()
                    assert (c.id,) == recorder.decisions[-1].consents
                    session.expire_all()
                    got = session.get(health.Patient, pid)
                    assert got is not None
                    assert HEALTH_CANARY == got.history
        finally:
            health.Base.metadata.drop_all(engine)


def test_sql_store_on_application_metadata() -> None:
    """SqlConsentStore uses a table already defined on the application's metadata."""
    metadata = MetaData()
    engine = create_engine("sqlite://")
    try:
        a = SqlConsentStore(engine, metadata=metadata)
        b = SqlConsentStore(engine, metadata=metadata)
        assert a.table is b.table
        assert "custdata_consent" in metadata.tables
        assert isinstance(a, ConsentStore)
        assert isinstance(InMemoryConsentStore(), ConsentStore)
    finally:
        engine.dispose()
