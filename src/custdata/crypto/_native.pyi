from collections.abc import Callable
from typing import final

@final
class AesGcm:
    def __init__(self, key: bytes) -> None: ...
    def encrypt(
        self, nonce: bytes, data: bytes, associated_data: bytes | None, /
    ) -> bytes: ...
    def decrypt(
        self, nonce: bytes, data: bytes, associated_data: bytes | None, /
    ) -> bytes: ...
    def open(
        self, blob: bytes, start: int, prefix: bytes, tail: bytes | None, /
    ) -> bytes: ...
    def open_text(
        self, blob: bytes, start: int, prefix: bytes, tail: bytes | None, /
    ) -> str | bytes: ...
    def seal(
        self,
        header: bytes,
        nonce: bytes,
        frame: bytes,
        prefix: bytes,
        tail: bytes | None,
        /,
    ) -> bytes: ...

@final
class Reader:
    def __init__(
        self,
        keys: dict[bytes, tuple[AesGcm, bytes, bytes]],
        start: int,
        fallback: Callable[..., object],
        subject_context: bytes,
        held_fallback: Callable[..., object],
        generation: list[int] | None = None,
    ) -> None: ...
    def read(self, blob: object, tail: bytes | None = None, /) -> object: ...
    def held(self, blob: object, tail: object, by_tail: object, /) -> object: ...

def uuid_subjects(
    values: list[object], /
) -> tuple[list[str], list[bytes | None]] | None: ...
