"""custdata's pytest plugin (the ``pytest11`` entry point ``custdata``).

See :mod:`custdata.testing` for the fixtures it provides.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from custdata._custodian import Custodian
from custdata._errors import ConfigurationError
from custdata._policy import Policy

from ._decisions import Acting, RecordedDecisions, acting


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the ``custdata_policy`` ini option."""
    parser.addini(
        "custdata_policy",
        "custdata: the policy file the custdata_policy fixture reads "
        "(relative to the root directory; default custdata.toml)",
        default="custdata.toml",
    )


@pytest.fixture
def custdata_policy(pytestconfig: pytest.Config) -> Policy:
    """The application's policy, from the ``custdata_policy`` ini option's file."""
    name = str(pytestconfig.getini("custdata_policy"))
    path = Path(pytestconfig.rootpath) / name
    if not path.is_file():
        pytest.fail(
            f"custdata_policy: no policy file at {path}; set the custdata_policy ini "
            "option or override the custdata_policy fixture",
            pytrace=False,
        )
    try:
        return Policy.from_toml(path)
    except ConfigurationError as exc:
        pytest.fail(f"custdata_policy: {exc}", pytrace=False)


@pytest.fixture
def custdata_keyring() -> Any:
    """A new in-memory keyring with one data key and one index key."""
    from custdata.crypto import Keyring  # noqa: PLC0415 - only when asked for

    return Keyring.generate()


@pytest.fixture
def custdata_decisions() -> RecordedDecisions:
    """Every access decision made during the test, in memory."""
    return RecordedDecisions()


@pytest.fixture
def custdata_custodian(
    custdata_policy: Policy,
    custdata_keyring: Any,
    custdata_decisions: RecordedDecisions,
) -> Iterator[Custodian]:
    """A custodian over the policy, keyring and recorder, current for the test."""
    custodian = Custodian(
        policy=custdata_policy, keyring=custdata_keyring, audit=custdata_decisions
    )
    with custodian.activate():
        yield custodian


@pytest.fixture
def custdata_acting() -> Acting:
    """Act, in a role, for a purpose: :func:`custdata.testing.acting`.

    Use it as ``with custdata_acting("u-1", role="support_agent", purpose="support"):``.
    """
    return acting
