"""Test helpers for applications that use custdata.

Installed with custdata and registered with pytest through the ``pytest11``
entry point, so an application's test suite gets these fixtures with no
``conftest.py`` change:

``custdata_policy``
    The application's :class:`custdata.Policy`, read from the file named by the
    ``custdata_policy`` ini option (relative to pytest's root directory), or
    from ``custdata.toml`` there. Override the fixture to build one in code.
``custdata_keyring``
    A new in-memory :class:`custdata.crypto.Keyring` (keys in the clear, for
    tests only).
``custdata_decisions``
    A :class:`RecordedDecisions`: every access decision the test's code made.
``custdata_custodian``
    A :class:`custdata.Custodian` over those three, current for the test (and
    only for it; the previous one is back afterwards).
``custdata_acting``
    :func:`acting`: an actor in a role claiming a purpose, in one ``with``.

And two assertions that read the recorded decisions, :func:`assert_revealed`
and :func:`assert_denied`, each returning the decision it found and, when none
matches, failing with a list of what was recorded (names only, never values).
"""

from __future__ import annotations

from ._decisions import Acting as Acting
from ._decisions import RecordedDecisions as RecordedDecisions
from ._decisions import acting as acting
from ._decisions import assert_denied as assert_denied
from ._decisions import assert_revealed as assert_revealed


__all__ = ["Acting", "RecordedDecisions", "acting", "assert_denied", "assert_revealed"]
