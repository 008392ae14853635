"""Key operations through the custodian: rotation and crypto-shredding, audited, actor required."""

from __future__ import annotations

import uuid

import pytest

import custdata

from custdata import (
    ActorRequiredError,
    ConfigurationError,
    Custodian,
    KeyDestroyedError,
    Policy,
)
from custdata.audit import AuditTrail, MemorySink
from custdata.crypto import InMemorySubjectKeyStore, Keyring, codec_for


class FailingTrail:
    """A recorder whose key events cannot be written."""

    def record_decision(self, decision: custdata.AccessDecision) -> None:
        """Accept decisions."""

    def key_shredded(self, **kwargs: object) -> None:
        raise custdata.AuditUnavailableError("audit sink unavailable")


@pytest.fixture
def parts(
    sample_policy: Policy,
) -> tuple[Keyring, InMemorySubjectKeyStore, bytes, uuid.UUID]:
    keyring = Keyring.generate()
    store = InMemorySubjectKeyStore()
    subject = uuid.uuid4()
    cipher = keyring.field_cipher(
        table="t", column="c", codec=codec_for(str), subject_keys=store
    )
    return (
        keyring,
        store,
        cipher.encrypt("canary-history-7731", subject=subject),
        subject,
    )


class TestShred:
    def test_shred_destroys_key_audits_and_erases(
        self, sample_policy: Policy, parts
    ) -> None:  # type: ignore[no-untyped-def]
        """The key.shred event is recorded, the value becomes unreadable, erasers run."""
        keyring, store, blob, subject = parts
        sink = MemorySink()
        trail = AuditTrail(keyring, sinks=[sink], checkpoint_interval=None)
        custodian = Custodian(
            policy=sample_policy, keyring=keyring, audit=trail, subject_keys=store
        )
        erased: list[object] = []
        with custdata.acting_as("dpo-1", role="support_agent"):
            total = custodian.shred(subject, erasers=[lambda s: erased.append(s) or 3])
        trail.close()
        cipher = keyring.field_cipher(
            table="t", column="c", codec=codec_for(str), subject_keys=store
        )
        with pytest.raises(KeyDestroyedError):
            cipher.decrypt(blob, subject=subject)
        assert (3, [subject]) == (total, erased)
        shreds = [r for r in sink.records if b'"key.shred"' in r.body]
        assert 1 == len(shreds)
        assert b"dpo-1" in shreds[0].body
        assert str(subject).encode() not in b"".join(r.body for r in sink.records)

    def test_shred_needs_an_actor(self, sample_policy: Policy, parts) -> None:  # type: ignore[no-untyped-def]
        """Anonymous shredding is refused and destroys nothing."""
        keyring, store, blob, subject = parts
        custodian = Custodian(policy=sample_policy, keyring=keyring, subject_keys=store)
        with pytest.raises(ActorRequiredError):
            custodian.shred(subject)
        cipher = keyring.field_cipher(
            table="t", column="c", codec=codec_for(str), subject_keys=store
        )
        assert "canary-history-7731" == cipher.decrypt(blob, subject=subject)

    def test_unrecorded_shred_destroys_nothing(
        self, sample_policy: Policy, parts
    ) -> None:  # type: ignore[no-untyped-def]
        """If the audit event cannot be written, the key survives (recorded before the effect)."""
        keyring, store, blob, subject = parts
        custodian = Custodian(
            policy=sample_policy,
            keyring=keyring,
            audit=FailingTrail(),
            subject_keys=store,
        )
        with (
            custdata.acting_as("dpo-1", role="support_agent"),
            pytest.raises(custdata.AuditUnavailableError),
        ):
            custodian.shred(subject)
        cipher = keyring.field_cipher(
            table="t", column="c", codec=codec_for(str), subject_keys=store
        )
        assert "canary-history-7731" == cipher.decrypt(blob, subject=subject)

    def test_shred_needs_a_subject_key_store(self, sample_policy: Policy) -> None:
        """Without per-subject keys there is nothing to shred: a configuration error."""
        custodian = Custodian(policy=sample_policy, keyring=Keyring.generate())
        with (
            custdata.acting_as("dpo-1", role="support_agent"),
            pytest.raises(ConfigurationError),
        ):
            custodian.shred(uuid.uuid4())


class TestRotate:
    def test_rotation_is_recorded(self, sample_policy: Policy) -> None:
        """rotate_key adds a primary key and records key.rotate with both ids and the actor."""
        keyring = Keyring.generate()
        sink = MemorySink()
        trail = AuditTrail(keyring, sinks=[sink], checkpoint_interval=None)
        custodian = Custodian(policy=sample_policy, keyring=keyring, audit=trail)
        old = keyring.primary_key_id
        with custdata.acting_as("ops-1", role="billing_clerk"):
            new = custodian.rotate_key()
            index_old = keyring.primary_index_key_id
            index_new = custodian.rotate_key(index=True)
        trail.close()
        assert (new, index_new) == (
            keyring.primary_key_id,
            keyring.primary_index_key_id,
        )
        assert old != new
        assert index_old != index_new
        rotations = [
            r.fields for r in sink.records if r.fields["action"] == "key.rotate"
        ]
        assert [
            {"old": str(old), "new": str(new), "kind": "data"},
            {"old": str(index_old), "new": str(index_new), "kind": "index"},
        ] == [r["keys"] for r in rotations]
        assert {"ops-1"} == {r["actor"]["id"] for r in rotations}

    def test_rotation_needs_an_actor(self, sample_policy: Policy) -> None:
        """Anonymous rotation is refused and leaves the keyring as it was."""
        keyring = Keyring.generate()
        custodian = Custodian(policy=sample_policy, keyring=keyring)
        before = keyring.key_ids
        with pytest.raises(ActorRequiredError):
            custodian.rotate_key()
        assert before == keyring.key_ids


def test_key_operations_without_a_keyring_are_a_configuration_error(
    sample_policy: custdata.Policy,
) -> None:
    """A custodian built without a keyring names what is missing, not AttributeError."""
    custodian = custdata.Custodian(policy=sample_policy)
    with (
        custdata.acting_as("ops-1", role="billing_clerk"),
        pytest.raises(
            custdata.ConfigurationError, match="needs a custodian with a keyring"
        ),
    ):
        custodian.rotate_key()
