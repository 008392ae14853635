"""The keyring: files, rotation, retirement, derived keys and what it never shows."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os

from pathlib import Path
from typing import Any

import pytest

from custdata import ConfigurationError, DecryptionError, UnknownKeyError
from custdata.crypto import KeyKind, Keyring, KeyStatus, _aead, _kdf, codec_for


NOW = dt.datetime(2026, 11, 29, 12, tzinfo=dt.timezone.utc)


def _material(keyring: Keyring) -> list[bytes]:
    document = json.loads(keyring.export_insecure())
    return [base64.b64decode(k["key"]) for k in document["keys"] if "key" in k]


class TestFile:
    def test_save_creates_0600_and_loads(self, tmp_path: Path) -> None:
        """save writes a 0600 file that load reads back with the same keys."""
        keyring = Keyring.generate(now=NOW)
        path = tmp_path / "keyring.json"
        keyring.save(path)
        loaded = Keyring.load(path)
        assert (0o600, keyring.keys, keyring.primary_key_id) == (
            path.stat().st_mode & 0o777,
            loaded.keys,
            loaded.primary_key_id,
        )
        blob = keyring.field_cipher(
            table="t", column="c", codec=codec_for(str)
        ).encrypt("v")
        assert "v" == loaded.field_cipher(
            table="t", column="c", codec=codec_for(str)
        ).decrypt(blob)

    def test_save_without_overwrite_refuses(self, tmp_path: Path) -> None:
        """save(overwrite=False) never replaces an existing keyring."""
        path = tmp_path / "keyring.json"
        Keyring.generate().save(path)
        with pytest.raises(FileExistsError):
            Keyring.generate().save(path, overwrite=False)

    @pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o620])
    def test_load_refuses_group_or_world_access(
        self, tmp_path: Path, mode: int
    ) -> None:
        """A keyring file readable or writable by group or others is refused."""
        path = tmp_path / "keyring.json"
        Keyring.generate().save(path)
        path.chmod(mode)
        with pytest.raises(ConfigurationError, match="chmod 600") as info:
            Keyring.load(path)
        assert str(path) == info.value.path

    def test_load_missing_file(self, tmp_path: Path) -> None:
        """A missing file is a configuration error naming the file."""
        with pytest.raises(ConfigurationError) as info:
            Keyring.load(tmp_path / "absent.json")
        assert str(tmp_path / "absent.json") == info.value.path

    @pytest.mark.parametrize(
        ("mutate", "key_path"),
        [
            (lambda d: d.update(format="other"), "format"),
            (lambda d: d.update(version=2), "version"),
            (lambda d: d.update(keys={}), "keys"),
            (lambda d: d.update(kek=3), "kek"),
            (lambda d: d["keys"][0].update(id=0), "keys[0].id"),
            (lambda d: d["keys"][0].update(id=2**32), "keys[0].id"),
            (lambda d: d["keys"][0].update(id=True), "keys[0].id"),
            (lambda d: d["keys"][0].update(kind="hmac"), "keys[0].kind"),
            (lambda d: d["keys"][0].update(status="spare"), "keys[0].status"),
            (
                lambda d: d["keys"][0].update(created_at="yesterday"),
                "keys[0].created_at",
            ),
            (
                lambda d: d["keys"][0].update(created_at="2026-01-01T00:00:00"),
                "keys[0].created_at",
            ),
            (lambda d: d["keys"][0].update(key="not base64!"), "keys[0].key"),
            (
                lambda d: d["keys"][0].update(key=base64.b64encode(bytes(16)).decode()),
                "keys[0].key",
            ),
            (lambda d: d["keys"][0].pop("key"), "keys[0]"),
            (lambda d: d["keys"][0].update(status="active"), "keys"),
            (lambda d: d["keys"].append(dict(d["keys"][0], status="active")), "keys"),
            (lambda d: d["keys"].__setitem__(0, "x"), "keys[0]"),
        ],
        ids=lambda v: v if isinstance(v, str) else "",
    )
    def test_malformed_document(self, mutate: Any, key_path: str) -> None:
        """Each malformation is refused eagerly with the place in the document."""
        document = json.loads(Keyring.generate().export_insecure())
        mutate(document)
        with pytest.raises(ConfigurationError) as info:
            Keyring.from_json(json.dumps(document), source="kr.json")
        assert ("kr.json", key_path) == (info.value.path, info.value.key_path)

    def test_not_json(self) -> None:
        """Text that is not JSON is a configuration error."""
        with pytest.raises(ConfigurationError):
            Keyring.from_json("{")


class TestSecrecy:
    def test_repr_shows_no_key_material(self) -> None:
        """Neither the keyring nor its ciphers, indexes or infos show key bytes."""
        keyring = Keyring.generate()
        shown = " ".join(
            [
                repr(keyring),
                str(keyring),
                repr(keyring.keys),
                repr(keyring.field_cipher(table="t", column="c", codec=codec_for(str))),
                repr(keyring.blind_index(table="t", column="c")),
                repr(keyring.cache),
            ]
        )
        for key in _material(keyring):
            for form in (key.hex(), base64.b64encode(key).decode(), repr(key)[2:-1]):
                assert form not in shown
        assert str(keyring.primary_key_id) in shown

    def test_no_public_attribute_exposes_keys(self) -> None:
        """No public attribute of a keyring holds key bytes."""
        keyring = Keyring.generate()
        material = set(_material(keyring))
        public = [
            getattr(keyring, n)
            for n in dir(keyring)
            if not n.startswith("_") and not callable(getattr(keyring, n))
        ]
        assert not any(v in material for v in public if isinstance(v, bytes))

    def test_export_insecure_round_trips(self) -> None:
        """export_insecure is the one way out for key material, and from_json reads it back."""
        keyring = Keyring.generate()
        again = Keyring.from_json(keyring.export_insecure())
        blob = keyring.field_cipher(
            table="t", column="c", codec=codec_for(int)
        ).encrypt(7)
        assert 7 == again.field_cipher(
            table="t", column="c", codec=codec_for(int)
        ).decrypt(blob)


class TestDerivedKeys:
    def test_no_aes_key_is_shared_between_columns_or_uses(self) -> None:
        """Per-column subkeys: every column and use gets its own key; none is a keyring key."""
        keyring = Keyring.generate()
        data, index_key = _material(keyring)
        columns = [
            ("customers", "email"),
            ("customers", "phone"),
            ("orders", "email"),
            ("customer", "semail"),
        ]
        derived = [
            _kdf.column_key(data, _kdf.LABEL_FIELD_GCM, t, c) for t, c in columns
        ]
        derived += [
            _kdf.column_key(data, _kdf.LABEL_FIELD_SIV, t, c, length=64)
            for t, c in columns
        ]
        derived += [
            _kdf.hkdf(data, info=_kdf.LABEL_SUBJECT_WRAP),
            keyring.audit_root_key()[1],
        ]
        derived += [
            _kdf.column_key(index_key, _kdf.LABEL_BLIND_INDEX, t, c) for t, c in columns
        ]
        assert len(derived) == len(set(derived) - set(_material(keyring)))

    def test_one_aead_open_per_value(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Decryption opens exactly once per value, however many old keys exist."""
        opens: list[int] = []
        for name in ("open_envelope", "open_text"):
            real = getattr(_aead, name)

            def counted(*args: Any, real: Any = real) -> Any:
                opens.append(1)
                return real(*args)

            monkeypatch.setattr(_aead, name, counted)
        keyring = Keyring.generate()
        cipher = keyring.field_cipher(table="t", column="c", codec=codec_for(str))
        blobs = [cipher.encrypt("first")]
        for _ in range(20):
            keyring.rotate()
            blobs.append(cipher.encrypt("later"))
        decrypted = [cipher.decrypt(b) for b in blobs] + cipher.decrypt_many(blobs)
        assert (42, 42) == (len(decrypted), len(opens))

    def test_field_cipher_is_cached(self) -> None:
        """field_cipher returns the same object for the same column and codec."""
        keyring = Keyring.generate()
        a = keyring.field_cipher(table="t", column="c", codec=codec_for(str))
        assert a is keyring.field_cipher(table="t", column="c", codec=codec_for(str))


class TestRotation:
    def test_rotate_adds_primary_and_old_keys_decrypt(self) -> None:
        """rotate makes a new primary; values under the old key still decrypt."""
        keyring = Keyring.generate(now=NOW)
        cipher = keyring.field_cipher(table="t", column="c", codec=codec_for(str))
        old_id = keyring.primary_key_id
        old_blob = cipher.encrypt("old")
        new_id = keyring.rotate(now=NOW)
        new_blob = cipher.encrypt("new")
        assert (new_id, old_id, KeyStatus.ACTIVE, ("old", "new")) == (
            int.from_bytes(new_blob[2:6], "big"),
            int.from_bytes(old_blob[2:6], "big"),
            keyring.key_info(old_id).status,
            (cipher.decrypt(old_blob), cipher.decrypt(new_blob)),
        )
        assert (old_id, new_id) == keyring.key_ids

    def test_retired_key_provably_refuses(self, tmp_path: Path) -> None:
        """After retire, values under the key raise UnknownKeyError, also after a reload."""
        keyring = Keyring.generate()
        cipher = keyring.field_cipher(table="t", column="c", codec=codec_for(str))
        old_id = keyring.primary_key_id
        blob = cipher.encrypt("v")
        assert "v" == cipher.decrypt(blob)
        keyring.rotate()
        keyring.retire(old_id, now=NOW)
        with pytest.raises(UnknownKeyError, match="retired"):
            cipher.decrypt(blob)
        keyring.save(tmp_path / "k.json")
        reloaded = Keyring.load(tmp_path / "k.json")
        with pytest.raises(UnknownKeyError, match="retired"):
            reloaded.field_cipher(table="t", column="c", codec=codec_for(str)).decrypt(
                blob
            )
        info = reloaded.key_info(old_id)
        assert (KeyStatus.RETIRED, NOW) == (info.status, info.retired_at)
        assert str(old_id) in (tmp_path / "k.json").read_text()

    def test_retired_key_keeps_audit_root(self) -> None:
        """A retired data key's audit root stays available for verifying old chains."""
        keyring = Keyring.generate()
        old_id, root = keyring.audit_root_key()
        keyring.rotate()
        keyring.retire(old_id)
        again = Keyring.from_json(keyring.export_insecure())
        assert (
            root
            == keyring.audit_root_key_for(old_id)
            == again.audit_root_key_for(str(old_id))
        )
        assert keyring.audit_root_key()[1] != root

    @pytest.mark.parametrize(
        ("target", "error"),
        [
            ("primary", ValueError),
            ("index-primary", ValueError),
            ("unknown", UnknownKeyError),
        ],
    )
    def test_retire_misuse(self, target: str, error: type[Exception]) -> None:
        """Primary keys cannot be retired; unknown ids are unknown."""
        keyring = Keyring.generate()
        key_id = {
            "primary": keyring.primary_key_id,
            "index-primary": keyring.primary_index_key_id,
            "unknown": 7,
        }[target]
        with pytest.raises(error):
            keyring.retire(key_id)

    def test_retire_twice_is_a_no_op(self) -> None:
        """Retiring a retired key changes nothing."""
        keyring = Keyring.generate()
        old = keyring.primary_key_id
        keyring.rotate()
        keyring.retire(old, now=NOW)
        keyring.retire(old)
        assert NOW == keyring.key_info(old).retired_at

    def test_index_keys_rotate_apart_from_data_keys(self) -> None:
        """Data and index keys are separate kinds with their own primary."""
        keyring = Keyring.generate()
        index_id = keyring.primary_index_key_id
        keyring.rotate()
        assert index_id == keyring.primary_index_key_id
        new_index = keyring.rotate_index_key()
        assert (KeyKind.INDEX, (index_id, new_index)) == (
            keyring.key_info(new_index).kind,
            keyring.index_key_ids,
        )
        with pytest.raises(UnknownKeyError):
            keyring.audit_root_key_for(new_index)

    def test_key_ids_are_unique(self) -> None:
        """Key ids never repeat within a keyring."""
        keyring = Keyring.generate()
        for _ in range(50):
            keyring.rotate()
        ids = [k.key_id for k in keyring.keys]
        assert len(ids) == len(set(ids))

    def test_aware_now_required(self) -> None:
        """now= must be an aware datetime."""
        with pytest.raises(ValueError, match="aware"):
            Keyring.generate(now=dt.datetime(2026, 1, 1))


class TestDeterministic:
    def test_equal_values_equal_envelopes_within_a_column(self) -> None:
        """AES-SIV gives equal envelopes for equal values in one column, different across columns."""
        keyring = Keyring.generate()
        a = keyring.deterministic_field_cipher(
            table="t", column="a", codec=codec_for(str)
        )
        b = keyring.deterministic_field_cipher(
            table="t", column="b", codec=codec_for(str)
        )
        assert a.encrypt("v") == a.encrypt("v")
        assert a.encrypt("v") != b.encrypt("v")
        assert a.encrypt("v", "s1") != a.encrypt("v", "s2")
        assert ("v", 2) == (a.decrypt(a.encrypt("v")), a.encrypt("v")[1])
        with pytest.raises(DecryptionError):
            b.decrypt(a.encrypt("v"))

    def test_candidates_span_rotation(self) -> None:
        """candidates gives the envelope under every usable data key, primary first."""
        keyring = Keyring.generate()
        cipher = keyring.deterministic_field_cipher(
            table="t", column="a", codec=codec_for(str)
        )
        before = cipher.encrypt("v")
        keyring.rotate()
        after = cipher.encrypt("v")
        assert (after, before) == cipher.candidates("v")

    def test_randomized_and_deterministic_do_not_mix(self) -> None:
        """Each cipher refuses the other's envelopes."""
        keyring = Keyring.generate()
        det = keyring.deterministic_field_cipher(
            table="t", column="a", codec=codec_for(str)
        )
        rnd = keyring.field_cipher(table="t", column="a", codec=codec_for(str))
        with pytest.raises(DecryptionError):
            rnd.decrypt(det.encrypt("v" * 20))
        with pytest.raises(DecryptionError):
            det.decrypt(rnd.encrypt("v"))

    def test_corruption(self) -> None:
        """Every bit flip and truncation of a deterministic envelope fails."""
        keyring = Keyring.generate()
        cipher = keyring.deterministic_field_cipher(
            table="t", column="a", codec=codec_for(str)
        )
        blob = cipher.encrypt("x" * 20)
        for i in range(len(blob) * 8):
            flipped = bytearray(blob)
            flipped[i // 8] ^= 1 << (i % 8)
            with pytest.raises(DecryptionError):
                cipher.decrypt(bytes(flipped))
        for length in range(len(blob)):
            with pytest.raises(DecryptionError):
                cipher.decrypt(blob[:length])


def test_key_file_never_world_readable_even_briefly(tmp_path: Path) -> None:
    """The temporary file save writes through is 0600 from creation (umask 0)."""
    old = os.umask(0)
    try:
        Keyring.generate().save(tmp_path / "k.json")
    finally:
        os.umask(old)
    assert 0o600 == (tmp_path / "k.json").stat().st_mode & 0o777
