"""The audit trail within its budgets: amortised identity check, compact v2 lines, streaming verification.

No timing assertions: these tests pin down the mechanisms the budgets rest on
(how often the path is stat'ed, how many bytes a line takes, what the verifier
keeps in memory), and that none of them weakens a check.
"""

from __future__ import annotations

import datetime as dt
import os
import sys

from pathlib import Path
from typing import Any

import pytest

import custdata


sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_fixtures import T0, FakeKeys, decision
from custdata.audit import (
    AuditTrail,
    Checkpointer,
    CheckpointSigner,
    CheckpointVerifier,
    FileAnchor,
    JsonLinesSink,
    JsonLinesSource,
    _sinks,
    _spill,
    _verify,
    _watch,
    verify_trail,
)


def _write(trail: AuditTrail, n: int, actor: str = "u-1") -> None:
    for i in range(n):
        trail.record_decision(decision(actor, subjects=(f"c-{i}",)), now=T0)


class _CountingStat:
    def __init__(self) -> None:
        self.calls = 0
        self.real = os.stat

    def __call__(self, path: Any) -> os.stat_result:
        self.calls += 1
        return self.real(path)


needs_inotify = pytest.mark.skipif(
    _watch.watcher() is None, reason="inotify is not available here"
)


class TestAmortisedIdentityCheck:
    @needs_inotify
    def test_path_is_not_stat_per_event_when_watched(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With the kernel watching the file, 500 events need one exact check, not 500."""
        counter = _CountingStat()
        monkeypatch.setattr(_sinks, "_stat", counter)
        monkeypatch.setattr(_sinks, "CHECK_INTERVAL_NS", 10**15)
        t = AuditTrail(
            FakeKeys(),
            sinks=[JsonLinesSink(tmp_path / "a.jsonl")],
            checkpoint_interval=None,
        )
        _write(t, 500)
        t.close()
        assert 1 <= counter.calls <= 2

    def test_without_a_watcher_every_event_is_checked(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Where inotify is unavailable the exact check runs before every event."""
        counter = _CountingStat()
        monkeypatch.setattr(_sinks, "_stat", counter)
        monkeypatch.setattr(_sinks, "watcher", lambda: None)
        t = AuditTrail(
            FakeKeys(),
            sinks=[JsonLinesSink(tmp_path / "a.jsonl")],
            checkpoint_interval=None,
        )
        _write(t, 20)
        t.close()
        # The chain start, 20 decisions and the chain stop.
        assert 22 == counter.calls

    @pytest.mark.parametrize("fault", ["moved", "deleted", "replaced", "dir_moved"])
    @pytest.mark.parametrize("watched", [True, False])
    def test_next_event_fails_closed(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        fault: str,
        watched: bool,
    ) -> None:
        """A move, deletion or replacement of the file or its directory stops the very next event."""
        if watched and _watch.watcher() is None:
            pytest.skip("inotify is not available here")
        if not watched:
            monkeypatch.setattr(_sinks, "watcher", lambda: None)
        monkeypatch.setattr(_sinks, "CHECK_INTERVAL_NS", 10**15)
        folder = tmp_path / "logs"
        folder.mkdir()
        path = folder / "a.jsonl"
        t = AuditTrail(
            FakeKeys(), sinks=[JsonLinesSink(path)], checkpoint_interval=None
        )
        _write(t, 3)
        if fault == "moved":
            path.rename(folder / "b.jsonl")
        elif fault == "deleted":
            path.unlink()
        elif fault == "replaced":
            other = folder / "new.jsonl"
            other.write_bytes(b"")
            other.replace(path)
        else:
            folder.rename(tmp_path / "logs.old")
        with pytest.raises(custdata.AuditUnavailableError, match="moved, deleted"):
            _write(t, 1)
        t._closed = True  # the file is gone; nothing to stop

    @needs_inotify
    def test_what_the_kernel_does_not_report_is_caught_within_the_window(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A grandparent directory renamed: caught by the periodic exact check (every N events)."""
        monkeypatch.setattr(_sinks, "CHECK_EVERY", 4)
        monkeypatch.setattr(_sinks, "CHECK_INTERVAL_NS", 10**15)
        (tmp_path / "top" / "logs").mkdir(parents=True)
        path = tmp_path / "top" / "logs" / "a.jsonl"
        t = AuditTrail(
            FakeKeys(), sinks=[JsonLinesSink(path)], checkpoint_interval=None
        )
        _write(t, 4)  # the chain start and four decisions: a check at the 4th event
        (tmp_path / "top").rename(tmp_path / "top.old")
        # The window: at most CHECK_EVERY - 1 events after the last exact check.
        outcomes = []
        for _ in range(4):
            try:
                _write(t, 1)
            except custdata.AuditUnavailableError as exc:
                outcomes.append("refused" if "moved, deleted" in str(exc) else "?")
            else:
                outcomes.append("written")
        assert ["written", "written", "written", "refused"] == outcomes
        t._closed = True

    @needs_inotify
    def test_a_touch_only_costs_an_exact_check(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A change of attributes (chmod) wakes the exact check, which passes: no false alarm."""
        counter = _CountingStat()
        monkeypatch.setattr(_sinks, "_stat", counter)
        monkeypatch.setattr(_sinks, "CHECK_INTERVAL_NS", 10**15)
        path, keys = tmp_path / "a.jsonl", FakeKeys()
        t = AuditTrail(keys, sinks=[JsonLinesSink(path)], checkpoint_interval=None)
        _write(t, 5)
        before = counter.calls
        path.chmod(0o640)
        _write(t, 5)
        assert before + 1 == counter.calls
        t.close()
        assert verify_trail(JsonLinesSource(path), keys).intact


class TestBoundedVerification:
    def test_macs_spill_to_disk_beyond_the_limit(self) -> None:
        """The MACs a verification keeps leave memory beyond the limit and read back exactly."""
        spill = _spill.MacSpill(limit=32 * 10)
        a, b = spill.chain(), spill.chain()
        for seq in range(1, 101):
            a.append(seq.to_bytes(32, "big"))
            if seq % 2:
                b.append((1000 + seq).to_bytes(32, "big"))
            if seq % 7 == 0:
                spill.maybe_spill()
                assert spill.buffered() <= 32 * 10
        assert (100, 50) == (len(a), len(b))
        assert [s.to_bytes(32, "big") for s in range(1, 101)] == list(a.range(1, 100))
        assert [s.to_bytes(32, "big") for s in range(37, 64)] == list(a.range(37, 63))
        assert (1003).to_bytes(32, "big") == b.get(2)
        assert a.get(101) is None
        assert b"x" == a.get(0, b"x")
        spill.close()

    def test_checkpoint_replay_reads_spilled_macs(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With a tiny memory limit, the one-pass check spills, and checkpoints still replay exactly."""
        keys, path = FakeKeys(), tmp_path / "a.jsonl"
        signer = CheckpointSigner.generate("example.test/audit")
        anchor = FileAnchor(tmp_path / "anchor.jsonl")
        cp = Checkpointer(JsonLinesSource(path), signer, anchor)
        t = AuditTrail(
            keys, sinks=[JsonLinesSink(path)], checkpointer=cp, checkpoint_interval=None
        )
        for i in range(6):
            _write(t, 300)
            t.checkpoint(now=T0 + dt.timedelta(seconds=i))
        t.close()
        spilled: list[int] = []
        real = _spill.MacSpill.maybe_spill

        def spy(self: _spill.MacSpill) -> None:
            real(self)
            spilled.append(self.buffered())

        monkeypatch.setattr(_spill.MacSpill, "__init__", _tiny_init)
        monkeypatch.setattr(_spill.MacSpill, "maybe_spill", spy)
        monkeypatch.setattr(_verify, "_SPILL_EVERY", 0xFF)
        report = verify_trail(
            JsonLinesSource(path),
            keys,
            checkpoints=anchor,
            verifier=CheckpointVerifier(signer.verifier_key),
        )
        assert spilled
        assert max(spilled) == 0
        assert report.intact, report.kinds()
        assert report.checkpoints >= 6
        # The replay really reads the spilled MACs: one flipped bit in what
        # the spill file returns breaks the recomputed Merkle root.
        read = _spill.MacSpill.read

        def flipped(self: _spill.MacSpill, offset: int, size: int) -> bytes:
            data = bytearray(read(self, offset, size))
            data[0] ^= 1
            return bytes(data)

        monkeypatch.setattr(_spill.MacSpill, "read", flipped)
        report = verify_trail(
            JsonLinesSource(path),
            keys,
            checkpoints=anchor,
            verifier=CheckpointVerifier(signer.verifier_key),
        )
        assert "ROOT_MISMATCH" in report.kinds()


def _tiny_init(self: _spill.MacSpill, limit: int = 0) -> None:
    self.limit = 64
    self.chains = []
    self._fd = None
    self._size = 0
