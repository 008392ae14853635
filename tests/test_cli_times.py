"""One rule for times and dates on the command line (``cli._options``).

A time is ISO 8601 with its UTC offset (``Z`` for UTC); a date alone is the
start of that day in UTC; a date-time without an offset is refused. Every
command's time and date options use the same two argparse types, and a bad
value exits 2 with one error line.
"""

from __future__ import annotations

import argparse
import datetime as dt

from collections.abc import Iterator
from pathlib import Path

import pytest

from custdata.cli import build_parser, main
from custdata.cli._options import iso_date, iso_time


UTC = dt.timezone.utc
JST = dt.timezone(dt.timedelta(hours=9))
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class TestIsoTime:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2026-12-01T09:30:00+09:00", dt.datetime(2026, 12, 1, 9, 30, tzinfo=JST)),
            ("2026-12-01T09:30+09:00", dt.datetime(2026, 12, 1, 9, 30, tzinfo=JST)),
            ("2026-12-01T00:30Z", dt.datetime(2026, 12, 1, 0, 30, tzinfo=UTC)),
            ("2026-12-01T00:30:00z", dt.datetime(2026, 12, 1, 0, 30, tzinfo=UTC)),
            (
                "2026-12-01T00:30:00.250+00:00",
                dt.datetime(2026, 12, 1, 0, 30, 0, 250000, UTC),
            ),
            ("2026-12-01", dt.datetime(2026, 12, 1, tzinfo=UTC)),
            (" 2026-12-01T00:30Z ", dt.datetime(2026, 12, 1, 0, 30, tzinfo=UTC)),
        ],
    )
    def test_accepted(self, text: str, expected: dt.datetime) -> None:
        """Offsets, ``Z`` and a date alone give the aware instant they name."""
        value = iso_time(text)
        assert value == expected
        assert value.utcoffset() == expected.utcoffset()

    def test_same_instant_in_two_zones(self) -> None:
        """``+09:00`` and ``Z`` spellings of one instant compare equal."""
        assert iso_time("2026-12-01T09:30+09:00") == iso_time("2026-12-01T00:30Z")

    @pytest.mark.parametrize(
        "text", ["2026-12-01T09:30", "2026-12-01T09:30:00", "2026-12-01 09:30"]
    )
    def test_naive_refused(self, text: str) -> None:
        """A date-time without an offset is a usage error naming the fix."""
        with pytest.raises(argparse.ArgumentTypeError, match="time zone"):
            iso_time(text)

    @pytest.mark.parametrize(
        "text",
        ["", "yesterday", "2026-13-01T00:00Z", "2026-02-30", "12/01/2026", "Z", "now"],
    )
    def test_garbage_refused(self, text: str) -> None:
        """Anything else is refused with a typed argparse error."""
        with pytest.raises(argparse.ArgumentTypeError):
            iso_time(text)


class TestIsoDate:
    def test_accepted(self) -> None:
        """``YYYY-MM-DD`` is a date."""
        assert dt.date(2026, 12, 1) == iso_date("2026-12-01")

    @pytest.mark.parametrize(
        "text",
        ["2026-12-01T00:00Z", "20261201", "2026-W48-1", "2026-02-30", "today", ""],
    )
    def test_refused(self, text: str) -> None:
        """Times, compact or week forms, impossible days and words are refused."""
        with pytest.raises(argparse.ArgumentTypeError, match="date"):
            iso_date(text)


def _options(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        else:
            yield path, action


_TIME_OPTIONS = {"--since", "--until", "--now", "--detected-at", "--at"}
# ``incident`` reports its own errors as one line and returns 2 (its convention),
# so it reads these strings in the handler, through ``iso_time`` all the same
# (the behaviour is tested below).
_READ_IN_HANDLER = {
    ("incident", "open", "--detected-at"),
    ("incident", "deadlines", "--now"),
}


def test_every_time_and_date_option_uses_the_shared_types() -> None:
    """Every time option parses with ``iso_time``, every ``--today`` with ``iso_date``."""
    seen: dict[str, int] = {"time": 0, "date": 0, "handler": 0}
    for path, action in _options(build_parser()):
        names = set(action.option_strings)
        where = f"custdata {' '.join(path)} {'/'.join(sorted(names))}"
        if any((*path, name) in _READ_IN_HANDLER for name in names):
            assert action.type is None, where
            seen["handler"] += 1
        elif names & _TIME_OPTIONS:
            assert action.type is iso_time, where
            seen["time"] += 1
        elif "--today" in names:
            assert action.type is iso_date, where
            seen["date"] += 1
        else:
            assert action.type not in {
                dt.date.fromisoformat,
                dt.datetime.fromisoformat,
            }, where
    assert seen == {"time": seen["time"], "date": seen["date"], "handler": 2}
    assert seen["time"] >= 3
    assert seen["date"] >= 4


#: The other options ``incident open`` requires.
_INCIDENT = (
    "--reporter",
    "u",
    "--kind",
    "leak",
    "--category",
    "name",
    "--subjects",
    "1",
)


def _status(argv: list[str]) -> int:
    """The exit status: returned, or raised by argparse on a usage error."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else -1


def _one_error_line(err: str) -> str:
    """The one error line (after argparse's usage lines, if any)."""
    lines = [
        line
        for line in err.strip().splitlines()
        if not line.startswith(("usage:", " "))
    ]
    assert 1 == len(lines), err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (
            [
                "check",
                "--policy",
                str(EXAMPLES / "custdata.toml"),
                "--today",
                "2026-02-30",
            ],
            "no such day",
        ),
        (
            [
                "check",
                "--policy",
                str(EXAMPLES / "custdata.toml"),
                "--today",
                "tomorrow",
            ],
            "not a date",
        ),
        (
            [
                "incident",
                "open",
                "--url",
                "sqlite://",
                "--detected-at",
                "2026-02-02T10:00",
                *_INCIDENT,
            ],
            "time zone",
        ),
        (
            ["incident", "deadlines", "INC-1", "--url", "sqlite://", "--now", "soon"],
            "ISO 8601",
        ),
    ],
)
def test_bad_value_exits_2_with_one_line(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad time or date stops the command before it runs: exit 2, one error line."""
    assert 2 == _status(argv)
    captured = capsys.readouterr()
    assert "" == captured.out
    line = _one_error_line(captured.err)
    assert words in line
    assert "Traceback" not in captured.err


def test_incident_takes_a_date_alone_and_z(tmp_path: Path) -> None:
    """``incident open`` reads ``Z`` and a date alone by the shared rule."""
    from sqlalchemy import create_engine

    from custdata.sqlalchemy import SqlIncidentStore

    url = f"sqlite:///{tmp_path / 'app.db'}"
    for incident_id, when in (("INC-Z", "2026-02-02T01:00Z"), ("INC-D", "2026-02-02")):
        argv = [
            "incident",
            "open",
            "--url",
            url,
            "--id",
            incident_id,
            "--detected-at",
            when,
        ]
        assert 0 == main([*argv, *_INCIDENT])
    engine = create_engine(url)
    try:
        store = SqlIncidentStore(engine, prefix="custdata_incident")
        assert dt.datetime(2026, 2, 2, 1, tzinfo=UTC) == store.get("INC-Z").detected_at
        assert dt.datetime(2026, 2, 2, tzinfo=UTC) == store.get("INC-D").detected_at
    finally:
        engine.dispose()


def test_audit_query_refuses_a_naive_time(capsys: pytest.CaptureFixture[str]) -> None:
    """``audit what-did --since`` without an offset is refused (it used to mean UTC)."""
    assert 2 == _status(
        ["audit", "what-did", "--actor", "u-1", "--since", "2026-12-01T00:00"]
    )
    assert "time zone" in _one_error_line(capsys.readouterr().err)
