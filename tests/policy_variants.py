"""The example policy with one change, for the tests of documents, registers and report."""

from __future__ import annotations

from pathlib import Path


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "custdata.toml"


def policy_variant(tmp_path: Path, old: str, new: str) -> Path:
    """Write the example policy with the first *old* replaced by *new*; return its path."""
    text = EXAMPLE.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "custdata.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path
