"""The shop's test fixtures: a database per test; custdata's come from its plugin."""

from __future__ import annotations

import sys

from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlalchemy import Engine, create_engine


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import Base


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """The shop's tables in a SQLite file of the test's own."""
    engine = create_engine(f"sqlite:///{tmp_path / 'shop.db'}")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()
