"""The audit trail: schema, pipeline isolation (G7), fail-closed sinks, concurrency (G4), canaries (G8)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from hypothesis import given
from hypothesis import strategies as st

import custdata

from custdata._decision import AccessDecision, Action, DenyReason, Outcome


sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_fixtures import T0, FakeKeys, decision
from custdata import audit
from custdata.audit import (
    AuditTrail,
    Checkpointer,
    CheckpointSigner,
    CheckpointVerifier,
    FileAnchor,
    JsonLinesSink,
    JsonLinesSource,
    MemorySink,
    SqlSink,
    verify_trail,
)
from custdata.audit._schema import canonical_json, validate_body


def bodies(sink: MemorySink) -> list[dict[str, object]]:
    return [json.loads(r.body) for r in sink.records]


@pytest.fixture
def mem() -> MemorySink:
    return MemorySink()


@pytest.fixture
def trail(mem: MemorySink) -> Iterator[AuditTrail]:
    t = AuditTrail(FakeKeys(), sinks=[mem], checkpoint_interval=None)
    yield t
    mem.unavailable = False
    t.close()


class TestPublicApi:
    def test_all_matches_public_names(self) -> None:
        """``custdata.audit.__all__`` lists exactly the public names, sorted.

        Only identifiers are names: pytest's assertion rewriting (custdata ships a
        pytest plugin, so pytest rewrites the package) adds ``@py_builtins``.
        """
        public = sorted(
            n
            for n in dir(audit)
            if n.isidentifier() and not n.startswith("_") and n != "annotations"
        )
        assert public == sorted(audit.__all__)
        assert sorted(audit.__all__) == audit.__all__

    def test_classes_show_public_module(self) -> None:
        """Re-exported classes report ``custdata.audit`` as their module."""
        assert "custdata.audit" == AuditTrail.__module__


class TestSchema:
    def test_reveal_event_body(self, trail: AuditTrail, mem: MemorySink) -> None:
        """An allowed READ becomes one ``field.reveal`` body with allowlisted keys only."""
        trail.record_decision(decision("u-102"), now=T0)
        start, reveal = bodies(mem)
        assert "audit.chain_start" == start["action"]
        assert {
            "action": "field.reveal",
            "outcome": "allowed",
            "actor": {"type": "user", "id": "u-102", "roles": ["support_agent"]},
            "purpose": "support",
            "policy_version": "2026.1",
            "entity": "customers",
            "fields": ["email", "name"],
            "data_categories": ["contact", "name"],
            "subject_ref": trail.subject_ref("c-1"),
            "count": 2,
            "ts": "2026-11-29T09:00:00.000000Z",
            "v": 1,
        } == {k: v for k, v in reveal.items() if k not in {"event_id", "lib"}}

    def test_body_bytes_are_canonical(self, trail: AuditTrail, mem: MemorySink) -> None:
        """The sealed bytes are sorted, compact JSON of the body."""
        trail.record_decision(decision("u-1"), now=T0)
        rec = mem.records[-1]
        assert canonical_json(json.loads(rec.body)) == rec.body

    def test_event_id_is_uuid7(self, trail: AuditTrail, mem: MemorySink) -> None:
        """Event ids are version-7 UUIDs."""
        import uuid

        trail.record_decision(decision("u-1"), now=T0)
        assert 7 == uuid.UUID(str(bodies(mem)[-1]["event_id"])).version

    @pytest.mark.parametrize(
        ("action", "expected"),
        [
            (Action.READ, "field.reveal"),
            (Action.CLAIM, "purpose.check"),
            (Action.EXPORT, "export.third_party"),
            (Action.DELETE, "record.delete"),
            (Action.UPDATE, "record.bulk_update"),
            (Action.WRITE, "purpose.check"),
        ],
    )
    def test_allowed_decision_maps_to_action(
        self, trail: AuditTrail, mem: MemorySink, action: Action, expected: str
    ) -> None:
        """Each allowed decision action maps to its event action."""
        trail.record_decision(decision("u-1", action=action), now=T0)
        assert expected == bodies(mem)[-1]["action"]

    def test_denial_is_purpose_check_with_reason(
        self, trail: AuditTrail, mem: MemorySink
    ) -> None:
        """A denied decision is ``purpose.check`` denied with the enumerated reason."""
        trail.record_decision(
            decision(
                "u-1",
                outcome=Outcome.DENIED,
                reason=DenyReason.PURPOSE_NOT_PERMITTED,
                denied_fields=("card",),
            ),
            now=T0,
        )
        body = bodies(mem)[-1]
        assert (
            "purpose.check",
            "denied",
            "purpose_not_permitted",
            ["card"],
            "read",
        ) == (
            body["action"],
            body["outcome"],
            body["reason"],
            body["denied_fields"],
            body["requested"],
        )

    def test_no_actor_is_written_as_none_type(
        self, trail: AuditTrail, mem: MemorySink
    ) -> None:
        """A decision without actor records ``actor.type == "none"``."""
        trail.record_decision(
            AccessDecision(
                outcome=Outcome.DENIED,
                reason=DenyReason.NO_ACTOR,
                action=Action.READ,
                actor=None,
                role=None,
                purpose=None,
                policy_version="1",
            ),
            now=T0,
        )
        assert {"type": "none"} == bodies(mem)[-1]["actor"]

    def test_bulk_subjects_split_at_1000(
        self, trail: AuditTrail, mem: MemorySink
    ) -> None:
        """2,500 subjects become three events of ≤1,000 refs whose counts add up."""
        subjects = tuple(f"c-{i}" for i in range(2500))
        trail.record_decision(decision("u-1", subjects=subjects, count=5000), now=T0)
        events = bodies(mem)[1:]
        assert [1000, 1000, 500] == [len(e["subjects"]) for e in events]  # type: ignore[arg-type]
        assert 5000 == sum(e["count"] for e in events)  # type: ignore[misc]
        assert [{"index": i, "total": 3} for i in (1, 2, 3)] == [
            e["batch"] for e in events
        ]

    @pytest.mark.parametrize(
        "extra",
        [
            {"value": "x"},
            {"email": "a"},
            {"fields": ["alice@example.com"]},
            {"entity": "free text here"},
            {"count": 1.5},
            {"count": 2**63},
            {"reason": "because I said so"},
        ],
    )
    def test_schema_refuses_bad_keys_and_values(
        self, trail: AuditTrail, extra: dict[str, object]
    ) -> None:
        """Unknown keys, free text, e-mail addresses, floats and big ints raise ValueError."""
        with pytest.raises(ValueError) as info:
            trail.record(
                "field.reveal",
                outcome="allowed",
                actor={"type": "user", "id": "u"},
                **extra,  # type: ignore[arg-type]
            )
        assert "alice" not in str(info.value)
        assert "free text" not in str(info.value)

    def test_unknown_action_is_refused(self) -> None:
        """A body with an unknown action fails validation."""
        with pytest.raises(ValueError):
            validate_body({"action": "nope", "v": 1})


class TestPipelineIsolation:
    def test_structlog_global_config_untouched(self, tmp_path: Path) -> None:
        """G7: importing and using the audit trail leaves structlog's configuration as it was."""
        before = structlog.get_config()
        with AuditTrail(
            FakeKeys(),
            sinks=[JsonLinesSink(tmp_path / "a.jsonl")],
            checkpoint_interval=None,
        ) as t:
            t.record_decision(decision("u-1"), now=T0)
        assert before == structlog.get_config()

    def test_app_configure_and_clear_contextvars_cannot_drop_events(
        self, mem: MemorySink
    ) -> None:
        """G7: an app config that drops everything, and clear_contextvars, do not affect audit events."""

        def drop(_logger: object, _method: str, _event: object) -> object:
            raise structlog.DropEvent

        saved = structlog.get_config()
        try:
            t = AuditTrail(FakeKeys(), sinks=[mem], checkpoint_interval=None)
            t.record_decision(decision("u-1"), now=T0)
            structlog.configure(
                processors=[drop],  # type: ignore[list-item]
                wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
            )
            structlog.contextvars.bind_contextvars(actor="intruder")
            structlog.contextvars.clear_contextvars()
            t.record_decision(decision("u-2"), now=T0)
            t.close()
        finally:
            structlog.configure(**saved)
            structlog.contextvars.clear_contextvars()
        actions = [(b["action"], b["actor"].get("id")) for b in bodies(mem)]  # type: ignore[attr-defined]
        assert [
            ("audit.chain_start", "custdata"),
            ("field.reveal", "u-1"),
            ("field.reveal", "u-2"),
            ("audit.chain_stop", "custdata"),
        ] == actions


class TestFailClosed:
    def test_unavailable_sink_refuses_decision(
        self, trail: AuditTrail, mem: MemorySink
    ) -> None:
        """A sink that cannot take the event makes record_decision raise AuditUnavailableError."""
        trail.record_decision(decision("u-1"), now=T0)
        mem.unavailable = True
        with pytest.raises(custdata.AuditUnavailableError):
            trail.record_decision(decision("u-1"), now=T0)

    def test_refused_event_leaves_no_gap(
        self, trail: AuditTrail, mem: MemorySink
    ) -> None:
        """An event no sink took does not consume a sequence number."""
        trail.record_decision(decision("u-1"), now=T0)
        mem.unavailable = True
        with pytest.raises(custdata.AuditUnavailableError):
            trail.record_decision(decision("u-1"), now=T0)
        mem.unavailable = False
        trail.record_decision(decision("u-1"), now=T0)
        assert [1, 2, 3] == [r.seq for r in mem.records]

    def test_fail_open_logs_instead_and_is_audited(
        self, trail: AuditTrail, mem: MemorySink, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Switching fail-closed off is itself an audit event; then failures only warn."""
        trail.set_fail_closed(False, actor="admin-1", now=T0)
        assert {"setting": "fail_closed", "old": True, "new": False} == bodies(mem)[-1][
            "change"
        ]
        mem.unavailable = True
        with caplog.at_level(logging.WARNING, logger="custdata.audit"):
            trail.record_decision(decision("u-1"), now=T0)
        assert "not recorded" in caplog.text

    def test_custodian_refuses_when_audit_is_unavailable(
        self, sample_policy: custdata.Policy
    ) -> None:
        """Custodian.authorize refuses an allowed access whose decision cannot be recorded."""
        sink = MemorySink()
        t = AuditTrail(FakeKeys(), sinks=[sink], checkpoint_interval=None)
        c = custdata.Custodian(policy=sample_policy, audit=t)
        with (
            c.activate(),
            custdata.acting_as("u-7", role="support_agent"),
            custdata.purpose("support"),
        ):
            sink.unavailable = True
            with pytest.raises(custdata.AuditUnavailableError):
                c.authorize(action=Action.READ, entity="customers")
            sink.unavailable = False
        t.close()

    def test_full_sql_queue_raises_after_blocking(self, tmp_path: Path) -> None:
        """A full SQL sink queue blocks briefly, then raises AuditUnavailableError; nothing is dropped."""
        import sqlalchemy as sa

        from custdata.audit import SqlSource, audit_tables

        url = f"sqlite:///{tmp_path / 'a.db'}"
        sink = SqlSink(
            url, mode="async", max_queue=3, block_timeout=0.01, flush_interval=0.01
        )
        blocker = threading.Event()
        original = sink._write

        def slow_write(batch: list[Any]) -> None:
            blocker.wait()
            original(batch)

        sink._write = slow_write  # type: ignore[method-assign]
        keys = FakeKeys()
        t = AuditTrail(keys, sinks=[sink], checkpoint_interval=None)
        t.record_decision(decision("u-1"), now=T0)  # chain start + 1: two queued
        t.record_decision(decision("u-1"), now=T0)  # three queued: full
        with pytest.raises(custdata.AuditUnavailableError, match="queue is full"):
            t.record_decision(decision("u-1"), now=T0)
        recorded = 2
        blocker.set()
        t.close()
        engine = sa.create_engine(url)
        try:
            report = verify_trail(SqlSource(engine, audit_tables()), keys)
        finally:
            engine.dispose()
        assert ["UNANCHORED_TAIL"] == report.kinds()
        assert recorded + 2 == report.events


class TestCheckpointsOnEvents:
    def test_key_purge_config_and_export_events_anchor_at_once(
        self, tmp_path: Path
    ) -> None:
        """Key, purge, export and audit-configuration events each add a checkpoint at once."""
        path = tmp_path / "a.jsonl"
        signer = CheckpointSigner.generate("test/audit")
        anchor = FileAnchor(tmp_path / "anchor.jsonl")
        keys = FakeKeys()
        cp = Checkpointer(JsonLinesSource(path), signer, anchor)
        t = AuditTrail(
            keys, sinks=[JsonLinesSink(path)], checkpointer=cp, checkpoint_interval=None
        )
        t.record_decision(decision("u-1"), now=T0)
        assert 0 == len(anchor.records())
        t.key_rotated(old_key_id="101", new_key_id="102", actor="admin-1", now=T0)
        t.key_shredded(key_id="77", actor="admin-1", subject="c-9", now=T0)
        t.key_retired(key_id="101", actor="admin-1", now=T0)
        t.purge(
            stage="intent",
            purge_id="p-1",
            actor="retention-job",
            entity="customers",
            subjects=["c-1"],
            count=1,
            now=T0,
        )
        t.purge(
            stage="done",
            purge_id="p-1",
            actor="retention-job",
            entity="customers",
            subjects=["c-1"],
            count=1,
            now=T0,
        )
        t.export(
            actor="u-1",
            recipient_id="r-1",
            basis="consent_27_1",
            purpose="marketing",
            policy_version="1",
            entity="customers",
            fields=["email"],
            subjects=["c-1", "c-2"],
            count=2,
            now=T0,
        )
        t.config_changed(
            setting="checkpoint_interval", old=60, new=30, actor="admin-1", now=T0
        )
        assert 7 == len(anchor.records())
        t.close(now=T0)
        report = verify_trail(
            JsonLinesSource(path),
            keys,
            checkpoints=anchor,
            verifier=CheckpointVerifier(signer.verifier_key),
        )
        assert [] == report.kinds()
        assert 0 == report.unanchored

    def test_keyring_is_an_audit_key_source(self, tmp_path: Path) -> None:
        """The real Keyring works as the trail's key source (int key ids become text key_refs)."""
        from custdata.crypto import Keyring

        ring = Keyring.generate()
        path = tmp_path / "a.jsonl"
        with AuditTrail(
            ring, sinks=[JsonLinesSink(path)], checkpoint_interval=None
        ) as t:
            t.record_decision(decision("u-1"), now=T0)
        report = verify_trail(JsonLinesSource(path), ring)
        assert ["UNANCHORED_TAIL"] == report.kinds()
        assert (
            str(ring.audit_root_key()[0])
            == json.loads(path.read_text().splitlines()[0])["key_ref"]
        )


class TestConcurrency:
    def test_tasks_threads_and_forks_keep_their_actors(
        self, tmp_path: Path, sample_policy: custdata.Policy
    ) -> None:
        """G4: 100 asyncio tasks, 8 threads and 2 forked processes; every event has its own actor."""
        path = tmp_path / "a.jsonl"
        keys = FakeKeys()
        t = AuditTrail(
            keys, sinks=[JsonLinesSink(path, version=1)], checkpoint_interval=None
        )
        c = custdata.Custodian(policy=sample_policy, audit=t)

        def work(name: str) -> None:
            with (
                c.activate(),
                custdata.acting_as(
                    f"u-{name}", role="support_agent", request_id=f"r-{name}"
                ),
            ):
                with custdata.purpose("support"):
                    for _ in range(3):
                        c.authorize(
                            action=Action.READ,
                            entity="customers",
                            subjects=[name],
                            count=1,
                        )

        async def task(i: int) -> None:
            with custdata.acting_as(
                f"u-a{i}", role="support_agent", request_id=f"r-a{i}"
            ):
                with custdata.purpose("support"):
                    for _ in range(3):
                        c.authorize(
                            action=Action.READ,
                            entity="customers",
                            subjects=[f"a{i}"],
                            count=1,
                        )
                        await asyncio.sleep(0)

        async def many() -> None:
            await asyncio.gather(*(task(i) for i in range(100)))

        with c.activate():
            t.record_decision(
                decision("u-parent"), now=T0
            )  # start the parent's chain before forking
            pids = []
            for k in range(2):
                pid = os.fork()
                if pid == 0:  # pragma: no cover - child
                    code = 0
                    try:
                        work(f"f{k}")
                        t.close()
                    except BaseException as exc:
                        sys.stderr.write(repr(exc))
                        code = 1
                    os._exit(code)
                pids.append(pid)
            threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(8)]
            for th in threads:
                th.start()
            asyncio.run(many())
            for th in threads:
                th.join()
            for pid in pids:
                assert 0 == os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        t.close()
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        chains = {x["chain"] for x in lines}
        assert 3 == len(chains)
        checked = 0
        for x in lines:
            body = x["body"]
            if "request_id" in body:
                assert "u-" + body["request_id"][2:] == body["actor"]["id"]
                checked += 1
        # 110 contexts x (1 claim + 3 reads)
        per_chain = {ch: sum(1 for x in lines if x["chain"] == ch) for ch in chains}
        assert 110 * 4 == checked, per_chain
        report = verify_trail(JsonLinesSource(path), keys)
        assert ["UNANCHORED_TAIL"] == report.kinds()
        starts = [
            x["body"] for x in lines if x["body"]["action"] == "audit.chain_start"
        ]
        assert 2 == sum(1 for b in starts if "parent_chain" in b["chain_info"])


class TestCanaries:
    CANARIES = ("Canary Value 7d1f9e", "canary.value@example.com", "カナリア山田")

    def test_canaries_never_reach_sinks_logs_or_errors(
        self,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """G8: canaries sent as subjects through reveal, denial, export, purge and errors appear nowhere."""
        import sqlalchemy as sa

        path = tmp_path / "a.jsonl"
        db = tmp_path / "a.db"
        sql = SqlSink(f"sqlite:///{db}")
        mem = MemorySink()
        t = AuditTrail(
            FakeKeys(), sinks=[JsonLinesSink(path), sql, mem], checkpoint_interval=None
        )
        errors: list[str] = []
        with caplog.at_level(logging.DEBUG), structlog.testing.capture_logs() as logs:
            for canary in self.CANARIES:
                t.record_decision(decision("u-1", subjects=(canary, "c-2")), now=T0)
                t.record_decision(
                    decision(
                        "u-1",
                        subjects=(canary,),
                        outcome=Outcome.DENIED,
                        reason=DenyReason.PURPOSE_NOT_PERMITTED,
                    ),
                    now=T0,
                )
                t.export(
                    actor="u-1",
                    recipient_id="r-1",
                    basis="consent_27_1",
                    purpose="marketing",
                    policy_version="1",
                    entity="customers",
                    fields=["email"],
                    subjects=[canary],
                    now=T0,
                )
                t.purge(
                    stage="intent",
                    purge_id="p",
                    actor="job",
                    entity="customers",
                    subjects=[canary],
                    now=T0,
                )
                t.key_shredded(key_id="9", actor="admin", subject=canary, now=T0)
                for bad in (
                    {"entity": canary},
                    {"fields": [canary]},
                    {"request_id": canary},
                ):
                    try:
                        t.record(
                            "field.reveal",
                            outcome="allowed",
                            actor={"type": "user", "id": "u"},
                            **bad,
                        )
                    except ValueError as exc:
                        errors.append(str(exc) + repr(exc))
                mem.unavailable = True
                try:
                    t.record_decision(decision("u-1", subjects=(canary,)), now=T0)
                except custdata.AuditUnavailableError as exc:
                    errors.append(str(exc) + repr(exc))
                mem.unavailable = False
            t.close()
        engine = sa.create_engine(f"sqlite:///{db}")
        with engine.connect() as conn:
            dump = "\n".join(conn.connection.driver_connection.iterdump())  # type: ignore[union-attr]
        engine.dispose()
        out = capsys.readouterr()
        haystacks = [
            path.read_text(encoding="utf-8"),
            db.read_bytes().decode("utf-8", "replace"),
            dump,
            mem.lines().decode(),
            caplog.text,
            repr(logs),
            out.out + out.err,
            "\n".join(errors),
            repr(t) + repr(mem.records),
        ]
        assert 12 == len(errors)
        for canary in self.CANARIES:
            for hay in haystacks:
                assert canary not in hay
                assert canary.encode().hex() not in hay


class TestPreparedDecisions:
    """Decision events are rendered from a prepared template; the bytes must not change."""

    @pytest.mark.parametrize(
        "extra",
        [
            {},
            {"request_id": "req-1", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"},
            {"request_id": "req-1"},
            {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"},
            {"consents": ("consent-1",)},
            {"subjects": ()},
            {"subjects": ("c-1", "c-1")},
            {"subjects": tuple(f"c-{i}" for i in range(1500)), "count": 3001},
            {
                "outcome": Outcome.DENIED,
                "reason": DenyReason.PURPOSE_NOT_PERMITTED,
                "denied_fields": ("card",),
            },
            {"action": Action.EXPORT},
            {"role": None, "purpose": None, "entity": None, "fields": ()},
            {"request_id": Action.READ},  # a str subclass: the generic path
        ],
    )
    def test_body_is_canonical_json_of_its_fields(
        self, trail: AuditTrail, mem: MemorySink, extra: dict[str, object]
    ) -> None:
        """Each sealed body is exactly ``canonical_json`` of its decoded fields, and valid."""
        trail.record_decision(decision("u-1", **extra), now=T0)  # type: ignore[arg-type]
        trail.record_decision(decision("u-1", **extra))  # type: ignore[arg-type]
        for rec in mem.records[1:]:
            assert canonical_json(json.loads(rec.body)) == rec.body
            assert json.loads(rec.body) == json.loads(canonical_json(rec.fields))
            validate_body(json.loads(rec.body))

    @pytest.mark.parametrize(
        "extra",
        [
            {"request_id": "free text"},
            {"trace_id": "alice@example.com"},
            {"count": 2**63},
        ],
    )
    def test_bad_dynamic_values_are_refused(
        self, trail: AuditTrail, extra: dict[str, object]
    ) -> None:
        """Per-event values of a prepared decision are checked like any body value."""
        with pytest.raises(ValueError) as info:
            trail.record_decision(decision("u-1", **extra), now=T0)  # type: ignore[arg-type]
        assert "alice" not in str(info.value)
        assert "free text" not in str(info.value)

    def test_mac_matches_an_independent_implementation(
        self, trail: AuditTrail, mem: MemorySink
    ) -> None:
        """Records chain by HMAC-SHA256 with forward-evolving keys exactly as documented."""
        import hashlib
        import hmac

        keys = trail._keys
        for n in range(3):
            trail.record_decision(decision(f"u-{n}"), now=T0)
        chain = mem.records[0].chain
        key_ref = mem.records[0].key_ref
        root = keys.audit_root_key_for(key_ref)
        key = hmac.digest(
            root, b"custdata/audit/chain/v1\x00" + chain.encode(), "sha256"
        )
        prev = bytes(32)
        for seq, rec in enumerate(mem.records, 1):
            digest = hashlib.sha256(rec.body).digest()
            msg = b"".join(
                (
                    b"custdata/audit/v1\x00",
                    chain.encode(),
                    b"\x00",
                    key_ref.encode(),
                    b"\x00",
                    seq.to_bytes(8, "big"),
                    prev,
                    digest,
                )
            )
            assert (seq, prev, digest) == (rec.seq, rec.prev, rec.body_sha256)
            assert hmac.digest(key, msg, "sha256") == rec.mac
            prev = rec.mac
            key = hashlib.sha256(b"custdata/audit/evolve/v1" + key).digest()


class TestStamps:
    def test_timestamps_match_datetime_formatting(self) -> None:
        """``ts`` is the UTC time with microseconds, as ``strftime`` would write it."""
        import datetime as dt

        from custdata.audit._schema import format_ts, stamps_from_us

        for when in (
            T0,
            T0 + dt.timedelta(microseconds=7),
            dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.timezone.utc),
            dt.datetime(2026, 3, 1, 9, tzinfo=dt.timezone(dt.timedelta(hours=9))),
        ):
            expected = when.astimezone(dt.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            )
            assert expected == format_ts(when)
            us = round(
                (when - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)).total_seconds()
                * 1e6
            )
            assert expected == stamps_from_us(us)[1]
        with pytest.raises(ValueError):
            format_ts(dt.datetime(2026, 1, 1))

    def test_event_ids_are_unique_uuid7_in_time_order(self) -> None:
        """Event ids are version-7 UUIDs, unique within a millisecond, ordered by time."""
        import uuid

        from custdata.audit._schema import event_id_from_us, stamps_from_us

        us = 1_764_406_800_123_456
        ids = [stamps_from_us(us)[0] for _ in range(1000)] + [
            event_id_from_us(us) for _ in range(1000)
        ]
        assert len(set(ids)) == len(ids)
        parsed = [uuid.UUID(i) for i in ids]
        assert {7} == {u.version for u in parsed}
        assert {uuid.RFC_4122} == {u.variant for u in parsed}
        assert {us // 1000} == {u.int >> 80 for u in parsed}
        assert event_id_from_us(us + 1000) > event_id_from_us(us)


class TestJsonLinesParsing:
    def test_fast_parser_agrees_with_json(
        self, trail: AuditTrail, mem: MemorySink, tmp_path: Path
    ) -> None:
        """Every line JsonLinesSink writes is read back exactly as the JSON parser reads it.

        A torn last line (no newline) is read as :class:`Torn` (issue 11: it
        used to be skipped silently).
        """
        from custdata.audit._store import Torn, parse_line

        for n in range(5):
            trail.record_decision(decision(f"u-{n}", subjects=("c-1", "c-2")), now=T0)
        path = tmp_path / "a.jsonl"
        path.write_bytes(mem.lines() + b'{"custdata_audit":1,"chain":"x"')
        fast = list(JsonLinesSource(path).records())
        lines = mem.lines().splitlines(keepends=True)
        slow = [parse_line(line.replace(b'"seq":', b'"seq": '), "") for line in lines]
        assert len(lines) + 1 == len(fast)
        assert Torn("line 7") == fast[-1]
        assert [r[1:] for r in slow] == [r[1:] for r in fast[:-1]]


class TestSubjectRefEncoding:
    @given(
        key=st.binary(min_size=32, max_size=32),
        subject=st.text(max_size=64),
        tenant=st.text(max_size=8),
    )
    def test_matches_rfc4648_base32(
        self, key: bytes, subject: str, tenant: str
    ) -> None:
        """The fast encoder writes exactly the first 26 RFC 4648 base32 characters, lower case."""
        import base64
        import hmac

        from custdata.audit._keys import subject_ref

        mac = hmac.digest(key, f"{tenant}\x00{subject}".encode(), "sha256")
        expected = "sr_" + base64.b32encode(mac).decode("ascii")[:26].lower()
        assert expected == subject_ref(key, subject, tenant=tenant)
