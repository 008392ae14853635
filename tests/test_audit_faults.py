"""Faults that are not tampering, and tampering that used to pass (issue 11).

Duplicates are findings; a crash or a full disk leaves a torn record that is
named ``CRASH_TRUNCATED`` (informational) and never turns the trail tampered;
a JSON-lines sink notices that its path no longer is its file; sinks raise
typed errors; hostile input is a finding on its line, in bounded memory.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import sys
import tracemalloc

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import custdata


sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_fixtures import (
    T0,
    FakeKeys,
    Scenario,
    SqlStore,
    Store,
    build_scenario,
    decision,
    store_for,
)
from custdata.audit import (
    AuditTrail,
    Checkpointer,
    CheckpointSigner,
    CheckpointVerifier,
    FileAnchor,
    FindingKind,
    JsonLinesSink,
    JsonLinesSource,
    MemorySink,
    SqlSink,
    VerificationReport,
    _sinks,
    verify_trail,
)


@pytest.fixture(params=["jsonl", "sqlite", "postgresql", "mysql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from store_for(request.param, tmp_path, request)


@pytest.fixture
def scenario(store: Store, tmp_path: Path) -> Iterator[Scenario]:
    sc = build_scenario(store, tmp_path, per_round=10)
    try:
        yield sc
    finally:
        for trail in sc.trails:
            with contextlib.suppress(Exception):
                trail.close(now=sc.tick(), timeout=0.5)


def kinds(report: VerificationReport) -> list[str]:
    return [f.kind.value for f in report.findings]


def tampering(report: VerificationReport) -> list[str]:
    return [str(f) for f in report.findings if not f.informational]


class TestDuplicates:
    def test_duplicated_record_is_a_finding(self, scenario: Scenario) -> None:
        """A record stored twice → DUPLICATE(chain, seq), on JSON lines and on SQL without its constraints."""
        chain = scenario.chains[1]
        scenario.store.duplicate(chain, 7)
        report = scenario.verify()
        assert [("DUPLICATE", chain, 7, 7)] == [
            (f.kind.value, f.chain, f.seq, f.last_seq)
            for f in report.findings
            if not f.informational
        ]
        assert not report.intact

    def test_every_duplicated_record_is_named(self, scenario: Scenario) -> None:
        """Two copies at different positions are two findings with their sequence numbers."""
        a, b = scenario.chains[0], scenario.chains[2]
        scenario.store.duplicate(a, 3)
        if scenario.store.kind == "jsonl":
            scenario.store.duplicate(b, 12)
        else:
            # The constraints are gone after the first copy.
            t = scenario.store.tables.event  # type: ignore[attr-defined]
            import sqlalchemy as sa

            engine = scenario.store.engine  # type: ignore[attr-defined]
            with engine.begin() as conn:
                row = dict(
                    conn.execute(sa.select(t).where(t.c.chain == b, t.c.seq == 12))
                    .one()
                    ._mapping
                )
                if engine.dialect.name != "sqlite":
                    row.pop("id")
                conn.execute(t.insert(), row)
        found = {
            (f.chain, f.seq)
            for f in scenario.verify().findings
            if f.kind is FindingKind.DUPLICATE
        }
        assert {(a, 3), (b, 12)} == found


def _trail(path: Path, keys: FakeKeys, **kw: Any) -> AuditTrail:
    return AuditTrail(
        keys, sinks=[JsonLinesSink(path, version=1)], checkpoint_interval=None, **kw
    )


def _write(trail: AuditTrail, n: int, actor: str = "u-1") -> None:
    for i in range(n):
        trail.record_decision(decision(actor, subjects=(f"c-{i}",)), now=T0)


class TestCrashIsNotTampering:
    def test_torn_last_line_is_crash_truncated(self, tmp_path: Path) -> None:
        """A crash mid-line leaves a torn tail: CRASH_TRUNCATED, informational, intact."""
        path, keys = tmp_path / "a.jsonl", FakeKeys()
        t = _trail(path, keys)
        _write(t, 5)
        data = path.read_bytes()
        path.write_bytes(
            data[: data.rfind(b"\n", 0, -1) + 1 + 90]
        )  # tear the last line
        t._closed = True  # the process "died": no chain_stop
        report = verify_trail(JsonLinesSource(path), keys)
        assert report.intact
        assert ["CRASH_TRUNCATED", "UNANCHORED_TAIL"] == sorted(kinds(report))

    def test_new_writer_after_a_crash_starts_on_a_fresh_line(
        self, tmp_path: Path
    ) -> None:
        """A process continuing a file whose last line is torn leaves the torn bytes alone on their line."""
        path, keys = tmp_path / "a.jsonl", FakeKeys()
        t = _trail(path, keys)
        _write(t, 5)
        data = path.read_bytes()
        path.write_bytes(data[:-40])  # the last write never finished
        t._closed = True
        t2 = _trail(path, keys)
        _write(t2, 5, actor="u-2")
        t2.close()
        report = verify_trail(JsonLinesSource(path), keys)
        assert [] == tampering(report)
        assert 1 == kinds(report).count("CRASH_TRUNCATED")
        assert path.read_bytes().endswith(b"}\n")

    def test_two_records_on_one_physical_line_are_split(self, tmp_path: Path) -> None:
        """A trail written before this fix (a torn record glued to the next) is read as torn + record."""
        path, keys = tmp_path / "a.jsonl", FakeKeys()
        t = _trail(path, keys)
        _write(t, 3)
        t._closed = True
        torn = path.read_bytes()[:-30]
        other = tmp_path / "b.jsonl"
        t2 = _trail(other, keys)
        _write(t2, 3, actor="u-2")
        t2.close()
        path.write_bytes(torn + other.read_bytes())
        report = verify_trail(JsonLinesSource(path), keys)
        assert [] == tampering(report)
        assert "CRASH_TRUNCATED" in kinds(report)
        assert 2 == report.chains

    @pytest.mark.parametrize("newline_fails", [False, True])
    def test_disk_full_mid_line_is_named_not_tampering(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, newline_fails: bool
    ) -> None:
        """A short write (ENOSPC mid-line) refuses that event; the fragment is ended; the trail verifies."""
        path, keys = tmp_path / "a.jsonl", FakeKeys()
        t = _trail(path, keys)
        _write(t, 3)
        real = os.write
        state = {"full": True}

        def full_disk(fd: int, data: bytes) -> int:
            if state["full"]:
                if data == b"\n":
                    if newline_fails:
                        raise OSError(errno.ENOSPC, "No space left on device")
                    return real(fd, data)
                state["full"] = newline_fails  # the disk stays full for the newline
                return real(fd, data[:70])
            return real(fd, data)

        monkeypatch.setattr(_sinks, "_write", full_disk)
        with pytest.raises(custdata.AuditUnavailableError):
            t.record_decision(decision("u-1", subjects=("c-x",)), now=T0)
        state["full"] = False
        _write(t, 3)
        t.close()
        report = verify_trail(JsonLinesSource(path), keys)
        assert [] == tampering(report)
        assert 1 == kinds(report).count("CRASH_TRUNCATED")
        assert 3 + 3 + 2 == report.events  # chain start and stop included

    def test_cli_exit_status_for_a_torn_record(self, tmp_path: Path) -> None:
        """``custdata audit verify`` exits 3 when the only non-clean finding is CRASH_TRUNCATED."""
        from custdata.cli import main

        path = tmp_path / "a.jsonl"
        keyring = tmp_path / "keys.json"
        assert 0 == main(["keys", "init", str(keyring)])
        keys = custdata.crypto.Keyring.load(keyring)
        t = _trail(path, keys)  # type: ignore[arg-type]
        _write(t, 3)
        t.close()
        with path.open("ab") as fh:
            fh.write(b'{"custdata_audit":1,"chain":"custdata/app/x","se')
        assert 3 == main(["audit", "verify", str(path), "--keyring", str(keyring)])
        with path.open("ab") as fh:
            fh.write(b"\nnot a record\n")
        assert 1 == main(["audit", "verify", str(path), "--keyring", str(keyring)])


class TestTheFileIsTheFile:
    @pytest.mark.parametrize("fault", ["moved", "deleted", "directory", "replaced"])
    def test_sink_fails_closed_when_its_path_changes(
        self, tmp_path: Path, fault: str, sample_policy: custdata.Policy
    ) -> None:
        """No reveal is recorded into an unlinked file: the access is refused instead."""
        path, keys = tmp_path / "a.jsonl", FakeKeys()
        t = _trail(path, keys)
        custodian = custdata.Custodian(policy=sample_policy, audit=t)
        with (
            custodian.activate(),
            custdata.acting_as("u-1", role="support_agent"),
            custdata.purpose("support"),
        ):
            custodian.authorize(
                action=custdata.Action.READ, entity="customers", subjects=["c-1"]
            )
            if fault == "moved":
                path.rename(tmp_path / "elsewhere.jsonl")
            elif fault == "deleted":
                path.unlink()
            elif fault == "directory":
                path.unlink()
                path.mkdir()
            else:
                path.rename(tmp_path / "old.jsonl")
                path.write_bytes(b"")
            with pytest.raises(
                custdata.AuditUnavailableError, match="moved, deleted or replaced"
            ):
                custodian.authorize(
                    action=custdata.Action.READ, entity="customers", subjects=["c-2"]
                )
        t._closed = True

    def test_device_path_is_accepted(self) -> None:
        """A path naming a device (``/dev/null``) is written to, not read or refused."""
        t = AuditTrail(
            FakeKeys(), sinks=[JsonLinesSink("/dev/null")], checkpoint_interval=None
        )
        _write(t, 2)
        t.close()

    def test_redaction_rewrite_is_followed(self, tmp_path: Path) -> None:
        """The sink's own reopen (after a rewrite) points it at the new file, which it then accepts."""
        path, keys = tmp_path / "a.jsonl", FakeKeys()
        sink = JsonLinesSink(path, version=1)
        t = AuditTrail(keys, sinks=[sink], checkpoint_interval=None)
        _write(t, 2)
        tmp = tmp_path / "rewrite.jsonl"
        tmp.write_bytes(path.read_bytes())
        tmp.replace(path)
        sink.reopen()
        _write(t, 2)
        t.close()
        assert [] == tampering(verify_trail(JsonLinesSource(path), keys))


class TestTypedErrors:
    @pytest.mark.parametrize(
        "where", ["directory", "missing parent", "parent is a file"]
    )
    def test_unopenable_path_is_a_configuration_error(
        self, tmp_path: Path, where: str
    ) -> None:
        """JsonLinesSink on a path it cannot append to raises ConfigurationError, naming no value."""
        (tmp_path / "file").write_bytes(b"")
        target = {
            "directory": tmp_path,
            "missing parent": tmp_path / "no" / "a.jsonl",
            "parent is a file": tmp_path / "file" / "a.jsonl",
        }[where]
        with pytest.raises(custdata.ConfigurationError):
            JsonLinesSink(target)

    def test_read_only_directory_is_a_configuration_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A permission failure (simulated: the suite may run as root) is a ConfigurationError."""

        def refuse(*args: object, **kw: object) -> int:
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(_sinks.os, "open", refuse)
        with pytest.raises(custdata.ConfigurationError, match="PermissionError"):
            JsonLinesSink(tmp_path / "a.jsonl", version=1)

    @pytest.mark.parametrize("call", ["close", "flush"])
    def test_close_and_flush_failures_are_audit_unavailable(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str
    ) -> None:
        """A full disk at close (or fsync) raises AuditUnavailableError, not a raw OSError."""
        sink = JsonLinesSink(tmp_path / "a.jsonl", version=1)
        fd = sink._fd

        def fail(*args: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(_sinks.os, "close" if call == "close" else "fsync", fail)
        with pytest.raises(custdata.AuditUnavailableError):
            getattr(sink, call)()
        monkeypatch.undo()
        assert fd is not None
        with contextlib.suppress(OSError):
            os.close(fd)

    def test_trail_close_failure_is_typed(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """AuditTrail.close() on a full disk raises AuditUnavailableError."""
        path, keys = tmp_path / "a.jsonl", FakeKeys()
        t = _trail(path, keys)
        _write(t, 1)

        def fail(*args: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(_sinks.os, "fsync", fail)
        with pytest.raises(custdata.AuditUnavailableError):
            t.close()

    def test_sql_sink_bad_url_is_a_configuration_error(self) -> None:
        """An unparseable database URL is a ConfigurationError at construction."""
        with pytest.raises(custdata.ConfigurationError):
            SqlSink("not a url://")

    def test_sql_sink_unreachable_database_is_audit_unavailable(self) -> None:
        """A database that cannot be reached at construction raises AuditUnavailableError."""
        with pytest.raises(custdata.AuditUnavailableError):
            SqlSink("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")


class TestHostileInput:
    def _verify(self, path: Path) -> VerificationReport:
        return verify_trail(JsonLinesSource(path), FakeKeys())

    @pytest.mark.parametrize(
        "data",
        [
            b"garbage without a newline",
            b"[" * 100_000 + b"]" * 100_000 + b"\n",
            b'{"custdata_audit":1,"chain":' + b"[" * 100_000 + b"\n",
            bytes(range(256)) * 4 + b"\n",
            b"\xff\xfe{}\n",
            b"{}\n",
        ],
        ids=["no newline", "nesting", "nested record", "binary", "bad utf-8", "object"],
    )
    def test_hostile_line_is_a_finding_on_its_line(
        self, tmp_path: Path, data: bytes
    ) -> None:
        """Each hostile input is named on its line; never 'intact', never an exception."""
        path = tmp_path / "a.jsonl"
        path.write_bytes(data)
        report = self._verify(path)
        assert not report.intact or "CRASH_TRUNCATED" in kinds(report)
        assert any("line 1" in f.detail for f in report.findings)

    def test_bare_envelope_is_named_at_its_position(self, tmp_path: Path) -> None:
        """A JSON object naming a chain and seq but nothing else → MAC_INVALID at that position."""
        path = tmp_path / "a.jsonl"
        path.write_bytes(b'{"chain":"a","seq":1,"key_ref":"k"}\n')
        report = self._verify(path)
        assert [("MAC_INVALID", "a", 1)] == [
            (f.kind.value, f.chain, f.seq)
            for f in report.findings
            if not f.informational
        ]

    def test_hostile_lines_between_valid_records(self, tmp_path: Path) -> None:
        """The valid records around hostile lines still verify; each hostile line is named."""
        path, keys = tmp_path / "a.jsonl", FakeKeys()
        t = _trail(path, keys)
        _write(t, 2)
        with path.open("ab") as fh:
            fh.write(b"[" * 50_000 + b"\n" + b"\x00" * 100 + b"\n")
        _write(t, 2)
        t.close()
        report = verify_trail(JsonLinesSource(path), keys)
        assert ["MODIFIED", "MODIFIED"] == [
            f.kind.value for f in report.findings if not f.informational
        ]
        assert {"line 4: not an audit record", "line 5: not an audit record"} == {
            f.detail for f in report.findings if not f.informational
        }

    @pytest.mark.parametrize("newline", [True, False])
    def test_huge_line_in_bounded_memory(self, tmp_path: Path, newline: bool) -> None:
        """A 48 MiB line is one finding, read without holding it (peak well under its size)."""
        path, keys = tmp_path / "a.jsonl", FakeKeys()
        t = _trail(path, keys)
        _write(t, 2)
        with path.open("ab") as fh:
            for _ in range(48):
                fh.write(b"A" * (1 << 20))
            if newline:
                fh.write(b"\n")
        if newline:
            _write(t, 2)
        t._closed = True
        tracemalloc.start()
        try:
            report = verify_trail(JsonLinesSource(path), keys)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 24 << 20
        assert ["MODIFIED"] == [
            f.kind.value for f in report.findings if not f.informational
        ]
        assert "line 4" in next(
            f.detail for f in report.findings if not f.informational
        )


def test_findings_name_no_values(tmp_path: Path) -> None:
    """Hostile bytes never reach a finding's text."""
    path = tmp_path / "a.jsonl"
    canary = b"CANARY-4111111111111111"
    path.write_bytes(b'{"custdata_audit":1,"chain":"' + canary + b"\n" + canary + b"\n")
    report = verify_trail(JsonLinesSource(path), FakeKeys())
    assert not report.intact
    assert canary.decode() not in str(report.to_dict())


class Checkpointed:
    """A trail whose writer checkpoints to a file anchor (as ``AuditTrail(checkpointer=...)``)."""

    def __init__(self, store: Store, tmp_path: Path) -> None:
        self.store = store
        self.keys = FakeKeys()
        self.signer = CheckpointSigner.generate("test.example/audit")
        self.anchor = FileAnchor(tmp_path / "anchor.jsonl")
        self.clock = [T0]
        self.trail = AuditTrail(
            self.keys,
            sinks=[store.sink()],
            checkpointer=Checkpointer(store.source(), self.signer, self.anchor),
            checkpoint_interval=None,
        )

    def tick(self, seconds: float = 1) -> dt.datetime:
        self.clock[0] += dt.timedelta(seconds=seconds)
        return self.clock[0]

    def write(self, n: int, *, every: float = 1) -> None:
        for i in range(n):
            self.trail.record_decision(
                decision("u-1", subjects=(f"c-{i}",)), now=self.tick(every)
            )

    def verify(self, **kw: Any) -> VerificationReport:
        return verify_trail(
            self.store.source(),
            self.keys,
            checkpoints=self.anchor,
            verifier=CheckpointVerifier(self.signer.verifier_key),
            **kw,
        )


@pytest.fixture
def checkpointed(store: Store, tmp_path: Path) -> Iterator[Checkpointed]:
    c = Checkpointed(store, tmp_path)
    yield c
    with contextlib.suppress(Exception):
        c.trail.close(now=c.tick(), timeout=0.5)


class TestMissingCheckpoints:
    def test_chain_start_records_that_it_is_checkpointed(
        self, checkpointed: Checkpointed
    ) -> None:
        """The first record of the chain names how and by which log it is checkpointed."""
        checkpointed.write(1)
        checkpointed.trail.flush()
        first = next(
            r
            for r in list(checkpointed.store.source().records())
            if getattr(r, "seq", None) == 1
        )
        info = json.loads(first.body)["chain_info"]  # type: ignore[union-attr, arg-type]
        assert ("writer", "test.example/audit") == (
            info["checkpointed"],
            info["checkpoint_origin"],
        )

    def test_intact_checkpointed_trail_verifies(
        self, checkpointed: Checkpointed
    ) -> None:
        """Written under load (records every second, a checkpoint every minute) and verified much later: intact."""
        for _ in range(5):
            checkpointed.write(60)
            checkpointed.trail.checkpoint(now=checkpointed.tick())
        checkpointed.trail.close(now=checkpointed.tick())
        report = checkpointed.verify(heartbeat=60)
        assert [] == kinds(report)

    @pytest.mark.parametrize("how", ["emptied", "deleted"])
    def test_emptied_or_deleted_checkpoint_file_is_a_finding(
        self, checkpointed: Checkpointed, how: str
    ) -> None:
        """No checkpoints for a checkpointed trail → CHECKPOINT_MISSING, with or without a heartbeat."""
        checkpointed.write(5)
        checkpointed.trail.close(now=checkpointed.tick())
        if how == "emptied":
            checkpointed.anchor.path.write_bytes(b"")
        else:
            checkpointed.anchor.path.unlink()
        for heartbeat in (None, 60):
            report = checkpointed.verify(heartbeat=heartbeat)
            assert "CHECKPOINT_MISSING" in kinds(report)
            assert not report.intact

    def test_older_checkpoint_file_is_a_finding(
        self, checkpointed: Checkpointed
    ) -> None:
        """An older copy of the anchor (without the final checkpoint) → CHECKPOINT_MISSING."""
        checkpointed.write(5)
        checkpointed.trail.checkpoint(now=checkpointed.tick())
        older = checkpointed.anchor.path.read_bytes()
        checkpointed.write(5)
        checkpointed.trail.close(now=checkpointed.tick())
        assert [] == kinds(checkpointed.verify())
        checkpointed.anchor.path.write_bytes(older)
        report = checkpointed.verify()
        chain = checkpointed.trail.chain
        assert [("CHECKPOINT_MISSING", chain)] == [
            (f.kind.value, f.chain) for f in report.findings if not f.informational
        ]

    def test_heartbeat_with_zero_checkpoints_on_an_unflagged_trail(
        self, tmp_path: Path
    ) -> None:
        """``--heartbeat`` demands checkpoints: a trail with none → CHECKPOINT_MISSING even without the flag."""
        path, keys = tmp_path / "a.jsonl", FakeKeys()
        t = _trail(path, keys)
        _write(t, 3)
        t.close()
        signer = CheckpointSigner.generate("test.example/audit")
        args = {
            "checkpoints": FileAnchor(tmp_path / "none.jsonl"),
            "verifier": CheckpointVerifier(signer.verifier_key),
        }
        assert [] == tampering(verify_trail(JsonLinesSource(path), keys, **args))  # type: ignore[arg-type]
        report = verify_trail(JsonLinesSource(path), keys, heartbeat=60, **args)  # type: ignore[arg-type]
        assert "CHECKPOINT_MISSING" in kinds(report)

    def test_heartbeat_with_zero_checkpoints_on_every_store(
        self, store: Store, tmp_path: Path
    ) -> None:
        """``heartbeat`` with no checkpoint at all → CHECKPOINT_MISSING, on JSON lines and the tables."""
        keys = FakeKeys()
        t = AuditTrail(keys, sinks=[store.sink()], checkpoint_interval=None)
        _write(t, 3)
        t.close()
        signer = CheckpointSigner.generate("test.example/audit")
        args: dict[str, Any] = {
            "checkpoints": FileAnchor(tmp_path / "none.jsonl"),
            "verifier": CheckpointVerifier(signer.verifier_key),
        }
        assert [] == tampering(verify_trail(store.source(), keys, **args))
        report = verify_trail(store.source(), keys, heartbeat=60, **args)
        assert ["CHECKPOINT_MISSING"] == [
            f.kind.value for f in report.findings if not f.informational
        ]
        assert not report.intact

    def test_cli_deleted_checkpoint_file_is_a_finding_not_a_usage_error(
        self, tmp_path: Path
    ) -> None:
        """``custdata audit verify --checkpoints MISSING`` exits 1 (a finding), not 2."""
        from custdata.cli import main

        keyring = tmp_path / "keys.json"
        assert 0 == main(["keys", "init", str(keyring)])
        keys = custdata.crypto.Keyring.load(keyring)
        path = tmp_path / "a.jsonl"
        signer = CheckpointSigner.generate("test.example/audit")
        anchor = FileAnchor(tmp_path / "anchor.jsonl")
        t = AuditTrail(
            keys,
            sinks=[JsonLinesSink(path, version=1)],
            checkpointer=Checkpointer(JsonLinesSource(path), signer, anchor),
            checkpoint_interval=None,
        )
        _write(t, 3)
        t.close()
        argv = [
            "audit",
            "verify",
            str(path),
            "--keyring",
            str(keyring),
            "--checkpoints",
            str(anchor.path),
            "--checkpoint-key",
            signer.verifier_key,
        ]
        assert 0 == main(argv)
        anchor.path.unlink()
        assert 1 == main(argv)


class TestTrailConfiguration:
    @pytest.mark.parametrize(
        "kw",
        [
            {"sinks": []},
            {"deployment": "my app"},
            {"service": ""},
            {"actor_type": "user@x"},
            {"checkpoint_interval": 0},
        ],
        ids=["no sink", "deployment", "service", "actor type", "interval"],
    )
    def test_bad_configuration_fails_at_construction(self, kw: dict[str, Any]) -> None:
        """A trail that could never write fails when built, with ConfigurationError (a ValueError)."""
        args: dict[str, Any] = {"sinks": [MemorySink()], **kw}
        with pytest.raises(custdata.ConfigurationError):
            AuditTrail(FakeKeys(), **args)


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    for store in store_for(request.param, tmp_path, request):
        assert isinstance(store, SqlStore)
        yield store


class TestTheTableIsTheTable:
    """The SQL sink's counterpart of "the file is the file": it writes by name, or not at all."""

    def _rename(self, store: SqlStore, old: str, new: str) -> None:
        with store.engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {old} RENAME TO {new}")

    def test_a_moved_event_table_refuses_the_access(self, sql_store: SqlStore) -> None:
        """The event table renamed while the application runs: the next reveal is refused.

        Nothing goes to the moved table; renamed back, the trail goes on and
        verifies intact.
        """
        keys = FakeKeys()
        trail = AuditTrail(keys, sinks=[sql_store.sink()], checkpoint_interval=None)
        trail.record_decision(decision("u-1", subjects=("c-1",)), now=T0)
        table = sql_store.tables.event.name
        self._rename(sql_store, table, f"{table}_moved")
        try:
            with pytest.raises(custdata.AuditUnavailableError):
                trail.record_decision(decision("u-1", subjects=("c-2",)), now=T0)
        finally:
            self._rename(sql_store, f"{table}_moved", table)
        trail.record_decision(decision("u-1", subjects=("c-3",)), now=T0)
        trail.close()
        report = verify_trail(sql_store.source(), keys)
        assert [] == tampering(report)
        assert 4 == report.events  # start, c-1, c-3, stop


class TestSqlSinkTypedErrors:
    """Item 6 on the audit tables: close() and a trail's close() raise typed errors."""

    def test_async_close_with_unwritable_events_is_audit_unavailable(
        self, sql_store: SqlStore
    ) -> None:
        """Queued events the database refuses: close() raises AuditUnavailableError."""
        keys = FakeKeys()
        sink = SqlSink(
            sql_store.url,
            prefix=sql_store.prefix,
            create=False,
            mode="async",
            flush_interval=0.01,
        )
        trail = AuditTrail(keys, sinks=[sink], checkpoint_interval=None)
        table = sql_store.tables.event.name
        with sql_store.engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {table} RENAME TO {table}_moved")
        try:
            trail.record_decision(decision("u-1", subjects=("c-1",)), now=T0)
            with pytest.raises(custdata.AuditUnavailableError):
                sink.close(timeout=0.5)
        finally:
            with sql_store.engine.begin() as conn:
                conn.exec_driver_sql(f"ALTER TABLE {table}_moved RENAME TO {table}")
            trail._closed = True  # the sink is closed; nothing more to write

    def test_trail_close_on_a_refusing_database_is_audit_unavailable(
        self, sql_store: SqlStore
    ) -> None:
        """AuditTrail.close() whose stop event the database refuses raises AuditUnavailableError."""
        keys = FakeKeys()
        trail = AuditTrail(keys, sinks=[sql_store.sink()], checkpoint_interval=None)
        trail.record_decision(decision("u-1"), now=T0)
        table = sql_store.tables.event.name
        with sql_store.engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {table} RENAME TO {table}_moved")
        try:
            with pytest.raises(custdata.AuditUnavailableError):
                trail.close()
        finally:
            with sql_store.engine.begin() as conn:
                conn.exec_driver_sql(f"ALTER TABLE {table}_moved RENAME TO {table}")


class TestHostileRows:
    """Item 7 on the audit tables: hostile bodies are findings on their rows."""

    @pytest.mark.parametrize(
        "body",
        [
            b"garbage without a closing brace",
            b"[" * 100_000 + b"]" * 100_000,
            b'{"v":1,"action":' + b"[" * 100_000,
            bytes(range(256)) * 4,
            b"\xff\xfe{}",
            b"A" * (2 << 20),
        ],
        ids=["garbage", "nesting", "nested body", "binary", "bad utf-8", "huge"],
    )
    def test_hostile_body_is_modified_at_its_row(
        self, sql_store: SqlStore, body: bytes
    ) -> None:
        """Each hostile body → MODIFIED at its (chain, seq); never an exception."""
        keys = FakeKeys()
        trail = AuditTrail(keys, sinks=[sql_store.sink()], checkpoint_interval=None)
        for i in range(3):
            trail.record_decision(decision("u-1", subjects=(f"c-{i}",)), now=T0)
        chain = str(trail.chain)
        trail.close()
        sql_store.set_column(chain, 3, "body", body)
        report = verify_trail(sql_store.source(), keys)
        assert [("MODIFIED", chain, 3)] == [
            (f.kind.value, f.chain, f.seq)
            for f in report.findings
            if not f.informational
        ]
        assert body[:16].decode("latin-1") not in str(report.to_dict())


class _Forged:
    """A trail source whose record 3 of every chain has another MAC (for the checkpointer)."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def entries_after(self, heads: Any) -> Iterator[tuple[str, int, bytes | None]]:
        for chain, seq, mac in self.source.entries_after(heads):
            yield chain, seq, (b"\x00" * 32 if seq == 3 else mac)


def test_checkpoint_over_other_records_is_root_mismatch(
    store: Store, tmp_path: Path
) -> None:
    """A checkpoint signed with the real key over other records → ROOT_MISMATCH.

    Its heads are the trail's own (the last records are untouched), so only
    the recomputed Merkle root tells: someone who holds the signing key
    anchored a log the stored records do not make.
    """
    keys = FakeKeys()
    trail = AuditTrail(keys, sinks=[store.sink()], checkpoint_interval=None)
    _write(trail, 6)
    trail.close()
    signer = CheckpointSigner.generate("test.example/audit")
    anchor = FileAnchor(tmp_path / "anchor.jsonl")
    Checkpointer(_Forged(store.source()), signer, anchor).checkpoint(now=T0)  # type: ignore[arg-type]
    report = verify_trail(
        store.source(),
        keys,
        checkpoints=anchor,
        verifier=CheckpointVerifier(signer.verifier_key),
    )
    assert ["ROOT_MISMATCH"] == [
        f.kind.value for f in report.findings if not f.informational
    ]
    assert not report.intact


def test_cli_deleted_checkpoint_file_on_the_tables_is_a_finding(
    sql_store: SqlStore, tmp_path: Path
) -> None:
    """``custdata audit verify URL --checkpoints MISSING`` exits 1 on the audit tables too."""
    from custdata.cli import main

    keyring = tmp_path / "keys.json"
    assert 0 == main(["keys", "init", str(keyring)])
    keys = custdata.crypto.Keyring.load(keyring)
    signer = CheckpointSigner.generate("test.example/audit")
    anchor = FileAnchor(tmp_path / "anchor.jsonl")
    t = AuditTrail(
        keys,
        sinks=[sql_store.sink()],
        checkpointer=Checkpointer(sql_store.source(), signer, anchor),
        checkpoint_interval=None,
    )
    _write(t, 3)
    t.close()
    argv = [
        "audit",
        "verify",
        sql_store.url,
        "--prefix",
        sql_store.prefix,
        "--keyring",
        str(keyring),
        "--checkpoints",
        str(anchor.path),
        "--checkpoint-key",
        signer.verifier_key,
    ]
    assert 0 == main(argv)
    anchor.path.unlink()
    assert 1 == main(argv)
