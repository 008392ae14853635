"""A tamper-evident audit trail in a temporary folder: record, checkpoint, verify, tamper.

Run: ``python examples/audit_trail.py``.
"""

from __future__ import annotations

import tempfile

from pathlib import Path

import custdata

from custdata.audit import (
    AuditTrail,
    Checkpointer,
    CheckpointSigner,
    CheckpointVerifier,
    FileAnchor,
    JsonLinesSink,
    JsonLinesSource,
    verify_trail,
)
from custdata.crypto import Keyring


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        keyring = Keyring.generate()
        signer = CheckpointSigner.generate("example.com/audit")
        trail_file = folder / "audit.jsonl"
        anchor = FileAnchor(folder / "anchor.jsonl")  # keep it outside the database
        checkpointer = Checkpointer(JsonLinesSource(trail_file), signer, anchor)

        with AuditTrail(
            keyring,
            # Format 1: one self-contained line per record, so that the
            # tampering below is one line (a new file gets format 2 by default).
            sinks=[JsonLinesSink(trail_file, version=1)],
            checkpointer=checkpointer,
            checkpoint_interval=None,
        ) as trail:
            trail.record_decision(
                custdata.AccessDecision(
                    outcome=custdata.Outcome.ALLOWED,
                    action=custdata.Action.READ,
                    actor="u-102",
                    role="support_agent",
                    purpose="support",
                    policy_version="2026.2",
                    entity="customers",
                    fields=("email",),
                    categories=("contact",),
                    subjects=("7d1f9e0c",),
                    count=1,
                )
            )
            trail.checkpoint()

        verifier = CheckpointVerifier(signer.verifier_key)
        report = verify_trail(
            JsonLinesSource(trail_file), keyring, checkpoints=anchor, verifier=verifier
        )
        print("before tampering:", "intact" if report.intact else report.kinds())

        lines = trail_file.read_text().splitlines(keepends=True)
        trail_file.write_text("".join(lines[:1] + lines[2:]))  # delete the reveal
        report = verify_trail(
            JsonLinesSource(trail_file), keyring, checkpoints=anchor, verifier=verifier
        )
        for finding in report.findings:
            print("after tampering:", finding)
        assert not report.intact


if __name__ == "__main__":
    main()
