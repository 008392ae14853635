"""Per-value cost of custdata.crypto, side by side with raw AES-GCM and sqlalchemy-utils.

Run: ``python benchmarks/bench_crypto.py``. Every row is timed in the same process
with ``time.perf_counter_ns`` over many iterations; the figure is the best of
several repeats, in µs per value. Values are short strings (24 and 64 bytes of
UTF-8); envelope, context and type framing are included in the custdata rows.

Budgets (DESIGN.md §6): ≤ 2 µs added on write and ≤ 1 µs added on read over raw
AES-GCM; blind index ≤ 3 µs.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import hmac
import os
import platform
import time

from collections.abc import Callable

import cryptography

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from custdata.crypto import InMemorySubjectKeyStore, Keyring, codec_for, normalize_email


def best_us(fn: Callable[[], object], *, number: int, repeat: int) -> float:
    """Return the best per-call time of ``fn`` in µs over ``repeat`` runs of ``number`` calls."""
    best = float("inf")
    gc.collect()
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter_ns() - start) / number / 1000)
    return best


def best_bulk_us(fn: Callable[[], object], *, count: int, repeat: int) -> float:
    """Per-value time of one bulk call over ``count`` values, best of ``repeat``."""
    return best_us(fn, number=1, repeat=repeat) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=50_000, help="calls per repeat")
    parser.add_argument(
        "--repeat", type=int, default=7, help="repeats; the best is kept"
    )
    args = parser.parse_args()
    number, repeat = args.number, args.repeat

    from sqlalchemy import String
    from sqlalchemy_utils import StringEncryptedType
    from sqlalchemy_utils.types.encrypted.encrypted_type import AesGcmEngine

    keyring = Keyring.generate()
    cipher = keyring.field_cipher(
        table="customers", column="email", codec=codec_for(str)
    )
    det = keyring.deterministic_field_cipher(
        table="customers", column="code", codec=codec_for(str)
    )
    store = InMemorySubjectKeyStore()
    scoped = keyring.field_cipher(
        table="customers", column="name", codec=codec_for(str), subject_keys=store
    )
    bidx = keyring.blind_index(
        table="customers", column="email", normalizer=normalize_email
    )
    bidx_raw = keyring.blind_index(table="customers", column="email")
    utils = StringEncryptedType(String, "a passphrase", AesGcmEngine)

    key = os.urandom(32)
    raw = AESGCM(key)
    aad = b"\x01\x01\x00\x00\x00\x01\x02\x00\x00\x00\x09customers\x00\x00\x00\x05email"
    hmac_key = os.urandom(32)
    subject = "5b3f0a9c-0000-4000-8000-000000000001"

    rows: list[tuple[str, str, float, float | None]] = []

    for size in (24, 64):
        value = ("taro.yamada@example.com" * 3)[: size - 1] + "@"
        data = value.encode()
        nonce = os.urandom(12)
        raw_blob = nonce + raw.encrypt(nonce, data, None)
        raw_blob_aad = nonce + raw.encrypt(nonce, data, aad)
        blob = cipher.encrypt(value)
        blob_subject = cipher.encrypt(value, subject)
        det_blob = det.encrypt(value)
        scoped_blob = scoped.encrypt(value, subject)
        utils_blob = utils.process_bind_param(value, None)
        blobs = [cipher.encrypt(value) for _ in range(10_000)]
        values = [value] * 10_000

        def raw_encrypt(data: bytes = data) -> bytes:
            n = os.urandom(12)
            return n + raw.encrypt(n, data, None)

        def raw_encrypt_aad(data: bytes = data) -> bytes:
            n = os.urandom(12)
            return n + raw.encrypt(n, data, aad)

        t = {
            "raw_enc": best_us(raw_encrypt, number=number, repeat=repeat),
            "raw_enc_aad": best_us(raw_encrypt_aad, number=number, repeat=repeat),
            "raw_dec": best_us(
                lambda b=raw_blob: raw.decrypt(b[:12], b[12:], None),
                number=number,
                repeat=repeat,
            ),
            "raw_dec_aad": best_us(
                lambda b=raw_blob_aad: raw.decrypt(b[:12], b[12:], aad),
                number=number,
                repeat=repeat,
            ),
        }
        w, r = t["raw_enc"], t["raw_dec"]
        rows += [
            (f"{size} B", "raw AESGCM encrypt (random nonce)", w, None),
            (
                f"{size} B",
                "raw AESGCM encrypt (random nonce, 29 B AAD)",
                t["raw_enc_aad"],
                t["raw_enc_aad"] - w,
            ),
            (
                f"{size} B",
                "custdata FieldCipher.encrypt",
                best_us(
                    lambda v=value: cipher.encrypt(v), number=number, repeat=repeat
                ),
                w,
            ),
            (
                f"{size} B",
                "custdata FieldCipher.encrypt (subject-bound)",
                best_us(
                    lambda v=value: cipher.encrypt(v, subject),
                    number=number,
                    repeat=repeat,
                ),
                w,
            ),
            (
                f"{size} B",
                "custdata FieldCipher.encrypt (per-subject key)",
                best_us(
                    lambda v=value: scoped.encrypt(v, subject),
                    number=number,
                    repeat=repeat,
                ),
                w,
            ),
            (
                f"{size} B",
                "custdata FieldCipher.encrypt_many (10k), per value",
                best_bulk_us(
                    lambda v=values: cipher.encrypt_many(v), count=10_000, repeat=repeat
                ),
                w,
            ),
            (
                f"{size} B",
                "custdata DeterministicFieldCipher.encrypt (AES-SIV)",
                best_us(lambda v=value: det.encrypt(v), number=number, repeat=repeat),
                w,
            ),
            (
                f"{size} B",
                "sqlalchemy-utils AesGcmEngine process_bind_param",
                best_us(
                    lambda v=value: utils.process_bind_param(v, None),
                    number=number // 5,
                    repeat=repeat,
                ),
                w,
            ),
            (f"{size} B", "raw AESGCM decrypt", r, None),
            (
                f"{size} B",
                "raw AESGCM decrypt (29 B AAD)",
                t["raw_dec_aad"],
                t["raw_dec_aad"] - r,
            ),
            (
                f"{size} B",
                "custdata FieldCipher.decrypt",
                best_us(lambda b=blob: cipher.decrypt(b), number=number, repeat=repeat),
                r,
            ),
            (
                f"{size} B",
                "custdata FieldCipher.decrypt (subject-bound)",
                best_us(
                    lambda b=blob_subject: cipher.decrypt(b, subject),
                    number=number,
                    repeat=repeat,
                ),
                r,
            ),
            (
                f"{size} B",
                "custdata FieldCipher.decrypt (per-subject key)",
                best_us(
                    lambda b=scoped_blob: scoped.decrypt(b, subject),
                    number=number,
                    repeat=repeat,
                ),
                r,
            ),
            (
                f"{size} B",
                "custdata FieldCipher.decrypt_many (10k), per value",
                best_bulk_us(
                    lambda b=blobs: cipher.decrypt_many(b), count=10_000, repeat=repeat
                ),
                r,
            ),
            (
                f"{size} B",
                "custdata DeterministicFieldCipher.decrypt (AES-SIV)",
                best_us(
                    lambda b=det_blob: det.decrypt(b), number=number, repeat=repeat
                ),
                r,
            ),
            (
                f"{size} B",
                "sqlalchemy-utils AesGcmEngine process_result_value",
                best_us(
                    lambda b=utils_blob: utils.process_result_value(b, None),
                    number=number // 5,
                    repeat=repeat,
                ),
                r,
            ),
            (
                f"{size} B",
                "hmac.digest(key, value, 'sha256')",
                best_us(
                    lambda d=data: hmac.digest(hmac_key, d, hashlib.sha256),
                    number=number,
                    repeat=repeat,
                ),
                None,
            ),
            (
                f"{size} B",
                "custdata BlindIndex.compute (no normalizer)",
                best_us(
                    lambda v=value: bidx_raw.compute(v), number=number, repeat=repeat
                ),
                0.0,
            ),
            (
                f"{size} B",
                "custdata BlindIndex.compute (normalize_email)",
                best_us(lambda v=value: bidx.compute(v), number=number, repeat=repeat),
                0.0,
            ),
        ]

    print("## custdata.crypto per-value costs\n")
    print(
        f"- python {platform.python_version()} ({platform.machine()}), cryptography {cryptography.__version__}"
    )
    print(
        f"- best of {repeat} repeats of {number} calls (sqlalchemy-utils: {number // 5}); µs per value"
    )
    print(
        "- 'added' is the row minus the raw AES-GCM row of the same direction and size;"
    )
    print("  for blind-index rows it is the absolute cost (budget 3 µs)\n")
    print("| size | operation | µs/op | added µs over raw |")
    print("|---|---|---:|---:|")
    for size, name, us, base in rows:
        if base is None:
            added = ""
        elif base == 0.0:
            added = f"{us:.2f} (abs)"
        elif name.startswith("raw"):
            added = f"{base:+.2f}"
        else:
            added = f"{us - base:+.2f}"
        print(f"| {size} | {name} | {us:.2f} | {added} |")


if __name__ == "__main__":
    main()
