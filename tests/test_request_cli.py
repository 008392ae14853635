"""``custdata request …`` and the REQ findings of ``custdata check`` (issue 15, point 4).

Requests are kept in a SQLite database here (the three databases in
``test_requests_sql.py``); every command has ``--json``; errors are one line on
stderr with exit status 2. Times are passed with ``--at`` (a frozen clock).
"""

from __future__ import annotations

import json

from pathlib import Path

import pytest

from custdata.cli import main


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
POLICY = str(EXAMPLES / "custdata.toml")
CANARY = "canary-cli-subject@example.jp"


@pytest.fixture
def url(tmp_path: Path) -> str:
    """An empty SQLite database, with a keyring beside it (see :func:`keyring_of`)."""
    assert 0 == main(["keys", "init", str(tmp_path / "keyring.json")])
    return f"sqlite:///{tmp_path / 'app.db'}"


def keyring_of(url: str) -> str:
    """The keyring the ``url`` fixture made beside its database."""
    return str(Path(url.removeprefix("sqlite:///")).with_name("keyring.json"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # a usage error, reported by argparse
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def common(url: str, at: str) -> list[str]:
    return [
        "--url",
        url,
        "--policy",
        POLICY,
        "--actor",
        "desk-1",
        "--at",
        at,
        "--keyring",
        keyring_of(url),
    ]


class TestWorkflow:
    def test_every_step_in_json(
        self, url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """open → verify → extend → decide → fulfil, then show and list."""
        code, out, _ = run(
            capsys,
            "request",
            "open",
            "gdpr_access",
            "--subject",
            CANARY,
            "--id",
            "REQ-1",
            "--format",
            "electronic",
            *common(url, "2026-01-31T10:00+09:00"),
            "--json",
        )
        assert 0 == code
        opened = json.loads(out)
        assert ("received", "2026-02-28T23:59:59+09:00", "Art. 15") == (
            opened["state"],
            opened["due_at"],
            opened["article"],
        )
        steps = [
            ("verify", "REQ-1", "--method", "id_document"),
            ("extend", "REQ-1", "--reason", "many systems"),
            ("decide", "REQ-1", "--grant"),
            ("fulfil", "REQ-1", "--result", "rows=3"),
        ]
        states = []
        for n, step in enumerate(steps, start=1):
            code, out, err = run(
                capsys,
                "request",
                *step,
                *common(url, f"2026-02-0{n}T09:00+09:00"),
                "--json",
            )
            assert (0, "") == (code, err)
            states.append(json.loads(out)["state"])
        assert [
            "identity_verified",
            "identity_verified",
            "in_progress",
            "fulfilled",
        ] == states
        code, out, _ = run(capsys, "request", "show", "REQ-1", "--url", url, "--json")
        shown = json.loads(out)
        assert "2026-04-30T23:59:59+09:00" == shown["due_at"]
        assert ["opened", "verified", "extended", "decided", "fulfilled"] == [
            e["action"] for e in shown["history"]
        ]
        assert {"rows": "3"} == shown["history"][-1]["detail"]["result"]
        code, out, _ = run(capsys, "request", "list", "--url", url, "--open", "--json")
        assert [] == json.loads(out)

    def test_refusal_and_list_overdue(
        self, url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A refused disclosure is closed; an open one past its SLA lists as overdue."""
        for rid in ("REQ-A", "REQ-B"):
            assert 0 == main(
                [
                    "request",
                    "open",
                    "appi_disclosure",
                    "--subject",
                    CANARY,
                    "--id",
                    rid,
                    *common(url, "2026-02-01T10:00+09:00"),
                ]
            )
        assert 0 == main(
            [
                "request",
                "verify",
                "REQ-A",
                "--method",
                "login",
                *common(url, "2026-02-02T10:00+09:00"),
            ]
        )
        code, out, err = run(
            capsys,
            "request",
            "decide",
            "REQ-A",
            "--refuse",
            "--ground",
            "33_2_3",
            "--reason",
            "他の法令に違反",
            *common(url, "2026-02-03T10:00+09:00"),
        )
        assert (0, "") == (code, err)
        assert "REQ-A: refused" in out
        code, out, _ = run(
            capsys, "request", "list", "--url", url, "--at", "2026-02-16T00:00+09:00"
        )
        assert (
            "REQ-B  appi_disclosure  received  due 2026-02-15T23:59:59+09:00 OVERDUE"
            in out
        )
        assert "REQ-A  appi_disclosure  refused" in out
        assert CANARY not in out

    def test_kinds(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The kinds with their articles, from the packs."""
        code, out, _ = run(capsys, "request", "kinds", "--json")
        assert 0 == code
        kinds = {k["key"]: k["article"] for k in json.loads(out)}
        assert "法33条5項" == kinds["appi_provision_records"]
        assert "Art. 20" == kinds["gdpr_portability"]


class TestSealedSubject:
    """The subject is stored sealed; ``show`` prints it only on a recorded read."""

    @staticmethod
    def opened(url: str) -> None:
        assert 0 == main(
            [
                "request",
                "open",
                "gdpr_erasure",
                "--subject",
                CANARY,
                "--id",
                "REQ-1",
                *common(url, "2026-02-01T10:00+09:00"),
            ]
        )

    def test_never_in_the_database_file(
        self, url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The SQLite file's bytes hold no trace of the subject."""
        self.opened(url)
        raw = Path(url.removeprefix("sqlite:///")).read_bytes()
        assert CANARY.encode() not in raw
        assert CANARY.encode("utf-16-le") not in raw
        assert CANARY not in "".join(capsys.readouterr())

    def test_show_without_the_context_shows_no_subject(
        self, url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """show --json without --purpose: the request, its subject null."""
        self.opened(url)
        capsys.readouterr()
        code, out, err = run(
            capsys,
            "request",
            "show",
            "REQ-1",
            *common(url, "2026-02-02T10:00+09:00"),
            "--json",
        )
        assert (0, "") == (code, err)
        shown = json.loads(out)
        assert shown["subject"] is None
        assert "REQ-1" == shown["request_id"]
        assert CANARY not in out

    def test_show_for_a_disclosure_purpose_is_recorded(
        self, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """show --purpose disclosure prints the subject; the trail records the read."""
        self.opened(url)
        capsys.readouterr()
        audit = tmp_path / "audit.jsonl"
        code, out, err = run(
            capsys,
            "request",
            "show",
            "REQ-1",
            *common(url, "2026-02-02T10:00+09:00"),
            "--role",
            "privacy_desk",
            "--purpose",
            "disclosure",
            "--audit",
            str(audit),
            "--json",
        )
        assert (0, "") == (code, err)
        assert CANARY == json.loads(out)["subject"]
        trail = audit.read_text(encoding="utf-8")
        assert "field.reveal" in trail
        assert CANARY not in trail
        code, out, err = run(
            capsys,
            "request",
            "show",
            "REQ-1",
            *common(url, "2026-02-02T10:00+09:00"),
            "--role",
            "billing_clerk",
            "--purpose",
            "billing",
            "--audit",
            str(audit),
        )
        assert (2, "") == (code, out)
        assert 1 == len(err.strip().splitlines())
        assert CANARY not in err
        assert "denied" in audit.read_text(encoding="utf-8")

    def test_open_needs_the_keyring(
        self, url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """open without --keyring: one line, exit 2, nothing stored."""
        argv = ["request", "open", "gdpr_access", "--subject", CANARY, "--id", "R"]
        code, out, err = run(capsys, *argv, "--url", url, "--policy", POLICY)
        assert (2, "") == (code, out)
        assert "--keyring" in err
        assert CANARY not in err
        code, out, _ = run(capsys, "request", "list", "--url", url, "--json")
        assert [] == json.loads(out)


class TestErrors:
    @pytest.mark.parametrize(
        ("argv", "match"),
        [
            (
                ["request", "open", "appi_nothing", "--subject", CANARY],
                "unknown request kind",
            ),
            (
                [
                    "request",
                    "open",
                    "appi_disclosure",
                    "--subject",
                    CANARY,
                    "--format",
                    "fax",
                ],
                "formats",
            ),
            (["request", "verify", "REQ-9", "--method", "login"], "no request 'REQ-9'"),
            (
                ["request", "fulfil", "REQ-1"],
                "cannot fulfil a request that is received",
            ),
            (["request", "verify", "REQ-1", "--method", "pigeon"], "not one of"),
            (["request", "extend", "REQ-1", "--reason", "x"], "no extension"),
            (["request", "decide", "REQ-1", "--refuse", "--reason", "x"], "grounds"),
            (["request", "fulfil", "REQ-1", "--result", "novalue"], "KEY=VALUE"),
        ],
    )
    def test_one_line_exit_2(
        self,
        url: str,
        capsys: pytest.CaptureFixture[str],
        argv: list[str],
        match: str,
    ) -> None:
        """Every error is one line on stderr, exit 2, never naming the subject."""
        assert 0 == main(
            [
                "request",
                "open",
                "appi_disclosure",
                "--subject",
                CANARY,
                "--id",
                "REQ-1",
                *common(url, "2026-02-01T10:00+09:00"),
            ]
        )
        capsys.readouterr()
        code, out, err = run(capsys, *argv, *common(url, "2026-02-02T10:00+09:00"))
        assert 2 == code
        assert match in err
        assert 1 == len(err.strip().splitlines())
        assert err.startswith("custdata request ")
        assert CANARY not in err + out

    def test_naive_at_and_no_tables(
        self, url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A naive --at, or an empty database, is a one-line error."""
        code, _, err = run(capsys, "request", "show", "REQ-1", "--url", url)
        assert (2, True) == (code, "no request tables" in err)
        code, _, err = run(
            capsys,
            "request",
            "open",
            "gdpr_access",
            "--subject",
            "s",
            "--url",
            url,
            "--at",
            "2026-02-01T10:00",
        )
        assert (2, True) == (code, "UTC offset" in err)
        code, out, _ = run(capsys, "request", "list", "--url", url)
        assert (0, "no requests\n") == (code, out)


class TestCheck:
    def test_overdue_and_due_soon_are_findings(
        self, url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """REQ001 for a request past its date, REQ002 for one due within 3 days."""
        assert 0 == main(
            [
                "request",
                "open",
                "appi_disclosure",
                "--subject",
                CANARY,
                "--id",
                "REQ-OLD",
                *common(url, "2026-02-01T10:00+09:00"),
            ]
        )  # due 2026-02-15
        assert 0 == main(
            [
                "request",
                "open",
                "gdpr_erasure",
                "--subject",
                CANARY,
                "--id",
                "REQ-NEW",
                *common(url, "2026-01-17T10:00+09:00"),
            ]
        )  # due 2026-02-17
        capsys.readouterr()
        code, out, _ = run(
            capsys,
            "check",
            "--policy",
            POLICY,
            "--requests-url",
            url,
            "--today",
            "2026-02-16",
            "--json",
        )
        assert 1 == code
        found = {
            f["key_path"]: f["code"]
            for f in json.loads(out)["findings"]
            if f["code"].startswith("REQ")
        }
        assert {"requests.REQ-OLD": "REQ001", "requests.REQ-NEW": "REQ002"} == found
        assert CANARY not in out
        code, out, _ = run(
            capsys,
            "check",
            "--policy",
            POLICY,
            "--requests-url",
            url,
            "--today",
            "2026-02-10",
            "--json",
        )
        assert [] == [
            f for f in json.loads(out)["findings"] if f["code"].startswith("REQ")
        ]


class TestReport:
    def test_report_lists_the_open_requests(
        self, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """custdata report --requests-url lists open requests, overdue ones marked."""
        assert 0 == main(
            [
                "request",
                "open",
                "appi_disclosure",
                "--subject",
                CANARY,
                "--id",
                "REQ-R",
                *common(url, "2026-02-01T10:00+09:00"),
            ]
        )
        out_dir = tmp_path / "report"
        code = main(
            [
                "report",
                "--policy",
                POLICY,
                "--html",
                str(out_dir),
                "--today",
                "2026-02-16",
                "--requests-url",
                url,
            ]
        )
        assert 0 == code
        page = (out_dir / "index.html").read_text(encoding="utf-8")
        assert "REQ-R" in page
        assert "2026-02-15T23:59:59+09:00 (overdue)" in page
        assert CANARY not in page
