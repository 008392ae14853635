"""RFC 6962 Merkle tree hashing over chain records, kept as a compact range.

Leaves and nodes follow RFC 6962 §2.1 with custdata's leaf input::

    leaf(chain, seq, mac) = SHA-256(0x00 || chain || 0x00 || u64be(seq) || mac)
    node(left, right)     = SHA-256(0x01 || left || right)
    MTH({})               = SHA-256("")

The accumulator keeps one hash per perfect subtree (at most 64), so appending
is O(1) amortised and the root is O(log n) at any size.
"""

from __future__ import annotations

import hashlib

from collections.abc import Sequence
from typing import Final


__all__ = ["MerkleAccumulator", "leaf_hash", "node_hash"]

_EMPTY: Final = hashlib.sha256(b"").digest()


def leaf_hash(chain: str, seq: int, mac: bytes) -> bytes:
    """Return the RFC 6962 leaf hash of one chain record."""
    return hashlib.sha256(
        b"\x00" + chain.encode("utf-8") + b"\x00" + seq.to_bytes(8, "big") + mac
    ).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 interior node hash."""
    return hashlib.sha256(b"\x01" + left + right).digest()


class MerkleAccumulator:
    """An append-only RFC 6962 tree held as its compact range.

    Args:
        size: The number of leaves already in the tree.
        subtrees: The perfect-subtree hashes of that tree, left to right (one per
            set bit of *size*, largest first).
    """

    def __init__(self, size: int = 0, subtrees: Sequence[bytes] = ()) -> None:
        if size.bit_count() != len(subtrees):
            raise ValueError("compact range does not match the tree size")
        self.size = size
        sizes = [1 << b for b in range(size.bit_length() - 1, -1, -1) if size >> b & 1]
        self._stack: list[tuple[int, bytes]] = list(zip(sizes, subtrees, strict=True))

    def __repr__(self) -> str:
        return f"<MerkleAccumulator size={self.size}>"

    @property
    def subtrees(self) -> list[bytes]:
        """The compact range, left to right."""
        return [h for _, h in self._stack]

    def append(self, leaf: bytes) -> None:
        """Append a leaf hash."""
        stack = self._stack
        size, h = 1, leaf
        while stack and stack[-1][0] == size:
            left_size, left = stack.pop()
            h = node_hash(left, h)
            size += left_size
        stack.append((size, h))
        self.size += 1

    def root(self) -> bytes:
        """Return the tree head (``SHA-256("")`` for the empty tree)."""
        if not self._stack:
            return _EMPTY
        h = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            h = node_hash(left, h)
        return h
