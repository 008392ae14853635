"""Restriction of use per subject (利用停止, GDPR Art. 18): register, SQL store, enforcement."""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid

from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlalchemy import MetaData, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import custdata

from custdata import Action, DenyReason, FieldPolicy, SubjectRestrictedError
from custdata.audit import AuditTrail, JsonLinesSink, JsonLinesSource, MemorySink
from custdata.crypto import Keyring
from custdata.governance import (
    InMemoryRestrictionStore,
    RestrictionError,
    RestrictionRecord,
    Restrictions,
    RestrictionStore,
    UnknownRestrictionError,
)
from custdata.sqlalchemy import SqlRestrictionStore, add_custdata_tables


sys.path.insert(0, str(Path(__file__).parent))
from sa_fixtures import (  # noqa: F401 - pytest fixtures
    CANARIES,
    Models,
    Recorder,
    billing,
    engine,
    models,
    recorder,
)


UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
EMAIL = {
    "email": FieldPolicy(category="contact.email", purposes=["billing", "support"])
}


def _decide(
    custodian: custdata.Custodian,
    role: str,
    purpose: str,
    subjects: tuple[str, ...],
    *,
    action: Action = Action.READ,
) -> custdata.AccessDecision:
    with custdata.acting_as("u-1", role=role), custdata.purpose(purpose):
        return custodian.authorize(
            action=action,
            entity="customers",
            fields=EMAIL,
            subjects=subjects,
            count=len(subjects),
        )


class TestRegister:
    """Restrictions: restrict, lift, in force, refused per purpose (pure)."""

    def test_restrict_lift_in_force(self, sample_policy: custdata.Policy) -> None:
        """A restriction is in force from its time until lifted."""
        r = Restrictions.for_policy(sample_policy)
        rec = r.restrict(
            "s1",
            allowed_purposes={"billing"},
            reason="subject objects",
            actor="dpo",
            request_id="dsr-7",
            at=T0,
        )
        assert ("billing",) == rec.allowed_purposes
        assert "dsr-7" == rec.request_id
        assert {} == r.in_force(["s1"], T0 - dt.timedelta(seconds=1))
        assert {"s1": frozenset({"billing"})} == r.in_force(["s1", "s2"], T0)
        assert 1 == r.lift(
            "s1", reason="resolved", actor="dpo", at=T0 + dt.timedelta(1)
        )
        assert {} == r.in_force(["s1"], T0 + dt.timedelta(days=2))
        assert {"s1": frozenset({"billing"})} == r.in_force(
            ["s1"], T0 + dt.timedelta(hours=1)
        )
        (lifted,) = r.history("s1")
        assert ("dpo", "resolved") == (lifted.lifted_by, lifted.lift_reason)

    def test_refused_follows_allowed_purposes_and_their_children(
        self, sample_policy: custdata.Policy
    ) -> None:
        """Only the allowed purposes (and purposes below them) may still use the data."""
        r = Restrictions.for_policy(sample_policy)
        r.restrict("s1", allowed_purposes=["support"], reason="r", actor="a", at=T0)
        r.restrict("s2", reason="r", actor="a", at=T0)
        at = T0 + dt.timedelta(minutes=1)
        assert ("s2",) == r.refused(["s1", "s2", "s3"], "support", at)
        assert ("s2",) == r.refused(["s1", "s2"], "support.identity_check", at)
        assert {"s1", "s2"} == set(r.refused(["s1", "s2"], "billing", at))

    def test_two_restrictions_allow_only_what_both_allow(self) -> None:
        """Of several restrictions in force, the allowed purposes intersect."""
        r = Restrictions()
        r.restrict(
            "s", allowed_purposes={"billing", "support"}, reason="x", actor="a", at=T0
        )
        r.restrict("s", allowed_purposes={"billing"}, reason="y", actor="a", at=T0)
        assert ("s",) == r.refused(["s"], "support", T0)
        assert () == r.refused(["s"], "billing", T0)

    def test_bad_arguments_are_typed_errors(self) -> None:
        """Missing reason or actor, naive time, lifting nothing: public errors."""
        r = Restrictions()
        with pytest.raises(RestrictionError, match="reason"):
            r.restrict("s", reason="", actor="a", at=T0)
        with pytest.raises(RestrictionError, match="actor"):
            r.restrict("s", reason="r", actor="", at=T0)
        with pytest.raises(RestrictionError, match="aware"):
            r.restrict("s", reason="r", actor="a", at=dt.datetime(2026, 1, 1))
        with pytest.raises(UnknownRestrictionError):
            r.lift("s", reason="r", actor="a", at=T0)
        assert issubclass(UnknownRestrictionError, custdata.CustdataError)

    def test_subject_never_in_repr(self) -> None:
        """The record's repr and the store's leave the subject out."""
        r = Restrictions()
        rec = r.restrict("canary-subject-91", reason="r", actor="a", at=T0)
        assert "canary-subject-91" not in repr(rec)
        assert "canary-subject-91" not in repr(r.store)
        assert isinstance(r.store, RestrictionStore)
        assert isinstance(InMemoryRestrictionStore(), RestrictionStore)

    def test_set_and_lift_are_audited(self, sample_policy: custdata.Policy) -> None:
        """subject.restrict / subject.restrict_lift name the pseudonym, never the id."""
        sink = MemorySink()
        trail = AuditTrail(Keyring.generate(), sinks=[sink], checkpoint_interval=None)
        r = Restrictions.for_policy(sample_policy, audit=trail)
        r.restrict(
            "canary-77", reason="objection", actor="dpo", request_id="dsr-1", at=T0
        )
        r.lift("canary-77", reason="done", actor="dpo", at=T0 + dt.timedelta(1))
        events = [rec.fields for rec in sink.records]
        kinds = [e["action"] for e in events]
        assert ["subject.restrict", "subject.restrict_lift"] == kinds[-2:]
        restrict, lift = events[-2:]
        assert trail.subject_ref("canary-77") == restrict["subject_ref"]
        assert "dsr-1" == restrict["request_id"]
        assert {"type": "user", "id": "dpo"} == lift["actor"]
        assert "canary-77" not in json.dumps(events)
        assert "objection" not in json.dumps(events)


class TestEnforcement:
    """Custodian.authorize refuses restricted subjects for non-allowed purposes."""

    @pytest.fixture
    def setup(
        self, sample_policy: custdata.Policy
    ) -> tuple[custdata.Custodian, Recorder, Restrictions]:
        recorder = Recorder()
        register = Restrictions.for_policy(sample_policy)
        c = custdata.Custodian(
            policy=sample_policy,
            audit=recorder,
            restrictions=register,
            clock=lambda: T0 + dt.timedelta(days=10),
        )
        return c, recorder, register

    def test_read_refused_and_recorded_with_subjects(self, setup: tuple) -> None:  # type: ignore[type-arg]
        """Support may not read a restricted subject; the denial names only them."""
        custodian, recorder, register = setup
        register.restrict(
            "s2", allowed_purposes={"billing"}, reason="r", actor="a", at=T0
        )
        with pytest.raises(SubjectRestrictedError, match="1 data subject"):
            _decide(custodian, "support_agent", "support", ("s1", "s2"))
        denied = recorder.decisions[-1]
        assert (custdata.Outcome.DENIED, DenyReason.RESTRICTED, ("s2",)) == (
            denied.outcome,
            denied.reason,
            denied.subjects,
        )
        allowed = _decide(custodian, "billing_clerk", "billing", ("s1", "s2"))
        assert allowed.allowed
        assert issubclass(SubjectRestrictedError, custdata.AccessDeniedError)

    def test_write_and_export_refused_claim_and_delete_not(self, setup: tuple) -> None:  # type: ignore[type-arg]
        """Writes and exports are uses; erasure and claims are not refused."""
        custodian, _, register = setup
        register.restrict("s1", reason="r", actor="a", at=T0)
        for action in (Action.WRITE, Action.UPDATE, Action.EXPORT):
            with pytest.raises(SubjectRestrictedError):
                _decide(custodian, "billing_clerk", "billing", ("s1",), action=action)
        assert _decide(custodian, "billing_clerk", "billing", ("s9",)).allowed

    def test_lifted_restriction_releases(self, setup: tuple) -> None:  # type: ignore[type-arg]
        """After lifting, the next operation is allowed."""
        custodian, _, register = setup
        register.restrict("s1", reason="r", actor="a", at=T0)
        with pytest.raises(SubjectRestrictedError):
            _decide(custodian, "support_agent", "support", ("s1",))
        register.lift("s1", reason="ok", actor="a", at=T0 + dt.timedelta(days=1))
        assert _decide(custodian, "support_agent", "support", ("s1",)).allowed

    def test_json_lines_event_carries_the_reason(
        self, sample_policy: custdata.Policy, tmp_path: Path
    ) -> None:
        """The denial is written with reason ``restricted`` and the subject's pseudonym."""
        path = tmp_path / "audit.jsonl"
        trail = AuditTrail(
            Keyring.generate(), sinks=[JsonLinesSink(path)], checkpoint_interval=None
        )
        register = Restrictions.for_policy(sample_policy, audit=trail)
        custodian = custdata.Custodian(
            policy=sample_policy,
            audit=trail,
            restrictions=register,
            clock=lambda: T0 + dt.timedelta(days=1),
        )
        register.restrict("canary-s", reason="r", actor="dpo", at=T0)
        with pytest.raises(SubjectRestrictedError) as caught:
            _decide(custodian, "support_agent", "support", ("canary-s",))
        assert "canary-s" not in str(caught.value)
        trail.close()
        text = path.read_text()
        assert "canary-s" not in text
        events = [
            json.loads(body)
            for record in JsonLinesSource(path).records()
            if (body := getattr(record, "body", None)) is not None
        ]
        denied = [e for e in events if e.get("reason") == "restricted"]
        assert 1 == len(denied)
        assert trail.subject_ref("canary-s") == denied[0]["subject_ref"]


@pytest.fixture
def store(engine: Engine) -> Iterator[SqlRestrictionStore]:
    s = SqlRestrictionStore(engine, table_name=f"rst_{uuid.uuid4().hex[:8]}")
    s.create_table()
    yield s
    s.table.drop(engine)


class TestSqlStore:
    """The records in the application's database (three databases)."""

    def test_round_trip_and_lift(self, store: SqlRestrictionStore) -> None:
        """A record comes back equal, times aware to the microsecond; lift counts."""
        rec = RestrictionRecord(
            id="rst_1",
            subject="s1",
            allowed_purposes=("support", "billing"),
            reason="objection",
            placed_by="dpo",
            placed_at=T0 + dt.timedelta(microseconds=321),
            request_id="dsr-3",
        )
        store.add(rec)
        assert [rec] == store.records_for(["s1", "s2"])
        later = T0 + dt.timedelta(seconds=2, microseconds=9)
        assert 1 == store.lift("s1", by="dpo", at=later, reason="done")
        assert 0 == store.lift("s1", by="dpo", at=later, reason="again")
        (got,) = store.records_for(["s1"])
        assert (later, "dpo", "done") == (got.lifted_at, got.lifted_by, got.lift_reason)

    def test_in_force_filters_by_time_in_sql(self, store: SqlRestrictionStore) -> None:
        """The batched lookup sees a restriction only between its set and lift times."""
        register = Restrictions(store)
        register.restrict(
            "s1", allowed_purposes={"billing"}, reason="r", actor="a", at=T0
        )
        lifted = T0 + dt.timedelta(days=1, microseconds=5)
        register.lift("s1", reason="ok", actor="a", at=lifted)
        second = dt.timedelta(seconds=1)
        assert {} == register.in_force(["s1"], T0 - second)
        assert {"s1": frozenset({"billing"})} == register.in_force(["s1"], T0)
        assert {"s1": frozenset({"billing"})} == register.in_force(
            ["s1"], lifted - dt.timedelta(microseconds=1)
        )
        assert {} == register.in_force(["s1"], lifted)
        assert [("s1", ("billing",))] == store.in_force(["s1", "s2"], T0 + second)

    def test_batch_lookup_over_many_subjects(self, store: SqlRestrictionStore) -> None:
        """in_force answers for more subjects than one IN list holds."""
        register = Restrictions(store)
        subjects = [str(uuid.uuid4()) for _ in range(1103)]
        for s in subjects[::100]:
            register.restrict(s, reason="r", actor="a", at=T0)
        assert set(subjects[::100]) == set(register.in_force(subjects, T0))

    def test_orm_read_refused_for_restricted_subject(
        self,
        engine: Engine,
        models: Models,
        sample_policy: custdata.Policy,
        store: SqlRestrictionStore,
        recorder: Recorder,
    ) -> None:
        """An ORM read under a non-allowed purpose is refused; the allowed purpose reads."""
        register = Restrictions.for_policy(sample_policy, store)
        custodian = custdata.Custodian(
            policy=sample_policy,
            keyring=Keyring.generate(),
            audit=recorder,
            restrictions=register,
        )
        with custodian.activate():
            with Session(engine) as session, billing():
                customer = models.Customer(name="N", email=CANARIES["email"])
                session.add(customer)
                session.commit()
                cid = customer.id
            register.restrict(cid, allowed_purposes={"billing"}, reason="r", actor="a")
            with (
                Session(engine) as session,
                custdata.acting_as("agent-1", role="support_agent"),
                custdata.purpose("support"),
                pytest.raises(SubjectRestrictedError) as caught,
            ):
                session.scalars(select(models.Customer.email)).all()
            assert CANARIES["email"] not in str(caught.value)
            assert str(cid) not in str(caught.value)
            assert (DenyReason.RESTRICTED, (str(cid),)) == (
                recorder.decisions[-1].reason,
                recorder.decisions[-1].subjects,
            )
            with Session(engine) as session, billing():
                assert [CANARIES["email"]] == session.scalars(
                    select(models.Customer.email)
                ).all()
            # A write under a non-allowed purpose is refused too (ORM flush).
            with Session(engine) as session:
                with billing():
                    loaded = session.get(models.Customer, cid)
                    assert loaded is not None
                with (
                    custdata.acting_as("agent-1", role="support_agent"),
                    custdata.purpose("support"),
                ):
                    loaded.email = "new@example.com"
                    with pytest.raises(SubjectRestrictedError):
                        session.flush()
                    session.rollback()


def test_sql_store_on_application_metadata() -> None:
    """add_custdata_tables defines the table; the store on that metadata uses it."""
    metadata = MetaData()
    tables = add_custdata_tables(
        metadata,
        audit=False,
        subject_keys=False,
        consent=False,
        holds=False,
        provision=False,
        incidents=False,
        requests=False,
        restriction_table_name="app_restriction",
    )
    assert ["app_restriction"] == [t.name for t in tables]
    store = SqlRestrictionStore(
        None,  # type: ignore[arg-type]
        metadata=metadata,
        table_name="app_restriction",
    )
    assert store.table is tables[0]
