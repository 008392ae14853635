"""Provision through the database: provide(), the SQL record store and the CLI.

Runs on SQLite, PostgreSQL and MariaDB (the ``db_url`` matrix). The records
live in the application's database; the ``export.third_party`` event names the
record; customer values never reach the records, the trail or a repr.
"""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
import uuid

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from sqlalchemy import MetaData, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import custdata

from custdata.audit import MemorySink
from custdata.cli import main
from custdata.governance import Basis, ProvisionGate, ProvisionRequest, Recipient
from custdata.sqlalchemy import SqlProvisionRecordStore, provide
from custdata.sqlalchemy._provision import provision_tables


sys.path.insert(0, str(Path(__file__).parent))
from provision_fixtures import (
    PARTNER,
    T0,
    DictConsent,
    RacingStore,
    example_data,
    request,
)
from sa_fixtures import (  # noqa: F401 - pytest fixtures
    CANARIES,
    Models,
    Recorder,
    billing,
    counting,
    engine,
    keyring,
    models,
    recorder,
    sa_custodian,
    trail_sink,
)


PURPOSE = "marketing.third_party"


@pytest.fixture
def store(engine: Engine) -> Iterator[tuple[SqlProvisionRecordStore, str]]:
    """A SQL record store on its own tables in the test database."""
    prefix = f"prov_{uuid.uuid4().hex[:8]}"
    metadata = MetaData()
    provision_tables(metadata, prefix=prefix)
    metadata.create_all(engine)
    try:
        yield SqlProvisionRecordStore(engine, metadata=metadata, prefix=prefix), prefix
    finally:
        metadata.drop_all(engine)


def _customers(engine: Engine, models: Models, n: int) -> list[uuid.UUID]:
    ids = []
    with Session(engine, expire_on_commit=False) as session, billing():
        for i in range(n):
            c = models.Customer(
                name=f"{CANARIES['name']} {i}",
                email=f"{i}.{CANARIES['email']}",
                card=CANARIES["card"],
            )
            session.add(c)
            session.flush()
            ids.append(c.id)
        session.commit()
    return ids


def _events(sink: MemorySink, start: int, action: str) -> list[dict[str, Any]]:
    return [r.fields for r in sink.records[start:] if r.fields["action"] == action]


def _gate(
    store: SqlProvisionRecordStore, consent: DictConsent | None = None
) -> ProvisionGate:
    data = example_data()
    # A call centre entrusted with support: an outsourcing the test models can serve.
    data["third_party"]["contractors"]["callcentre"] = {
        "name": "コール株式会社",
        "address": "札幌市",
        "purposes": ["support"],
        "categories": ["name"],
        "assessment_date": dt.date(2026, 8, 1),
        "assessment_result": "pass",
        "next_review_due": dt.date(2027, 8, 1),
    }
    return ProvisionGate(
        policy=custdata.Policy.from_dict(data), records=store, consent=consent
    )


@contextlib.contextmanager
def _consenting(consent: DictConsent) -> Iterator[custdata.Custodian]:
    """The current custodian, with the gate's consent source as its ledger.

    One ledger answers both questions: the gate's (may this be provided on
    consent?) and the read path's (may this subject's data be read for a
    consent-required purpose?).
    """
    current = custdata.current_custodian()
    with custdata.Custodian(
        policy=current.policy,
        keyring=current.keyring,
        audit=current.audit,
        subject_keys=current.subject_keys,
        consent=consent,
    ).activate() as custodian:
        yield custodian


class TestProvide:
    """provide(): decide, read under the provision purpose, audit, record, return."""

    def test_consent_provision_end_to_end(
        self,
        engine: Engine,
        models: Models,
        trail_sink: MemorySink,
        store: tuple[SqlProvisionRecordStore, str],
    ) -> None:
        """法27条1項, 29条: the values come back decrypted; the record is in the
        application's database; export.third_party names it; no value leaks."""
        records, prefix = store
        ids = _customers(engine, models, 3)
        consent = DictConsent()
        for s in ids[:2]:
            consent.give(s, PURPOSE)
        gate = _gate(records, consent)
        start = len(trail_sink.records)
        with (
            Session(engine) as session,
            _consenting(consent),
            custdata.acting_as("p-1", role="partnership_desk"),
        ):
            given = provide(
                session,
                models.Customer,
                gate=gate,
                recipient=PARTNER,
                basis=Basis.CONSENT_27_1,
                purpose=PURPOSE,
                subjects=ids[:2],
                fields=["email"],
                now=T0,
            )
        assert {f"0.{CANARIES['email']}", f"1.{CANARIES['email']}"} == {
            r["email"] for r in given.rows
        }
        assert set(ids[:2]) == {r["id"] for r in given.rows}
        assert given.record is not None
        assert given.record == records.get(given.record.record_id)
        assert {str(s) for s in ids[:2]} == set(given.record.subjects)
        (export,) = _events(trail_sink, start, "export.third_party")
        assert given.record.record_id == export["recipient"]["provision_record_id"]
        assert "consent_27_1" == export["recipient"]["basis"]
        assert ["email"] == export["fields"]
        assert _events(trail_sink, start, "field.reveal")
        with engine.connect() as conn:
            t = provision_tables(MetaData(), prefix=prefix).record
            stored = json.dumps([list(r) for r in conn.execute(select(t))], default=str)
        leaked = [
            v
            for v in CANARIES.values()
            if v in stored or v.encode() in trail_sink.lines() or v in repr(given)
        ]
        assert [] == leaked

    def test_record_names_only_the_subjects_provided(
        self,
        engine: Engine,
        models: Models,
        trail_sink: MemorySink,
        store: tuple[SqlProvisionRecordStore, str],
    ) -> None:
        """法29条1項, 規則20条: a subject asked for but not in the database is not
        named by the record (nothing of theirs left)."""
        records, _ = store
        ids = _customers(engine, models, 1)
        ghost = uuid.uuid4()
        consent = DictConsent()
        for s in (*ids, ghost):
            consent.give(s, PURPOSE)
        with (
            Session(engine) as session,
            _consenting(consent),
            custdata.acting_as("p-1", role="partnership_desk"),
        ):
            given = provide(
                session,
                models.Customer,
                gate=_gate(records, consent),
                recipient=PARTNER,
                basis=Basis.CONSENT_27_1,
                purpose=PURPOSE,
                subjects=[ids[0], ghost],
                fields=["email"],
                now=T0,
            )
        assert given.record is not None
        assert (str(ids[0]),) == given.record.subjects
        assert [str(ids[0])] == list(given.record.items["consent_fact"])
        assert [] == records.for_subject(str(ghost))

    def test_refused_provision_reads_and_records_nothing(
        self,
        engine: Engine,
        models: Models,
        trail_sink: MemorySink,
        store: tuple[SqlProvisionRecordStore, str],
    ) -> None:
        """法27条1項: one subject without consent → refused before any value is read."""
        records, _ = store
        ids = _customers(engine, models, 2)
        consent = DictConsent()
        consent.give(ids[0], PURPOSE)
        start = len(trail_sink.records)
        with (
            Session(engine) as session,
            _consenting(consent),
            custdata.acting_as("p-1", role="partnership_desk"),
            pytest.raises(custdata.ProvisionRefusedError),
        ):
            provide(
                session,
                models.Customer,
                gate=_gate(records, consent),
                recipient=PARTNER,
                basis="consent_27_1",
                purpose=PURPOSE,
                subjects=ids,
                fields=["email"],
                now=T0,
            )
        assert [] == _events(trail_sink, start, "field.reveal")
        assert [] == _events(trail_sink, start, "export.third_party")
        assert [] == records.all()
        denied = [
            e
            for e in _events(trail_sink, start, "purpose.check")
            if e.get("reason") == "provision_refused"
        ]
        assert 1 == len(denied)
        assert "denied" == denied[0]["outcome"]

    def test_field_outside_the_purpose_is_refused_unrecorded(
        self,
        engine: Engine,
        models: Models,
        trail_sink: MemorySink,
        store: tuple[SqlProvisionRecordStore, str],
    ) -> None:
        """法18条1項 and the gate: a field the provision purpose may not use stops it."""
        records, _ = store
        ids = _customers(engine, models, 1)
        consent = DictConsent()
        consent.give(ids[0], PURPOSE)
        start = len(trail_sink.records)
        with (
            Session(engine) as session,
            _consenting(consent),
            custdata.acting_as("p-1", role="partnership_desk"),
            pytest.raises(custdata.PurposeViolationError),
        ):
            provide(
                session,
                models.Customer,
                gate=_gate(records, consent),
                recipient=PARTNER,
                basis=Basis.CONSENT_27_1,
                purpose=PURPOSE,
                subjects=ids,
                fields=["card"],
                now=T0,
            )
        assert [] == _events(trail_sink, start, "export.third_party")
        assert [] == records.all()

    def test_outsourcing_is_audited_without_a_record(
        self,
        engine: Engine,
        models: Models,
        trail_sink: MemorySink,
        store: tuple[SqlProvisionRecordStore, str],
    ) -> None:
        """法27条5項1号: outsourcing → export.third_party with the basis, no record."""
        records, _ = store
        ids = _customers(engine, models, 2)
        start = len(trail_sink.records)
        with (
            Session(engine) as session,
            custdata.acting_as("u-1", role="support_agent"),
        ):
            given = provide(
                session,
                models.Customer,
                gate=_gate(records),
                recipient=Recipient(id="callcentre", name="コール株式会社"),
                basis=Basis.OUTSOURCING_27_5_1,
                purpose="support",
                subjects=ids,
                fields=["name"],
                now=T0,
            )
        assert given.record is None
        assert 2 == len(given.rows)
        (export,) = _events(trail_sink, start, "export.third_party")
        assert "outsourcing_27_5_1" == export["recipient"]["basis"]
        assert "provision_record_id" not in export["recipient"]
        assert [] == records.all()

    def test_not_a_customer_data_field_is_a_configuration_error(
        self, engine: Engine, models: Models, trail_sink: MemorySink
    ) -> None:
        """Only customer-data attributes can be provided through the gate."""
        gate = _gate(SqlProvisionRecordStore(engine))
        with (
            Session(engine) as session,
            custdata.acting_as("u-1", role="support_agent"),
            pytest.raises(custdata.ConfigurationError, match="plan"),
        ):
            provide(
                session,
                models.Customer,
                gate=gate,
                recipient=PARTNER,
                basis=Basis.EXCEPTION_27_1,
                exception="27_1_1",
                purpose="support",
                subjects=[uuid.uuid4()],
                fields=["plan"],
                now=T0,
            )


class TestPlainRecorder:
    """A custodian whose recorder is a plain DecisionRecorder still hears of exports."""

    def test_released_and_refused_exports_are_decisions(
        self,
        engine: Engine,
        models: Models,
        sa_custodian: custdata.Custodian,
        recorder: Recorder,
        store: tuple[SqlProvisionRecordStore, str],
    ) -> None:
        """An EXPORT allowed decision for a provision, an EXPORT denial
        (provision_refused) for a refused one."""
        records, _ = store
        ids = _customers(engine, models, 2)
        consent = DictConsent()
        consent.give(ids[0], PURPOSE)
        gate = _gate(records, consent)
        kw: dict[str, Any] = {
            "gate": gate,
            "recipient": PARTNER,
            "basis": Basis.CONSENT_27_1,
            "purpose": PURPOSE,
            "fields": ["email"],
            "now": T0,
        }
        with (
            Session(engine) as session,
            _consenting(consent),
            custdata.acting_as("p-1", role="partnership_desk"),
        ):
            provide(session, models.Customer, subjects=ids[:1], **kw)
            with pytest.raises(custdata.ProvisionRefusedError):
                provide(session, models.Customer, subjects=ids, **kw)
        exports = [d for d in recorder.decisions if d.action is custdata.Action.EXPORT]
        assert [
            (custdata.Outcome.ALLOWED, None, (str(ids[0]),), 1),
            (
                custdata.Outcome.DENIED,
                custdata.DenyReason.PROVISION_REFUSED,
                tuple(str(i) for i in ids),
                0,
            ),
        ] == [(d.outcome, d.reason, d.subjects, d.count) for d in exports]


class TestSqlStore:
    """The records in the application's database (法29条2項: kept, then purged)."""

    def test_bulk_record_round_trip_and_purge(
        self, store: tuple[SqlProvisionRecordStore, str]
    ) -> None:
        """規則19条2項, 21条2号: a bulk record grows in the database; times keep their
        zone and microseconds; purge_expired removes it only after its period."""
        records, _ = store
        consent = DictConsent()
        for s in ("S", "T", "U"):
            consent.give(s, PURPOSE)
        gate = _gate(records, consent)
        first_at = T0 + dt.timedelta(microseconds=123456)
        decision = gate.decide(_request(["S", "T"], method="bulk"), now=first_at)
        first = gate.record(decision, now=first_at)
        later = first_at + dt.timedelta(days=30)
        second = gate.record(
            gate.decide(_request(["U"], method="bulk"), now=later), now=later
        )
        assert first is not None
        assert second is not None
        assert [second] == records.all()
        assert ("S", "T", "U") == second.subjects
        assert first_at == records.all()[0].first_at
        assert later.replace(year=later.year + 3) == second.retain_until
        assert [second.record_id] == [r.record_id for r in records.for_subject("U")]
        assert records.open_bulk("provision", PARTNER.id, "consent_27_1") == second
        assert 0 == records.purge_expired(second.retain_until)
        assert 1 == records.purge_expired(second.retain_until + dt.timedelta(seconds=1))
        assert [] == records.all()
        assert [] == records.for_subject("S")

    def test_concurrent_extension_is_merged_again(
        self, store: tuple[SqlProvisionRecordStore, str]
    ) -> None:
        """規則19条2項: the database refuses a stale extension of a bulk record; the
        gate merges into the newer one, so no provision is lost."""
        records, _ = store
        consent = DictConsent()
        for s in ("S", "T", "U"):
            consent.give(s, PURPOSE)
        gate = _gate(records, consent)
        gate.record(gate.decide(_request(["S"], method="bulk"), now=T0), now=T0)

        def other_process(inner: SqlProvisionRecordStore) -> None:
            other = _gate(inner, consent)
            other.record(other.decide(_request(["T"], method="bulk"), now=T0), now=T0)

        racing = RacingStore(records, other_process)
        ours = _gate(racing, consent)  # type: ignore[arg-type]
        record = ours.record(
            ours.decide(_request(["U"], method="bulk"), now=T0), now=T0
        )
        assert record is not None
        assert [False, True] == racing.replaced
        assert [record] == records.all()
        assert ("S", "T", "U") == records.all()[0].subjects
        assert {"S", "T", "U"} == set(records.all()[0].items["consent_fact"])

    def test_replace_of_an_unknown_record_is_a_lookup_error(
        self, store: tuple[SqlProvisionRecordStore, str]
    ) -> None:
        """Only a stored record can be extended."""
        records, _ = store
        consent = DictConsent()
        consent.give("S", PURPOSE)
        gate = _gate(records, consent)
        rec = gate.record(gate.decide(_request(["S"]), now=T0), now=T0)
        assert rec is not None
        with pytest.raises(LookupError):
            records.replace(attrs.evolve(rec, record_id=str(uuid.uuid4())))


class TestRecordsCommand:
    """``custdata provision records --subject ID [--json]`` (法33条5項)."""

    def test_json_disclosure_names_only_the_subject(
        self,
        db_url: str,
        store: tuple[SqlProvisionRecordStore, str],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """The command prints exactly the records naming the subject, as JSON."""
        records, prefix = store
        consent = DictConsent()
        for s in ("S", "T"):
            consent.give(s, PURPOSE)
        gate = _gate(records, consent)
        gate.record(gate.decide(_request(["S", "T"], method="bulk"), now=T0), now=T0)
        gate.record(gate.decide(_request(["T"]), now=T0), now=T0)
        args = ["provision", "records", "--subject", "S", "--url", db_url]
        assert 0 == main([*args, "--prefix", prefix, "--json"])
        shown = json.loads(capsys.readouterr().out)
        assert gate.disclose("S") == shown
        assert 1 == len(shown["records"])
        assert ["S"] == shown["records"][0]["subjects"]
        assert 0 == main([*args, "--prefix", prefix])
        assert "1 record(s) name subject S" in capsys.readouterr().out

    @pytest.mark.parametrize("url", ["nonsense://x", "not a url"])
    def test_bad_url_exits_two_in_one_line(
        self, url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An unusable database URL: one line on stderr, exit 2, no traceback."""
        assert 2 == main(["provision", "records", "--subject", "S", "--url", url])
        err = capsys.readouterr().err
        assert ["custdata provision records: invalid database URL"] == [
            line.split(" (")[0] for line in err.strip().splitlines()
        ]

    def test_missing_tables_exit_two_in_one_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A database without the record tables: one line on stderr, exit 2."""
        url = f"sqlite:///{tmp_path / 'empty.db'}"
        assert 2 == main(["provision", "records", "--subject", "S", "--url", url])
        err = capsys.readouterr().err
        assert 1 == len(err.strip().splitlines())
        assert "database error" in err


def _request(subjects: list[str], **changes: Any) -> ProvisionRequest:
    return request(subjects=subjects, **changes)


def test_shop_example_tells_the_provision_story(tmp_path: Path) -> None:
    """examples/shop/provision.py: a delivery contractor (no record), a consenting
    partner (a record), a refused customer, and a disclosure."""
    import subprocess

    script = (
        Path(__file__).resolve().parent.parent / "examples" / "shop" / "provision.py"
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert 0 == result.returncode, result.stderr
    out = result.stdout
    assert "handed over 2 addresses; record: None" in out
    assert "consent fact: {" in out
    assert "refused: 1 of 1 subject(s) have no consent" in out
    assert "outsourcing_27_5_1   record=None" in out
    assert '"article": "法33条5項"' in out
    assert "Yamada Hanako" not in out
