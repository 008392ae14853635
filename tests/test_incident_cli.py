"""``custdata incident open | classify | deadlines | fact | report`` (issue 14).

Incidents are kept in the application's database (SQLite here, the three
databases in ``test_incident_sql.py``); every command has ``--json``; errors
are one line on stderr with exit status 2, an incomplete final report 1.
"""

from __future__ import annotations

import json

from pathlib import Path

import pytest

from custdata.cli import main


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def url(tmp_path: Path) -> str:
    """An empty SQLite database."""
    return f"sqlite:///{tmp_path / 'app.db'}"


def _open(url: str, *extra: str) -> list[str]:
    return [
        "incident",
        "open",
        "--url",
        url,
        "--id",
        "INC-1",
        "--detected-at",
        "2026-01-31T16:30:00+00:00",
        "--reporter",
        "u-sec",
        "--kind",
        "damage",
        "--malicious",
        "--category",
        "contact.email",
        "--category",
        "name",
        "--subjects",
        "10",
        "--actor",
        "u-sec",
        *extra,
    ]


class TestCommands:
    def test_open_classify_deadlines_json(
        self, url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The ransomware case through the command line, both regimes, in JSON."""
        assert 0 == main(
            [*_open(url, "--jurisdiction", "appi", "--jurisdiction", "gdpr"), "--json"]
        )
        assert {"incident_id": "INC-1"} == json.loads(capsys.readouterr().out)

        assert 0 == main(["incident", "classify", "INC-1", "--url", url, "--json"])
        result = json.loads(capsys.readouterr().out)
        assert "reportable" == result["appi"]["status"]
        assert [3] == [c["number"] for c in result["appi"]["categories"]]
        assert ["appi-2024-04", "gdpr-2018-05"] == result["packs"]
        assert result["eligible_for_cessation"]

        now = "2026-02-03T12:00:00+00:00"
        assert 0 == main(
            ["incident", "deadlines", "INC-1", "--url", url, "--now", now, "--json"]
        )
        due = json.loads(capsys.readouterr().out)
        by_key = {i["key"]: i for i in due["items"]}
        assert "2026-02-03T16:30:00+00:00" == by_key["gdpr_authority"]["due_at"]
        assert "2026-02-04T23:59:59+09:00" == by_key["ppc_preliminary"]["due_at"]
        # Category 3: 60 days from 1 February in Japan.
        assert "2026-04-02T23:59:59+09:00" == by_key["ppc_final"]["due_at"]
        assert ["gdpr_authority"] == [r["item"] for r in due["reminders"]]

    def test_reports_preliminary_then_final(
        self, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A 速報 renders at once; the 確報 exits 1 naming what is missing until facts are in."""
        assert 0 == main(_open(url))
        assert 0 == main(["incident", "classify", "INC-1", "--url", url])
        capsys.readouterr()
        assert 0 == main(
            ["incident", "report", "INC-1", "--url", url, "--stage", "preliminary"]
        )
        assert "個人データの漏えい等の報告（速報）" in capsys.readouterr().out
        assert 1 == main(["incident", "report", "INC-1", "--url", url])
        err = capsys.readouterr().err
        assert "recurrence_prevention" in err
        assert 1 == len(err.strip().splitlines())
        for item in (
            "cause",
            "secondary_damage",
            "subject_response",
            "publication",
            "recurrence_prevention",
            "other",
        ):
            assert 0 == main(
                [
                    "incident",
                    "fact",
                    "INC-1",
                    "--url",
                    url,
                    "--item",
                    item,
                    "--text",
                    f"{item} text",
                ]
            )
        capsys.readouterr()
        policy = str(EXAMPLES / "custdata.toml")
        assert 0 == main(
            [
                "incident",
                "report",
                "INC-1",
                "--url",
                url,
                "--policy",
                policy,
                "--lang",
                "en",
            ]
        )
        out = capsys.readouterr().out
        assert "⑧ Measures to prevent recurrence\n    recurrence_prevention text" in out
        assert 0 == main(["incident", "report", "INC-1", "--url", url, "--json"])
        assert [] == json.loads(capsys.readouterr().out)["missing"]

    def test_classify_with_key_custody(
        self, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With the keyring and keys declared apart, an encrypted leak is an exemption candidate."""
        from custdata.crypto import Keyring

        keyring = tmp_path / "keyring.json"
        Keyring.generate().save(keyring)
        argv = [
            *("incident", "open", "--url", url, "--id", "INC-1", "--actor", "u-sec"),
            *("--detected-at", "2026-02-02T10:00+09:00", "--reporter", "u-sec"),
            *("--kind", "leak", "--subjects", "1001"),
            *("--category", "contact.email:encrypted", "--category", "name:encrypted"),
        ]
        assert 0 == main(argv)
        capsys.readouterr()
        assert 0 == main(
            [
                "incident",
                "classify",
                "INC-1",
                "--url",
                url,
                "--keyring",
                str(keyring),
                "--keys-stored-apart",
                "--json",
            ]
        )
        result = json.loads(capsys.readouterr().out)
        assert "exemption_candidate" == result["appi"]["status"]
        assert result["appi"]["custody"]["keys_stored_apart"]
        assert "AES-256-GCM" == result["appi"]["custody"]["algorithm"]
        # Evidence only: names and ids, never key material.
        assert {
            "algorithm",
            "provider",
            "kek_id",
            "data_key_ids",
            "keys_stored_apart",
        } == set(result["appi"]["custody"])

    def test_routes_exemption_and_timeline(
        self, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Acknowledgements, a done item and an exemption decision land on the timeline."""
        policy = str(EXAMPLES / "custdata.toml")
        keyring = tmp_path / "keyring.json"
        from custdata.crypto import Keyring

        Keyring.generate().save(keyring)
        common = ["--url", url, "--policy", policy, "--actor", "cpo"]
        argv = [
            *("incident", "open", "--id", "INC-1", *common),
            *("--detected-at", "2026-02-02T10:00+09:00", "--reporter", "u-sec"),
            *("--kind", "leak", "--subjects", "1001"),
            *("--category", "contact.email:encrypted"),
        ]
        assert 0 == main(argv)
        assert 0 == main(
            [
                *("incident", "classify", "INC-1", *common),
                *("--keyring", str(keyring), "--keys-stored-apart"),
            ]
        )
        assert 0 == main(["incident", "ack", "INC-1", *common, "--step", "manager"])
        assert 0 == main(
            [
                *("incident", "notified", "INC-1", *common),
                *("--item", "ppc_preliminary", "--recipient", "ppc"),
            ]
        )
        capsys.readouterr()
        assert 2 == main(["incident", "ack", "INC-1", *common, "--step", "ceo"])
        assert "no step 'ceo'" in capsys.readouterr().err
        assert 0 == main(
            [
                *("incident", "deadlines", "INC-1", *common, "--json"),
                *("--now", "2026-02-05T12:00+09:00"),
            ]
        )
        due = json.loads(capsys.readouterr().out)
        assert {"ppc_preliminary": True, "ppc_final": False} == {
            i["key"]: i["done"] for i in due["items"] if i["key"].startswith("ppc")
        }
        assert "ppc_preliminary" not in {r["item"] for r in due["reminders"]}
        assert 0 == main(
            [
                *("incident", "exemption", "INC-1", *common),
                *("--confirm", "--reason", "KMS keys not exposed"),
            ]
        )
        capsys.readouterr()
        assert 0 == main(["incident", "deadlines", "INC-1", *common, "--json"])
        assert [] == json.loads(capsys.readouterr().out)["items"]
        assert 0 == main(["incident", "timeline", "INC-1", *common, "--json"])
        actions = [e["action"] for e in json.loads(capsys.readouterr().out)]
        assert [
            "opened",
            "classified",
            "acknowledged",
            "notified",
            "exemption_confirmed",
        ] == actions


class TestErrors:
    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (
                ["incident", "classify", "INC-none"],
                "no incident 'INC-none'",
            ),
            (
                ["incident", "deadlines", "INC-1"],
                "has not been classified",
            ),
        ],
    )
    def test_one_line_exit_2(
        self,
        url: str,
        argv: list[str],
        message: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Unknown or unclassified incidents: one line on stderr, exit 2."""
        assert 0 == main(_open(url))
        capsys.readouterr()
        assert 2 == main([*argv, "--url", url])
        err = capsys.readouterr().err
        assert message in err
        assert 1 == len(err.strip().splitlines())
        assert "Traceback" not in err

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            (("2026-01-31T16:30:00+00:00", "2026-01-31T16:30:00"), "UTC offset"),
            (("2026-01-31T16:30:00+00:00", "yesterday"), "ISO 8601"),
            (("contact.email", "contact.fax"), "unknown categories"),
            (("contact.email", "contact.email:plain"), ":encrypted"),
            (("10", "-3"), "subject_count"),
        ],
    )
    def test_bad_open_stores_nothing(
        self,
        url: str,
        change: tuple[str, str],
        message: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A bad value is a one-line error, exit 2, and no incident is stored."""
        argv = [change[1] if a == change[0] else a for a in _open(url)]
        assert 2 == main(argv)
        err = capsys.readouterr().err
        assert message in err
        assert 1 == len(err.strip().splitlines())
        assert 2 == main(["incident", "classify", "INC-1", "--url", url])
        assert "no incident" in capsys.readouterr().err

    def test_duplicate_id(self, url: str, capsys: pytest.CaptureFixture[str]) -> None:
        """Opening an id twice is refused with exit 2."""
        assert 0 == main(_open(url))
        assert 2 == main(_open(url))
        assert "already exists" in capsys.readouterr().err
