"""The documentation's code runs: every ```python block of every page.

Blocks of one page run in order in one namespace, in a temporary working
folder, so a page can build on its earlier blocks. Illustrative snippets that
cannot run on their own are written as ``{code-block} python`` instead.
"""

from __future__ import annotations

import re

from pathlib import Path

import pytest

from sqlalchemy.engine import Engine


DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
PAGES = sorted(
    p for p in DOCS.glob("*.md") if BLOCK.search(p.read_text(encoding="utf-8"))
)


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_page_code_runs(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every python block on the page runs without error."""
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    blocks = BLOCK.findall(page.read_text(encoding="utf-8"))
    try:
        for number, code in enumerate(blocks, 1):
            try:
                exec(  # noqa: S102 - running the docs' own code is the point
                    compile(
                        code, f"{page.name}[block {number}]", "exec", dont_inherit=True
                    ),
                    namespace,
                )
            except (
                Exception
            ) as exc:  # pragma: no cover - the failure message is the point
                pytest.fail(
                    f"{page.name} block {number} raised {type(exc).__name__}: {exc}"
                )
    finally:
        # The pages leave their engines open, as a reader's script would;
        # close their connections here rather than whenever they are
        # collected (Python 3.13 warns about unclosed SQLite connections).
        for value in namespace.values():
            if isinstance(value, Engine):
                value.dispose()


def test_some_pages_have_code() -> None:
    """The docs do carry runnable examples (guards against a broken pattern)."""
    assert len(PAGES) >= 3


IMAGE = re.compile(r"^```\{image\} (\S+)", re.MULTILINE)


def test_pictures_exist_and_are_well_formed_svg() -> None:
    """Every picture a page shows exists, parses as SVG and has a title."""
    import xml.etree.ElementTree as ET

    shown = {
        (page, name)
        for page in DOCS.glob("*.md")
        for name in IMAGE.findall(page.read_text(encoding="utf-8"))
    }
    assert len(shown) >= 3
    for page, name in shown:
        path = DOCS / name
        assert path.is_file(), f"{page.name} shows missing {name}"
        root = ET.parse(path).getroot()  # noqa: S314
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        title = root.find("{http://www.w3.org/2000/svg}title")
        assert title is not None
        assert title.text
