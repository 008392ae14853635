"""``custdata keys``: init, rotate, retire and show."""

from __future__ import annotations

import argparse
import base64
import json

from pathlib import Path

import pytest

from custdata.cli import _keys
from custdata.crypto import Keyring, KeyStatus, LocalKeyProvider


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="custdata")
    _keys.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    status: int = args.handler(args)
    return status


class TestKeysCommand:
    def test_init_creates_0600_keyring(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """keys init writes a loadable keyring file of mode 0600."""
        path = tmp_path / "keyring.json"
        assert 0 == run("keys", "init", str(path))
        keyring = Keyring.load(path)
        assert 0o600 == path.stat().st_mode & 0o777
        assert str(keyring.primary_key_id) in capsys.readouterr().out

    def test_init_refuses_to_overwrite(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """keys init never replaces an existing keyring."""
        path = tmp_path / "keyring.json"
        run("keys", "init", str(path))
        before = path.read_text()
        assert 2 == run("keys", "init", str(path))
        assert (before, True) == (path.read_text(), "exists" in capsys.readouterr().err)

    def test_rotate_and_retire(self, tmp_path: Path) -> None:
        """keys rotate adds a primary; keys retire destroys the old one.

        Without a database to count what still depends on the key, retire
        refuses (exit 2, the keyring unchanged) unless forced, and a forced
        retirement needs an audit trail to be recorded in.
        """
        path = tmp_path / "keyring.json"
        run("keys", "init", str(path))
        old = Keyring.load(path).primary_key_id
        assert 0 == run("keys", "rotate", str(path))
        before = path.read_text()
        assert 2 == run("keys", "retire", str(path), str(old))
        assert 2 == run("keys", "retire", "--force", str(path), str(old))
        assert before == path.read_text()
        audit = tmp_path / "audit.jsonl"
        assert 0 == run(
            "keys", "retire", "--force", "--audit", str(audit), str(path), str(old)
        )
        keyring = Keyring.load(path)
        assert (KeyStatus.RETIRED, 2) == (
            keyring.key_info(old).status,
            len(keyring.key_ids),
        )
        assert 2 == run("keys", "retire", str(path), str(keyring.primary_key_id))

    def test_rotate_index(self, tmp_path: Path) -> None:
        """keys rotate --index rotates the blind-index key only."""
        path = tmp_path / "keyring.json"
        run("keys", "init", str(path))
        data = Keyring.load(path).primary_key_id
        assert 0 == run("keys", "rotate", "--index", str(path))
        keyring = Keyring.load(path)
        assert (data, 2) == (keyring.primary_key_id, len(keyring.index_key_ids))

    def test_show_lists_ids_never_keys(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """keys show lists ids and status and no key material."""
        path = tmp_path / "keyring.json"
        run("keys", "init", str(path))
        capsys.readouterr()
        assert 0 == run("keys", "show", "--json", str(path))
        shown = json.loads(capsys.readouterr().out)
        assert 0 == run("keys", "show", str(path))
        text = capsys.readouterr().out
        secrets = [k["key"] for k in json.loads(path.read_text())["keys"]]
        assert [k["status"] for k in shown["keys"]] == ["primary", "primary"]
        assert not any(s in text or s in json.dumps(shown) for s in secrets)

    def test_kek_file(self, tmp_path: Path) -> None:
        """--kek-file wraps the keyring under a local KEK file, created on init."""
        path, kek = tmp_path / "keyring.json", tmp_path / "kek"
        assert 0 == run("keys", "init", "--kek-file", str(kek), str(path))
        assert 0 == run("keys", "rotate", "--kek-file", str(kek), str(path))
        assert '"key"' not in path.read_text()
        assert 2 == len(
            Keyring.load(path, provider=LocalKeyProvider.from_file(kek)).key_ids
        )
        assert 2 == run("keys", "show", str(path))

    def test_kek_env(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """--kek-env reads the KEK from the environment."""
        monkeypatch.setenv("TEST_KEK", base64.b64encode(bytes(32)).decode())
        path = tmp_path / "keyring.json"
        assert 0 == run("keys", "init", "--kek-env", "TEST_KEK", str(path))
        assert 0 == run("keys", "show", "--kek-env", "TEST_KEK", str(path))
        assert 2 == run("keys", "show", "--kek-env", "ABSENT_KEK", str(path))

    def test_loose_mode_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A group-readable keyring is refused with the reason."""
        path = tmp_path / "keyring.json"
        run("keys", "init", str(path))
        path.chmod(0o640)
        assert 2 == run("keys", "rotate", str(path))
        assert "chmod 600" in capsys.readouterr().err
