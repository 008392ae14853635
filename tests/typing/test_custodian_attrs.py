"""Typing test: a Custodian's attributes are precisely typed (mypy --strict, no casts).

This module is type-checked, not executed for behaviour; pytest imports it to
make sure it stays importable.
"""

from __future__ import annotations

import sys

import custdata

from custdata.crypto import InMemorySubjectKeyStore, Keyring, SubjectKeyStore


if sys.version_info >= (3, 11):
    from typing import assert_type
else:  # pragma: no cover
    from typing_extensions import assert_type


def rotate_and_save(custodian: custdata.Custodian, path: str) -> int:
    """Keyring methods are reachable without a cast once None is ruled out."""
    keyring = custodian.keyring
    assert_type(keyring, Keyring | None)
    if keyring is None:
        return 0
    new_id: int = keyring.rotate()
    keyring.save(path)
    return new_id


def store_of(policy: custdata.Policy) -> SubjectKeyStore | None:
    """The subject key store comes back as the protocol type."""
    custodian = custdata.Custodian(
        policy=policy,
        keyring=Keyring.generate(),
        subject_keys=InMemorySubjectKeyStore(),
    )
    assert_type(custodian.subject_keys, SubjectKeyStore | None)
    assert_type(custodian.policy, custdata.Policy)
    assert_type(custodian.audit, custdata.DecisionRecorder | None)
    return custodian.subject_keys
