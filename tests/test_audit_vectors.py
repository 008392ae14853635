"""A trail written by the v1 writer (before issue 11) keeps verifying.

``tests/vectors/audit_trail_v1.jsonl`` and its checkpoint anchor were written
once by the JSON-lines sink of commit 7640ffe with a fixed audit root
(``bytes(range(32))``) and checkpoint key (``bytes(range(32, 64))``), and are
kept unchanged forever: whatever the event format becomes, the reader must
still verify them, name tampering in them and answer queries over them.
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
    "test.example/audit-v1+d1c620cb+ASmsuuFBvMrwsi4alNNNC8c2HlJtC/4SyJeUvJMilm3X"
)


@pytest.fixture
def trail(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the v1 trail and anchor the test may tamper with."""
    path = tmp_path / "trail.jsonl"
    anchor = tmp_path / "anchor.jsonl"
    path.write_bytes((VECTORS / "audit_trail_v1.jsonl").read_bytes())
    anchor.write_bytes((VECTORS / "audit_trail_v1.anchor.jsonl").read_bytes())
    return path, anchor


def _verify(path: Path, anchor: Path) -> list[str]:
    report = verify_trail(
        JsonLinesSource(path),
        KEYS,
        checkpoints=FileAnchor(anchor),
        verifier=CheckpointVerifier(VERIFIER_KEY),
        heartbeat=60,
    )
    return report.kinds()


class TestV1Trail:
    def test_keys_are_the_fixture_keys(self) -> None:
        """The pinned verifier key is the one of the fixed checkpoint signing key."""
        signer = CheckpointSigner.from_private_bytes(
            "test.example/audit-v1", bytes(range(32, 64))
        )
        assert VERIFIER_KEY == signer.verifier_key

    def test_v1_trail_verifies_intact(self, trail: tuple[Path, Path]) -> None:
        """Six records in one chain, two anchored checkpoints, nothing found."""
        path, anchor = trail
        report = verify_trail(
            JsonLinesSource(path),
            KEYS,
            checkpoints=FileAnchor(anchor),
            verifier=CheckpointVerifier(VERIFIER_KEY),
        )
        assert (True, 6, 1, 2, []) == (
            report.intact,
            report.events,
            report.chains,
            report.checkpoints,
            report.kinds(),
        )

    def test_tampering_with_the_v1_trail_is_named(
        self, trail: tuple[Path, Path]
    ) -> None:
        """A flipped byte in a v1 body is MODIFIED; a removed line is MISSING."""
        path, anchor = trail
        data = path.read_bytes()
        at = data.index(b'"purpose":"support"') + 12
        path.write_bytes(data[:at] + b"S" + data[at + 1 :])
        assert ["MODIFIED"] == _verify(path, anchor)
        lines = data.splitlines(keepends=True)
        path.write_bytes(b"".join(lines[:2] + lines[3:]))
        assert ["MISSING"] == _verify(path, anchor)

    def test_v1_trail_answers_queries(self, trail: tuple[Path, Path]) -> None:
        """Who read c-2 in the v1 trail: an allowed reveal and a denied attempt."""
        path, _ = trail
        rows = find_events(
            JsonLinesSource(path), subject_ref=pseudonym_for(KEYS, "c-2")
        )
        assert [("u-2", "allowed"), ("u-3", "denied")] == [
            (r["actor_id"], r["outcome"]) for r in rows
        ]
