"""Field encryption in a few lines: a keyring, a column, rotation and shredding.

Run: ``python examples/crypto_basics.py`` (writes only to a temporary folder).
"""

from __future__ import annotations

import tempfile
import uuid

from pathlib import Path

from custdata import KeyDestroyedError, UnknownKeyError
from custdata.crypto import (
    FileSubjectKeyStore,
    Keyring,
    codec_for,
    envelope_key_id,
    normalize_email,
)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "keyring.json"
        Keyring.generate().save(path)  # what `custdata keys init PATH` does
        keyring = Keyring.load(path)

        email = keyring.field_cipher(
            table="customers", column="email", codec=codec_for(str)
        )
        blob = email.encrypt("Taro@Example.com")
        print(
            f"stored {len(blob)} bytes under key {envelope_key_id(blob)}: {blob.hex()[:40]}..."
        )
        print("decrypted:", email.decrypt(blob))

        index = keyring.blind_index(
            table="customers", column="email", normalizer=normalize_email
        )
        print(
            "blind index matches:",
            index.compute("Taro@Example.com") in index.candidates("taro@example.com"),
        )

        old_key = keyring.primary_key_id
        keyring.rotate()
        print("after rotate, old value still decrypts:", email.decrypt(blob))
        keyring.retire(old_key)
        try:
            email.decrypt(blob)
        except UnknownKeyError as exc:
            print("after retire:", exc)

        store = FileSubjectKeyStore(Path(folder) / "subject-keys.json")
        notes = keyring.field_cipher(
            table="customers", column="notes", codec=codec_for(str), subject_keys=store
        )
        customer = uuid.uuid4()
        note = notes.encrypt("prefers phone calls", subject=customer)
        keyring.shred_subject(customer, store)
        try:
            notes.decrypt(note, subject=customer)
        except KeyDestroyedError:
            print("after shred_subject: the customer's values are gone for good")


if __name__ == "__main__":
    main()
