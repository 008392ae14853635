"""The audit hot paths agree with the general ones they stand in for.

The writer fills prepared decision events into templates and hands sinks the
decoded body in two parts; the verifier checks an intact JSON-lines file in one
pass and falls back to the full algorithm at the first line that is not exactly
what a writer writes. These tests pin the outputs of the fast paths to those of
the general ones (never their speed).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import sys

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.strategies as st
import pytest


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
    SealedRecord,
    _verify,
    redact,
    verify_trail,
)
from custdata.audit._schema import canonical_json, stamps_from_us, ts_from_us


class Trail:
    """A JSON-lines trail of three interleaved chains with anchored checkpoints."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "audit.jsonl"
        self.keys = FakeKeys(seed=bytes(range(32)))
        self.signer = CheckpointSigner.generate("example.com/audit")
        self.anchor = FileAnchor(folder / "anchor.jsonl")
        checkpointer = Checkpointer(
            JsonLinesSource(self.path), self.signer, self.anchor
        )
        trails = [
            AuditTrail(
                self.keys,
                sinks=[JsonLinesSink(self.path, version=1)],
                checkpointer=checkpointer if n == 0 else None,
                checkpoint_interval=None,
                service=f"svc{n}",
            )
            for n in range(3)
        ]
        for i in range(30):
            for n, trail in enumerate(trails):
                if (i + n) % 2 == 0 or n == 0:
                    trail.record_decision(
                        decision(
                            f"u-{i % 4}", subjects=(f"c-{i}",), request_id=f"r-{i}"
                        ),
                        now=T0 + dt.timedelta(seconds=i),
                    )
            if i % 10 == 9:
                trails[0].checkpoint(now=T0 + dt.timedelta(seconds=i))
        for trail in trails[1:]:
            trail.close(now=T0 + dt.timedelta(seconds=40))
        # Trail 0 stays open: records after its last checkpoint are a tail.
        trails[0].record_decision(decision("u-9"), now=T0 + dt.timedelta(seconds=41))
        self.trails = trails
        self.data = self.path.read_bytes()

    def report(self, data: bytes, *, fast: bool) -> dict[str, Any]:
        self.path.write_bytes(data)
        saved = _verify._verify_json_lines_fast
        if not fast:
            _verify._verify_json_lines_fast = lambda source, keys: None
        try:
            report = verify_trail(
                JsonLinesSource(self.path),
                self.keys,
                checkpoints=self.anchor,
                verifier=CheckpointVerifier(self.signer.verifier_key),
            )
        finally:
            _verify._verify_json_lines_fast = saved
        return report.to_dict()

    def fast_result(
        self, data: bytes
    ) -> tuple[int, dict[str, dict[int, bytes]]] | None:
        self.path.write_bytes(data)
        return _verify._verify_json_lines_fast(JsonLinesSource(self.path), self.keys)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trail]:
    trail = Trail(tmp_path_factory.mktemp("fast"))
    yield trail
    trail.trails[0].close()


def _line_edit(data: bytes, index: int, fn: Any) -> bytes:
    lines = data.split(b"\n")
    lines[index] = fn(lines[index])
    return b"\n".join(lines)


def _relabel(line: bytes) -> bytes:
    return line.replace(b'"key_ref":"audit-1"', b'"key_ref":"audit-2"')


def _hex_digit(field: bytes) -> Any:
    """Change the first hex digit of an envelope field."""

    def edit(line: bytes) -> bytes:
        at = line.index(b'"' + field + b'":"') + len(field) + 4
        digit = b"0" if line[at : at + 1] != b"0" else b"1"
        return line[:at] + digit + line[at + 1 :]

    return edit


def _upper_hex(line: bytes) -> bytes:
    at = line.index(b'"mac":"') + 7
    return line[:at] + line[at : at + 64].upper() + line[at + 64 :]


# Each edit changes what is stored; the fast verifier must hand every one of
# them to the full algorithm.
EDITS = {
    "body byte": lambda line: line.replace(b'"count":2', b'"count":3'),
    "digest hex": _hex_digit(b"body_sha256"),
    "mac hex": _hex_digit(b"mac"),
    "prev hex": _hex_digit(b"prev"),
    "upper-case hex": _upper_hex,
    "key_ref": _relabel,
    "seq with a plus": lambda line: line.replace(b'"seq":', b'"seq":+', 1),
    "seq with a space": lambda line: line.replace(b'"seq":', b'"seq": ', 1),
    "seq with a zero": lambda line: line.replace(b'"seq":', b'"seq":0', 1),
    "CRLF": lambda line: line + b"\r",
    "blank line after": lambda line: line + b"\n",
    "duplicated": lambda line: line + b"\n" + line,
    "removed": lambda line: b"",
    "spaces in the envelope": lambda line: line.replace(b'","mac":"', b'", "mac":"'),
    "trailing junk": lambda line: line + b" ",
    "chain id": lambda line: line.replace(b"/svc", b"/svX", 1),
}


class TestFastVerification:
    def test_intact_file_takes_the_fast_path(self, built: Trail) -> None:
        """An intact multi-chain file is verified in one pass, with the full algorithm's report."""
        found = built.fast_result(built.data)
        assert found is not None
        events, macs, _ends = found
        assert built.data.count(b"\n") == events
        assert 3 == len(macs)
        fast = built.report(built.data, fast=True)
        assert built.report(built.data, fast=False) == fast
        assert fast["intact"]
        assert 3 == fast["checkpoints"]
        assert fast["unanchored"] > 0

    @pytest.mark.parametrize("edit", sorted(EDITS))
    @pytest.mark.parametrize("where", [1, 7, -2])
    def test_edited_lines_fall_back(self, built: Trail, edit: str, where: int) -> None:
        """Any line that is not exactly what a writer wrote hands the file to the full algorithm."""
        data = _line_edit(built.data, where, EDITS[edit])
        assert data != built.data
        assert built.fast_result(data) is None
        assert built.report(data, fast=False) == built.report(data, fast=True)

    def test_reordered_lines_fall_back(self, built: Trail) -> None:
        """Lines of one chain out of order are the full algorithm's to judge."""
        lines = built.data.split(b"\n")
        lines[3], lines[6] = lines[6], lines[3]
        data = b"\n".join(lines)
        assert built.fast_result(data) is None
        assert built.report(data, fast=False) == built.report(data, fast=True)

    def test_partial_last_line_is_named_by_both(self, built: Trail) -> None:
        """A torn last write (no newline) is CRASH_TRUNCATED, informational, on both paths.

        Issue 11 changes this: the torn tail used to be skipped silently.
        """
        data = built.data + built.data.split(b"\n")[2][:50]
        assert built.fast_result(data) is None
        report = built.report(data, fast=True)
        assert built.report(data, fast=False) == report
        assert report["intact"]
        assert "CRASH_TRUNCATED" in {f["kind"] for f in report["findings"]}

    def test_unknown_key_falls_back(self, built: Trail) -> None:
        """A chain whose key id names no known root is left to the full algorithm."""
        data = b"\n".join(_relabel(line) for line in built.data.split(b"\n"))
        assert built.fast_result(data) is None
        report = built.report(data, fast=True)
        assert report == built.report(data, fast=False)
        assert "MAC_INVALID" in {f["kind"] for f in report["findings"]}

    @hypothesis.settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
    )
    @hypothesis.given(
        at=st.integers(min_value=0),
        byte=st.integers(min_value=0, max_value=255),
        how=st.sampled_from(["replace", "insert", "delete"]),
    )
    def test_any_byte_edit_gives_the_same_report(
        self, built: Trail, at: int, byte: int, how: str
    ) -> None:
        """Whatever one byte is changed, inserted or removed, both paths report the same."""
        data = built.data
        at %= len(data)
        if how == "replace":
            data = data[:at] + bytes([byte]) + data[at + 1 :]
        elif how == "insert":
            data = data[:at] + bytes([byte]) + data[at:]
        else:
            data = data[:at] + data[at + 1 :]
        fast = built.report(data, fast=True)
        assert built.report(data, fast=False) == fast
        if data != built.data:
            found = built.fast_result(data)
            assert found is None or fast["intact"]


class TestFallbackOnRedactionAndFork:
    """Redacted lines and forked chains are never accepted by the one-pass check."""

    def test_redacted_file_falls_back(self, tmp_path: Path) -> None:
        """A line without its body (redacted) hands the file to the full algorithm."""
        t = Trail(tmp_path)
        chain = t.trails[1].chain
        assert chain is not None
        redact(
            t.trails[0],
            JsonLinesSource(t.path),
            chain=chain,
            seq=5,
            reason="retention_expired",
            actor="dpo-1",
            now=T0 + dt.timedelta(seconds=50),
        )
        t.trails[0].close(now=T0 + dt.timedelta(seconds=51))
        data = t.path.read_bytes()
        assert b'"body":' not in next(
            line
            for line in data.splitlines()
            if b'"seq":5,' in line and chain.encode() in line
        )
        assert t.fast_result(data) is None
        fast = t.report(data, fast=True)
        assert t.report(data, fast=False) == fast
        assert ["REDACTED"] == [f["kind"] for f in fast["findings"]]
        assert fast["intact"]

    def test_intact_file_with_a_redaction_event_takes_the_fast_path(
        self, tmp_path: Path
    ) -> None:
        """A redaction event alone (body not yet removed) is an ordinary record."""
        t = Trail(tmp_path)
        before = t.path.read_bytes()
        chain = t.trails[1].chain
        assert chain is not None
        event = redact(
            t.trails[0],
            JsonLinesSource(t.path),
            chain=chain,
            seq=5,
            reason="operator_request",
            actor="dpo-1",
            now=T0 + dt.timedelta(seconds=50),
        )
        t.trails[0].close(now=T0 + dt.timedelta(seconds=51))
        # Put the body back: the event remains, covering a row that kept its body.
        data = before + t.path.read_bytes().split(b"\n", before.count(b"\n"))[-1]
        assert b'"audit.redact"' in data
        assert event.seq > 0
        assert t.fast_result(data) is not None
        fast = t.report(data, fast=True)
        assert t.report(data, fast=False) == fast
        assert [] == fast["findings"]

    def test_forked_file_falls_back(self, tmp_path: Path) -> None:
        """Two writers with one chain state (a fork without reset) → FORK on both paths."""
        t = Trail(tmp_path)
        trail = t.trails[0]
        writer = trail._writer
        twin = copy.copy(writer)
        trail.record_decision(decision("u-a"), now=T0 + dt.timedelta(seconds=50))
        trail._writer = twin
        for _ in range(2):
            trail.record_decision(decision("u-b"), now=T0 + dt.timedelta(seconds=51))
        trail._writer = writer
        trail.record_decision(decision("u-a"), now=T0 + dt.timedelta(seconds=52))
        data = t.path.read_bytes()
        assert t.fast_result(data) is None
        fast = t.report(data, fast=True)
        assert t.report(data, fast=False) == fast
        forks = [f for f in fast["findings"] if f["kind"] == "FORK"]
        assert [(trail.chain, writer.seq - 1)] == [
            (f["chain"], f["seq"]) for f in forks
        ]
        assert ["FORK", "UNANCHORED_TAIL"] == [f["kind"] for f in fast["findings"]]
        trail.close(now=T0 + dt.timedelta(seconds=53))


class TestPreparedRecords:
    def test_fields_are_merged_on_first_use(self) -> None:
        """A prepared decision's record decodes to exactly its body, once asked."""
        mem = MemorySink()
        with AuditTrail(FakeKeys(), sinks=[mem], checkpoint_interval=None) as trail:
            trail.record_decision(decision("u-1", request_id="r-1"), now=T0)
        record = mem.records[1]
        assert isinstance(record._fields, tuple)
        assert json.loads(record.body) == record.fields
        assert record.fields is record.fields
        assert "field.reveal" == record.action
        assert canonical_json(record.fields) == record.body

    def test_records_can_still_be_built_with_fields(self) -> None:
        """``SealedRecord(fields=...)`` keeps its public constructor."""
        body = {"action": "audit.chain_stop"}
        record = SealedRecord(
            chain="c",
            seq=1,
            key_ref="k",
            prev=bytes(32),
            mac=bytes(32),
            body=b"{}",
            body_sha256=bytes(32),
            fields=body,
        )
        assert body is record.fields
        assert "audit.chain_stop" == record.action

    @pytest.mark.parametrize(
        "us",
        [0, 1, 999, 1000, 999_999, 1_000_000, 1_796_000_000_123_456, -1, -1001],
    )
    def test_stamps_match_their_formatters(self, us: int) -> None:
        """The per-millisecond stamp cache renders the same timestamp as ``ts_from_us``."""
        event_id, ts = stamps_from_us(us)
        assert ts_from_us(us) == ts
        ms = (us // 1000) & ((1 << 48) - 1)
        assert f"{ms:012x}" == event_id.replace("-", "")[:12]
        assert "7" == event_id[14]


class TestPrecomputedHmac:
    """The precomputed-pad HMAC is HMAC-SHA256, for pseudonyms and any key length."""

    @hypothesis.given(
        key=st.binary(min_size=0, max_size=200),
        subject=st.text(max_size=40),
        tenant=st.text(max_size=10),
    )
    def test_same_as_hmac(self, key: bytes, subject: str, tenant: str) -> None:
        """subject_ref with a PseudonymKey equals it with the raw key; states equal hmac."""
        import hashlib
        import hmac

        from custdata.audit._keys import PseudonymKey, subject_ref
        from custdata.crypto._hmac import hmac_states

        assert subject_ref(PseudonymKey(key), subject, tenant=tenant) == subject_ref(
            key, subject, tenant=tenant
        )
        inner, outer = hmac_states(key)
        inner = inner.copy()
        inner.update(subject.encode("utf-8", "surrogatepass"))
        outer = outer.copy()
        outer.update(inner.digest())
        assert outer.digest() == hmac.digest(
            key, subject.encode("utf-8", "surrogatepass"), hashlib.sha256
        )
