"""``--json`` wherever a command reports (issue 17).

A test walks the parser: every command but the narrated ``demo`` takes
``--json``. The commands that gained it are run here and their one JSON
document checked against what they did; the others are tested with their
command (``test_cli_jobs``, ``test_sweep_cli``, ``test_incident_cli``,
``test_audit_investigation``, ``test_cli_check`` ...).
"""

from __future__ import annotations

import argparse
import json

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import custdata

from custdata.audit import AuditTrail, JsonLinesSink
from custdata.cli import build_parser, main
from custdata.crypto import Keyring


ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "custdata.toml"

#: Commands that report nothing a program would read: ``demo`` narrates a
#: walkthrough in a temporary folder for a person to follow.
NOT_REPORTING = {("demo",)}


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _commands(sub, (*path, name))


def test_every_reporting_command_takes_json() -> None:
    """Every command (but the listed narrators) accepts ``--json`` as a flag."""
    commands = dict(_commands(build_parser()))
    assert len(commands) >= 25
    assert NOT_REPORTING <= set(commands)
    missing = []
    for path, parser in commands.items():
        flags = {o: a for a in parser._actions for o in a.option_strings}
        if path in NOT_REPORTING:
            continue
        action = flags.get("--json")
        if action is None or action.nargs != 0 or action.default is not False:
            missing.append(" ".join(path))
    assert [] == missing


def _json(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    out = capsys.readouterr().out
    document = json.loads(out)
    assert isinstance(document, dict)
    return document


def test_keys_init_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``keys init --json``: the file and the two primary key ids, never key bytes."""
    path = tmp_path / "keyring.json"
    assert 0 == main(["keys", "init", str(path), "--json"])
    out = capsys.readouterr().out
    keyring = Keyring.load(path)
    assert {
        "keyring": str(path),
        "data_key": keyring.primary_key_id,
        "index_key": keyring.primary_index_key_id,
        "kek": None,
    } == json.loads(out)
    stored = json.loads(path.read_text(encoding="utf-8"))
    secrets = [k["key"] for k in stored["keys"]]
    assert 2 == len(secrets)
    assert all(secret not in out for secret in secrets)


def test_docs_render_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``docs render --json`` lists exactly the files it wrote."""
    out = tmp_path / "docs"
    argv = ["docs", "render", "--policy", str(EXAMPLE), "--out", str(out), "--json"]
    assert 0 == main([*argv, "--lang", "en"])
    document = _json(capsys)
    assert str(out) == document["out"]
    assert sorted(str(p) for p in out.iterdir()) == sorted(document["files"])
    assert all(".en." in name or name.endswith(".yml") for name in document["files"])


def test_review_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``review --json``: the date, the two files written and the findings (exit 1 with any)."""
    out = tmp_path / "reviews"
    argv = ["review", "--policy", str(EXAMPLE), "--out", str(out), "--json"]
    status = main([*argv, "--today", "2031-01-01"])
    document = _json(capsys)
    assert "2031-01-01" == document["date"]
    assert str(out / "review-2031-01-01.md") == document["report"]
    assert str(out / "review-2031-01-01.json") == document["snapshot"]
    assert Path(str(document["report"])).is_file()
    assert Path(str(document["snapshot"])).is_file()
    findings = document["findings"]
    assert isinstance(findings, list)
    assert findings, "a review years late has findings"
    assert all({"code", "key_path", "message"} <= set(f) for f in findings)
    assert 1 == status


def test_report_json(
    tmp_path: Path,
    sample_policy: custdata.Policy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``report --json``: the index, every page and the trail's verification status."""
    ring = Keyring.generate()
    ring.save(tmp_path / "keyring.json")
    trail = tmp_path / "audit.jsonl"
    with AuditTrail(ring, sinks=[JsonLinesSink(trail)], checkpoint_interval=None) as t:
        custodian = custdata.Custodian(policy=sample_policy, audit=t)
        with custodian.activate(), custdata.acting_as("u-1", role="support_agent"):
            with custdata.purpose("support"):
                pass
    out = tmp_path / "report"
    argv = ["report", "--policy", str(EXAMPLE), "--html", str(out), "--json"]
    extra = ["--trail", str(trail), "--keyring", str(tmp_path / "keyring.json")]
    assert 0 == main([*argv, "--today", "2027-01-01", *extra])
    document = _json(capsys)
    assert "2027-01-01" == document["date"]
    assert str(out / "index.html") == document["index"]
    assert sorted(str(p) for p in out.iterdir()) == document["pages"]
    status = document["trail"]
    assert isinstance(status, dict)
    assert status["intact"] is True
    assert status["events"] >= 1
    assert "MISSING" not in status["findings"]

    assert 0 == main([*argv, "--today", "2027-01-01"])
    assert _json(capsys)["trail"] is None
