"""The compact audit line format (v2): the same sealed events in about a quarter of the bytes.

Run: ``python examples/audit_compact.py``. Writes 1,000 reveals in each format,
prints the bytes per reveal, verifies both, and shows that editing a template
(written once, used by every reveal) is found on every record that uses it.
"""

from __future__ import annotations

import tempfile

from pathlib import Path

import custdata

from custdata.audit import AuditTrail, JsonLinesSink, JsonLinesSource, verify_trail
from custdata.crypto import Keyring


def reveal(subject: str) -> custdata.AccessDecision:
    return custdata.AccessDecision(
        outcome=custdata.Outcome.ALLOWED,
        action=custdata.Action.READ,
        actor="u-102",
        role="support_agent",
        purpose="support",
        policy_version="2026.2",
        entity="customers",
        fields=("email", "name", "phone"),
        categories=("contact", "name"),
        subjects=(subject,),
        count=3,
    )


def main() -> None:
    keyring = Keyring.generate()
    with tempfile.TemporaryDirectory() as tmp:
        for version in (1, 2):
            path = Path(tmp) / f"audit-v{version}.jsonl"
            with AuditTrail(
                keyring,
                sinks=[JsonLinesSink(path, version=version)],
                checkpoint_interval=None,
            ) as trail:
                for n in range(1000):
                    trail.record_decision(reveal(f"customer-{n}"))
            report = verify_trail(JsonLinesSource(path), keyring)
            print(
                f"format {version}: {path.stat().st_size / 1002:.0f} bytes per event, "
                f"{report.events} events, intact: {report.intact}"
            )
            assert report.intact

        # A template is written once; editing it changes every body built from it.
        path = Path(tmp) / "audit-v2.jsonl"
        data = path.read_bytes()
        path.write_bytes(
            data.replace(
                b'\\"purpose\\":\\"support\\"', b'\\"purpose\\":\\"sales\\"', 1
            )
        )
        report = verify_trail(JsonLinesSource(path), keyring)
        for finding in report.findings:
            print("after editing the template:", finding)
        assert not report.intact


if __name__ == "__main__":
    main()
