from typing import Any, final

@final
class Sealer:
    def __init__(
        self,
        key: bytes,
        prefix: bytes,
        label: bytes,
        *,
        cls: type | None = None,
        chain: str | None = None,
        key_ref: str | None = None,
    ) -> None: ...
    def seal(self, seq: int, prev: bytes, body: bytes, /) -> tuple[bytes, bytes]: ...
    def record(self, seq: int, prev: bytes, body: bytes, fields: Any, /) -> Any: ...
    def evolve(self) -> None: ...
    def __copy__(self) -> Sealer: ...

def step(
    key: bytes, prefix: bytes, seq: int, prev: bytes, digest: bytes, /
) -> bytes: ...
def run(
    buf: bytes,
    pos: int,
    end: int,
    head: bytes,
    mid: bytes,
    prefix: bytes,
    label: bytes,
    redact: bytes,
    templates: dict[bytes, list[bytes]],
    fixed: int,
    v2: bool,
    key: bytes,
    seq: int,
    prev: bytes,
    prev_hex: bytes,
    macs: bytearray,
    keys: list[bytes],
    limit: int,
    max_line: int,
    /,
) -> tuple[int, int, bytes, bytes, bytes, bytes] | None: ...
def next_in_order(
    key: bytes,
    prefix: bytes,
    label: bytes,
    seq: int,
    prev: bytes,
    digest: bytes,
    body: bytes | None,
    mac: bytes,
    /,
) -> bytes | None: ...
def v1_line(
    head: bytes,
    seq: int,
    mid: bytes,
    prev: bytes,
    mac: bytes,
    digest: bytes,
    body: bytes,
    /,
) -> bytes: ...
def v2_line(
    head: bytes,
    seq: int,
    mac: bytes,
    mid: bytes,
    values: tuple[Any, ...],
    quoted: bytes,
    /,
) -> bytes | None: ...
def v2_body(
    parts: list[bytes], values: bytes, cls: type[bytes], /
) -> tuple[bytes, bytes] | None: ...
def fill(texts: tuple[bytes, ...], values: tuple[Any, ...], /) -> bytes | None: ...
