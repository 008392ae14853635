"""Links into Python's and the libraries' documentation, resolved offline.

``docs/_inventories/<project>.txt`` lists the external objects the pages
reference, with their addresses; ``docs/conf.py`` compiles them for
intersphinx, so the build fetches nothing, and fails on a reference into one
of those projects that no list names. These tests build a one-page site with
the project's own ``conf.py``.
"""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
import types

from pathlib import Path

import pytest


DOCS = Path(__file__).resolve().parent.parent / "docs"
INVENTORIES = DOCS / "_inventories"
PROJECTS = ("python", "sqlalchemy", "structlog", "attrs", "cryptography")
LINE = re.compile(
    r"^(?P<name>\S+) py:(?P<role>class|function|module|data|method) (?P<prio>-?\d) (?P<uri>\S+) -$"
)


def _build(tmp_path: Path, page: str) -> tuple[int, str, str]:
    """Build a one-page site with the docs' ``conf.py``; the status, stderr and HTML."""
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    pytest.importorskip("furo")
    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text(
        f"import runpy\nglobals().update(runpy.run_path({str(DOCS / 'conf.py')!r}))\n",
        encoding="utf-8",
    )
    (src / "index.md").write_text(f"# Links\n\n{page}\n", encoding="utf-8")
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            str(src),
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    html = out / "index.html"
    return (
        done.returncode,
        done.stderr,
        html.read_text(encoding="utf-8") if html.exists() else "",
    )


def test_listed_references_link_to_the_projects_docs(tmp_path: Path) -> None:
    """A reference of each project resolves to its online page, from the local list."""
    status, err, html = _build(
        tmp_path,
        "{class}`sqlalchemy.orm.Session`, {func}`structlog.get_logger`, "
        "{func}`attrs.evolve`, {class}`datetime.datetime`, "
        "{class}`~cryptography.hazmat.primitives.ciphers.aead.AESGCM`",
    )
    assert 0 == status, err
    for url in (
        "https://docs.sqlalchemy.org/en/20/orm/session_api.html#sqlalchemy.orm.Session",
        "https://www.structlog.org/en/stable/api.html#structlog.get_logger",
        "https://www.attrs.org/en/stable/api.html#attrs.evolve",
        "https://docs.python.org/3/library/datetime.html#datetime.datetime",
        (
            "https://cryptography.io/en/latest/hazmat/primitives/aead/"
            "#cryptography.hazmat.primitives.ciphers.aead.AESGCM"
        ),
    ):
        assert f'href="{url}"' in html


def test_aliased_type_hint_resolves(tmp_path: Path) -> None:
    """``dt.date`` (a module imported as ``dt``) links as ``datetime.date``."""
    status, err, html = _build(tmp_path, "{class}`dt.date` and {class}`sa.Table`")
    assert 0 == status, err
    assert (
        'href="https://docs.python.org/3/library/datetime.html#datetime.date"' in html
    )
    assert (
        'href="https://docs.sqlalchemy.org/en/20/core/metadata.html#sqlalchemy.schema.Table"'
        in html
    )


@pytest.mark.parametrize(
    "reference",
    [
        "{class}`sqlalchemy.orm.NoSuchSession`",
        "{func}`structlog.not_a_function`",
        "{class}`datetime.Calendar`",
        "{class}`dt.Calendar`",
    ],
)
def test_unlisted_external_reference_fails_the_build(
    tmp_path: Path, reference: str
) -> None:
    """A reference into a listed project that its inventory lacks fails a -W build."""
    status, err, _ = _build(
        tmp_path, f"{{class}}`sqlalchemy.orm.Session` and {reference}"
    )
    assert 0 != status
    target = reference.split("`")[1].replace("dt.", "datetime.")
    assert f"external reference {target!r} is not in docs/_inventories" in err


@pytest.mark.parametrize("project", PROJECTS)
def test_inventory_is_well_formed(project: str) -> None:
    """Each list is Sphinx's plain-text inventory; every address is a page anchor.

    An entry under another name than the page documents it by (a private module
    path a type hint brings) points at an anchor another entry of the same list
    names, so the addresses checked against upstream are the only ones used.
    """
    lines = (INVENTORIES / f"{project}.txt").read_text(encoding="utf-8").splitlines()
    assert "# Sphinx inventory version 2" == lines[0]
    assert lines[1].startswith("# Project: ")
    assert lines[2].startswith("# Version: ")
    assert "# The remainder of this file is compressed using zlib." == lines[3]
    entries = [LINE.fullmatch(line) for line in lines[4:]]
    assert all(entries), [
        line for line, m in zip(lines[4:], entries, strict=True) if not m
    ]
    names = [m["name"] for m in entries if m]
    assert len(names) == len(set(names)), "an object is listed twice"
    anchors = set()
    for m in entries:
        assert m is not None
        page, _, anchor = m["uri"].partition("#")
        assert page, m["uri"]
        assert anchor, m["uri"]
        if anchor == "$":
            anchors.add(m["name"])
        elif anchor == "module-$":
            assert "module" == m["role"]
            anchors.add(m["name"])
    for m in entries:
        assert m is not None
        anchor = m["uri"].partition("#")[2]
        if "$" not in anchor:
            assert anchor in anchors, (
                f"{m['name']}: anchor {anchor} is not listed under its own name"
            )


def test_build_fetches_nothing(tmp_path: Path) -> None:
    """Every intersphinx project reads a compiled local inventory, never the network."""
    conf = runpy.run_path(str(DOCS / "conf.py"))

    config = types.SimpleNamespace(intersphinx_mapping={})
    conf["_compile_inventories"](types.SimpleNamespace(doctreedir=tmp_path), config)
    assert set(PROJECTS) == set(config.intersphinx_mapping)
    for base, inventory in config.intersphinx_mapping.values():
        assert base.startswith("https://")
        assert Path(inventory).is_file()
        assert (
            Path(inventory).read_bytes().startswith(b"# Sphinx inventory version 2\n")
        )
