r"""Signed checkpoints: Ed25519 notes committing to every chain head.

A checkpoint extends an RFC 6962 Merkle log of all checkpointed records with
the records appended since the previous checkpoint (per chain, the contiguous
run after the previous head, sorted by chain then seq), then signs a
C2SP-style note::

    <origin>
    <tree size>
    <base64 root>
    time <UTC ISO-8601>
    prev <base64 SHA-256 of the previous note, or "-">
    heads <number of chains> <base64 SHA-256 of the canonical heads list>

    — <origin> <base64(4-byte key id || Ed25519 signature)>

The signature covers the text before the blank line. The key id is the first
four bytes of SHA-256(origin || "\\n" || 0x01 || public key); the verifier key
is written ``<origin>+<key id hex>+<base64(0x01 || public key)>``.

An *anchor* stores each note with the heads list it commits to (so a verifier
can name a deleted chain) and the compact range (so a restarted checkpointer
can extend the tree). The anchor must live outside the database's trust domain.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import os
import threading

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

import attrs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ._merkle import MerkleAccumulator, leaf_hash
from ._schema import IDENTIFIER, format_ts, parse_ts
from ._store import TrailSource


__all__ = [
    "Checkpoint",
    "CheckpointAnchor",
    "CheckpointSigner",
    "CheckpointVerifier",
    "Checkpointer",
    "FileAnchor",
    "heads_digest",
]

_DASH: Final = "\u2014"
_VKEY_LEN: Final = 33  # 0x01 || 32-byte Ed25519 public key
_NOTE_LINES: Final = 6


def heads_digest(heads: Sequence[tuple[str, int, bytes]]) -> bytes:
    """Return SHA-256 of the canonical heads list ``[[chain, seq, mac_hex], ...]``."""
    data = json.dumps(
        [[c, s, m.hex()] for c, s, m in sorted(heads)], separators=(",", ":")
    ).encode()
    return hashlib.sha256(data).digest()


def _key_id(origin: str, public: bytes) -> bytes:
    return hashlib.sha256(origin.encode() + b"\n\x01" + public).digest()[:4]


@attrs.frozen(kw_only=True)
class Checkpoint:
    """One signed checkpoint, as read back from an anchor.

    Attributes:
        origin: The log's name.
        tree_size: How many records the Merkle log covers.
        root: The Merkle root.
        time: When it was made.
        prev: SHA-256 of the previous note, ``None`` for the first.
        heads: ``(chain, head_seq, head_mac)`` for every chain, sorted.
        note: The full signed note text.
        subtrees: The compact range of the tree (for extending it).
    """

    origin: str
    tree_size: int
    root: bytes = attrs.field(repr=False)
    time: dt.datetime
    prev: bytes | None = attrs.field(repr=False)
    heads: tuple[tuple[str, int, bytes], ...] = attrs.field(repr=False)
    note: str = attrs.field(repr=False)
    subtrees: tuple[bytes, ...] = attrs.field(repr=False, default=())

    @property
    def note_hash(self) -> bytes:
        """SHA-256 of the note, which the next checkpoint's ``prev`` names."""
        return hashlib.sha256(self.note.encode()).digest()

    def to_record(self) -> str:
        """Render the anchor record: one JSON line with note, heads and range."""
        return json.dumps(
            {
                "note": self.note,
                "heads": [[c, s, m.hex()] for c, s, m in self.heads],
                "range": [h.hex() for h in self.subtrees],
            },
            separators=(",", ":"),
            sort_keys=True,
        )


class CheckpointSigner:
    """Holds the Ed25519 checkpoint signing key (never shown in reprs).

    Args:
        origin: The log's name, e.g. ``"example.com/prod-audit"``.
        private_key: The signing key.
    """

    def __init__(self, origin: str, private_key: Ed25519PrivateKey) -> None:
        if IDENTIFIER.fullmatch(origin) is None or "+" in origin:
            raise ValueError("a checkpoint origin must be an identifier without '+'")
        self.origin = origin
        self._key = private_key
        public = private_key.public_key().public_bytes_raw()
        self._key_id = _key_id(origin, public)
        encoded = base64.b64encode(b"\x01" + public).decode()
        self.verifier_key = f"{origin}+{self._key_id.hex()}+{encoded}"

    def __repr__(self) -> str:
        return f"<CheckpointSigner {self.origin} key_id={self._key_id.hex()}>"

    @classmethod
    def generate(cls, origin: str) -> CheckpointSigner:
        """Create a signer with a fresh key."""
        return cls(origin, Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, origin: str, raw: bytes) -> CheckpointSigner:
        """Load a signer from a 32-byte Ed25519 seed."""
        return cls(origin, Ed25519PrivateKey.from_private_bytes(raw))

    def private_bytes_insecure(self) -> bytes:
        """Return the 32-byte seed, for storing it in a secret store."""
        return self._key.private_bytes_raw()

    def sign(self, body: str) -> str:
        """Return *body* followed by its signature line."""
        sig = self._key.sign(body.encode())
        return f"{body}\n{_DASH} {self.origin} {base64.b64encode(self._key_id + sig).decode()}\n"


class CheckpointVerifier:
    """Checks checkpoint signatures against a pinned verifier key.

    Args:
        verifier_key: ``<origin>+<key id hex>+<base64(0x01 || public key)>``.

    Raises:
        ValueError: The key string is malformed.
    """

    def __init__(self, verifier_key: str) -> None:
        try:
            origin, kid, b64 = verifier_key.strip().split("+", 2)
            raw = base64.b64decode(b64, validate=True)
        except (ValueError, binascii.Error):
            raise ValueError("malformed checkpoint verifier key") from None
        if (
            len(raw) != _VKEY_LEN
            or raw[0] != 1
            or _key_id(origin, raw[1:]).hex() != kid
        ):
            raise ValueError("malformed checkpoint verifier key")
        self.origin = origin
        self._key_id = bytes.fromhex(kid)
        self._public = Ed25519PublicKey.from_public_bytes(raw[1:])

    def __repr__(self) -> str:
        return f"<CheckpointVerifier {self.origin} key_id={self._key_id.hex()}>"

    def verify(self, record: str) -> Checkpoint:
        """Parse an anchor record and check its signature and heads digest.

        Raises:
            ValueError: The record is malformed, signed by another key, its
                signature does not verify, or its heads list does not match.
        """
        try:
            data = json.loads(record)
            note: str = data["note"]
            heads = tuple(
                (str(c), int(s), bytes.fromhex(m)) for c, s, m in data["heads"]
            )
            subtrees = tuple(bytes.fromhex(h) for h in data.get("range", ()))
            body, sigline = note.rstrip("\n").split("\n\n", 1)
            dash, origin, sig_b64 = sigline.split(" ")
            sig = base64.b64decode(sig_b64, validate=True)
            lines = body.split("\n")
            if dash != _DASH or origin != self.origin or lines[0] != origin:
                raise ValueError("not signed for this origin")
            if sig[:4] != self._key_id:
                raise ValueError("signed by another key")
            self._public.verify(sig[4:], (body + "\n").encode())
            tree_size = int(lines[1])
            root = base64.b64decode(lines[2], validate=True)
            tag, when = lines[3].split(" ", 1)
            ptag, prev_s = lines[4].split(" ", 1)
            htag, count, digest = lines[5].split(" ")
            if (tag, ptag, htag) != ("time", "prev", "heads") or len(
                lines
            ) != _NOTE_LINES:
                raise ValueError("malformed checkpoint note")
            if int(count) != len(heads) or base64.b64decode(digest) != heads_digest(
                heads
            ):
                raise ValueError("the heads list does not match the signed note")
        except InvalidSignature:
            raise ValueError("the checkpoint signature does not verify") from None
        except (KeyError, TypeError, binascii.Error) as exc:
            raise ValueError(
                f"malformed checkpoint record ({type(exc).__name__})"
            ) from None
        return Checkpoint(
            origin=origin,
            tree_size=tree_size,
            root=root,
            time=parse_ts(when),
            prev=None if prev_s == "-" else base64.b64decode(prev_s),
            heads=tuple(sorted(heads)),
            note=note,
            subtrees=subtrees,
        )


@runtime_checkable
class CheckpointAnchor(Protocol):
    """Where signed checkpoints are kept, outside the database's trust domain."""

    def append(self, record: str) -> None:
        """Store one anchor record (a JSON line without the newline)."""

    def records(self) -> list[str]:
        """Return every stored anchor record, oldest first."""


class FileAnchor:
    """Keep anchor records as lines of a file (append-only, fsynced).

    Args:
        path: The file; created with mode 0600.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"<FileAnchor {self.path}>"

    def append(self, record: str) -> None:
        """Append *record* and fsync."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, record.encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    def records(self) -> list[str]:
        """Return the stored records (none when the file does not exist)."""
        if not self.path.exists():
            return []
        return [ln for ln in self.path.read_text().splitlines() if ln.strip()]


class Checkpointer:
    """Make signed checkpoints over a stored trail and push them to an anchor.

    Only one checkpointer should be active per trail (a leader, cron job or
    sidecar). On start it resumes from the anchor's last record.

    Args:
        source: The stored trail (JSON-lines file or audit tables).
        signer: The checkpoint signing key.
        anchor: Where checkpoints go.
        db_copy: Also insert each checkpoint into this ``(engine, table)``.
    """

    def __init__(
        self,
        source: TrailSource,
        signer: CheckpointSigner,
        anchor: CheckpointAnchor,
        *,
        db_copy: tuple[object, object] | None = None,
    ) -> None:
        self.source = source
        self.signer = signer
        self.anchor = anchor
        self._db_copy = db_copy
        self._lock = threading.Lock()
        self._heads: dict[str, tuple[int, bytes]] = {}
        self._tree = MerkleAccumulator()
        self._prev: bytes | None = None
        self.last: Checkpoint | None = None
        records = anchor.records()
        if records:
            last = CheckpointVerifier(signer.verifier_key).verify(records[-1])
            self._heads = {c: (s, m) for c, s, m in last.heads}
            self._tree = MerkleAccumulator(last.tree_size, last.subtrees)
            self._prev = last.note_hash
            self.last = last

    def __repr__(self) -> str:
        return f"<Checkpointer {self.signer.origin} size={self._tree.size}>"

    def checkpoint(self, *, now: dt.datetime | None = None) -> Checkpoint:
        """Extend the log with the records stored since the last checkpoint and sign.

        A heartbeat (no new records) is signed too, so silence is evidence.

        Args:
            now: The checkpoint time; the wall clock when omitted.

        Returns:
            The new checkpoint, already stored in the anchor.
        """
        when = now if now is not None else dt.datetime.now(dt.timezone.utc)
        with self._lock:
            heads_seq = {c: s for c, (s, _) in self._heads.items()}
            self._extend(self.source.entries_after(heads_seq), heads_seq)
            heads = tuple(sorted((c, s, m) for c, (s, m) in self._heads.items()))
            root = self._tree.root()
            prev = "-" if self._prev is None else base64.b64encode(self._prev).decode()
            body = "\n".join(
                (
                    self.signer.origin,
                    str(self._tree.size),
                    base64.b64encode(root).decode(),
                    f"time {format_ts(when)}",
                    f"prev {prev}",
                    f"heads {len(heads)} {base64.b64encode(heads_digest(heads)).decode()}",
                )
            )
            note = self.signer.sign(body + "\n")
            cp = Checkpoint(
                origin=self.signer.origin,
                tree_size=self._tree.size,
                root=root,
                time=when,
                prev=self._prev,
                heads=heads,
                note=note,
                subtrees=tuple(self._tree.subtrees),
            )
            self.anchor.append(cp.to_record())
            self._prev = cp.note_hash
            self.last = cp
            if self._db_copy is not None:
                self._copy_to_db(cp)
            return cp

    def _extend(
        self,
        entries: Iterator[tuple[str, int, bytes | None]],
        heads: Mapping[str, int],
    ) -> None:
        """Append each chain's run of records from its head, reading *entries* once.

        *entries* come in checkpoint order (chain, then seq), so a chain's
        leaves are appended as they are read: nothing is held but the record
        being looked at. A chain's run ends at its first gap or record without
        a MAC; of records repeating a position, the last read counts.

        Raises:
            ValueError: *entries* are not in checkpoint order.
        """
        append = self._tree.append
        chain: str | None = None
        # The chain's next seq to append and the MAC appended last; whether
        # its run has ended (a gap); the record read last (final once the
        # seq changes: of records repeating a position, the last counts).
        expect, top, stopped = 0, b"", False
        held_seq, held_mac = -1, None
        for name, seq, mac in entries:
            if name != chain:
                if chain is not None:
                    if name < chain:
                        raise ValueError(
                            "the trail source's entries are not in chain order"
                        )
                    self._end_run(chain, held_seq, held_mac, expect, top, stopped)
                chain, expect, top, stopped = name, heads.get(name, 0) + 1, b"", False
            elif seq != held_seq:
                if seq < held_seq:
                    raise ValueError("the trail source's entries are not in seq order")
                if stopped:
                    pass
                elif held_seq == expect and held_mac is not None:
                    append(leaf_hash(name, held_seq, held_mac))
                    top = held_mac
                    expect += 1
                elif held_seq > expect:
                    stopped = True
            held_seq, held_mac = seq, mac
        if chain is not None:
            self._end_run(chain, held_seq, held_mac, expect, top, stopped)

    def _end_run(  # noqa: PLR0917 - _extend's state, in order
        self,
        chain: str,
        seq: int,
        mac: bytes | None,
        expect: int,
        top: bytes,
        stopped: bool,
    ) -> None:
        """End *chain*'s run with the record read last, and record its new head."""
        if not stopped and seq == expect and mac is not None:
            self._tree.append(leaf_hash(chain, seq, mac))
            self._heads[chain] = (seq, mac)
        elif top:
            self._heads[chain] = (expect - 1, top)

    def _copy_to_db(self, cp: Checkpoint) -> None:
        import sqlalchemy as sa  # noqa: PLC0415 - only needed with a database copy

        engine, table = self._db_copy  # type: ignore[misc]
        assert isinstance(engine, sa.Engine)  # noqa: S101 - typed by construction
        assert isinstance(table, sa.Table)  # noqa: S101
        created = cp.time.astimezone(dt.timezone.utc)
        if engine.dialect.name != "postgresql":
            created = created.replace(tzinfo=None)
        with engine.begin() as conn:
            conn.execute(
                table.insert(),
                {
                    "tree_size": cp.tree_size,
                    "note": cp.note,
                    "heads": cp.to_record(),
                    "created_at": created,
                },
            )
