"""Per-subject keys and crypto-shredding."""

from __future__ import annotations

import datetime as dt
import sys
import uuid

from pathlib import Path
from typing import Any

import pytest

from custdata import (
    ConfigurationError,
    DecryptionError,
    KeyDestroyedError,
    UnknownKeyError,
)
from custdata.crypto import (
    Codec,
    FileSubjectKeyStore,
    InMemorySubjectKeyStore,
    Keyring,
    SubjectKeyRecord,
    SubjectKeyStore,
    codec_for,
)
from custdata.crypto._codecs import _str_decode
from custdata.crypto._envelope import length_prefixed, subject_bytes


NOW = dt.datetime(2026, 11, 29, tzinfo=dt.timezone.utc)


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> SubjectKeyStore:
    if request.param == "memory":
        return InMemorySubjectKeyStore()
    return FileSubjectKeyStore(tmp_path / "subjects.json")


class TestPerSubjectKeys:
    def test_round_trip_and_own_key_per_subject(self, store: SubjectKeyStore) -> None:
        """Each subject's values use that subject's own key (algorithm 3)."""
        keyring = Keyring.generate()
        cipher = keyring.field_cipher(
            table="customers", column="email", codec=codec_for(str), subject_keys=store
        )
        alice, bob = uuid.uuid4(), uuid.uuid4()
        a, b = cipher.encrypt("a@x", alice), cipher.encrypt("b@x", bob)
        assert ("a@x", "b@x", 3, 3) == (
            cipher.decrypt(a, alice),
            cipher.decrypt(b, bob),
            a[1],
            b[1],
        )
        assert a[2:6] != b[2:6]
        assert 2 == len(list(store.records()))

    def test_value_moved_to_other_subject_fails(self, store: SubjectKeyStore) -> None:
        """A value copied into another subject's row does not decrypt."""
        keyring = Keyring.generate()
        cipher = keyring.field_cipher(
            table="customers", column="email", codec=codec_for(str), subject_keys=store
        )
        alice, bob = uuid.uuid4(), uuid.uuid4()
        cipher.encrypt("b", bob)
        with pytest.raises(UnknownKeyError):
            cipher.decrypt(cipher.encrypt("a", alice), bob)

    def test_value_moved_to_other_column_fails(self, store: SubjectKeyStore) -> None:
        """The column binding holds under per-subject keys too."""
        keyring = Keyring.generate()
        email = keyring.field_cipher(
            table="c", column="email", codec=codec_for(str), subject_keys=store
        )
        phone = keyring.field_cipher(
            table="c", column="phone", codec=codec_for(str), subject_keys=store
        )
        alice = uuid.uuid4()
        with pytest.raises(DecryptionError):
            phone.decrypt(email.encrypt("a", alice), alice)

    def test_shred_destroys_and_leaves_tombstone(self, store: SubjectKeyStore) -> None:
        """After shred_subject, the subject's values raise KeyDestroyedError; others still read."""
        keyring = Keyring.generate()
        cipher = keyring.field_cipher(
            table="customers", column="email", codec=codec_for(str), subject_keys=store
        )
        alice, bob = uuid.uuid4(), uuid.uuid4()
        a, b = cipher.encrypt("a", alice), cipher.encrypt("b", bob)
        assert True is keyring.shred_subject(alice, store, now=NOW)
        with pytest.raises(KeyDestroyedError):
            cipher.decrypt(a, alice)
        with pytest.raises(KeyDestroyedError):
            cipher.encrypt("again", alice)
        assert "b" == cipher.decrypt(b, bob)
        record = store.get(b"u" + alice.bytes)
        assert record is not None
        assert (True, NOW, None) == (
            record.destroyed,
            record.destroyed_at,
            record.wrapped_key,
        )
        assert False is keyring.shred_subject(alice, store)

    def test_destroyed_differs_from_never_existed(self, store: SubjectKeyStore) -> None:
        """A subject that never had a key raises UnknownKeyError, not KeyDestroyedError."""
        keyring = Keyring.generate()
        cipher = keyring.field_cipher(
            table="customers", column="email", codec=codec_for(str), subject_keys=store
        )
        blob = cipher.encrypt("a", "someone")
        with pytest.raises(UnknownKeyError) as info:
            cipher.decrypt(blob, "nobody")
        assert not isinstance(info.value, KeyDestroyedError)

    def test_shred_survives_a_restart(self, tmp_path: Path) -> None:
        """A fresh process with the saved keyring and store still cannot read the shredded subject."""
        keyring = Keyring.generate()
        store = FileSubjectKeyStore(tmp_path / "subjects.json")
        cipher = keyring.field_cipher(
            table="t", column="c", codec=codec_for(str), subject_keys=store
        )
        alice = uuid.uuid4()
        blob = cipher.encrypt("a", alice)
        keyring.shred_subject(alice, store)
        keyring.save(tmp_path / "k.json")
        again = Keyring.load(tmp_path / "k.json")
        store_again = FileSubjectKeyStore(tmp_path / "subjects.json")
        reader = again.field_cipher(
            table="t", column="c", codec=codec_for(str), subject_keys=store_again
        )
        with pytest.raises(KeyDestroyedError):
            reader.decrypt(blob, alice)
        assert 0o600 == (tmp_path / "subjects.json").stat().st_mode & 0o777

    def test_subject_required(self, store: SubjectKeyStore) -> None:
        """A per-subject column refuses values without a subject."""
        keyring = Keyring.generate()
        cipher = keyring.field_cipher(
            table="t", column="c", codec=codec_for(str), subject_keys=store
        )
        with pytest.raises(TypeError):
            cipher.encrypt("v")
        with pytest.raises(TypeError):
            cipher.decrypt(cipher.encrypt("v", 1))
        with pytest.raises(TypeError):
            cipher.decrypt_many([cipher.encrypt("v", 1)])

    def test_rewrap_subject_keys_then_retire(self, store: SubjectKeyStore) -> None:
        """After rotate and rewrap_subject_keys, the old data key can be retired safely."""
        keyring = Keyring.generate()
        cipher = keyring.field_cipher(
            table="t", column="c", codec=codec_for(str), subject_keys=store
        )
        subjects = [uuid.uuid4() for _ in range(5)]
        blobs = [cipher.encrypt("v", s) for s in subjects]
        old = keyring.primary_key_id
        keyring.rotate()
        assert 5 == keyring.rewrap_subject_keys(store)
        keyring.retire(old)
        assert ["v"] * 5 == cipher.decrypt_many(blobs, subjects)
        assert 0 == keyring.rewrap_subject_keys(store)

    def test_retired_wrapping_key_refuses(self, store: SubjectKeyStore) -> None:
        """Without re-wrapping, retiring the wrapping key makes the subject keys refuse."""
        keyring = Keyring.generate()
        cipher = keyring.field_cipher(
            table="t", column="c", codec=codec_for(str), subject_keys=store
        )
        blob = cipher.encrypt("v", 1)
        old = keyring.primary_key_id
        keyring.rotate()
        keyring.retire(old)
        with pytest.raises(UnknownKeyError):
            cipher.decrypt(blob, 1)

    def test_tampered_record_fails(self) -> None:
        """A key record moved to another subject fails authentication."""
        keyring = Keyring.generate()
        store = InMemorySubjectKeyStore()
        cipher = keyring.field_cipher(
            table="t", column="c", codec=codec_for(str), subject_keys=store
        )
        cipher.encrypt("v", "alice")
        record = store.get(b"salice")
        assert record is not None
        store.put(
            SubjectKeyRecord(
                subject=b"smallory",
                key_id=record.key_id,
                wrapped_key=record.wrapped_key,
                wrapping_key_id=record.wrapping_key_id,
                created_at=record.created_at,
            )
        )
        with pytest.raises(DecryptionError):
            cipher.encrypt("v", "mallory")

    def test_store_protocol(self) -> None:
        """Both stores satisfy the SubjectKeyStore protocol; add keeps the first record."""
        store = InMemorySubjectKeyStore()
        first = SubjectKeyRecord(
            subject=b"s1", key_id=1, wrapped_key=b"x", wrapping_key_id=1, created_at=NOW
        )
        second = SubjectKeyRecord(
            subject=b"s1", key_id=2, wrapped_key=b"y", wrapping_key_id=1, created_at=NOW
        )
        assert (True, first, first) == (
            isinstance(store, SubjectKeyStore),
            store.add(first),
            store.add(second),
        )
        with pytest.raises(TypeError):
            Keyring.generate().subject_scope(object())  # type: ignore[arg-type]

    def test_file_store_refuses_loose_mode_and_garbage(self, tmp_path: Path) -> None:
        """The file store checks its file's mode and format."""
        path = tmp_path / "s.json"
        path.write_text("{}")
        path.chmod(0o600)
        with pytest.raises(ConfigurationError):
            FileSubjectKeyStore(path)
        path.chmod(0o644)
        with pytest.raises(ConfigurationError, match="chmod"):
            FileSubjectKeyStore(path)

    def test_record_repr_hides_subject_and_key(self) -> None:
        """A record's repr shows neither the subject id nor the wrapped key."""
        record = SubjectKeyRecord(
            subject=b"sCANARYSUBJECT",
            key_id=1,
            wrapped_key=b"CANARYKEY",
            wrapping_key_id=1,
            created_at=NOW,
        )
        assert "CANARY" not in repr(record)


def _count_lookups(store: InMemorySubjectKeyStore) -> list[int]:
    """Spy on *store*'s lookups: the list gets how many subjects each asked for."""
    sizes: list[int] = []
    lookup = store.lookup

    def counted(subjects: Any, **kw: Any) -> Any:
        sizes.append(len(subjects))
        return lookup(subjects, **kw)

    store.lookup = counted  # type: ignore[method-assign]
    return sizes


class TestSubjectKeyBatches:
    def test_cache_is_bounded_least_recently_used_first(self) -> None:
        """The scope keeps at most max_entries keys, evicting the least recently used."""
        keyring = Keyring.generate()
        store = InMemorySubjectKeyStore()
        scope = keyring.subject_scope(store)
        scope.max_entries = 3
        scope._admit.every = 1  # every new key let in, to see which one goes
        subjects = [b"s" + bytes([i]) for i in range(4)]
        scope.write_keys(subjects[:3])
        scope.keys_for([subjects[0]])  # now the most recent
        scope.write_keys([subjects[3]])
        assert 3 == len(scope)
        assert scope.cached(subjects[1]) is None
        assert scope.cached(subjects[0]) is not None

    def test_admission_counts_must_be_positive(self) -> None:
        from custdata._util import Admission

        with pytest.raises(ValueError, match="positive"):
            Admission(0)

    @pytest.mark.parametrize("batch", [1, 25])
    def test_passes_over_more_subjects_than_the_cache_keep_its_hits(
        self, batch: int
    ) -> None:
        """No step at the cache's size: a later pass looks up only what cannot fit."""
        keyring = Keyring.generate()
        store = InMemorySubjectKeyStore()
        scope = keyring.subject_scope(store)
        scope.max_entries = 100
        subjects = [uuid.uuid4().bytes for _ in range(150)]
        scope.write_keys(subjects)
        scope.clear()
        looked_up = _count_lookups(store)
        misses = []
        for _ in range(4):
            looked_up.clear()
            for i in range(0, len(subjects), batch):
                scope.keys_for(subjects[i : i + batch])
            misses.append(sum(looked_up))
        assert 150 == misses[0]
        # Least recently used alone would look up all 150 on every pass.
        assert all(50 <= m <= 60 for m in misses[1:]), misses
        assert 100 == len(scope)

    def test_a_batch_is_one_store_call_per_chunk(self) -> None:
        """keys_for of 1,200 uncached subjects asks the store three times, then none."""
        keyring = Keyring.generate()
        store = InMemorySubjectKeyStore()
        calls = _count_lookups(store)
        scope = keyring.subject_scope(store)
        subjects = [uuid.uuid4().bytes for _ in range(1200)]
        scope.write_keys(subjects)
        scope.clear()
        calls.clear()
        keys = scope.keys_for(subjects)
        assert ([500, 500, 200], 1200) == (calls, len(keys))
        calls.clear()
        scope.keys_for(subjects)
        assert [0] == calls  # the shred epoch only

    def test_many_values_encrypt_and_decrypt_as_one_batch(
        self, store: SubjectKeyStore
    ) -> None:
        """encrypt_many/decrypt_many with subjects round-trip and create each key once."""
        keyring = Keyring.generate()
        cipher = keyring.field_cipher(
            table="t", column="c", codec=codec_for(str), subject_keys=store
        )
        people = [uuid.uuid4() for _ in range(50)]
        subjects = people + people
        blobs = cipher.encrypt_many([str(p) for p in subjects], subjects)
        assert [str(p) for p in subjects] == cipher.decrypt_many(blobs, subjects)
        assert 50 == len(list(store.records()))

    def test_a_fetched_batch_of_str_values_decodes_without_a_call_per_value(
        self, store: SubjectKeyStore
    ) -> None:
        """A fetched batch of str values is decoded inline; a bad frame is still named.

        The batch path makes no call of the str codec for a well-formed
        value (counted with ``sys.setprofile``), and a frame that is not
        UTF-8 still fails as a DecryptionError that names no value.
        """
        keyring = Keyring.generate()
        cipher = keyring.field_cipher(
            table="t", column="c", codec=codec_for(str), subject_keys=store
        )
        people = [uuid.uuid4() for _ in range(40)]
        values = [f"canary-{i}" for i in range(40)]
        blobs = cipher.encrypt_many(values, people)
        tails = [length_prefixed(subject_bytes(p)) for p in people]
        calls: list[str] = []

        def profile(frame: Any, event: str, arg: Any) -> None:
            if event == "call" and frame.f_code is _str_decode.__code__:
                calls.append(event)

        sys.setprofile(profile)
        try:
            opened = cipher.open_fetched(blobs, tails)
        finally:
            sys.setprofile(None)
        assert (values, []) == (opened, calls)
        raw = Codec.tagged(
            name="raw",
            tag=0x01,  # a str frame's tag, with a payload that is not UTF-8
            python_type=bytes,
            encode_payload=bytes,
            decode_payload=bytes,
        )
        bad = keyring.field_cipher(
            table="t", column="c", codec=raw, subject_keys=store
        ).encrypt(b"canary-\xff", people[0])
        with pytest.raises(DecryptionError) as info:
            cipher.open_fetched([*blobs[:3], bad], [*tails[:3], tails[0]])
        assert "canary" not in str(info.value)

    def test_new_keys_are_wrapped_with_one_python_call_each(self) -> None:
        """A batch of new keys makes one Python call per key (its record), no helper calls.

        Counted with ``sys.setprofile``; the keys unwrap again (same
        associated data as the single-key path).
        """
        keyring = Keyring.generate()
        subjects = [b"u" + uuid.uuid4().bytes for _ in range(100)]
        keyring._new_subject_records([b"warm"])  # the wrapping key, derived once
        calls: list[str] = []

        def profile(frame: Any, event: str, arg: Any) -> None:
            # custdata's own code only: a garbage collection during the call
            # runs other packages' callbacks (Hypothesis registers one).
            if event == "call" and "/custdata/" in frame.f_code.co_filename:
                calls.append(frame.f_code.co_name)

        sys.setprofile(profile)
        try:
            records, keys = keyring._new_subject_records(subjects)
        finally:
            sys.setprofile(None)
        assert len(calls) <= len(subjects) + 5, sorted(set(calls))
        assert keys == [keyring._unwrap_subject_key(r) for r in records]

    def test_another_keyrings_shred_reaches_this_cache(self) -> None:
        """Two keyrings over one store (two processes): a shred by one is seen by the other."""
        keyring = Keyring.generate()
        other = Keyring.from_json(keyring.export_insecure())  # same keys, own caches
        store = InMemorySubjectKeyStore()
        cipher = keyring.field_cipher(
            table="t", column="c", codec=codec_for(str), subject_keys=store
        )
        alice, bob = uuid.uuid4(), uuid.uuid4()
        a, b = cipher.encrypt_many(["canary-a", "canary-b"], [alice, bob])
        assert "canary-a" == cipher.decrypt(a, alice)  # cached now
        assert 1 == other.shred_subjects([alice, alice], store)
        with pytest.raises(KeyDestroyedError) as info:
            cipher.decrypt(a, alice)
        assert "canary" not in str(info.value)
        assert "canary-b" == cipher.decrypt(b, bob)

    def test_file_store_batch_writes_once(self, tmp_path: Path) -> None:
        """A batch of new keys or shreds rewrites the file once, not per subject."""
        store = FileSubjectKeyStore(tmp_path / "subjects.json")
        writes: list[int] = []
        persist = store._persist

        def counted() -> None:
            writes.append(1)
            persist()

        store._persist = counted  # type: ignore[method-assign]
        keyring = Keyring.generate()
        subjects = [uuid.uuid4() for _ in range(20)]
        cipher = keyring.field_cipher(
            table="t", column="c", codec=codec_for(str), subject_keys=store
        )
        cipher.encrypt_many(["x"] * 20, subjects)
        assert 20 == keyring.shred_subjects(subjects, store)
        assert 2 == len(writes)
        again = FileSubjectKeyStore(tmp_path / "subjects.json")
        assert all(r.destroyed for r in again.records())

    def test_rejects_a_bad_cache_size(self) -> None:
        """A scope without room for one key is a ValueError."""
        from custdata.crypto import SubjectKeyScope

        with pytest.raises(ValueError, match="max_entries"):
            SubjectKeyScope(
                Keyring.generate(), InMemorySubjectKeyStore(), max_entries=0
            )
