"""A trail written in the compact format (v2) keeps verifying, like the v1 vectors.

``tests/vectors/audit_trail_v2.jsonl`` and its anchor were written once by
``JsonLinesSink(version=2)`` (issue 11) with the fixed audit root of the v1
vectors (``bytes(range(32))``) and checkpoint key ``bytes(range(32, 64))``
under the origin ``test.example/audit-v2``, and are kept unchanged: a later
reader must still verify them, name tampering in them and answer queries.
"""

from __future__ import annotations

import sys

from pathlib import Path

import pytest


sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_fixtures import FakeKeys
from custdata.audit import (
    CheckpointSigner,
    CheckpointVerifier,
    FileAnchor,
    JsonLinesSource,
    find_events,
    pseudonym_for,
    verify_trail,
)


VECTORS = Path(__file__).parent / "vectors"
KEYS = FakeKeys("audit-1", seed=bytes(range(32)))
VERIFIER_KEY = (
    "test.example/audit-v2+526e73b3+ASmsuuFBvMrwsi4alNNNC8c2HlJtC/4SyJeUvJMilm3X"
)


@pytest.fixture
def trail(tmp_path: Path) -> tuple[Path, Path]:
    path = tmp_path / "trail.jsonl"
    anchor = tmp_path / "anchor.jsonl"
    path.write_bytes((VECTORS / "audit_trail_v2.jsonl").read_bytes())
    anchor.write_bytes((VECTORS / "audit_trail_v2.anchor.jsonl").read_bytes())
    return path, anchor


def _report(path: Path, anchor: Path) -> object:
    return verify_trail(
        JsonLinesSource(path),
        KEYS,
        checkpoints=FileAnchor(anchor),
        verifier=CheckpointVerifier(VERIFIER_KEY),
        heartbeat=60,
    )


class TestV2Trail:
    def test_keys_are_the_fixture_keys(self) -> None:
        signer = CheckpointSigner.from_private_bytes(
            "test.example/audit-v2", bytes(range(32, 64))
        )
        assert VERIFIER_KEY == signer.verifier_key

    def test_v2_trail_verifies_intact(self, trail: tuple[Path, Path]) -> None:
        """Five records in one chain, two anchored checkpoints (one at close), nothing found."""
        report = _report(*trail)
        assert (True, 5, 1, 2, []) == (
            report.intact,  # type: ignore[attr-defined]
            report.events,  # type: ignore[attr-defined]
            report.chains,  # type: ignore[attr-defined]
            report.checkpoints,  # type: ignore[attr-defined]
            report.kinds(),  # type: ignore[attr-defined]
        )

    def test_edited_value_is_found(self, trail: tuple[Path, Path]) -> None:
        path, anchor = trail
        data = path.read_bytes()
        path.write_bytes(data.replace(b'"d":[6,', b'"d":[7,', 1))
        assert "MAC_INVALID" in _report(path, anchor).kinds()  # type: ignore[attr-defined]

    def test_dropped_tail_is_found(self, trail: tuple[Path, Path]) -> None:
        path, anchor = trail
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(b"".join(lines[:-2]))
        kinds = _report(path, anchor).kinds()  # type: ignore[attr-defined]
        assert "TRUNCATED" in kinds

    def test_queries_answer(self, trail: tuple[Path, Path]) -> None:
        path, _ = trail
        ref = pseudonym_for(KEYS, "c-2")
        rows = find_events(JsonLinesSource(path), subject_ref=ref)
        assert [("u-2", 3), ("u-1", 4)] == [(r["actor_id"], r["seq"]) for r in rows]
