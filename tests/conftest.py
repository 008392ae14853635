"""Shared fixtures: the database matrix and a sample policy.

The database matrix is SQLite (always), PostgreSQL (``CUSTDATA_TEST_POSTGRES_URL``)
and MariaDB/MySQL (``CUSTDATA_TEST_MYSQL_URL``). A server whose variable is unset
is skipped with a message saying which variable to set.
"""

from __future__ import annotations

import os
import uuid

from collections.abc import Iterator
from pathlib import Path

import pytest

import custdata

from custdata.governance import ConsentLedger


# tests/typing and tests/typing_errors hold files for mypy to check (the second
# deliberately wrong), not tests to collect.
collect_ignore_glob = ["typing/*", "typing_errors/*"]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
POSTGRES_ENV = "CUSTDATA_TEST_POSTGRES_URL"
MYSQL_ENV = "CUSTDATA_TEST_MYSQL_URL"


def _server_url(env: str) -> str:
    url = os.environ.get(env)
    if not url:
        pytest.skip(f"set {env} to run this test against a real server")
    return url


@pytest.fixture(autouse=True)
def _no_leaked_custodian() -> Iterator[None]:
    """Restore the process-wide custodian after each test.

    Code under test (the docs' examples, the demo) may call
    ``Custodian.make_current()``; without this a later test would silently run
    against that custodian's policy.
    """
    saved = custdata._context._default_custodian[0]
    try:
        yield
    finally:
        custdata._context._default_custodian[0] = saved


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for each backend of the matrix.

    SQLite is a file in the test's temporary folder; the servers are the ones
    named by the environment. Tests must create and drop their own tables.
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    if request.param == "postgresql":
        return _server_url(POSTGRES_ENV)
    return _server_url(MYSQL_ENV)


@pytest.fixture
def postgres_url() -> str:
    """The PostgreSQL URL, or skip."""
    return _server_url(POSTGRES_ENV)


@pytest.fixture
def mysql_url() -> str:
    """The MariaDB/MySQL URL, or skip."""
    return _server_url(MYSQL_ENV)


@pytest.fixture
def unique_suffix() -> str:
    """A short random suffix for table names shared servers must keep apart."""
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def sample_policy() -> custdata.Policy:
    """The example business's policy from ``examples/custdata.toml``."""
    return custdata.Policy.from_toml(EXAMPLES / "custdata.toml")


@pytest.fixture
def consent_ledger(sample_policy: custdata.Policy) -> ConsentLedger:
    """An empty in-memory consent ledger over the sample policy."""
    return ConsentLedger.for_policy(sample_policy)


@pytest.fixture
def custodian(sample_policy: custdata.Policy) -> Iterator[custdata.Custodian]:
    """A custodian over the sample policy, active for the test only."""
    c = custdata.Custodian(policy=sample_policy)
    with c.activate():
        yield c
