"""No value, key or ciphertext ever appears in an error message or a repr."""

from __future__ import annotations

import base64
import importlib.util
import sys
import uuid

from pathlib import Path
from typing import Any

from hypothesis import given, settings

from custdata import CustdataError
from custdata.crypto import InMemorySubjectKeyStore, Keyring, codec_for


def _load_strategies() -> Any:
    name = "strategies_crypto"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name(f"{name}.py")
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


S = _load_strategies()
KEYRING = Keyring.generate()
STORE = InMemorySubjectKeyStore()


def _errors(canary: str) -> list[BaseException]:
    cipher = KEYRING.field_cipher(
        table="customers", column="email", codec=codec_for(str)
    )
    scoped = KEYRING.field_cipher(
        table="customers", column="name", codec=codec_for(str), subject_keys=STORE
    )
    siv = KEYRING.deterministic_field_cipher(
        table="customers", column="code", codec=codec_for(str)
    )
    blob = cipher.encrypt(canary, canary)
    subject = uuid.uuid4()
    scoped_blob = scoped.encrypt(canary, subject)
    attempts = [
        lambda: cipher.decrypt(blob[:-1] + bytes((blob[-1] ^ 1,)), canary),
        lambda: cipher.decrypt(blob, canary + "x"),
        lambda: cipher.decrypt(blob[:30]),
        lambda: cipher.decrypt(b"\x09" + blob[1:]),
        lambda: codec_for(int).encode(canary),
        lambda: codec_for(str).decode(b"\x02" + canary.encode()),
        lambda: scoped.decrypt(scoped_blob, canary),
        lambda: siv.decrypt(siv.encrypt(canary)[:-1]),
        lambda: KEYRING.blind_index(table="t", column="c").compute(len(canary)),
        lambda: (
            KEYRING.shred_subject(subject, STORE),
            scoped.decrypt(scoped_blob, subject),
        ),
    ]
    errors: list[BaseException] = []
    for attempt in attempts:
        try:
            attempt()
        except (CustdataError, TypeError, ValueError) as exc:
            errors.append(exc)
    return errors


@settings(max_examples=25, deadline=None)
@given(canary=S.canaries)
def test_canary_never_in_errors(canary: str) -> None:
    """A distinctive value never appears in any error's text, args or repr."""
    errors = _errors(canary)
    assert 10 == len(errors)
    for exc in errors:
        text = " ".join([str(exc), repr(exc), repr(exc.args)])
        assert canary not in text
        assert canary.encode().hex() not in text


def test_key_material_never_in_errors_or_reprs() -> None:
    """Key bytes appear in no error message and no repr of any crypto object."""
    import json

    keys = [
        base64.b64decode(k["key"])
        for k in json.loads(KEYRING.export_insecure())["keys"]
        if "key" in k
    ]
    shown = (
        " ".join(str(e) for e in _errors("CANARYvalue0000000"))
        + repr(KEYRING)
        + repr(STORE)
    )
    for key in keys:
        assert key.hex() not in shown
        assert base64.b64encode(key).decode() not in shown
