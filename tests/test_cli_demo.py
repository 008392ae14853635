"""``custdata demo``: the end-to-end walkthrough on the embedded default."""

from __future__ import annotations

import contextlib
import io
import json
import re

from pathlib import Path

import pytest

from custdata.audit import JsonLinesSource
from custdata.cli import main
from custdata.cli._demo import _CUSTOMERS


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """Run the demo once, keeping its folder, and capture what it printed."""
    folder = tmp_path_factory.mktemp("demo")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["demo", "--keep", str(folder)])
    assert 0 == status
    return out.getvalue(), folder


class TestDemo:
    def test_walks_through_every_step(self, demo_run: tuple[str, Path]) -> None:
        """The walkthrough shows each promised step, in order."""
        text, _ = demo_run
        steps = [
            "1. The policy",
            "2. A local keyring",
            "3. Sign-up",
            "4. At rest",
            "5. Allowed",
            "6. Denied",
            "7. A role may claim",
            "8. Search",
            "9. Rotation",
            "10. Consent",
            "11. Retention",
            "12. The audit trail",
        ]
        positions = [text.index(step) for step in steps]
        assert sorted(positions) == positions

    def test_nothing_in_clear_at_rest(self, demo_run: tuple[str, Path]) -> None:
        """The database file holds none of the customers' values."""
        text, folder = demo_run
        raw = (folder / "demo.db").read_bytes()
        assert "plaintext values found in demo.db: 0" in text
        assert [] == [v for row in _CUSTOMERS for v in row if v.encode() in raw]

    def test_denials_and_verification_reported(
        self, demo_run: tuple[str, Path]
    ) -> None:
        """The denied read and the refused claim are shown, and the trail verifies intact."""
        text, _ = demo_run
        assert (
            "purpose 'support' is not permitted for field(s) demo_customers.card"
            in text
        )
        assert "role 'support_agent' may not claim purpose 'marketing.email'" in text
        assert (
            "withdrawn, refused and audited: purpose 'marketing.email' needs consent"
            in text
        )
        assert "dry run: demo_customers * delete_row 1" in text
        assert "a second run deletes 0" in text
        assert re.search(r"verified \d+ events: intact\n", text)

    def test_keyring_file_private(self, demo_run: tuple[str, Path]) -> None:
        """The keyring file is readable by its owner only."""
        _, folder = demo_run
        assert 0o600 == (folder / "keyring.json").stat().st_mode & 0o777

    def test_audit_trail_holds_no_values(self, demo_run: tuple[str, Path]) -> None:
        """The audit trail records reveals and denials, and never a customer value."""
        _, folder = demo_run
        trail = (folder / "audit.jsonl").read_text(encoding="utf-8")
        actions = [
            json.loads(body)["action"]
            for record in JsonLinesSource(folder / "audit.jsonl").records()
            if (body := getattr(record, "body", None)) is not None
        ]
        assert {
            "field.reveal",
            "purpose.check",
            "key.rotate",
            "consent.change",
            "retention.expire",
        } <= set(actions)
        assert [] == [
            v
            for row in _CUSTOMERS
            for v in row
            if v in trail or v.lower() in trail.lower()
        ]
