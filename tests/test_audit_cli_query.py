"""``custdata audit verify`` and the investigation queries."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_fixtures import T0, FakeKeys, SqlStore, Store, decision, store_for
from custdata.audit import (
    AuditQuery,
    AuditTrail,
    Checkpointer,
    CheckpointSigner,
    CheckpointVerifier,
    FileAnchor,
    JsonLinesSink,
    JsonLinesSource,
    SqlSink,
    SqlSource,
    verify_trail,
)
from custdata.crypto import Keyring


def _load_cli() -> object:
    try:
        from custdata.cli import _audit as module  # type: ignore[attr-defined, unused-ignore]
    except ImportError:  # the other command modules are not all there yet
        import importlib.util

        import custdata

        path = Path(custdata.__file__).parent / "cli" / "_audit.py"
        spec = importlib.util.spec_from_file_location("custdata_cli_audit", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


_audit: Any = _load_cli()


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="custdata")
    sub = parser.add_subparsers(dest="command", required=True)
    _audit.register(sub)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return int(args.handler(args))


@pytest.fixture
def trail_files(tmp_path: Path) -> dict[str, Path]:
    ring = Keyring.generate()
    ring.save(tmp_path / "keyring.json")
    signer = CheckpointSigner.generate("test.example/audit")
    (tmp_path / "checkpoint.vkey").write_text(signer.verifier_key)
    path = tmp_path / "audit.jsonl"
    anchor = FileAnchor(tmp_path / "anchor.jsonl")
    cp = Checkpointer(JsonLinesSource(path), signer, anchor)
    with AuditTrail(
        ring,
        sinks=[JsonLinesSink(path, version=1)],
        checkpointer=cp,
        checkpoint_interval=None,
    ) as t:
        for i in range(20):
            t.record_decision(decision(f"u-{i % 3}"), now=T0)
    return {
        "trail": path,
        "keyring": tmp_path / "keyring.json",
        "anchor": tmp_path / "anchor.jsonl",
        "vkey": tmp_path / "checkpoint.vkey",
    }


class TestVerifyCommand:
    def args(self, f: dict[str, Path], *extra: str) -> list[str]:
        return [
            "audit",
            "verify",
            str(f["trail"]),
            "--keyring",
            str(f["keyring"]),
            "--checkpoints",
            str(f["anchor"]),
            "--checkpoint-key",
            f"@{f['vkey']}",
            *extra,
        ]

    def test_intact_trail_exits_0(
        self, trail_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An intact trail exits 0 and says so."""
        assert 0 == run(self.args(trail_files))
        assert "intact" in capsys.readouterr().out

    def test_json_output(
        self, trail_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``--json`` prints a machine-readable report."""
        assert 0 == run(self.args(trail_files, "--json"))
        report = json.loads(capsys.readouterr().out)
        assert (True, 22, []) == (
            report["intact"],
            report["events"],
            report["findings"],
        )

    def test_tampered_trail_exits_1(
        self, trail_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A deleted line exits 1 with a MISSING finding in the JSON report."""
        lines = trail_files["trail"].read_text().splitlines(keepends=True)
        trail_files["trail"].write_text("".join(lines[:5] + lines[6:]))
        assert 1 == run(self.args(trail_files, "--json"))
        report = json.loads(capsys.readouterr().out)
        assert ["MISSING"] == [f["kind"] for f in report["findings"]]

    @pytest.mark.parametrize(
        "argv",
        [
            ["audit", "verify", "/nonexistent.jsonl", "--keyring", "KEYRING"],
            ["audit", "verify", "TRAIL", "--keyring", "/nonexistent"],
            [
                "audit",
                "verify",
                "TRAIL",
                "--keyring",
                "KEYRING",
                "--checkpoints",
                "ANCHOR",
            ],
            [
                "audit",
                "verify",
                "TRAIL",
                "--keyring",
                "KEYRING",
                "--checkpoints",
                "ANCHOR",
                "--checkpoint-key",
                "nonsense",
            ],
            ["audit", "verify", "TRAIL"],
            ["audit", "verify", "nosuchdialect://x", "--keyring", "KEYRING"],
        ],
    )
    def test_usage_errors_exit_2(
        self, trail_files: dict[str, Path], argv: list[str]
    ) -> None:
        """Bad arguments, missing files and bad keys exit 2."""
        names = {"TRAIL": "trail", "KEYRING": "keyring", "ANCHOR": "anchor"}
        assert 2 == run([str(trail_files[names[a]]) if a in names else a for a in argv])

    def test_database_source(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A database URL is verified through the audit tables."""
        ring = Keyring.generate()
        ring.save(tmp_path / "keyring.json")
        url = f"sqlite:///{tmp_path / 'a.db'}"
        with AuditTrail(ring, sinks=[SqlSink(url)], checkpoint_interval=None) as t:
            t.record_decision(decision("u-1"), now=T0)
        assert 0 == run(
            ["audit", "verify", url, "--keyring", str(tmp_path / "keyring.json")]
        )
        assert "UNANCHORED_TAIL" in capsys.readouterr().out


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from store_for(request.param, tmp_path, request)


class TestInvestigationQueries:
    def test_subjects_accessors_and_exports(
        self, sql_store: Store, tmp_path: Path
    ) -> None:
        """R-AUD-3: who saw which subjects, who accessed a subject, which exports — with their anchor."""
        assert isinstance(sql_store, SqlStore)
        keys = FakeKeys()
        signer = CheckpointSigner.generate("test.example/audit")
        anchor = FileAnchor(tmp_path / "anchor.jsonl")
        cp = Checkpointer(SqlSource(sql_store.engine, sql_store.tables), signer, anchor)
        t = AuditTrail(keys, sinks=[sql_store.sink()], checkpoint_interval=None)
        minute = dt.timedelta(minutes=1)
        t.record_decision(decision("u-1", subjects=("c-1", "c-2")), now=T0)
        t.record_decision(
            decision("u-1", subjects=("c-3",), purpose="billing"), now=T0 + minute
        )
        t.record_decision(decision("u-2", subjects=("c-1",)), now=T0 + 2 * minute)
        t.export(
            actor="u-3",
            recipient_id="r-9",
            basis="consent_27_1",
            purpose="marketing",
            policy_version="1",
            entity="customers",
            fields=["email"],
            subjects=["c-1"],
            count=1,
            now=T0 + 3 * minute,
        )
        t.flush()
        cp.checkpoint(now=T0 + 4 * minute)
        t.record_decision(decision("u-1", subjects=("c-4",)), now=T0 + 5 * minute)
        t.flush()
        q = AuditQuery(
            sql_store.engine,
            prefix=sql_store.tables.event.name.removesuffix("_event"),
            anchor=anchor,
            verifier=CheckpointVerifier(signer.verifier_key),
            keys=keys,
        )
        day = dt.timedelta(days=1)
        saw = q.subjects_revealed("u-1", since=T0, until=T0 + day)
        assert (
            tuple(sorted(t.subject_ref(s) for s in ("c-1", "c-2", "c-3", "c-4")))
            == saw.values
        )
        assert (3, 1) == (saw.event_count, saw.unanchored_events)
        assert saw.verified_through is not None
        assert 5 == saw.verified_through.tree_size
        by_purpose = q.subjects_revealed(
            "u-1", since=T0, until=T0 + 2 * minute, purposes=["billing"]
        )
        assert (t.subject_ref("c-3"),) == by_purpose.values
        window = q.subjects_revealed("u-1", since=T0 + minute, until=T0 + 2 * minute)
        assert (t.subject_ref("c-3"),) == window.values
        who = q.accessors_of("c-1", since=T0, until=T0 + day)
        assert ("u-1", "u-2", "u-3") == who.values
        exports = q.exports(since=T0, until=T0 + day)
        assert ("r-9",) == exports.values
        assert "consent_27_1" == exports.rows[0]["basis"]
        assert () == q.exports(since=T0, until=T0 + day, recipient_id="r-0").values
        t.close()

    def test_pseudonyms_survive_key_rotation(
        self, sql_store: Store, tmp_path: Path
    ) -> None:
        """A subject keeps its pseudonym across ``Keyring.rotate()``, so ``accessors_of`` finds every access."""
        assert isinstance(sql_store, SqlStore)
        ring = Keyring.generate(now=T0)
        minute = dt.timedelta(minutes=1)
        first = AuditTrail(ring, sinks=[sql_store.sink()], checkpoint_interval=None)
        first.record_decision(decision("u-1", subjects=("c-7",)), now=T0)
        first.close(now=T0 + minute)
        ring.rotate(now=T0 + 2 * minute)
        second = AuditTrail(ring, sinks=[sql_store.sink()], checkpoint_interval=None)
        second.record_decision(decision("u-2", subjects=("c-7",)), now=T0 + 3 * minute)
        second.close(now=T0 + 4 * minute)
        q = AuditQuery(
            sql_store.engine,
            prefix=sql_store.tables.event.name.removesuffix("_event"),
            keys=ring,
        )
        who = q.accessors_of("c-7", since=T0, until=T0 + dt.timedelta(days=1))
        assert ("u-1", "u-2") == who.values
        assert 2 == who.event_count
        assert first.subject_ref("c-7") == second.subject_ref("c-7")
        assert first.subject_ref("c-7") == q.subject_ref("c-7")
        # The chains themselves moved to the new key and still verify.
        report = verify_trail(SqlSource(sql_store.engine, sql_store.tables), ring)
        assert ["UNANCHORED_TAIL"] == report.kinds()
        assert 2 == report.chains

    def test_pseudonyms_survive_rotation_and_retirement_in_json_lines(
        self, tmp_path: Path
    ) -> None:
        """Both reveal events of one subject carry one ``subject_ref``, even after the old key is retired."""
        ring = Keyring.generate(now=T0)
        path = tmp_path / "a.jsonl"
        with AuditTrail(
            ring, sinks=[JsonLinesSink(path, version=1)], checkpoint_interval=None
        ) as t:
            t.record_decision(decision("u-1", subjects=("c-7",)), now=T0)
        old = ring.primary_key_id
        ring.rotate(now=T0 + dt.timedelta(minutes=1))
        ring.retire(old, now=T0 + dt.timedelta(minutes=2))
        reloaded = Keyring.from_json(ring.export_insecure())
        with AuditTrail(
            reloaded, sinks=[JsonLinesSink(path, version=1)], checkpoint_interval=None
        ) as t:
            t.record_decision(decision("u-2", subjects=("c-7",)), now=T0)
        reveals = [
            json.loads(line)["body"]
            for line in path.read_text().splitlines()
            if json.loads(line)["body"]["action"] == "field.reveal"
        ]
        assert 2 == len(reveals)
        assert reveals[0]["subject_ref"] == reveals[1]["subject_ref"]
        assert ["UNANCHORED_TAIL"] == verify_trail(
            JsonLinesSource(path), reloaded
        ).kinds()
