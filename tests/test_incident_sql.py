"""Incidents in the application's database (issue 14) on SQLite, PostgreSQL and MariaDB.

The SQL store keeps the record and an append-only timeline; the scope of an
incident is computed from a real audit trail written by ORM reads through the
SQL sink: the subjects a compromised account saw and the categories of the
fields it read, then classified and followed to its 35条5項 grounds.
"""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures
from __future__ import annotations

import datetime as dt
import sys
import uuid

from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlalchemy import Engine, create_engine, inspect, select
from sqlalchemy.orm import Session

import custdata

from custdata.audit import AuditQuery, AuditTrail, SqlSink
from custdata.crypto import Keyring
from custdata.governance import (
    IncidentRegister,
    Reportability,
    TimelineAction,
    key_custody,
)
from custdata.sqlalchemy import (
    SqlIncidentStore,
    add_custdata_tables,
    incident_scope_from_audit,
)


sys.path.insert(0, str(Path(__file__).resolve().parent))

from incident_fixtures import KNOWN, incident
from sa_fixtures import (  # noqa: F401 - pytest fixtures
    CANARIES,
    Models,
    engine,
    make_models,
)


@pytest.fixture
def store(engine: Engine, unique_suffix: str) -> Iterator[SqlIncidentStore]:
    """A SQL incident store on its own tables, dropped afterwards."""
    s = SqlIncidentStore(engine, prefix=f"t_inc_{unique_suffix}")
    s.create_tables()
    yield s
    for table in (s.tables.subject, s.tables.timeline, s.tables.incident):
        table.drop(engine, checkfirst=True)


class TestSqlStore:
    def test_round_trip_and_append_only_timeline(self, store: SqlIncidentStore) -> None:
        """The record reads back equal; entries keep their order, time zone and detail."""
        register = IncidentRegister(store)
        original = incident(subjects=1001, refs=("sr_a", "sr_b"), encrypted=True)
        register.open(original, actor="u-sec", now=KNOWN)
        register.classify("INC-T", actor="cpo", now=KNOWN + dt.timedelta(hours=1))
        register.record_fact("INC-T", "cause", "誤送信", actor="cpo", now=KNOWN)
        assert original == store.get("INC-T")
        entries = store.timeline("INC-T")
        assert [1, 2, 3] == [e.seq for e in entries]
        assert [
            TimelineAction.OPENED,
            TimelineAction.CLASSIFIED,
            TimelineAction.FACT,
        ] == [e.action for e in entries]
        assert KNOWN == entries[0].at
        assert KNOWN.utcoffset() == entries[0].at.utcoffset()
        assert {"item": "cause", "text": "誤送信"} == dict(entries[2].detail)
        assert ("INC-T",) == store.incidents_of_subject("sr_a")

    def test_duplicate_and_unknown(self, store: SqlIncidentStore) -> None:
        """A second open of an id and an unknown id are typed errors."""
        register = IncidentRegister(store)
        register.open(incident(), actor="u", now=KNOWN)
        with pytest.raises(custdata.IncidentError, match="already exists"):
            register.open(incident(cause="changed"), actor="u", now=KNOWN)
        assert "" == store.get("INC-T").cause
        with pytest.raises(custdata.UnknownIncidentError):
            store.timeline("INC-none")
        with pytest.raises(custdata.UnknownIncidentError):
            register.record_fact("INC-none", "cause", "x", actor="u")

    def test_incidents_in_detection_order(self, store: SqlIncidentStore) -> None:
        """Every incident is listed, oldest detection first."""
        register = IncidentRegister(store)
        register.open(incident(incident_id="INC-2"), actor="u", now=KNOWN)
        register.open(
            incident(incident_id="INC-1", detected_at=KNOWN - dt.timedelta(days=1)),
            actor="u",
            now=KNOWN,
        )
        assert ["INC-1", "INC-2"] == [i.incident_id for i in store.incidents()]


@pytest.fixture
def world(engine: Engine, unique_suffix: str) -> Iterator[tuple[Models, Keyring, str]]:
    """Customer models and a real audit trail into SQL tables on the same database."""
    models = make_models(unique_suffix)
    prefix = f"t_aud_{unique_suffix}"
    add_custdata_tables(
        models.Base.metadata, audit_prefix=prefix, subject_keys=False, incidents=False
    )
    models.create(engine)
    keyring = Keyring.generate()
    yield models, keyring, prefix
    models.drop(engine)


class TestScopeFromTheAuditTrail:
    def test_compromised_account(
        self,
        engine: Engine,
        store: SqlIncidentStore,
        world: tuple[Models, Keyring, str],
        sample_policy: custdata.Policy,
    ) -> None:
        """Subjects and categories revealed to one account become the incident's scope."""
        models, keyring, prefix = world
        url = engine.url.render_as_string(hide_password=False)
        trail = AuditTrail(
            keyring,
            sinks=[SqlSink(url, prefix=prefix, create=False, flush_interval=0.01)],
            checkpoint_interval=None,
        )
        custodian = custdata.Custodian(
            policy=sample_policy, keyring=keyring, audit=trail
        )
        ids = [uuid.uuid4() for _ in range(5)]
        start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
        try:
            with custodian.activate():
                with Session(engine) as session:
                    with custdata.acting_as("clerk-1", role="billing_clerk"):
                        with custdata.purpose("billing"):
                            for n, cid in enumerate(ids):
                                session.add(
                                    models.Customer(
                                        id=cid,
                                        name=f"{CANARIES['name']} {n}",
                                        email=f"c{n}@example.jp",
                                        card=CANARIES["card"],
                                    )
                                )
                            session.commit()
                with Session(engine) as session:
                    # The compromised support account reads three customers.
                    with custdata.acting_as("agent-x", role="support_agent"):
                        with custdata.purpose("support"):
                            for cid in ids[:3]:
                                c = session.get(models.Customer, cid)
                                assert c is not None
                                _ = (c.name, c.email)
                with Session(engine) as session:
                    # Someone else reads everything, with the card: not in scope.
                    with custdata.acting_as("clerk-1", role="billing_clerk"):
                        with custdata.purpose("billing"):
                            for c in session.scalars(select(models.Customer)):
                                _ = c.card
        finally:
            trail.close()
        until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=1)

        query = AuditQuery(engine, prefix=prefix, keys=keyring)
        scope = incident_scope_from_audit(
            query,
            actors=["agent-x"],
            since=start,
            until=until,
            metadata=models.Base.metadata,
            engine=engine,
        )
        assert 3 == scope.subject_count
        assert tuple(sorted(query.subject_ref(str(c)) for c in ids[:3])) == (
            scope.subject_refs
        )
        # A fetched batch is announced with the fields its context may read, so
        # the support account's scope is its permitted fields; never the card,
        # which only billing reads.
        assert {"contact.email", "name"} <= set(scope.categories)
        assert set(scope.categories) <= {"contact.email", "contact.phone", "name"}
        assert all(f.encrypted for f in scope.fields)
        # The data keys the fields' stored values are under, from their envelopes
        # (the phone column holds no value, so no key).
        keys = {f.category: f.key_ids for f in scope.fields}
        assert (keyring.primary_key_id,) == keys["contact.email"]
        assert (keyring.primary_key_id,) == keys["name"]
        assert () == keys.get("contact.phone", ())
        assert "agent-x" in scope.basis
        # A time window with no actor named: every subject anyone saw in it,
        # including the card the billing clerk read.
        window = incident_scope_from_audit(
            query, since=start, until=until, metadata=models.Base.metadata
        )
        assert 5 == window.subject_count
        assert tuple(sorted(query.subject_ref(str(c)) for c in ids)) == (
            window.subject_refs
        )
        assert "payment.card" in window.categories
        assert "anyone" in window.basis
        text = repr(scope) + scope.basis + repr(window)
        assert CANARIES["name"] not in text
        assert all(str(c) not in text for c in ids)

        register = IncidentRegister(store)
        register.open(
            incident(scope=scope, malicious=True, incident_id="INC-acct"),
            actor="u-sec",
            now=KNOWN,
        )
        result = register.classify(
            "INC-acct", actor="cpo", custody=key_custody(keyring), now=KNOWN
        )
        assert result.appi is not None
        # Plain reads by the attacker: the keys did their job, so no exemption.
        assert Reportability.REPORTABLE == result.appi.status
        assert (3,) == result.appi.category_numbers
        assert ("INC-acct",) == register.cessation_grounds(
            query.subject_ref(str(ids[0]))
        )
        assert () == register.cessation_grounds(query.subject_ref(str(ids[4])))

    def test_unknown_field_is_a_typed_error(
        self, engine: Engine, world: tuple[Models, Keyring, str]
    ) -> None:
        """An event naming a field no model declares stops the scope with IncidentError."""
        models, _keyring, _prefix = world

        class Fake:
            def subjects_revealed(self, actor: str, **kw: object) -> object:
                class R:
                    values = ("sr_1",)
                    rows = ({"outcome": "allowed", "entity": "other", "fields": ["x"]},)

                return R()

        with pytest.raises(custdata.IncidentError, match=r"other\.x"):
            incident_scope_from_audit(
                Fake(),
                actors=["a"],
                since=KNOWN,
                until=KNOWN,
                metadata=models.Base.metadata,
            )


def test_tables_join_the_metadata() -> None:
    """add_custdata_tables defines the incident tables a store then uses."""
    from sqlalchemy import MetaData

    metadata = MetaData()
    add_custdata_tables(
        metadata,
        audit=False,
        subject_keys=False,
        consent=False,
        holds=False,
        restrictions=False,
        provision=False,
    )
    engine = create_engine("sqlite://")
    try:
        store = SqlIncidentStore(engine, metadata=metadata)
        assert store.tables.incident is metadata.tables["custdata_incident"]
        metadata.create_all(engine)
        assert {
            "custdata_incident",
            "custdata_incident_timeline",
            "custdata_incident_subject",
        } == set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
