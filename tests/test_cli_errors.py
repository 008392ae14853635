"""How every ``custdata`` command fails: one rule, a JSON document with ``--json``.

A failed command prints one line on stderr (``custdata COMMAND: message``) and
exits 2 (1 where the failure is a finding). With ``--json`` the same error is
also one JSON document on stdout, so a script reading the command's JSON never
has to parse text. No traceback and no private exception type reaches the shell:
an error no command reported is named by its kind in :func:`custdata.cli.main`.
"""

from __future__ import annotations

import json

from pathlib import Path
from typing import Any

import pytest

from custdata.cli import _review, main


CANARY = "canary-4111-1111-1111-1111"

#: One failing invocation per command family, each failing before any database
#: or file is written: (argv, command as reported).
FAILING = [
    (["check", "--policy", "{tmp}/nope.toml"], "check"),
    (["keys", "show", "{tmp}/nope.json"], "keys show"),
    (["keys", "rotate", "{tmp}/nope.json"], "keys rotate"),
    (
        [
            "keys",
            "usage",
            "--url",
            "sqlite:///{tmp}/e.db",
            "--models",
            "nosuch_mod:Base",
        ],
        "keys usage",
    ),
    (
        [
            "reencrypt",
            "--keyring",
            "{tmp}/nope.json",
            "--url",
            "sqlite:///{tmp}/e.db",
            "--models",
            "nosuch_mod:Base",
        ],
        "reencrypt",
    ),
    (
        ["audit", "verify", "--keyring", "{tmp}/nope.json", "{tmp}/t.jsonl"],
        "audit verify",
    ),
    (
        [
            "sweep",
            "--url",
            "sqlite:///{tmp}/e.db",
            "--models",
            "nosuch_mod:Base",
            "--policy",
            "{tmp}/nope.toml",
        ],
        "sweep",
    ),
    (
        ["provision", "records", "--subject", "s1", "--url", "not a url"],
        "provision records",
    ),
    (["contractors", "check", "--policy", "{tmp}/nope.toml"], "contractors check"),
    (
        ["incident", "timeline", "--url", "sqlite:///{tmp}/e.db", "X1"],
        "incident timeline",
    ),
    (["request", "show", "--url", "sqlite:///{tmp}/e.db", "R1"], "request show"),
    (
        ["docs", "render", "--policy", "{tmp}/nope.toml", "--out", "{tmp}/d"],
        "docs render",
    ),
    (["review", "--policy", "{tmp}/nope.toml", "--out", "{tmp}/d"], "review"),
    (["report", "--policy", "{tmp}/nope.toml", "--html", "{tmp}/d"], "report"),
]


def _argv(template: list[str], tmp: Path) -> list[str]:
    return [word.replace("{tmp}", str(tmp)) for word in template]


def _document(out: str) -> dict[str, Any]:
    document = json.loads(out)
    assert isinstance(document, dict)
    return document


@pytest.mark.parametrize(("template", "command"), FAILING, ids=[c for _, c in FAILING])
def test_failure_is_a_json_document_with_json(
    template: list[str],
    command: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With ``--json``: exit 2, one JSON document on stdout, the same error on stderr."""
    assert 2 == main([*_argv(template, tmp_path), "--json"])
    captured = capsys.readouterr()
    document = _document(captured.out)
    assert {"command", "error", "status"} == set(document)
    assert command == document["command"]
    assert 2 == document["status"]
    assert document["error"]
    assert [f"custdata {command}: {document['error']}"] == captured.err.splitlines()
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(("template", "command"), FAILING, ids=[c for _, c in FAILING])
def test_failure_is_one_line_on_stderr_without_json(
    template: list[str],
    command: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without ``--json``: exit 2, nothing on stdout, one line on stderr."""
    assert 2 == main(_argv(template, tmp_path))
    captured = capsys.readouterr()
    assert "" == captured.out
    [line] = captured.err.splitlines()
    assert line.startswith(f"custdata {command}: ")


def test_usage_error_is_a_json_document_with_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A usage error argparse finds still exits 2, and is a JSON document with --json."""
    argv = ["erase", "--url", f"sqlite:///{tmp_path}/e.db", "S1", "--json"]
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert 2 == caught.value.code
    captured = capsys.readouterr()
    document = _document(captured.out)
    assert "erase" == document["command"]
    assert "required" in document["error"]
    assert captured.err.startswith("usage: custdata erase")
    assert "custdata erase: error: the following arguments are required" in captured.err


def test_unknown_command_is_reported_by_the_program(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An unknown command is the program's own usage error: ``custdata: error: ...``."""
    with pytest.raises(SystemExit) as caught:
        main(["no-such-command"])
    assert 2 == caught.value.code
    err = capsys.readouterr().err
    assert "custdata: error: argument COMMAND: invalid choice" in err


def _raising(exc: BaseException) -> Any:
    def handler(args: Any) -> int:
        raise exc

    return handler


def _review_argv(tmp_path: Path) -> list[str]:
    return ["review", "--policy", str(tmp_path / "p.toml"), "--out", str(tmp_path)]


def test_unexpected_error_is_named_by_kind_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug in a command is an internal error by its kind: no message, no traceback."""
    monkeypatch.delenv("CUSTDATA_DEBUG", raising=False)
    monkeypatch.setattr(_review, "run", _raising(RuntimeError(CANARY)))
    assert 2 == main([*_review_argv(tmp_path), "--json"])
    captured = capsys.readouterr()
    document = _document(captured.out)
    assert "review" == document["command"]
    assert document["error"].startswith("internal error (RuntimeError)")
    assert "CUSTDATA_DEBUG=1" in captured.err
    assert CANARY not in captured.out + captured.err
    assert "Traceback" not in captured.err


def test_debug_environment_re_raises_for_a_bug_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``CUSTDATA_DEBUG=1`` lets the unexpected error through, traceback and all."""
    monkeypatch.setenv("CUSTDATA_DEBUG", "1")
    monkeypatch.setattr(_review, "run", _raising(RuntimeError(CANARY)))
    with pytest.raises(RuntimeError, match=CANARY):
        main(_review_argv(tmp_path))


def test_os_error_names_the_file_and_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An OS error no command reported: its reason and file, exit 2."""
    full = OSError(28, "No space left on device", str(tmp_path / "out.json"))
    monkeypatch.setattr(_review, "run", _raising(full))
    assert 2 == main(_review_argv(tmp_path))
    [line] = capsys.readouterr().err.splitlines()
    assert f"custdata review: No space left on device: {tmp_path / 'out.json'}" == line


def test_database_error_is_named_by_kind_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A driver's message may quote stored values: only the error's kind is shown."""
    from sqlalchemy.exc import OperationalError

    error = OperationalError(f"SELECT '{CANARY}'", {}, Exception(CANARY))
    monkeypatch.setattr(_review, "run", _raising(error))
    assert 2 == main([*_review_argv(tmp_path), "--json"])
    captured = capsys.readouterr()
    assert "database error (OperationalError)" == _document(captured.out)["error"]
    assert CANARY not in captured.out + captured.err
