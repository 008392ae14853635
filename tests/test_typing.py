"""Typing: mypy --strict accepts the public API as users write it, and rejects misuse."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
TYPING = ROOT / "tests" / "typing"


def _mypy(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--show-error-codes",
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module", autouse=True)
def _need_mypy() -> None:
    if (
        shutil.which("mypy") is None
        and subprocess.run(
            [sys.executable, "-c", "import mypy"], check=False, capture_output=True
        ).returncode
    ):
        pytest.skip("mypy is not installed (pip install --group typing)")


class TestDecoratorTyping:
    def test_signatures_preserved(self) -> None:
        """mypy --strict accepts calls that match the decorated signatures."""
        result = _mypy(TYPING / "test_requires_purpose.py")
        assert 0 == result.returncode, result.stdout

    def test_wrong_calls_rejected(self) -> None:
        """Each call marked '# E: code' is reported by mypy with that code, and only those."""
        path = TYPING.parent / "typing_errors" / "requires_purpose.py"
        expected = {
            (n, m.group(1))
            for n, line in enumerate(path.read_text().splitlines(), 1)
            if (m := re.search(r"# E: ([a-z-]+)", line))
        }
        result = _mypy(path)
        found = {
            (int(m.group(1)), m.group(2))
            for m in re.finditer(r":(\d+): error: .*\[([a-z-]+)\]", result.stdout)
        }
        assert expected == found, result.stdout


class TestModelTyping:
    @pytest.mark.parametrize(
        "path",
        [TYPING / "test_sa_models.py", ROOT / "examples" / "shop" / "models.py"],
        ids=["typing-samples", "shop-models"],
    )
    def test_models_type_check(self, path: Path) -> None:
        """Models written with Mapped[...] and customer_data() pass mypy --strict."""
        result = _mypy(path)
        assert 0 == result.returncode, result.stdout
