"""Every ``custdata …`` command the README and the docs quote exists (issue 16).

Two kinds of quotation are checked against the real argument parser
(:func:`custdata.cli.build_parser`):

* a command line in a console block (``$ custdata …``, continuation lines
  joined) must parse as it stands;
* a command named in running text or a synopsis (```custdata check
  --published```, ```custdata sweep --url URL [--dry-run]```) must name
  existing commands, and every ``--option`` it mentions must be an option of
  that command.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex

from pathlib import Path

import pytest

from custdata.cli import build_parser


ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(
    r"^```\{?([\w-]*)\}?[ \t]*(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL
)
SHELLS = {"console", "shell", "sh", "bash"}
PROMPT = re.compile(r"^\s*\$\s+")
#: A message the command printed (``custdata keys retire: refused: ...``).
OUTPUT = re.compile(r"^custdata [\w -]+: ")
INLINE = re.compile(r"`(custdata [^`]+)`")
OPTION = re.compile(r"--[a-z][a-z0-9-]*")


def _blocks(text: str) -> tuple[list[str], list[str]]:
    """Command lines in code blocks: (shown being run, synopses).

    In a console block the lines after a ``$`` prompt (every line when none
    has a prompt) are commands run as they stand, unless they have synopsis
    brackets or ellipses; a line of another block (``text``) is a synopsis.
    Lines the command printed are skipped.
    """
    run, synopses = [], []
    for directive, argument, body in FENCE.findall(text):
        language = argument if directive == "code-block" else directive
        lines = body.replace("\\\n", " ").splitlines()
        prompted = [PROMPT.sub("", x) for x in lines if PROMPT.match(x)]
        for line in prompted or [x.strip() for x in lines]:
            if not line.startswith("custdata ") or OUTPUT.match(line):
                continue
            if language in SHELLS and "[" not in line and "..." not in line:
                run.append(line.strip())
            else:
                synopses.append(" ".join(line.split()))
    return run, synopses


def _mentions(text: str) -> list[str]:
    return [
        " ".join(m.group(1).replace("\\|", "|").split()) for m in INLINE.finditer(text)
    ]


_TEXTS = [(p.name, p.read_text("utf-8")) for p in PAGES]
CONSOLE_LINES = [(name, line) for name, text in _TEXTS for line in _blocks(text)[0]]
MENTIONS = [
    (name, m) for name, text in _TEXTS for m in [*_mentions(text), *_blocks(text)[1]]
]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def mention_problems(mention: str) -> list[str]:
    """What is wrong with a quoted command: unknown commands or options."""
    words = mention.split()[1:]
    parsers = [build_parser()]
    i = 0
    while i < len(words):
        choices = _subcommands(parsers[0])
        word = words[i]
        if not choices or word.startswith(("-", "[")) or word.isupper():
            break
        if word not in choices:
            return [f"no command {word!r} in {mention!r}"]
        alternatives = [word]
        i += 1
        # "open | classify | deadlines": alternatives of one command group
        while i + 1 < len(words) and words[i] == "|" and words[i + 1] in choices:
            alternatives.append(words[i + 1])
            i += 2
        parsers = [choices[a] for a in alternatives]
    return [
        f"{parser.prog} has no option {option}"
        for word in words[i:]
        for option in OPTION.findall(word)
        for parser in parsers
        if option not in parser._option_string_actions
    ]


def test_the_docs_quote_commands() -> None:
    """The checks below have something to check."""
    assert len(CONSOLE_LINES) > 15
    assert len(MENTIONS) > 40


@pytest.mark.parametrize(("page", "line"), CONSOLE_LINES)
def test_console_command_lines_parse(page: str, line: str) -> None:
    """A command line shown being run parses with the real parser."""
    argv = shlex.split(line)[1:]
    for op in ("|", ">", "2>&1", "&&", ";"):
        if op in argv:
            argv = argv[: argv.index(op)]
    err = io.StringIO()
    code: object = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            code = exc.code
    assert code == 0, f"{page}: {line!r}: {err.getvalue().strip()}"


@pytest.mark.parametrize(("page", "mention"), MENTIONS)
def test_quoted_commands_and_options_exist(page: str, mention: str) -> None:
    """A command named in the text exists, with every option it mentions."""
    assert [] == mention_problems(mention), page


@pytest.mark.parametrize(
    ("mention", "problem"),
    [
        ("custdata docs publish", "no command 'publish'"),
        ("custdata check --publish PATH", "has no option --publish"),
        ("custdata incident open | classify --nope", "has no option --nope"),
        (
            "custdata report --html DIR [--incidents URL] [--foo X]",
            "has no option --foo",
        ),
    ],
)
def test_the_check_catches_false_claims(mention: str, problem: str) -> None:
    """The mention check fails on a command or an option that does not exist."""
    problems = mention_problems(mention)
    assert problems
    assert problem in problems[0]


def test_the_check_accepts_true_claims() -> None:
    assert [] == mention_problems(
        "custdata incident open | classify | deadlines --url URL"
    )
    assert [] == mention_problems("custdata COMMAND --help")
    assert [] == mention_problems("custdata report --html DIR [--incidents URL]")
