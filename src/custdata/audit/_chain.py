"""Per-writer HMAC chains and the sealed record.

Each writer process owns one chain. For the *i*-th event of a chain::

    h_i     = SHA-256(body_i)
    mac_i   = HMAC-SHA256(K_i, "custdata/audit/v1" || 0x00 || chain || 0x00
                               || key_ref || 0x00 || u64be(i) || prev_i || h_i)
    prev_1  = 32 zero bytes;  prev_{i+1} = mac_i
    K_{i+1} = SHA-256("custdata/audit/evolve/v1" || K_i)

The chain id and the key id are MAC inputs, so a record copied into another
chain or relabelled with another key fails to verify.
"""

from __future__ import annotations

import binascii
import copy
import hashlib
import hmac
import struct
import uuid

from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from custdata.crypto._hmac import TRANS_5C, TRANS_36, hmac_pads

from . import _accel
from ._keys import (
    _EVOLVE_LABEL,
    AuditKeySource,
    chain_initial_key,
)
from ._schema import IDENTIFIER


__all__ = [
    "ZERO_MAC",
    "ChainWriter",
    "SealedRecord",
    "compute_mac",
    "mac_prefix",
    "render_line",
]

#: The ``prev`` of the first record of every chain.
ZERO_MAC: Final = bytes(32)
_MAC_LABEL: Final = b"custdata/audit/v1\x00"


_U64 = struct.Struct(">Q").pack
_PAD32: Final = bytes(32)


def compute_mac(  # noqa: PLR0917 - mirrors the MAC formula's inputs
    key: bytes, chain: str, key_ref: str, seq: int, prev: bytes, body_sha256: bytes
) -> bytes:
    """Return the chain MAC of one record (see the module docstring)."""
    msg = b"".join(
        (
            mac_prefix(chain, key_ref),
            _U64(seq),
            prev,
            body_sha256,
        )
    )
    return hmac.digest(key, msg, "sha256")


def mac_prefix(chain: str, key_ref: str) -> bytes:
    """Return the constant start of a chain's MAC input (label, chain, key id)."""
    return b"".join(
        (_MAC_LABEL, chain.encode("utf-8"), b"\x00", key_ref.encode("utf-8"), b"\x00")
    )


#: The decoded body of a record, or the parts of a prepared decision event's
#: body, ``(static, dynamic, template, values)``: :attr:`SealedRecord.fields`
#: merges the first two (a ``None`` *dynamic* means the template's names with
#: the *values*); a compact (v2) JSON-lines sink writes the template's dynamic
#: values, in slot order, from the last two (see
#: :class:`~custdata.audit.JsonLinesSink`).
Fields = (
    dict[str, Any]
    | tuple[Mapping[str, Any], dict[str, Any]]
    | tuple[Mapping[str, Any], dict[str, Any] | None, Any, Sequence[Any]]
)


# Not slotted: the hot path builds a record by setting its __dict__ in one step.
@attrs.frozen(kw_only=True, slots=False)
class SealedRecord:
    """One audit event sealed into its chain.

    Attributes:
        chain: The writer chain's id.
        seq: The position in the chain, from 1.
        key_ref: The id of the audit root key the chain key derives from.
        prev: The MAC of the previous record (zeros for seq 1).
        mac: This record's MAC.
        body: The canonical body bytes the MAC covers.
        body_sha256: SHA-256 of ``body``.

    The decoded body is :attr:`fields` (built on first use).
    """

    chain: str
    seq: int
    key_ref: str
    prev: bytes = attrs.field(repr=False)
    mac: bytes = attrs.field(repr=False)
    body: bytes = attrs.field(repr=False)
    body_sha256: bytes = attrs.field(repr=False)
    _fields: Fields = attrs.field(alias="fields", repr=False, eq=False)

    @property
    def fields(self) -> dict[str, Any]:
        """The decoded body, for derived index columns.

        A prepared decision event arrives in parts, ``(static, dynamic, …)``;
        they are merged here, on first use (the JSON-lines sink
        never needs them).
        """
        fields = self._fields
        if isinstance(fields, tuple):
            dynamic = fields[1]
            if dynamic is None and len(fields) == 4:  # noqa: PLR2004 - a prepared event
                # A decision sealed from its template's values (plain, in slot order).
                dynamic = dict(zip(fields[2].names, fields[3], strict=True))
            fields = {**fields[0], **(dynamic or {})}
            _set_attr(self, "_fields", fields)
        return fields

    @property
    def action(self) -> str:
        """The body's action."""
        return str(self.fields["action"])


_new_object = object.__new__
_set_attr = object.__setattr__


def _new_record(  # noqa: PLR0917 - the record's fields, in order
    chain: str,
    seq: int,
    key_ref: str,
    prev: bytes,
    mac: bytes,
    body: bytes,
    body_sha256: bytes,
    fields: Fields,
) -> SealedRecord:
    """Build a :class:`SealedRecord` without attrs' frozen ``__init__`` (hot path)."""
    record = _new_object(SealedRecord)
    _set_attr(
        record,
        "__dict__",
        {
            "chain": chain,
            "seq": seq,
            "key_ref": key_ref,
            "prev": prev,
            "mac": mac,
            "body": body,
            "body_sha256": body_sha256,
            "_fields": fields,
        },
    )
    return record


_hexlify = binascii.hexlify
# The line of a record with its chain and key id to fill in (see line_format).
_LINE_OF: Final = (
    b'{"custdata_audit":1,"chain":"%s","seq":%%d,"key_ref":"%s","prev":"%%s",'
    b'"mac":"%%s","body_sha256":"%%s","body":%%s}\n'
)
_LINE: Final = _LINE_OF % (b"%s", b"%s")


def line_format(chain: str, key_ref: str) -> bytes:
    """Return the line format of one chain's records: :data:`_LINE`, chain and key filled.

    ``line_format(r.chain, r.key_ref) % (r.seq, hex prev, hex mac, hex
    body_sha256, r.body)`` is :func:`render_line` of a record ``r``: a sink
    renders the lines of one chain with one format made once.
    """
    return _LINE_OF % (
        chain.encode("ascii").replace(b"%", b"%%"),
        key_ref.encode("ascii").replace(b"%", b"%%"),
    )


def line_parts(fmt: bytes) -> tuple[bytes, bytes]:
    """Return the texts of a :func:`line_format` before the seq and from it to ``prev``.

    What the native renderer (``_native.v1_line``) writes around the seq; the
    rest of the line's layout is fixed.
    """
    head, rest = fmt.split(b"%d", 1)
    mid = rest.split(b"%s", 1)[0]
    return head.replace(b"%%", b"%"), mid.replace(b"%%", b"%")


def render_line(record: SealedRecord) -> bytes:
    r"""Render *record* as one JSON line (the stream sink format).

    The envelope keys come first in a fixed order and ``body`` is last, holding
    the exact canonical body bytes, so a verifier can hash the body without
    re-encoding it::

        {"custdata_audit":1,"chain":"…","seq":7,"key_ref":"…","prev":"<hex>",
         "mac":"<hex>","body_sha256":"<hex>","body":{…}}\n

    Chain ids and key ids are identifiers (ASCII, nothing to escape).
    """
    return _LINE % (
        record.chain.encode("ascii"),
        record.seq,
        record.key_ref.encode("ascii"),
        _hexlify(record.prev),
        _hexlify(record.mac),
        _hexlify(record.body_sha256),
        record.body,
    )


class ChainWriter:
    """The state of one writer chain: id, last seq, last MAC and current key.

    Not thread-safe on its own; :class:`~custdata.audit.AuditTrail` holds a lock
    around :meth:`prepare` and :meth:`commit`. The key is never exposed. With
    the native accelerator (:func:`custdata.audit.native_enabled`) the key and
    the record's hashing live in the extension's sealer: one call per record
    and one per key evolution, with the same results as the Python code.
    """

    def __init__(
        self,
        keys: AuditKeySource,
        *,
        deployment: str,
        service: str,
    ) -> None:
        key_id, root = keys.audit_root_key()
        key_ref = str(key_id)
        chain = f"{deployment}/{service}/{uuid.uuid4()}"
        if IDENTIFIER.fullmatch(chain) is None or IDENTIFIER.fullmatch(key_ref) is None:
            raise ValueError("deployment, service and key id must be identifiers")
        self.chain = chain
        self.key_ref = key_ref
        self.seq = 0
        self._prev = ZERO_MAC
        key = chain_initial_key(root, chain)
        self._prefix = mac_prefix(chain, key_ref)
        native = _accel.native
        # With the native accelerator the key lives in the extension alone
        # (one call seals a record, one evolves the key); otherwise here.
        self._sealer = (
            None
            if native is None
            else native.Sealer(
                key,
                self._prefix,
                _EVOLVE_LABEL,
                cls=SealedRecord,
                chain=chain,
                key_ref=key_ref,
            )
        )
        self._key = b"" if native is not None else key
        ipad, self._opad = hmac_pads(self._key) if native is None else (b"", b"")
        # The inner hash always starts with the padded key and the constant prefix.
        self._inner_head = ipad + self._prefix

    def __repr__(self) -> str:
        return f"<ChainWriter chain={self.chain!r} seq={self.seq}>"

    def __copy__(self) -> ChainWriter:
        """An independent writer at the same position (as after ``os.fork``)."""
        twin = _new_object(ChainWriter)
        twin.__dict__.update(self.__dict__)
        if self._sealer is not None:
            twin._sealer = copy.copy(self._sealer)  # noqa: SLF001 - its own kind
        return twin

    def prepare(self, body: bytes, fields: Fields) -> SealedRecord:
        """Seal *body* as the next record without advancing the chain."""
        sealer = self._sealer
        if sealer is not None:
            # The native step builds the record as below (_new_record).
            record: SealedRecord = sealer.record(self.seq + 1, self._prev, body, fields)
            return record
        seq = self.seq + 1
        prev = self._prev
        digest = _sha256(body).digest()
        # HMAC-SHA256(K_i, prefix || u64be(seq) || prev || h) from its padded keys.
        inner = _sha256(b"".join((self._inner_head, _U64(seq), prev, digest)))
        mac = _sha256(self._opad + inner.digest()).digest()
        # _new_record, inlined.
        record = _new_object(SealedRecord)
        _set_attr(
            record,
            "__dict__",
            {
                "chain": self.chain,
                "seq": seq,
                "key_ref": self.key_ref,
                "prev": prev,
                "mac": mac,
                "body": body,
                "body_sha256": digest,
                "_fields": fields,
            },
        )
        return record

    def commit(self, record: SealedRecord) -> None:
        """Advance the chain past *record* and evolve the key (forgetting the old)."""
        if record.seq != self.seq + 1 or record.chain != self.chain:
            raise ValueError("record does not extend this chain")
        self.advance(record.mac)

    def advance(self, mac: bytes) -> None:
        """Advance the chain past the record :meth:`prepare` just sealed (its *mac*).

        The caller holds the record from the last :meth:`prepare` of this
        writer (the trail's hot path, under its lock); :meth:`commit` checks that.
        """
        self.seq += 1
        self._prev = mac
        sealer = self._sealer
        if sealer is not None:
            sealer.evolve()
            return
        # The key evolves and the old one is forgotten; the pads of the new key
        # (hmac_pads, inlined: chain keys are 32 bytes) are ready for the next MAC.
        self._key = key = _sha256(_EVOLVE_LABEL + self._key).digest()
        padded = key + _PAD32
        self._inner_head = padded.translate(TRANS_36) + self._prefix
        self._opad = padded.translate(TRANS_5C)


_sha256 = hashlib.sha256
