"""Bad input ends in one clear, typed error -- never a traceback.

From the API: :class:`custdata.ConfigurationError` naming the file and key.
From the command line: one line on stderr naming them, exit 2.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

from pathlib import Path
from typing import Any

import pytest


if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

import custdata

from custdata import ConfigurationError, Period, RetentionRule
from custdata.crypto import Keyring, LocalKeyProvider


ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "examples" / "custdata.toml"
CUSTDATA = Path(sys.executable).parent / "custdata"


def _policy_text(**changes: str) -> str:
    text = POLICY.read_text(encoding="utf-8")
    for old, new in changes.items():
        assert old in text
        text = text.replace(old, new, 1)
    return text


BAD_POLICIES = {
    "unknown-parent": (
        _policy_text()
        + '\n[purposes.orphan]\ntext_ja = "x"\ntext_en = "x"\nparent = "nowhere"\n',
        "purposes.orphan.parent",
        "unknown purpose 'nowhere'",
    ),
    "period-past-calendar": (
        _policy_text(**{'period = "P3Y"': 'period = "P8000Y"'}),
        "retention.support.period",
        "longer than 1000 years",
    ),
    "minimum-past-calendar": (
        _policy_text(**{'statutory_minimum = "P7Y"': 'statutory_minimum = "P99999Y"'}),
        "retention.accounting.statutory_minimum",
        "longer than 1000 years",
    ),
    "purposes-as-string": (
        _policy_text(**{'purposes = ["support"]': 'purposes = "support"'}),
        "roles.support_agent.purposes",
        "expected a list of strings",
    ),
}


class TestPolicyFile:
    """A bad policy file: one ConfigurationError naming the file and the key."""

    @pytest.mark.parametrize("case", list(BAD_POLICIES))
    def test_api(self, case: str, tmp_path: Path) -> None:
        """Policy.from_toml raises ConfigurationError with the file and key path."""
        text, key_path, reason = BAD_POLICIES[case]
        path = tmp_path / "custdata.toml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigurationError) as caught:
            custdata.Policy.from_toml(path)
        assert (str(path), key_path) == (caught.value.path, caught.value.key_path)
        assert reason in str(caught.value)

    @pytest.mark.parametrize("case", list(BAD_POLICIES))
    def test_cli(self, case: str, tmp_path: Path) -> None:
        """custdata check: one line naming the file and key, exit 2."""
        text, key_path, _reason = BAD_POLICIES[case]
        path = tmp_path / "custdata.toml"
        path.write_text(text, encoding="utf-8")
        result = subprocess.run(
            [str(CUSTDATA), "check", "--policy", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert 2 == result.returncode
        assert "Traceback" not in result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"custdata check: {path}: {key_path}: ")

    def test_unknown_parent_from_dict(self) -> None:
        """The Python route: ConfigurationError, not KeyError."""
        data: dict[str, Any] = tomllib.loads(POLICY.read_text(encoding="utf-8"))
        data["purposes"]["orphan"] = {
            "text_ja": "x",
            "text_en": "x",
            "parent": "nowhere",
        }
        with pytest.raises(ConfigurationError) as caught:
            custdata.Policy.from_dict(data)
        assert "purposes.orphan.parent" == caught.value.key_path

    def test_models_with_purposes_as_string(self, tmp_path: Path) -> None:
        """custdata check --models: a declaration with purposes="billing" is one line, exit 2."""
        (tmp_path / "bad_models.py").write_text(
            "import uuid\n"
            "from sqlalchemy.orm import DeclarativeBase, Mapped\n"
            "from custdata.sqlalchemy import customer_data, subject_key\n"
            "class Base(DeclarativeBase):\n    pass\n"
            "class C(Base):\n"
            "    __tablename__ = 'bad_c'\n"
            "    id: Mapped[uuid.UUID] = subject_key()\n"
            "    name: Mapped[str] = customer_data('name', purposes='billing')\n"
        )
        result = subprocess.run(
            [
                str(CUSTDATA),
                "check",
                "--policy",
                str(POLICY),
                "--models",
                "bad_models:Base",
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
        )
        assert 2 == result.returncode
        assert "Traceback" not in result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(
            f"custdata check: {tmp_path / 'bad_models.py'}: "
            "customer_data('name').purposes: purposes takes a list"
        )


class TestPeriods:
    """Retention periods are bounded when they are made, so every expiry is a date."""

    @pytest.mark.parametrize(
        "text", ["P1001Y", "P8000Y", "P12013M", "P366001D", "PT99999999999S"]
    )
    def test_too_long(self, text: str) -> None:
        """Past 1,000 years: ConfigurationError (a ValueError), at parse time."""
        with pytest.raises(ConfigurationError, match="longer than 1000 years"):
            Period.parse(text)

    def test_rule_built_in_python(self) -> None:
        """A RetentionRule built in Python is bounded the same way."""
        with pytest.raises(ConfigurationError):
            RetentionRule(id="r", period="P8000Y", anchor="acquired", action="delete")

    def test_negative_part(self) -> None:
        """A negative part is refused."""
        with pytest.raises(ConfigurationError, match="negative"):
            Period(years=-1)

    def test_longest_period_resolves(self) -> None:
        """P1000Y from a date late in the calendar ends at its last instant, not in an error."""
        start = dt.datetime(9500, 1, 1, tzinfo=dt.timezone.utc)
        assert dt.datetime.max.replace(tzinfo=dt.timezone.utc) == Period.parse(
            "P1000Y"
        ).after(start)
        rule = RetentionRule(
            id="r", period="P1000Y", anchor="acquired", action="delete"
        )
        status = custdata.resolve_retention(
            [rule],
            {"acquired": start},
            now=dt.datetime(9999, 1, 1, tzinfo=dt.timezone.utc),
        )
        assert not status.expired


class TestKeyFiles:
    """Key files that are not text: ConfigurationError naming the file."""

    def test_keyring_of_binary_garbage(self, tmp_path: Path) -> None:
        """Keyring.load on random bytes names the file."""
        path = tmp_path / "keyring.json"
        path.write_bytes(bytes(range(256)))
        path.chmod(0o600)
        with pytest.raises(ConfigurationError) as caught:
            Keyring.load(path)
        assert (str(path), "the keyring file is not UTF-8 text") == (
            caught.value.path,
            caught.value.reason,
        )

    def test_kek_file_of_binary_garbage(self, tmp_path: Path) -> None:
        """LocalKeyProvider.from_file on random bytes names the file."""
        path = tmp_path / "kek"
        path.write_bytes(bytes(range(255, -1, -1)))
        path.chmod(0o600)
        with pytest.raises(ConfigurationError) as caught:
            LocalKeyProvider.from_file(path)
        assert str(path) == caught.value.path
