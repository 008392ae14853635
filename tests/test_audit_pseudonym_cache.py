"""The trail's pseudonym cache under decisions larger than it (issue 9, growth budget).

Counts of pseudonyms computed, never timings: a select-all naming more
subjects than the cache holds must not recompute every pseudonym on every
pass, nor flush the pseudonyms of recent small reads.
"""

from __future__ import annotations

import json
import sys

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from custdata.audit import AuditTrail, MemorySink, _trail


sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_fixtures import FakeKeys, decision


#: A cache of this many pseudonyms in these tests.
SIZE = 100


@pytest.fixture
def computed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The subjects whose pseudonym the trail computed (not found in its cache)."""
    seen: list[str] = []
    original = _trail.subject_ref

    def counting(key: Any, subject: str, *, tenant: str = "") -> str:
        seen.append(subject)
        return original(key, subject, tenant=tenant)

    monkeypatch.setattr(_trail, "subject_ref", counting)
    monkeypatch.setattr(_trail, "_REF_CACHE", SIZE)
    return seen


@pytest.fixture
def trail() -> Iterator[tuple[AuditTrail, MemorySink]]:
    sink = MemorySink()
    t = AuditTrail(FakeKeys(), sinks=[sink], checkpoint_interval=None)
    yield t, sink
    t.close()


def _subjects(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}-{i:05d}" for i in range(n))


def _refs(sink: MemorySink) -> list[str]:
    out: list[str] = []
    for record in sink.records:
        body = json.loads(record.body)
        if body.get("action") != "field.reveal":
            continue
        out += body.get("subjects") or [body["subject_ref"]]
    return out


def test_a_scan_larger_than_the_cache_keeps_what_fits(
    trail: tuple[AuditTrail, MemorySink], computed: list[str]
) -> None:
    t, _ = trail
    scan = _subjects("row", SIZE + SIZE // 2)
    t.record_decision(decision("agent", subjects=scan))
    assert len(computed) == len(scan)
    computed.clear()
    t.record_decision(decision("agent", subjects=scan))
    # The first SIZE stayed; only the rest is computed again.
    assert computed == list(scan[SIZE:])
    computed.clear()
    t.record_decision(decision("agent", subjects=scan))
    assert computed == list(scan[SIZE:])


def test_a_large_scan_does_not_flush_recent_reads(
    trail: tuple[AuditTrail, MemorySink], computed: list[str]
) -> None:
    t, _ = trail
    gets = _subjects("get", 10)
    for subject in gets:
        t.record_decision(decision("agent", subjects=(subject,)))
    t.record_decision(decision("agent", subjects=_subjects("row", 2 * SIZE)))
    computed.clear()
    for subject in gets:
        t.record_decision(decision("agent", subjects=(subject,)))
    assert computed == []


def test_small_decisions_still_evict_first_in_first_out(
    trail: tuple[AuditTrail, MemorySink], computed: list[str]
) -> None:
    """A pseudonym let into the full cache takes the oldest one's place."""
    t, _ = trail
    t._admit.every = 1  # every new pseudonym let in, to see the order
    first = _subjects("a", SIZE)
    t.record_decision(decision("agent", subjects=first))
    newer = _subjects("b", SIZE // 2)
    t.record_decision(decision("agent", subjects=newer))
    computed.clear()
    t.record_decision(decision("agent", subjects=newer))
    t.record_decision(decision("agent", subjects=first[SIZE // 2 :]))
    assert computed == []
    t.record_decision(decision("agent", subjects=first[: SIZE // 2]))
    assert computed == list(first[: SIZE // 2])


def test_the_same_pseudonyms_whichever_path(
    trail: tuple[AuditTrail, MemorySink], computed: list[str]
) -> None:
    """Cached or computed, a subject's pseudonym in the trail is the same."""
    t, sink = trail
    scan = _subjects("row", 2 * SIZE)
    t.record_decision(decision("agent", subjects=scan))
    t.record_decision(decision("agent", subjects=scan))
    once = _refs(sink)
    assert len(once) == 2 * len(scan)
    assert once[: len(scan)] == once[len(scan) :]
    assert once[: len(scan)] == [t.subject_ref(s) for s in scan]
    assert len(set(once)) == len(scan)


@pytest.mark.parametrize("per_decision", [1, 10])
def test_passes_over_more_subjects_than_the_cache_keep_its_hits(
    trail: tuple[AuditTrail, MemorySink], computed: list[str], per_decision: int
) -> None:
    """No step at the cache's size: a later pass computes only what cannot fit.

    With every new pseudonym let into the full cache (first in, first out
    alone), each pass over 1.5x the cache's subjects would compute all of
    them again; letting in one in ``ADMIT_WHEN_FULL`` keeps the cache's
    contents from pass to pass.
    """
    t, _ = trail
    scan = _subjects("row", SIZE + SIZE // 2)
    chunks = [scan[i : i + per_decision] for i in range(0, len(scan), per_decision)]
    misses = []
    for _ in range(4):
        computed.clear()
        for chunk in chunks:
            t.record_decision(decision("agent", subjects=chunk))
        misses.append(len(computed))
    assert misses[0] == len(scan)
    # The half that cannot fit, and a few the admissions displaced.
    assert all(SIZE // 2 <= m <= SIZE // 2 + 10 for m in misses[1:]), misses
