"""The audit trail within its budgets: amortised identity check, compact v2 lines, streaming verification.

No timing assertions: these tests pin down the mechanisms the budgets rest on
(how often the path is stat'ed, how many bytes a line takes, what the verifier
keeps in memory), and that none of them weakens a check.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import io
import os
import sys
import tracemalloc

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
    MemorySink,
    TrailSource,
    _accel,
    _compact,
    _sinks,
    _spill,
    _verify,
    _watch,
    find_events,
    redact,
    verify_trail,
)
from custdata.audit._store import StoredRecord


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
            sinks=[JsonLinesSink(tmp_path / "a.jsonl", version=1)],
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
            sinks=[JsonLinesSink(tmp_path / "a.jsonl", version=1)],
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
            FakeKeys(), sinks=[JsonLinesSink(path, version=1)], checkpoint_interval=None
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
            FakeKeys(), sinks=[JsonLinesSink(path, version=1)], checkpoint_interval=None
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
        t = AuditTrail(
            keys, sinks=[JsonLinesSink(path, version=1)], checkpoint_interval=None
        )
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
            keys,
            sinks=[JsonLinesSink(path, version=1)],
            checkpointer=cp,
            checkpoint_interval=None,
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


def _two_format_trail(folder: Path, keys: FakeKeys) -> tuple[Path, FileAnchor, Any]:
    """A file written by a v2 writer (checkpointed) and a v1 writer, interleaved."""
    path = folder / "mixed.jsonl"
    signer = CheckpointSigner.generate("example.test/audit")
    anchor = FileAnchor(folder / "anchor.jsonl")
    cp = Checkpointer(JsonLinesSource(path), signer, anchor)
    compact = AuditTrail(
        keys,
        sinks=[JsonLinesSink(path, version=2)],
        checkpointer=cp,
        checkpoint_interval=None,
        service="compact",
    )
    classic = AuditTrail(
        keys,
        sinks=[JsonLinesSink(path, version=1)],
        checkpoint_interval=None,
        service="classic",
    )
    for i in range(40):
        compact.record_decision(
            decision("u-1", subjects=(f"c-{i}",), request_id=f"r-{i}"),
            now=T0 + dt.timedelta(seconds=i),
        )
        if i % 3 == 0:
            compact.record_decision(
                decision("u-2", subjects=(f"c-{i}", f"c-{i + 1}")),
                now=T0 + dt.timedelta(seconds=i),
            )
        classic.record_decision(decision("u-3", subjects=(f"c-{i}",)), now=T0)
        if i % 10 == 9:
            compact.checkpoint(now=T0 + dt.timedelta(seconds=i))
    classic.close()
    compact.close(now=T0 + dt.timedelta(seconds=60))
    return path, anchor, CheckpointVerifier(signer.verifier_key)


def _report(path: Path, keys: FakeKeys, anchor: FileAnchor, verifier: Any) -> Any:
    return verify_trail(
        JsonLinesSource(path), keys, checkpoints=anchor, verifier=verifier
    )


def _full_report(
    path: Path,
    keys: FakeKeys,
    anchor: FileAnchor,
    verifier: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    with monkeypatch.context() as m:
        m.setattr(_verify, "_verify_json_lines_fast", lambda source, keys: None)
        return _report(path, keys, anchor, verifier)


def _reveal_line(path: Path) -> bytes:
    return next(
        line
        for line in path.read_bytes().splitlines(keepends=True)
        if line.startswith(b'{"@":"') and b'"t":' in line
    )


class TestCompactFormat:
    def test_a_reveal_takes_at_most_300_bytes(self, tmp_path: Path) -> None:
        """The benchmark's reveal (3 fields, 2 categories, 1 subject, request id) in ≤ 300 bytes on disk."""
        keys = FakeKeys()
        sizes = {}
        for version in (1, 2):
            path = tmp_path / f"v{version}.jsonl"
            t = AuditTrail(
                keys,
                sinks=[JsonLinesSink(path, version=version)],
                checkpoint_interval=None,
            )
            for i in range(100):
                t.record_decision(
                    decision(
                        "u-102938",
                        subjects=(f"3f2a9c1e-{i}",),
                        request_id="req-8a7b6c",
                    ),
                    now=T0,
                )
            before = path.stat().st_size
            t.record_decision(
                decision("u-102938", subjects=("3f2a9c1e-x",), request_id="req-8a7b6c"),
                now=T0,
            )
            sizes[version] = path.stat().st_size - before
            t.close()
        assert sizes[2] <= 300, sizes
        assert sizes[1] > 600, sizes  # what v1 takes for the same event

    def test_same_bodies_and_macs_as_v1(self, tmp_path: Path) -> None:
        """A v2 line is an encoding: the records read back are the sealed records, byte for byte."""
        keys = FakeKeys()
        path = tmp_path / "a.jsonl"
        mem = _MemorySinkForCompare()
        t = AuditTrail(
            keys,
            sinks=[JsonLinesSink(path, version=2), mem],
            checkpoint_interval=None,
        )
        t.record_decision(decision("u-1", subjects=("c-1",)), now=T0)
        t.record_decision(decision("u-1", subjects=("c-1", "c-2")), now=T0)
        t.record_decision(decision("ü ser@example.com", subjects=()), now=T0)
        t.close()
        read = [
            (r.chain, r.seq, r.key_ref, r.prev, r.mac, r.body_sha256, r.body)
            for r in JsonLinesSource(path).records()
        ]
        sealed = [
            (r.chain, r.seq, r.key_ref, r.prev, r.mac, r.body_sha256, r.body)
            for r in mem.records
        ]
        assert sealed == read

    def test_mixed_file_verifies_in_one_pass_like_the_full_algorithm(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """v1 and v2 writers on one file, checkpointed: one pass, the same report as the full algorithm."""
        keys = FakeKeys()
        path, anchor, verifier = _two_format_trail(tmp_path, keys)
        assert _verify._verify_json_lines_fast(JsonLinesSource(path), keys) is not None
        fast = _report(path, keys, anchor, verifier)
        assert fast.intact, fast.kinds()
        assert fast.checkpoints == 5
        assert (
            fast.to_dict()
            == _full_report(path, keys, anchor, verifier, monkeypatch).to_dict()
        )

    @pytest.mark.parametrize(
        ("attack", "expected"),
        [
            ("value", "MAC_INVALID"),
            ("template", "MAC_INVALID"),
            ("declaration", "MAC_INVALID"),
            ("delete", "MISSING"),
            ("duplicate", "DUPLICATE"),
            ("truncate", "ROLLBACK"),
            ("torn", "CRASH_TRUNCATED"),
            ("garbage", "MODIFIED"),
            ("nested", "CRASH_TRUNCATED"),
        ],
    )
    def test_tampering_is_named(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        attack: str,
        expected: str,
    ) -> None:
        """Each edit of a v2 file is found, by the one-pass check's fallback, as by the full algorithm."""
        keys = FakeKeys()
        path, anchor, verifier = _two_format_trail(tmp_path, keys)
        lines = path.read_bytes().splitlines(keepends=True)
        records = [i for i, x in enumerate(lines) if x.startswith(b'{"@":"')]
        target = records[7]
        if attack == "value":
            lines[target] = lines[target].replace(b'"r-', b'"x-', 1)
        elif attack == "template":
            at = next(i for i, x in enumerate(lines) if x.startswith(b'{"@tpl"'))
            lines[at] = lines[at].replace(b"u-1", b"u-9", 1)
        elif attack == "declaration":
            at = next(i for i, x in enumerate(lines) if x.startswith(b'{"@chain"'))
            lines[at] = lines[at].replace(
                b'"key_ref":"audit-1"', b'"key_ref":"audit-2"'
            )
        elif attack == "delete":
            del lines[target]
        elif attack == "duplicate":
            lines.insert(target + 1, lines[target])
        elif attack == "truncate":
            # Cut the compact chain's records after its second checkpoint.
            lines = lines[: records[30]]
        elif attack == "torn":
            lines.append(lines[target][:50])
        elif attack == "garbage":
            lines.insert(target, b'{"@":"zz","s":1}\n')
        else:
            lines.insert(target, b'{"@":' + b"[" * 100_000 + b"\n")
        path.write_bytes(b"".join(lines))
        report = _report(path, keys, anchor, verifier)
        assert expected in report.kinds()
        if attack in {"torn", "nested"}:
            # Like v1: the start of a record that is not complete JSON.
            assert report.intact
        else:
            assert not report.intact
        full = _full_report(path, keys, anchor, verifier, monkeypatch)
        assert full.to_dict() == report.to_dict()

    def test_checkpointer_and_queries_read_v2(self, tmp_path: Path) -> None:
        """The checkpointer's incremental reads and find_events work on v2 lines."""
        keys = FakeKeys()
        path, anchor, verifier = _two_format_trail(tmp_path, keys)
        ref = AuditTrail(keys, sinks=[_MemorySinkForCompare()]).subject_ref("c-3")
        rows = find_events(JsonLinesSource(path), subject_ref=ref)
        actors = sorted(str(r["actor_id"]) for r in rows)
        # c-3 is read by u-1 and u-3 at i=3, and by u-2 at i=3 (c-3, c-4).
        assert ["u-1", "u-2", "u-3"] == actors
        assert _report(path, keys, anchor, verifier).checkpoints == 5

    def test_redaction_of_a_v2_record(self, tmp_path: Path) -> None:
        """A v2 record's body is redacted in place (its digest kept) and verifies as REDACTED."""
        keys = FakeKeys()
        path = tmp_path / "a.jsonl"
        t = AuditTrail(
            keys, sinks=[JsonLinesSink(path, version=2)], checkpoint_interval=None
        )
        for i in range(5):
            t.record_decision(decision("u-1", subjects=(f"c-{i}",)), now=T0)
        chain = t.chain
        assert chain is not None
        redact(
            t,
            JsonLinesSource(path),
            chain=chain,
            seq=3,
            reason="erasure_request",
            actor="dpo-1",
            now=T0,
        )
        t.record_decision(decision("u-1", subjects=("c-9",)), now=T0)
        t.close()
        data = path.read_bytes()
        assert b'"s":3,' in data
        line = next(x for x in data.splitlines() if b'"s":3,' in x)
        assert b'"h":"' in line
        assert b'"d":' not in line
        report = verify_trail(JsonLinesSource(path), keys)
        assert report.intact, report.kinds()
        assert "REDACTED" in report.kinds()

    def test_bad_version_is_a_configuration_error(self, tmp_path: Path) -> None:
        with pytest.raises(custdata.ConfigurationError, match="version"):
            JsonLinesSink(tmp_path / "a.jsonl", version=3)


class _MemorySinkForCompare(MemorySink):
    pass


class _InMemory(TrailSource):
    """The same file through the in-memory algorithm (any source that is not a file)."""

    def __init__(self, path: Path) -> None:
        self._inner = JsonLinesSource(path)
        self.description = self._inner.description

    def records(self) -> Any:
        return self._inner.records()


def _multi_chain(folder: Path, keys: FakeKeys) -> tuple[Path, FileAnchor, Any]:
    path = folder / "multi.jsonl"
    signer = CheckpointSigner.generate("example.test/audit")
    anchor = FileAnchor(folder / "anchor.jsonl")
    cp = Checkpointer(JsonLinesSource(path), signer, anchor)
    trails = [
        AuditTrail(
            keys,
            sinks=[JsonLinesSink(path, version=1)],
            checkpointer=cp if n == 0 else None,
            checkpoint_interval=None,
            service=f"svc{n}",
        )
        for n in range(3)
    ]
    for i in range(300):
        for n, t in enumerate(trails):
            if (i + n) % 2 == 0 or n == 0:
                t.record_decision(
                    decision(f"u-{i % 4}", subjects=(f"c-{i}",), request_id=f"r-{i}"),
                    now=T0 + dt.timedelta(seconds=i),
                )
        if i % 100 == 99:
            trails[0].checkpoint(now=T0 + dt.timedelta(seconds=i))
    for t in trails[1:]:
        t.close(now=T0 + dt.timedelta(seconds=400))
    trails[0].close(now=T0 + dt.timedelta(seconds=401))
    return path, anchor, CheckpointVerifier(signer.verifier_key)


def _edit(lines: list[bytes], attack: str) -> list[bytes]:
    lines = list(lines)
    if attack == "delete":
        del lines[100]
    elif attack == "modify":
        lines[100] = lines[100].replace(b'"r-', b'"x-', 1)
    elif attack == "duplicate_near":
        lines.insert(130, lines[100])
    elif attack == "swap":
        lines[100], lines[140] = lines[140], lines[100]
    elif attack == "relabel":
        lines[100] = lines[100].replace(b'"key_ref":"audit-1"', b'"key_ref":"audit-2"')
    elif attack == "truncate":
        lines = lines[:500]
    elif attack == "fork":
        # A second record at a taken position, chaining from the same
        # predecessor: the copy of another chain's line cannot be that, so
        # re-seal is out of reach; a forged MAC is MAC_INVALID.
        lines.insert(101, lines[100].replace(b'"mac":"', b'"mac":"00', 1))
    elif attack == "garbage":
        lines.insert(50, b"not a record\n")
    elif attack == "torn":
        lines.append(lines[10][:60])
    return lines


class TestStreamingVerifier:
    @pytest.mark.parametrize(
        "attack",
        [
            "none",
            "delete",
            "modify",
            "duplicate_near",
            "swap",
            "relabel",
            "truncate",
            "fork",
            "garbage",
            "torn",
        ],
    )
    def test_same_findings_as_the_in_memory_algorithm(
        self, tmp_path: Path, attack: str
    ) -> None:
        """Within the reorder window the streaming pass names exactly what sorting every chain would."""
        keys = FakeKeys()
        path, anchor, verifier = _multi_chain(tmp_path, keys)
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(b"".join(_edit(lines, attack)))
        streamed = verify_trail(
            JsonLinesSource(path), keys, checkpoints=anchor, verifier=verifier
        )
        in_memory = verify_trail(
            _InMemory(path), keys, checkpoints=anchor, verifier=verifier
        )
        assert streamed.to_dict() == in_memory.to_dict()
        # Lines in another order are no evidence: each states its seq and prev.
        assert streamed.intact == (attack in {"none", "torn", "swap"})

    def test_the_in_memory_algorithm_is_not_used_for_files(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A tampered file never takes the algorithm that holds every record."""
        keys = FakeKeys()
        path, anchor, verifier = _multi_chain(tmp_path, keys)
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(b"".join(_edit(lines, "modify")))

        def refuse(*args: object) -> None:
            raise AssertionError("the in-memory algorithm was used")

        monkeypatch.setattr(_verify, "_verify_records", refuse)
        report = verify_trail(
            JsonLinesSource(path), keys, checkpoints=anchor, verifier=verifier
        )
        assert "MODIFIED" in report.kinds()

    @pytest.mark.parametrize("attack", ["late_duplicate", "moved_far"])
    def test_records_far_out_of_place(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attack: str
    ) -> None:
        """Beyond the window: a duplicate is still DUPLICATE; a moved record is never intact."""
        monkeypatch.setattr(_verify, "REORDER_WINDOW", 16)
        keys = FakeKeys()
        path, anchor, verifier = _multi_chain(tmp_path, keys)
        lines = path.read_bytes().splitlines(keepends=True)
        if attack == "late_duplicate":
            lines.append(lines[20])
        else:
            lines.append(lines.pop(20))
        path.write_bytes(b"".join(lines))
        report = verify_trail(
            JsonLinesSource(path), keys, checkpoints=anchor, verifier=verifier
        )
        if attack == "late_duplicate":
            assert ["DUPLICATE"] == [
                f for f in report.kinds() if f != "UNANCHORED_TAIL"
            ]
        else:
            assert not report.intact
            assert "MISSING" in report.kinds()
            assert any("out of place" in f.detail for f in report.findings)

    def test_memory_does_not_grow_with_the_trail(self, tmp_path: Path) -> None:
        """Peak traced memory of verifying a tampered file: the same for 4x the records."""
        keys = FakeKeys()
        peaks = []
        # Both files are larger than the reader's 4 MiB block.
        for n in (8_000, 32_000):
            path = tmp_path / f"{n}.jsonl"
            t = AuditTrail(
                keys, sinks=[JsonLinesSink(path, version=1)], checkpoint_interval=None
            )
            _write(t, n)
            t.close()
            lines = path.read_bytes().splitlines(keepends=True)
            lines[n // 2] = lines[n // 2].replace(b'"c-', b'"x-', 1)
            lines[n // 2] = lines[n // 2].replace(b'"count":', b'"count": ', 1)
            path.write_bytes(b"".join(lines))
            tracemalloc.start()
            report = verify_trail(JsonLinesSource(path), keys)
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
            assert not report.intact
        # Holding every record (the old algorithm) took about 1 KB per record.
        assert peaks[1] < peaks[0] * 1.5, peaks


class TestResumption:
    @pytest.mark.parametrize("version", [1, 2])
    def test_a_tampered_file_is_read_once(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: int
    ) -> None:
        """The full algorithm goes on where the one-pass check gave up, with the same report."""
        keys, path = FakeKeys(), tmp_path / "a.jsonl"
        t = AuditTrail(
            keys, sinks=[JsonLinesSink(path, version=version)], checkpoint_interval=None
        )
        _write(t, 300)
        t.close()
        lines = path.read_bytes().splitlines(keepends=True)
        lines[200] = lines[200].replace(b'"sr_', b'"sr_a', 1)
        path.write_bytes(b"".join(lines))
        in_memory = verify_trail(_InMemory(path), keys)
        # Reading the file from the start again would call records().
        monkeypatch.setattr(
            JsonLinesSource,
            "records",
            lambda self: pytest.fail("the file was read a second time"),
        )
        report = verify_trail(JsonLinesSource(path), keys)
        assert not report.intact
        assert report.to_dict() == in_memory.to_dict()
        assert report.events == 302


class TestCompactValues:
    def test_values_split_exactly_as_they_stand(self) -> None:
        """Values with commas inside (lists) split where the JSON scanner says; whitespace is refused."""
        split = _compact.split_values
        assert [b"1", b'"a"', b"3"] == split(b'1,"a",3', 3)
        assert [b"2", b'["x","y,z"]', b'"t"'] == split(b'2,["x","y,z"],"t"', 3)
        assert split(b'2, ["x","y"],"t"', 3) is None
        assert split(b"1,2", 3) is None
        assert split(b'1,["a",2', 2) is None
        assert split(b"1,2,3,4", 3) is None

    def test_a_value_edited_only_in_its_spacing_is_found(self, tmp_path: Path) -> None:
        """The values are body bytes: spacing them out changes the body (as it would in v1)."""
        keys, path = FakeKeys(), tmp_path / "a.jsonl"
        t = AuditTrail(
            keys, sinks=[JsonLinesSink(path, version=2)], checkpoint_interval=None
        )
        t.record_decision(decision("u-1", subjects=("c-1", "c-2")), now=T0)
        t.close()
        data = path.read_bytes()
        assert b'","sr_' in data
        path.write_bytes(data.replace(b'","sr_', b'", "sr_', 1))
        assert not verify_trail(JsonLinesSource(path), keys).intact


class TestReplayedFile:
    def test_a_file_appended_to_itself_is_one_duplicate_run(
        self, tmp_path: Path
    ) -> None:
        """Every record of a replayed copy is behind its chain's position: DUPLICATE, as one run."""
        keys, path = FakeKeys(), tmp_path / "a.jsonl"
        t = AuditTrail(
            keys, sinks=[JsonLinesSink(path, version=1)], checkpoint_interval=None
        )
        _write(t, 3000)
        t.close()
        path.write_bytes(path.read_bytes() * 2)
        report = verify_trail(JsonLinesSource(path), keys)
        found = [
            (f.kind.value, f.seq, f.last_seq)
            for f in report.findings
            if not f.informational
        ]
        assert [("DUPLICATE", 1, 3002)] == found


class TestStreamingSpills:
    def test_a_tampered_file_spills_its_macs_too(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The streaming algorithm offers its MACs to the spill file as it reads, like the one-pass check."""
        keys, path = FakeKeys(), tmp_path / "a.jsonl"
        t = AuditTrail(
            keys, sinks=[JsonLinesSink(path, version=1)], checkpoint_interval=None
        )
        _write(t, 2000)
        t.close()
        lines = path.read_bytes().splitlines(keepends=True)
        lines[100] = lines[100].replace(b'"sr_', b'"sr_a', 1)
        path.write_bytes(b"".join(lines))
        expected = verify_trail(_InMemory(path), keys).to_dict()
        after: list[int] = []
        real = _spill.MacSpill.maybe_spill

        def spy(self: _spill.MacSpill) -> None:
            real(self)
            after.append(self.buffered())

        monkeypatch.setattr(_spill.MacSpill, "__init__", _tiny_init)
        monkeypatch.setattr(_spill.MacSpill, "maybe_spill", spy)
        monkeypatch.setattr(_verify, "_SPILL_EVERY", 0xFF)
        report = verify_trail(JsonLinesSource(path), keys)
        # Past the tampered record (line 101), the streaming pass spilled.
        assert len(after) >= 2000 // 256
        assert max(after) == 0
        assert report.to_dict() == expected


class TestCompactStream:
    def test_a_stream_takes_the_compact_format_too(self, tmp_path: Path) -> None:
        """A binary or text stream (stdout) written in format 2 verifies once saved to a file."""
        keys = FakeKeys()
        binary, text = io.BytesIO(), io.StringIO()
        for stream in (binary, text):
            t = AuditTrail(
                keys,
                sinks=[JsonLinesSink(stream, version=2)],
                checkpoint_interval=None,
            )
            _write(t, 5)
            t.close()
        for n, data in enumerate((binary.getvalue(), text.getvalue().encode())):
            assert data.startswith(b'{"@chain":"')
            path = tmp_path / f"{n}.jsonl"
            path.write_bytes(data)
            report = verify_trail(JsonLinesSource(path), keys)
            assert report.intact
            assert report.events == 7


class TestDefaultFormat:
    """``JsonLinesSink(path)`` writes format 2 to a new file and never mixes formats."""

    @staticmethod
    def _heads(path: Path) -> set[bytes]:
        return {line[:3] for line in path.read_bytes().splitlines() if line}

    def test_a_new_file_gets_the_compact_format(self, tmp_path: Path) -> None:
        """A file that does not exist yet is written in format 2 (declarations first)."""
        path = tmp_path / "new.jsonl"
        keys = FakeKeys()
        sink = JsonLinesSink(path)
        assert 2 == sink.version
        t = AuditTrail(keys, sinks=[sink], checkpoint_interval=None)
        _write(t, 3)
        t.close()
        assert path.read_bytes().startswith(b'{"@chain":"')
        assert {b'{"@'} == self._heads(path)
        assert verify_trail(JsonLinesSource(path), keys).intact

    def test_an_empty_file_gets_the_compact_format(self, tmp_path: Path) -> None:
        """An existing empty file holds no format yet: format 2."""
        path = tmp_path / "empty.jsonl"
        path.touch()
        assert 2 == JsonLinesSink(path).version

    @pytest.mark.parametrize("version", [1, 2])
    def test_an_existing_file_goes_on_in_its_format(
        self, tmp_path: Path, version: int
    ) -> None:
        """A file written in format 1 (an older release) is continued in format 1, and 2 in 2."""
        path = tmp_path / "old.jsonl"
        keys = FakeKeys()
        old = AuditTrail(
            keys, sinks=[JsonLinesSink(path, version=version)], checkpoint_interval=None
        )
        _write(old, 3)
        old.close()
        sink = JsonLinesSink(path)
        assert version == sink.version
        new = AuditTrail(keys, sinks=[sink], checkpoint_interval=None, service="new")
        _write(new, 3, actor="u-2")
        new.close()
        head = b'{"c' if version == 1 else b'{"@'
        assert {head} == self._heads(path)
        report = verify_trail(JsonLinesSource(path), keys)
        assert report.intact
        assert 2 == report.chains

    def test_the_first_record_decides_past_lines_that_are_not_records(
        self, tmp_path: Path
    ) -> None:
        """Blank, garbage and torn lines before the first record do not decide the format."""
        path = tmp_path / "old.jsonl"
        keys = FakeKeys()
        old = AuditTrail(
            keys, sinks=[JsonLinesSink(path, version=1)], checkpoint_interval=None
        )
        _write(old, 2)
        old.close()
        path.write_bytes(b"\nnot a record\n" + path.read_bytes())
        assert 1 == JsonLinesSink(path).version

    def test_a_stream_gets_format_1(self) -> None:
        """A stream's reader may start anywhere: every line stands alone (format 1)."""
        stream = io.BytesIO()
        sink = JsonLinesSink(stream)
        assert 1 == sink.version
        t = AuditTrail(FakeKeys(), sinks=[sink], checkpoint_interval=None)
        _write(t, 1)
        t.close()
        assert stream.getvalue().startswith(b'{"custdata_audit":1,')

    def test_an_explicit_version_is_kept_on_an_existing_file(
        self, tmp_path: Path
    ) -> None:
        """``version=2`` on a format-1 file is honoured: the reader verifies the mix."""
        path = tmp_path / "old.jsonl"
        keys = FakeKeys()
        old = AuditTrail(
            keys, sinks=[JsonLinesSink(path, version=1)], checkpoint_interval=None
        )
        _write(old, 2)
        old.close()
        sink = JsonLinesSink(path, version=2)
        assert 2 == sink.version
        new = AuditTrail(keys, sinks=[sink], checkpoint_interval=None, service="new")
        _write(new, 2)
        new.close()
        assert {b'{"c', b'{"@'} == self._heads(path)
        assert verify_trail(JsonLinesSource(path), keys).intact


def _edit_time(line: bytes) -> bytes:
    """*line* with its event's time moved a century back (the last ``"20`` of the line).

    The time is the last value of a record line in either format; the first
    ``"20`` could instead start a random id (a chain's short id, a MAC).
    """
    at = line.rindex(b'"20')
    return line[:at] + b'"19' + line[at + 3 :]


class TestTamperedCompactFile:
    """After the one-pass check gives up, a format-2 body is hashed once, not twice."""

    def test_each_body_is_hashed_once(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The reader's digest of a rebuilt body is trusted as its own; only the line given up at is read twice."""
        keys = FakeKeys()
        path = tmp_path / "v2.jsonl"
        t = AuditTrail(
            keys, sinks=[JsonLinesSink(path, version=2)], checkpoint_interval=None
        )
        _write(t, 40)
        t.close()
        lines = path.read_bytes().splitlines(keepends=True)
        records = [i for i, x in enumerate(lines) if x.startswith(b'{"@":"')]
        lines[records[10]] = _edit_time(lines[records[10]])
        path.write_bytes(b"".join(lines))
        hashed: collections.Counter[bytes] = collections.Counter()
        real = hashlib.sha256

        def counting(data: bytes = b"", **kw: Any) -> Any:
            if data.startswith(b'{"action"'):
                hashed[data] += 1
            return real(data, **kw)

        # Counted on the pure-Python chain (the native one hashes in C).
        monkeypatch.setattr(_accel, "native", None)
        monkeypatch.setattr(hashlib, "sha256", counting)
        monkeypatch.setattr(_verify, "_sha256", counting)
        report = verify_trail(JsonLinesSource(path), keys)
        assert ["MAC_INVALID", "UNANCHORED_TAIL"] == report.kinds()
        assert len(hashed) >= 40
        # Every body once; the line the one-pass check gave up at twice.
        assert len(hashed) + 1 == sum(hashed.values())

    def test_a_derived_digest_is_only_made_by_the_reader(self, tmp_path: Path) -> None:
        """Format-1 lines carry their stored digest (checked against the body), never a derived one."""
        keys = FakeKeys()
        path = tmp_path / "mixed.jsonl"
        for version in (1, 2):
            t = AuditTrail(
                keys,
                sinks=[JsonLinesSink(path, version=version)],
                checkpoint_interval=None,
                service=f"v{version}",
            )
            _write(t, 3)
            t.close()
        kinds = {
            (type(r.body_sha256) is _compact.DerivedDigest, r.chain.split("/")[1])
            for r in JsonLinesSource(path).records()
            if isinstance(r, StoredRecord)
        }
        assert {(False, "v1"), (True, "v2")} == kinds

    @pytest.mark.parametrize("version", [1, 2])
    def test_after_a_finding_the_chain_goes_back_to_the_in_order_step(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: int
    ) -> None:
        """Past an edited record, the full algorithm's general step runs only where the chain is not in order."""
        keys = FakeKeys()
        path = tmp_path / "a.jsonl"
        t = AuditTrail(
            keys, sinks=[JsonLinesSink(path, version=version)], checkpoint_interval=None
        )
        _write(t, 200)
        t.close()
        lines = path.read_bytes().splitlines(keepends=True)
        lines[60] = _edit_time(lines[60])
        path.write_bytes(b"".join(lines))
        calls: list[int] = []
        general = _verify._StreamChain._process

        def counting(self: Any, rec: Any) -> None:
            calls.append(rec.seq)
            general(self, rec)

        monkeypatch.setattr(_verify._StreamChain, "_process", counting)
        report = verify_trail(JsonLinesSource(path), keys)
        assert not report.intact
        # The edited record, and the next one (its predecessor is not valid).
        assert 2 == len(calls)
        calls.clear()
        monkeypatch.setattr(_verify._StreamChain, "_next_in_order", lambda *_: False)
        assert report.to_dict() == verify_trail(JsonLinesSource(path), keys).to_dict()
        assert len(calls) > 100
