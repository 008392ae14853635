"""Investigation that works (issue 11, item 8).

Denied attempts carry their subjects; rows carry action, outcome, fields and
purpose; a raw subject id resolves to its pseudonym; ``custdata audit
who-read --subject`` and ``what-did --actor`` work on JSON-lines files and the
audit tables, stating the checkpoint they are verified through.
"""

from __future__ import annotations

import datetime as dt
import json
import sys

from collections.abc import Iterator
from pathlib import Path

import pytest

from custdata._decision import DenyReason, Outcome


sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_fixtures import T0, SqlStore, Store, decision, store_for
from custdata.audit import (
    AuditQuery,
    AuditTrail,
    Checkpointer,
    CheckpointSigner,
    CheckpointVerifier,
    FileAnchor,
    find_events,
    pseudonym_for,
)
from custdata.cli import main
from custdata.crypto import Keyring


MINUTE = dt.timedelta(minutes=1)
EMAIL = "hanako@example.co.jp"


@pytest.fixture(params=["jsonl", "sqlite", "postgresql", "mysql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from store_for(request.param, tmp_path, request)


class Written:
    """A trail with allowed reads, a denied attempt and an e-mail actor, checkpointed."""

    def __init__(self, store: Store, tmp_path: Path) -> None:
        self.store = store
        self.keyring_path = tmp_path / "keyring.json"
        self.keys = Keyring.generate()
        self.keys.save(self.keyring_path)
        self.signer = CheckpointSigner.generate("test.example/audit")
        self.anchor = FileAnchor(tmp_path / "anchor.jsonl")
        self.trail = AuditTrail(
            self.keys,
            sinks=[store.sink()],
            checkpointer=Checkpointer(store.source(), self.signer, self.anchor),
            checkpoint_interval=None,
        )
        t = self.trail
        t.record_decision(decision("u-1", subjects=("c-1", "c-2")), now=T0)
        t.record_decision(
            decision(
                "u-2",
                subjects=("c-1",),
                outcome=Outcome.DENIED,
                reason=DenyReason.PURPOSE_NOT_PERMITTED,
                purpose="marketing",
                role="marketer",
                denied_fields=("email",),
            ),
            now=T0 + MINUTE,
        )
        t.record_decision(decision(EMAIL, subjects=("c-1",)), now=T0 + 2 * MINUTE)
        t.checkpoint(now=T0 + 3 * MINUTE)
        t.record_decision(decision("u-1", subjects=("c-3",)), now=T0 + 4 * MINUTE)
        t.close(now=T0 + 5 * MINUTE)

    def source_arg(self) -> str:
        if isinstance(self.store, SqlStore):
            return self.store.url
        return str(self.store.path)  # type: ignore[attr-defined]

    def cli(self, *argv: str) -> list[str]:
        return [
            "audit",
            argv[0],
            self.source_arg(),
            "--keyring",
            str(self.keyring_path),
            "--checkpoints",
            str(self.anchor.path),
            "--checkpoint-key",
            self.signer.verifier_key,
            *argv[1:],
        ]


@pytest.fixture
def written(store: Store, tmp_path: Path) -> Written:
    return Written(store, tmp_path)


def _prefix(w: Written) -> list[str]:
    if isinstance(w.store, SqlStore):
        return ["--prefix", w.store.prefix]
    return []


class TestFindEvents:
    def test_subject_rows_carry_action_outcome_fields_and_purpose(
        self, written: Written
    ) -> None:
        """Every event concerning c-1, allowed and denied, with what was asked and why."""
        ref = pseudonym_for(written.keys, "c-1")
        assert written.trail.subject_ref("c-1") == ref
        rows = find_events(written.store.source(), subject_ref=ref)
        assert [
            ("u-1", "field.reveal", "allowed", "support", ["email", "name"], None),
            (
                "u-2",
                "purpose.check",
                "denied",
                "marketing",
                ["email", "name"],
                "purpose_not_permitted",
            ),
            (EMAIL, "field.reveal", "allowed", "support", ["email", "name"], None),
        ] == [
            (
                r["actor_id"],
                r["action"],
                r["outcome"],
                r["purpose"],
                r["fields"],
                r["reason"],
            )
            for r in rows
        ]
        assert ["email"] == rows[1]["denied_fields"]
        assert all(ref in r["subjects"] for r in rows)

    def test_actor_rows_and_time_window(self, written: Written) -> None:
        """What an actor did, by its id as given (an e-mail address), within [since, until)."""
        rows = find_events(written.store.source(), actor=EMAIL)
        assert [("field.reveal", "customers")] == [
            (r["action"], r["entity"]) for r in rows
        ]
        u1 = find_events(written.store.source(), actor="u-1")
        assert 2 == len(u1)
        late = find_events(
            written.store.source(),
            actor="u-1",
            since=T0 + MINUTE,
            until=T0 + 9 * MINUTE,
        )
        assert [[written.trail.subject_ref("c-3")]] == [r["subjects"] for r in late]

    def test_denied_attempt_is_in_accessors_rows(self, written: Written) -> None:
        """accessors_of and subjects_revealed rows carry outcome and fields; only allowed readers are values."""
        if not isinstance(written.store, SqlStore):
            pytest.skip("AuditQuery reads the audit tables")
        q = AuditQuery(
            written.store.engine,
            prefix=written.store.prefix,
            anchor=written.anchor,
            verifier=CheckpointVerifier(written.signer.verifier_key),
            keys=written.keys,
        )
        saw = q.subjects_revealed(EMAIL, since=T0, until=T0 + dt.timedelta(days=1))
        assert (written.trail.subject_ref("c-1"),) == saw.values
        assert [("allowed", ["email", "name"], "customers")] == [
            (r["outcome"], r["fields"], r["entity"]) for r in saw.rows
        ]
        result = q.accessors_of("c-1", since=T0, until=T0 + dt.timedelta(days=1))
        assert tuple(sorted(("u-1", EMAIL))) == result.values
        assert {("u-2", "denied", ("email", "name"))} == {
            (r["actor_id"], r["outcome"], tuple(r["fields"]))
            for r in result.rows
            if r["outcome"] == "denied"
        }


class TestCommands:
    def test_who_read_states_its_checkpoint(
        self, written: Written, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``who-read --subject`` lists allowed and denied events and the checkpoint they are verified through."""
        assert 0 == main(written.cli("who-read", "--subject", "c-1", *_prefix(written)))
        out = capsys.readouterr().out
        assert "verified through checkpoint" in out
        assert "denied" in out
        assert "3 events" in out
        assert "c-1" not in out.replace("subject pseudonym", "")

    def test_who_read_json(
        self, written: Written, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``--json`` gives the pseudonym, the verification and one object per event."""
        argv = written.cli(
            "who-read",
            "--subject",
            "c-1",
            "--since",
            (T0 + MINUTE).isoformat(),
            "--json",
            *_prefix(written),
        )
        assert 0 == main(argv)
        out = json.loads(capsys.readouterr().out)
        assert pseudonym_for(written.keys, "c-1") == out["subject_ref"]
        assert out["verification"]["intact"]
        assert out["verified_through"]["tree_size"] > 0
        assert [("u-2", "denied"), (EMAIL, "allowed")] == [
            (e["actor_id"], e["outcome"]) for e in out["events"]
        ]

    def test_what_did_json(
        self, written: Written, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``what-did --actor`` with an e-mail actor id."""
        assert 0 == main(
            written.cli("what-did", "--actor", EMAIL, "--json", *_prefix(written))
        )
        out = json.loads(capsys.readouterr().out)
        assert [("field.reveal", "allowed")] == [
            (e["action"], e["outcome"]) for e in out["events"]
        ]

    def test_tampered_trail_exits_1(
        self, written: Written, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A query over a tampered trail still answers, says FINDINGS and exits 1."""
        chain = written.trail.chain
        assert chain is not None
        written.store.flip_body_byte(chain, 2)
        assert 1 == main(written.cli("what-did", "--actor", "u-1", *_prefix(written)))
        assert "FINDINGS" in capsys.readouterr().out

    def test_bad_time_is_a_usage_error(self, written: Written) -> None:
        """An unparseable ``--since`` exits 2 (argparse's usage error)."""
        with pytest.raises(SystemExit) as exc:
            main(written.cli("what-did", "--actor", "u-1", "--since", "yesterday"))
        assert 2 == exc.value.code
