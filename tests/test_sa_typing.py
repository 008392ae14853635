"""The example model file and the typing samples pass mypy --strict."""

from __future__ import annotations

import subprocess
import sys

from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent


class TestTyping:
    """Models written with Mapped[...] and customer_data type-check strictly."""

    @pytest.mark.parametrize(
        "path",
        [
            "examples/models.py",
            "tests/typing/test_sa_models.py",
            "examples/shop/models.py",
        ],
    )
    def test_mypy_strict(self, path: str) -> None:
        """mypy --strict reports no errors."""
        pytest.importorskip("mypy")
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "mypy",
                "--strict",
                "--no-incremental",
                "--show-error-codes",
                str(ROOT / path),
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
        )
        assert 0 == result.returncode, result.stdout + result.stderr
