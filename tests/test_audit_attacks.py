"""The attack matrix (research §7.5): each attack tampers with a real trail.

Every test runs against a JSON-lines file and the audit tables on SQLite,
PostgreSQL and MariaDB, and asserts the exact findings of the verifier.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa


sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_fixtures import (
    T0,
    FakeKeys,
    JsonLinesStore,
    Scenario,
    SqlStore,
    Store,
    build_scenario,
    decision,
    store_for,
)
from custdata import AuditError, AuditUnavailableError
from custdata.audit import (
    AuditTrail,
    Checkpointer,
    CheckpointVerifier,
    MemorySink,
    SealedRecord,
    VerificationReport,
    redact,
    verify_trail,
)
from custdata.audit._store import StoredRecord


PER_ROUND = 20  # events per chain per checkpoint round; 3 chains x 3 rounds


@pytest.fixture(params=["jsonl", "sqlite", "postgresql", "mysql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from store_for(request.param, tmp_path, request)


@pytest.fixture
def scenario(store: Store, tmp_path: Path) -> Iterator[Scenario]:
    sc = build_scenario(store, tmp_path, per_round=PER_ROUND)
    try:
        yield sc
    finally:
        for trail in sc.trails:
            with contextlib.suppress(Exception):
                trail.close(now=sc.tick(), timeout=0.5)


def summary(
    report: VerificationReport,
) -> list[tuple[str, str | None, int | None, int | None]]:
    return [(f.kind.value, f.chain, f.seq, f.last_seq) for f in report.findings]


def head(sc: Scenario, chain: str) -> int:
    last = sc.checkpointer.last
    assert last is not None
    return next(s for c, s, _ in last.heads if c == chain)


class TestIntact:
    def test_untouched_trail_verifies(self, scenario: Scenario) -> None:
        """A trail nobody touched has no findings and is covered by its last checkpoint."""
        report = scenario.verify()
        assert [] == summary(report)
        assert report.intact
        assert 3 == report.chains
        assert 3 == report.checkpoints
        assert 3 * (3 * PER_ROUND + 1) == report.events
        assert report.verified_through is not None
        assert report.events == report.verified_through.tree_size


class TestRecordTampering:
    def test_flipped_body_byte_is_modified_at_that_row(
        self, scenario: Scenario
    ) -> None:
        """Flipping one byte of a body → MODIFIED at exactly that (chain, seq)."""
        chain = scenario.chains[1]
        scenario.store.flip_body_byte(chain, 17)
        assert [("MODIFIED", chain, 17, 17)] == summary(scenario.verify())

    def test_changed_derived_column_is_column_mismatch(
        self, scenario: Scenario
    ) -> None:
        """Changing only actor_id in the table → COLUMN_MISMATCH(chain, seq, actor_id)."""
        if scenario.store.kind != "sql":
            pytest.skip("JSON lines have no derived columns")
        chain = scenario.chains[0]
        scenario.store.set_column(chain, 9, "actor_id", "u-someone-else")
        report = scenario.verify()
        assert [("COLUMN_MISMATCH", chain, 9, 9)] == summary(report)
        assert "actor_id" == report.findings[0].column

    def test_orphan_fanout_rows(self, scenario: Scenario) -> None:
        """A fan-out row for a record that never existed is COLUMN_MISMATCH; rows
        ahead of a chain's head (a live writer's newer events) are not findings."""
        if scenario.store.kind != "sql":
            pytest.skip("JSON lines have no fan-out table")
        store = scenario.store
        assert isinstance(store, SqlStore)
        chain = scenario.chains[0]
        fanout = store.tables.subject
        when = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
        with store.engine.begin() as conn:
            conn.execute(
                fanout.insert(),
                [
                    {
                        "chain": chain,
                        "seq": seq,
                        "subject_ref": ref,
                        "ts": when,
                        "action": "field.reveal",
                    }
                    for seq, ref in ((9, "sr_" + "a" * 26), (10**6, "sr_" + "b" * 26))
                ],
            )
        report = scenario.verify()
        assert [("COLUMN_MISMATCH", chain, 9, 9)] == summary(report)
        assert "subject_fanout" == report.findings[0].column

    def test_nulled_body_is_modified(self, scenario: Scenario) -> None:
        """NULLing a body outside custdata → MODIFIED."""
        chain = scenario.chains[0]
        if scenario.store.kind == "sql":
            scenario.store.set_column(chain, 5, "body", None)
        else:
            scenario.store.set_column(chain, 5, "body_sha256", "zz")
        assert [("MODIFIED", chain, 5, 5)] == summary(scenario.verify())

    def test_deleted_middle_row_is_missing(self, scenario: Scenario) -> None:
        """Deleting a row from the middle → MISSING(chain, that seq)."""
        chain = scenario.chains[2]
        scenario.store.delete(chain, [30])
        assert [("MISSING", chain, 30, 30)] == summary(scenario.verify())

    def test_swapped_rows_are_mac_invalid_at_both(self, scenario: Scenario) -> None:
        """Swapping two rows' seq → MAC_INVALID at both positions (reordering)."""
        chain = scenario.chains[0]
        scenario.store.swap_seq(chain, 10, 20)
        assert [
            ("MAC_INVALID", chain, 10, 10),
            ("MAC_INVALID", chain, 20, 20),
        ] == summary(scenario.verify())

    def test_forged_row_is_mac_invalid(self, scenario: Scenario) -> None:
        """A row with a made-up MAC appended to a chain → MAC_INVALID (and unanchored)."""
        chain = scenario.chains[1]
        n = head(scenario, chain)
        scenario.store.append_raw(chain, n + 1, like=(chain, n), mac=os.urandom(32))
        report = scenario.verify()
        assert [
            ("MAC_INVALID", chain, n + 1, n + 1),
            ("UNANCHORED_TAIL", None, None, None),
        ] == summary(report)
        assert report.intact is False

    def test_duplicate_position_is_refused_by_the_database(
        self, scenario: Scenario
    ) -> None:
        """Inserting a second row at an existing (chain, seq) violates a unique constraint."""
        if scenario.store.kind != "sql":
            pytest.skip("a file has no constraints")
        chain = scenario.chains[1]
        with pytest.raises(sa.exc.IntegrityError):
            scenario.store.append_raw(chain, 5, like=(chain, 6))

    def test_row_copied_into_another_chain_is_mac_invalid(
        self, scenario: Scenario
    ) -> None:
        """A valid row copied into another chain → MAC_INVALID (the chain id is MAC input)."""
        src, dst = scenario.chains[0], scenario.chains[2]
        n = head(scenario, dst)
        scenario.store.append_raw(dst, n + 1, like=(src, n + 1 - 10))
        assert [
            ("MAC_INVALID", dst, n + 1, n + 1),
            ("UNANCHORED_TAIL", None, None, None),
        ] == summary(scenario.verify())

    def test_tampered_key_ref_is_mac_invalid(self, scenario: Scenario) -> None:
        """Relabelling one row with another key id → MAC_INVALID."""
        chain = scenario.chains[0]
        scenario.store.set_column(chain, 12, "key_ref", "audit-0")
        assert [("MAC_INVALID", chain, 12, 12)] == summary(scenario.verify())


class TestTruncation:
    def test_tail_dropped_before_last_checkpoint_is_truncated(
        self, scenario: Scenario
    ) -> None:
        """Dropping a chain's anchored tail → TRUNCATED(chain, first lost, anchored head)."""
        chain = scenario.chains[1]
        n = head(scenario, chain)
        scenario.store.delete(chain, list(range(n - 4, n + 1)))
        assert [("TRUNCATED", chain, n - 4, n)] == summary(scenario.verify())

    def test_tail_dropped_after_last_checkpoint_is_only_unanchored(
        self, scenario: Scenario
    ) -> None:
        """Dropping events newer than the last checkpoint is undetectable (documented limit)."""
        scenario.write(3)
        before = scenario.verify()
        assert [("UNANCHORED_TAIL", None, None, None)] == summary(before)
        assert 9 == before.unanchored
        chain = scenario.chains[0]
        n = head(scenario, chain)
        scenario.store.delete(chain, [n + 2, n + 3])
        after = scenario.verify()
        assert after.intact
        assert 7 == after.unanchored

    def test_restored_backup_is_rollback(self, scenario: Scenario) -> None:
        """Restoring an older copy of the store → ROLLBACK (store smaller than anchored tree)."""
        snap = scenario.store.snapshot()
        scenario.write(5)
        scenario.checkpoint()
        scenario.store.restore(snap)
        report = scenario.verify()
        assert [("ROLLBACK", None, None, None)] == summary(report)
        assert report.findings[0].count == 3 * (3 * PER_ROUND + 1)

    def test_deleted_chain_is_chain_missing(self, scenario: Scenario) -> None:
        """Deleting a whole anchored chain → CHAIN_MISSING(chain)."""
        chain = scenario.chains[2]
        scenario.store.delete_chain(chain)
        assert [("CHAIN_MISSING", chain, None, None)] == summary(scenario.verify())


class TestCheckpoints:
    def test_checkpoint_deleted_from_anchor_is_gap(self, scenario: Scenario) -> None:
        """Deleting a checkpoint from the anchor → CHECKPOINT_GAP (broken prev link)."""
        lines = scenario.anchor.path.read_text().splitlines()
        scenario.anchor.path.write_text(lines[0] + "\n" + lines[2] + "\n")
        assert [("CHECKPOINT_GAP", None, None, None)] == summary(scenario.verify())

    def test_first_checkpoint_deleted_is_gap(self, scenario: Scenario) -> None:
        """Deleting the first checkpoint → CHECKPOINT_GAP."""
        lines = scenario.anchor.path.read_text().splitlines()
        scenario.anchor.path.write_text("\n".join(lines[1:]) + "\n")
        assert ["CHECKPOINT_GAP"] == scenario.verify().kinds()

    def test_missing_heartbeat_is_gap(self, scenario: Scenario) -> None:
        """Records written longer than the heartbeat after the last checkpoint → CHECKPOINT_GAP.

        Issue 11 redefines the heartbeat against the trail's own times (it
        used to be measured to the verifier's clock, so every trail verified
        later failed): the checkpoints stopped while the writers went on.
        """
        scenario.clock[0] += dt.timedelta(hours=1)
        scenario.write(1)
        report = scenario.verify(heartbeat=60)
        assert ["CHECKPOINT_GAP"] * 3 + ["UNANCHORED_TAIL"] == report.kinds()
        assert set(scenario.chains) == {f.chain for f in report.findings[:3]}

    def test_idle_trail_verified_later_is_not_a_gap(self, scenario: Scenario) -> None:
        """A trail verified an hour after its last checkpoint, with nothing written since, is intact."""
        last = scenario.checkpointer.last
        assert last is not None
        report = scenario.verify(heartbeat=60, now=last.time + dt.timedelta(hours=1))
        assert [] == report.kinds()

    def test_edited_checkpoint_is_signature_invalid(self, scenario: Scenario) -> None:
        """Editing a note's tree size → SIGNATURE_INVALID for it; the next no longer links."""
        lines = scenario.anchor.path.read_text().splitlines()
        record = json.loads(lines[1])
        origin, size, rest = record["note"].split("\n", 2)
        record["note"] = f"{origin}\n{int(size) - 1}\n{rest}"
        lines[1] = json.dumps(record)
        scenario.anchor.path.write_text("\n".join(lines) + "\n")
        assert ["SIGNATURE_INVALID", "CHECKPOINT_GAP"] == scenario.verify().kinds()

    def test_db_checkpoint_copy_is_not_authoritative(
        self, store: Store, tmp_path: Path
    ) -> None:
        """Deleting or editing the database copy of checkpoints changes nothing."""
        if not isinstance(store, SqlStore):
            pytest.skip("only the SQL sink keeps a checkpoint copy")
        sc = build_scenario(store, tmp_path, per_round=5, rounds=1)
        copy = Checkpointer(
            store.source(),
            sc.signer,
            sc.anchor,
            db_copy=(store.engine, store.tables.checkpoint),
        )
        sc.write(2)
        copy.checkpoint(now=sc.tick())
        with store.engine.begin() as conn:
            conn.execute(store.tables.checkpoint.delete())
        report = verify_trail(
            store.source(),
            sc.keys,
            checkpoints=sc.anchor,
            verifier=CheckpointVerifier(sc.signer.verifier_key),
        )
        assert [] == report.kinds()
        for trail in sc.trails:
            trail.close()

    def test_log_replaced_with_another_key_is_detected(
        self, store: Store, tmp_path: Path
    ) -> None:
        """A fresh log and anchor made with other keys → SIGNATURE_INVALID and MAC_INVALID."""
        original = build_scenario(store, tmp_path, per_round=3, rounds=1)
        fresh_store: Store
        if isinstance(store, JsonLinesStore):
            fresh_store = JsonLinesStore(tmp_path / "fresh.jsonl")
        else:
            assert isinstance(store, SqlStore)
            fresh_store = SqlStore(store.url, store.prefix + "x")
        try:
            forged = build_scenario(fresh_store, tmp_path, per_round=3, rounds=1)
            report = verify_trail(
                fresh_store.source(),
                original.keys,
                checkpoints=forged.anchor,
                verifier=CheckpointVerifier(original.signer.verifier_key),
            )
            assert {"SIGNATURE_INVALID", "MAC_INVALID", "UNANCHORED_TAIL"} == set(
                report.kinds()
            )
            assert not report.intact
            replaced = verify_trail(
                fresh_store.source(),
                original.keys,
                checkpoints=original.anchor,
                verifier=CheckpointVerifier(original.signer.verifier_key),
            )
            assert {"MAC_INVALID", "CHAIN_MISSING", "UNANCHORED_TAIL"} == set(
                replaced.kinds()
            )
            for trail in forged.trails:
                trail.close()
        finally:
            for trail in original.trails:
                trail.close()
            fresh_store.close()

    def test_unknown_key_ref_is_mac_invalid_per_chain(self, scenario: Scenario) -> None:
        """Verifying with a keyring that lacks the chains' key → one MAC_INVALID run per chain."""
        report = verify_trail(
            scenario.store.source(),
            FakeKeys("other"),
            checkpoints=scenario.anchor,
            verifier=CheckpointVerifier(scenario.signer.verifier_key),
        )
        assert ["MAC_INVALID"] * 3 == report.kinds()


def _fork(child: Callable[[], None]) -> int:
    """Run *child* in a forked process; return its pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            child()
        except BaseException as exc:
            sys.stderr.write(f"forked child failed: {exc!r}\n")
            code = 1
        os._exit(code)
    return pid


def _wait(pid: int) -> int:
    """Return the exit status of child *pid* (0: it passed)."""
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _bodies(store: Store) -> list[bytes]:
    return [
        r.body
        for r in store.source().records()
        if isinstance(r, StoredRecord) and r.body is not None
    ]


# Python 3.12+ warns when forking with threads alive (the SQL sinks' flushers);
# the at-fork handlers are what make that safe here.
@pytest.mark.filterwarnings("ignore:.*multi-threaded.*fork:DeprecationWarning")
class TestFork:
    """Two processes continuing one chain after fork (research §7.5).

    The normal path, ``os.register_at_fork``, gives each child its own chain
    naming its ``parent_chain``; see also
    ``test_audit_trail.py::TestConcurrency::test_tasks_threads_and_forks_keep_their_actors``.
    """

    def test_child_gets_its_own_chain(self, scenario: Scenario) -> None:
        """With the at-fork reset a child starts a chain of its own; the trail is intact."""
        parent = scenario.trails[0]
        when = scenario.tick()

        def child() -> None:
            parent.record_decision(decision("u-child"), now=when)
            assert parent.chain not in scenario.chains
            parent.close(now=when)

        assert 0 == _wait(_fork(child))
        report = scenario.verify()
        assert [("UNANCHORED_TAIL", None, None, None)] == summary(report)
        assert 4 == report.chains
        assert 3 == report.unanchored  # chain_start, the event, chain_stop
        starts = [
            json.loads(body)
            for body in _bodies(scenario.store)
            if b'"audit.chain_start"' in body and b"parent_chain" in body
        ]
        assert [scenario.chains[0]] == [b["chain_info"]["parent_chain"] for b in starts]

    def test_child_without_reset_forks_the_chain(
        self, scenario: Scenario, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Forced: a child that keeps the parent's chain → FORK in a file; refused in SQL."""
        original = AuditTrail._reset_after_fork

        def keep_chain(trail: AuditTrail) -> None:
            writer = trail._writer
            original(trail)
            trail._writer = writer

        monkeypatch.setattr(AuditTrail, "_reset_after_fork", keep_chain)
        parent = scenario.trails[0]
        chain = scenario.chains[0]
        n = head(scenario, chain)
        ready_r, ready_w = os.pipe()
        sql = scenario.store.kind == "sql"

        def child() -> None:
            os.close(ready_w)
            assert os.read(ready_r, 1) == b"g"  # the parent wrote n+1..n+3 first
            assert chain == parent.chain
            if not sql:
                parent.record_decision(decision("u-child"), now=T0)
                parent.record_decision(decision("u-child"), now=T0)
                return
            # The unique (chain, seq) constraint refuses the row, and the
            # synchronous sink (the default since issue 11) refuses the
            # access at once: nothing is released without its event.
            with pytest.raises(AuditUnavailableError, match="did not commit"):
                parent.record_decision(decision("u-child"), now=T0)

        pid = _fork(child)
        os.close(ready_r)
        for _ in range(3):
            parent.record_decision(decision("u-parent"), now=scenario.tick())
        parent.flush()
        os.write(ready_w, b"g")
        os.close(ready_w)
        assert 0 == _wait(pid)
        report = scenario.verify()
        if sql:
            assert [("UNANCHORED_TAIL", None, None, None)] == summary(report)
            assert 3 == report.unanchored
        else:
            assert [
                ("FORK", chain, n + 1, n + 1),
                ("UNANCHORED_TAIL", None, None, None),
            ] == summary(report)
            assert 5 == report.unanchored
            assert not report.intact

    def test_duplicated_line_is_not_a_fork(self, scenario: Scenario) -> None:
        """A copied row at a taken position is not a fork: MAC_INVALID (or refused in SQL)."""
        chain = scenario.chains[1]
        if scenario.store.kind == "sql":
            with pytest.raises(sa.exc.IntegrityError):
                scenario.store.append_raw(chain, 5, like=(chain, 5))
            return
        scenario.store.append_raw(chain, 5, like=(chain, 6))
        assert [("MAC_INVALID", chain, 5, 5)] == summary(scenario.verify())


class TestRedaction:
    """``custdata.audit.redact()`` → REDACTED (valid); a body removed otherwise → MODIFIED."""

    @pytest.fixture
    def redactor(self, scenario: Scenario) -> AuditTrail:
        """A fourth writer with the scenario's checkpointer (redactions anchor at once)."""
        trail = AuditTrail(
            scenario.keys,
            sinks=[scenario.store.sink()],
            checkpointer=scenario.checkpointer,
            checkpoint_interval=None,
            service="dpo",
        )
        scenario.trails.append(trail)  # flushed by verify(), closed at teardown
        return trail

    def _redact(
        self, sc: Scenario, trail: AuditTrail, chain: str, seq: int
    ) -> SealedRecord:
        return redact(
            trail,
            sc.store.source(),  # type: ignore[arg-type]
            chain=chain,
            seq=seq,
            reason="erasure_request",
            actor="dpo-1",
            now=sc.tick(),
        )

    def test_redacted_body_is_redacted_and_intact(
        self, scenario: Scenario, redactor: AuditTrail
    ) -> None:
        """After redact() the body is gone, the chain verifies: REDACTED, intact, anchored."""
        chain = scenario.chains[1]
        anchored = len(scenario.anchor.records())
        self._redact(scenario, redactor, chain, 7)
        assert scenario.store.body(chain, 7) is None
        assert len(scenario.anchor.records()) == anchored + 1  # anchored at once
        report = scenario.verify()
        assert [("REDACTED", chain, 7, 7)] == summary(report)
        assert report.intact
        assert report.findings[0].informational
        assert "erasure_request" in report.findings[0].detail
        assert 0 == report.unanchored
        # Writers (the redactor's own sink too) go on into the rewritten file,
        # and the checkpointer reads it again from the start.
        scenario.write(2)
        redactor.record_decision(decision("u-dpo"), now=scenario.tick())
        scenario.checkpoint()
        after = scenario.verify()
        assert [("REDACTED", chain, 7, 7)] == summary(after)
        assert 0 == after.unanchored
        assert report.events + 4 * 2 + 1 == after.events  # 4 writers, then one more
        if isinstance(scenario.store, SqlStore):
            row = scenario.store.row(chain, 7)
            assert {"actor_id": None, "subject_ref": None} == {
                k: row[k] for k in ("actor_id", "subject_ref")
            }
            assert "field.reveal" == row["action"]
            assert [] == scenario.store.fanout(chain, 7)

    def test_body_removed_without_redaction_is_modified(
        self, scenario: Scenario
    ) -> None:
        """The same removal (body and derived columns) without an audit.redact event → MODIFIED."""
        chain = scenario.chains[1]
        scenario.store.drop_body(chain, 7)
        assert [("MODIFIED", chain, 7, 7)] == summary(scenario.verify())

    def test_redaction_covers_only_its_own_row(
        self, scenario: Scenario, redactor: AuditTrail
    ) -> None:
        """A redaction event names one (chain, seq, mac): neighbours and other chains stay MODIFIED."""
        c1, c2 = scenario.chains[1], scenario.chains[2]
        self._redact(scenario, redactor, c1, 7)
        scenario.store.drop_body(c1, 8)
        scenario.store.drop_body(c2, 7)
        assert [
            ("MODIFIED", c1, 8, 8),
            ("MODIFIED", c2, 7, 7),
            ("REDACTED", c1, 7, 7),
        ] == summary(scenario.verify())

    def test_redaction_event_is_in_the_chain_and_mac_valid(
        self, scenario: Scenario, redactor: AuditTrail
    ) -> None:
        """The audit.redact event is a sealed record of the redactor's chain; tampering
        with it is MODIFIED, and the row it covered is then MODIFIED too."""
        chain = scenario.chains[0]
        event = self._redact(scenario, redactor, chain, 12)
        assert redactor.chain == event.chain
        body = json.loads(scenario.store.body(event.chain, event.seq) or b"")
        assert {
            "action": "audit.redact",
            "reason": "erasure_request",
            "target": {"chain": chain, "seq": 12, "mac": body["target"]["mac"]},
        } == {k: body[k] for k in ("action", "reason", "target")}
        assert "dpo-1" == body["actor"]["id"]
        report = scenario.verify()
        assert [("REDACTED", chain, 12, 12)] == summary(report)
        # The event verified in its chain: it is covered by the last checkpoint.
        last = scenario.checkpointer.last
        assert last is not None
        assert (event.chain, event.seq, event.mac) in last.heads
        scenario.store.flip_body_byte(event.chain, event.seq)
        assert [
            ("MODIFIED", event.chain, event.seq, event.seq),
            ("MODIFIED", chain, 12, 12),
        ] == sorted(summary(scenario.verify()), key=lambda f: f[1] != event.chain)

    def test_redacted_row_keeps_no_derived_columns(
        self, scenario: Scenario, redactor: AuditTrail
    ) -> None:
        """A derived column written back onto a redacted row → COLUMN_MISMATCH."""
        if scenario.store.kind != "sql":
            pytest.skip("JSON lines have no derived columns")
        chain = scenario.chains[2]
        self._redact(scenario, redactor, chain, 4)
        scenario.store.set_column(chain, 4, "actor_id", "u-2")
        report = scenario.verify()
        assert [
            ("REDACTED", chain, 4, 4),
            ("COLUMN_MISMATCH", chain, 4, 4),
        ] == sorted(summary(report), key=lambda f: f[0] != "REDACTED")
        assert not report.intact

    def test_what_cannot_be_redacted(
        self, scenario: Scenario, redactor: AuditTrail
    ) -> None:
        """Tampered bodies, audit events, missing rows, twice, bad reasons are refused."""
        chain = scenario.chains[1]
        scenario.store.flip_body_byte(chain, 9)
        with pytest.raises(ValueError, match="digest"):
            self._redact(scenario, redactor, chain, 9)
        with pytest.raises(ValueError, match="audit"):
            self._redact(scenario, redactor, chain, 1)  # audit.chain_start
        with pytest.raises(LookupError):
            self._redact(scenario, redactor, chain, 10_000)
        self._redact(scenario, redactor, chain, 10)
        with pytest.raises(ValueError, match="already redacted"):
            self._redact(scenario, redactor, chain, 10)
        with pytest.raises(ValueError, match="reason"):
            redact(
                redactor,
                scenario.store.source(),  # type: ignore[arg-type]
                chain=chain,
                seq=11,
                reason="because",
                actor="dpo-1",
            )
        assert [
            ("MODIFIED", chain, 9, 9),
            ("REDACTED", chain, 10, 10),
        ] == summary(scenario.verify())

    def test_redaction_event_must_reach_the_store(self, scenario: Scenario) -> None:
        """A trail that does not write to the store cannot redact there; the body stays."""
        elsewhere = AuditTrail(
            scenario.keys, sinks=[MemorySink()], checkpoint_interval=None
        )
        chain = scenario.chains[0]
        with pytest.raises(AuditError, match="not in"):
            self._redact(scenario, elsewhere, chain, 3)
        elsewhere.close()
        assert scenario.store.body(chain, 3) is not None
        assert [] == summary(scenario.verify())
