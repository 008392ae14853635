"""Every example script runs to completion on the embedded default."""

from __future__ import annotations

import subprocess
import sys

from pathlib import Path

import pytest


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(
    p
    for p in EXAMPLES.rglob("*.py")
    if "__main__" in p.read_text(encoding="utf-8") and not p.name.startswith("_")
)


@pytest.mark.parametrize(
    "script", SCRIPTS, ids=[str(p.relative_to(EXAMPLES)) for p in SCRIPTS]
)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    """The example exits 0 (it runs in a temporary working folder)."""
    _run(script, tmp_path)


def _run(script: Path, folder: Path) -> str:
    """Run an example in *folder*; return its output once it has exited 0."""
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert 0 == result.returncode, result.stdout + result.stderr
    return result.stdout


def test_examples_exist() -> None:
    """The examples folder has runnable scripts (guards against a broken glob)."""
    assert SCRIPTS


def test_shop_rotates_both_keys_in_one_run(tmp_path: Path) -> None:
    """The shop rotates data and index keys, re-encrypts once, retires both, still finds."""
    out = _run(EXAMPLES / "shop" / "app.py", tmp_path)
    assert "re-indexed 1; nothing left under older keys: True" in out
    assert "after retiring both old keys, found Yamada Hanako" in out


def test_shop_consent_and_sweep(tmp_path: Path) -> None:
    """The shop shows a consent withdrawal refused and a sweep after a released hold."""
    out = _run(EXAMPLES / "shop" / "app.py", tmp_path)
    assert "after the withdrawal: refused" in out
    assert "dry run: shop_customers * delete_row 1" in out
    assert "under a legal hold: held" in out
    assert "released: deleted 1 customer rows" in out
    assert "a second run deletes 0" in out


def test_shop_answers_a_data_subject_request(tmp_path: Path) -> None:
    """The shop finds Taro by e-mail, discloses his data, erases what the statute allows."""
    out = _run(EXAMPLES / "shop" / "app.py", tmp_path)
    assert "found 2 rows: ['shop_customers', 'shop_orders']" in out
    assert "allowed export shop_orders ['total', 'note'] purpose=disclosure" in out
    assert "disclosed 3 values as JSON" in out
    assert "kept: shop_orders.total (statutory_minimum, accounting)" in out
    assert "taro@example.jp" not in out


def test_shop_restriction(tmp_path: Path) -> None:
    """The shop shows a restricted subject refused for support, read for billing."""
    out = _run(EXAMPLES / "shop" / "app.py", tmp_path)
    assert "support while restricted: refused (the use of 1 data subject" in out
    assert "billing (allowed by the restriction): Yamada Hanako" in out
