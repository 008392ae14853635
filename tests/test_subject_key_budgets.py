"""Per-subject keys within their budgets: the batch paths that make them cheap.

Statement counts are counted with SQLAlchemy events; nothing here is timed.
"""

# ruff: noqa: F811 - the engine and world fixtures are imported

from __future__ import annotations

import datetime as dt
import gc
import math
import uuid

from typing import Any

import pytest

from sqlalchemy import event, select
from sqlalchemy.orm import Session
from tests.sa_fixtures import engine, support  # noqa: F401 - engine is a fixture
from tests.test_sa_subject_keys import CANARY, World, world  # noqa: F401 - fixture

from custdata import DecryptionError, KeyDestroyedError, UnknownKeyError
from custdata.crypto import InMemorySubjectKeyStore, Keyring, codec_for
from custdata.crypto import _keyring as keyring_module
from custdata.crypto._envelope import length_prefixed, subject_bytes


def _cipher(store: Any = None) -> tuple[Keyring, Any, Any]:
    keyring = Keyring.generate()
    store = store if store is not None else InMemorySubjectKeyStore()
    cipher = keyring.field_cipher(
        table="customers", column="email", codec=codec_for(str), subject_keys=store
    )
    return keyring, store, cipher


def _tail(subject: uuid.UUID) -> bytes:
    return length_prefixed(subject_bytes(subject))


class TestBatchOpening:
    """A fetched batch is opened in one pass; anything odd takes the checked path."""

    def test_a_clean_batch_opens_every_value(self) -> None:
        _, _, cipher = _cipher()
        subjects = [uuid.uuid4() for _ in range(50)]
        values = [f"{CANARY}-{i}" for i in range(50)]
        blobs = cipher.encrypt_many(values, subjects)
        assert values == cipher.open_fetched(blobs, [_tail(s) for s in subjects])

    def test_none_values_and_rows_without_a_subject_read_as_none(self) -> None:
        _, _, cipher = _cipher()
        a, b = uuid.uuid4(), uuid.uuid4()
        blobs = cipher.encrypt_many(["a", "b"], [a, b])
        got = cipher.open_fetched(
            [blobs[0], None, blobs[1], blobs[0]], [_tail(a), _tail(b), _tail(b), None]
        )
        assert ["a", None, "b", None] == got

    def test_a_destroyed_subject_in_a_batch_raises_key_destroyed(self) -> None:
        keyring, store, cipher = _cipher()
        a, b = uuid.uuid4(), uuid.uuid4()
        blobs = cipher.encrypt_many([CANARY, "b"], [a, b])
        keyring.shred_subjects([a], store)
        with pytest.raises(KeyDestroyedError) as info:
            cipher.open_fetched(blobs, [_tail(a), _tail(b)])
        assert CANARY not in str(info.value)

    def test_a_value_moved_to_another_subject_fails_in_a_batch(self) -> None:
        _, _, cipher = _cipher()
        a, b = uuid.uuid4(), uuid.uuid4()
        blobs = cipher.encrypt_many([CANARY, "b"], [a, b])
        # a's value in b's row: b's key (another key id in the header) refuses it.
        with pytest.raises((UnknownKeyError, DecryptionError)) as info:
            cipher.open_fetched([blobs[1], blobs[0]], [_tail(b), _tail(b)])
        assert CANARY not in str(info.value)

    def test_a_truncated_or_tampered_value_fails_with_its_reason(self) -> None:
        _, _, cipher = _cipher()
        a = uuid.uuid4()
        (blob,) = cipher.encrypt_many([CANARY], [a])
        with pytest.raises(DecryptionError, match="truncated"):
            cipher.open_fetched([blob[:20]], [_tail(a)])
        tampered = blob[:-1] + bytes([blob[-1] ^ 1])
        with pytest.raises(DecryptionError, match="authentication failed"):
            cipher.open_fetched([tampered], [_tail(a)])
        header = bytearray(blob)
        header[2] ^= 1  # another key id: never opened with the subject's key
        with pytest.raises(UnknownKeyError):
            cipher.open_fetched([bytes(header)], [_tail(a)])

    def test_text_where_an_envelope_belongs_is_a_decryption_error(self) -> None:
        _, _, cipher = _cipher()
        a = uuid.uuid4()
        cipher.encrypt_many(["x"], [a])
        with pytest.raises(DecryptionError):
            cipher.open_fetched(["not an envelope"], [_tail(a)])


class TestCacheEntries:
    def test_cached_keys_are_not_tracked_by_the_garbage_collector(self) -> None:
        """A full cache adds nothing to the work of a garbage collection."""
        keyring, store, cipher = _cipher()
        subjects = [uuid.uuid4() for _ in range(20)]
        blobs = cipher.encrypt_many(["x"] * 20, subjects)
        scope = keyring.subject_scope(store)
        scope.clear()
        cipher.open_fetched(blobs, [_tail(s) for s in subjects])
        gc.collect()
        cached = [scope.cached(b"u" + s.bytes) for s in subjects]
        assert all(key is not None for key in cached)
        assert not any(gc.is_tracked(key) for key in cached)
        assert CANARY not in repr(scope)

    def test_new_key_ids_are_never_zero(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Key ids come from the batch's one random draw; a zero id is drawn again."""
        keyring = Keyring.generate()
        monkeypatch.setattr(keyring_module.os, "urandom", bytes)
        records, keys = keyring._new_subject_records([b"u1", b"u2"])
        assert all(r.key_id != 0 for r in records)
        assert 2 == len(keys)


class TestFewerStatements:
    @pytest.mark.parametrize("n", [1, 999, 1001])
    def test_new_keys_go_in_one_multi_row_insert_per_thousand(
        self, world: World, n: int
    ) -> None:
        """N new subjects: ceil(N / 1000) INSERTs of the key table, no executemany."""
        seen: list[tuple[str, bool]] = []

        @event.listens_for(world.engine, "before_cursor_execute")
        def _count(
            conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool
        ) -> None:
            if world.key_table in statement and statement.lstrip().upper().startswith(
                "INSERT"
            ):
                seen.append((statement, many))

        before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=2)
        ids = world.add(n)
        assert math.ceil(n / 1000) == len(seen)
        assert not any(many for _, many in seen)
        records = [r for r in world.store.records() if not r.destroyed]
        assert n == len(records)
        after = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)
        # Times survive the hand-rendered statement in each database's format.
        assert all(before <= r.created_at <= after for r in records)
        assert all(r.key_id != 0 and r.destroyed_at is None for r in records)
        world.scope.clear()
        with support(), Session(world.engine) as session:
            names = {c.id: c.name for c in session.scalars(select(world.Client))}
        assert {f"{CANARY}-{k}" for k in range(n)} == {names[i] for i in ids}

    def test_a_subject_that_has_a_key_keeps_it(self, world: World) -> None:
        """The insert skips a subject another writer keyed first; its key is read back."""
        (cid,) = world.add(1)
        (record,) = [r for r in world.store.records() if not r.destroyed]
        other_keyring = Keyring.generate()
        fresh, _ = other_keyring._new_subject_records([record.subject])
        stored = world.store.add_many(fresh)
        assert record.key_id == stored[record.subject].key_id
        assert 1 == len(list(world.store.records()))
        with support(), Session(world.engine) as session:
            assert CANARY + "-0" == session.get(world.Client, cid).name


class TestOneKeyPassPerStatement:
    def test_the_columns_of_a_statement_share_its_keys(
        self, world: World, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The hook's keys serve the first column; the other columns reuse that mapping."""
        from custdata.crypto._subject import SubjectKeyScope

        calls: list[int] = []
        original = SubjectKeyScope.write_keys

        def counting(self: Any, subjects: Any, **kw: Any) -> Any:
            calls.append(len(subjects))
            return original(self, subjects, **kw)

        monkeypatch.setattr(SubjectKeyScope, "write_keys", counting)
        world.add(10)  # two per-subject columns (name, email)
        # One from the statement's hook, one for the first column; none for the second.
        assert [10, 10] == calls

    def test_a_shred_between_columns_is_seen(self, world: World) -> None:
        """Withdrawn keys (a shred in this process) are never reused from the memo."""
        keyring, scope = world.keyring, world.scope
        cipher = keyring.field_cipher(
            table="t", column="c", codec=codec_for(str), subject_keys=world.store
        )
        a = uuid.uuid4()
        tails = [_tail(a)]
        scope.prepare({tails[0][4:]})
        cipher.seal_many(["x"], tails)
        keyring.shred_subjects([a], world.store)
        with pytest.raises(KeyDestroyedError):
            cipher.seal_many(["y"], tails)

    def test_keys_held_for_an_open_transaction_are_not_tracked(
        self, world: World
    ) -> None:
        """Keys held until their transaction ends cost a collection nothing either."""
        with support(), Session(world.engine) as session:
            session.add_all(
                world.Client(id=uuid.uuid4(), name=CANARY, email=f"{k}@x.jp")
                for k in range(5)
            )
            session.flush()
            # A tuple is untracked once its items are: the held entry at the
            # collection after its key's (the order within one is arbitrary).
            gc.collect()
            gc.collect()
            held = list(world.scope._pending.values())
            assert 5 == len(held)
            assert not any(gc.is_tracked(entry) for entry in held)
            session.rollback()
        assert {} == world.scope._pending
        assert {} == world.scope._pending_txns
