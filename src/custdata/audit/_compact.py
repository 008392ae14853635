r"""The compact JSON-lines format (v2): what repeats is written once per chain.

A v2 file holds the same sealed records as a v1 file (the same chains, MACs and
canonical bodies), written with less repetition. Three kinds of line::

    {"@chain":"<cid>","chain":"<chain id>","key_ref":"<key id>","custdata_audit":2}
    {"@tpl":"<cid>","t":<n>,"texts":["<static text>", …]}
    {"@":"<cid>","s":<seq>,"m":"<MAC, base64>","t":<n>,"d":[<value>, …]}

A *declaration* names a chain once per file by a short id (``cid``, 12 hex
digits of the SHA-256 of the chain id). A *template* holds the static texts of
a prepared decision event's canonical body (action, actor, purpose, entity,
fields, categories, policy version…), cut where its dynamic values go (event
id, time, subjects, count, request id). A *record* gives its chain's short id,
its seq, its MAC and its template's dynamic values; the canonical body is
``texts[0] + d[0] + texts[1] + … + texts[-1]`` with each value as its JSON text.
A record of any other event carries its body whole (``"b":{…}``), and a
redacted record its body's digest (``"h":"<hex>"``) instead.

Nothing the MAC covers is dropped: the body is rebuilt byte for byte and
hashed; ``prev`` is the MAC of the chain's previous record (each MAC covers
it, so it need not be stored), and the body digest is recomputed. Declarations
and templates carry no MAC of their own and need none: any change to them
changes the rebuilt bodies (or the chain or key a record is checked under),
which the MACs then refuse.

``{"@`` never occurs inside a record (bodies have identifier keys, and a quote
inside a JSON string is escaped), so record starts are found as in v1.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re

from typing import Any, Final

from . import _accel
from ._chain import SealedRecord


__all__ = [
    "CHAIN_HEAD",
    "RECORD_HEAD",
    "TEMPLATE_HEAD",
    "V2_HEAD",
    "CompactReader",
    "CompactWriter",
    "DerivedDigest",
    "short_id",
]

#: Every v2 line starts with this; a record line with :data:`RECORD_HEAD`.
V2_HEAD: Final = b'{"@'
RECORD_HEAD: Final = b'{"@":"'
CHAIN_HEAD: Final = b'{"@chain":"'
TEMPLATE_HEAD: Final = b'{"@tpl":"'
_CID_LEN: Final = 12
_RECORD: Final = b'{"@":"%s","s":%d,"m":"%s","t":%d,"d":%s}\n'
_GENERIC: Final = b'{"@":"%s","s":%d,"m":"%s","b":%s}\n'
#: The most templates a writer or reader keeps before it starts afresh.
_TEMPLATES: Final = 4096
#: The MACs per chain a reader keeps to supply ``prev`` (recent seqs only).
_RECENT: Final = 256
_ZERO: Final = bytes(32)
_b64: Final = binascii.b2a_base64
_unb64: Final = binascii.a2b_base64


class DerivedDigest(bytes):
    """A body digest a reader computed from the body it rebuilt (format 2 stores none).

    It equals SHA-256 of the record's body by construction, so a verifier
    need not hash the body again to compare the two.
    """

    __slots__ = ()


def short_id(chain: str) -> bytes:
    """Return the short id a v2 file gives *chain* (12 hex digits of its SHA-256)."""
    return hashlib.sha256(chain.encode("utf-8")).hexdigest()[:_CID_LEN].encode("ascii")


def _mac_text(mac: bytes) -> bytes:
    return _b64(mac, newline=False)


class CompactWriter:
    """Render sealed records as v2 lines, declaring chains and templates on first use.

    A line is not taken as written until :meth:`written` is called (a failed
    or short write leaves the declarations it carried to be written again).
    """

    def __init__(self) -> None:
        self._cids: dict[str, bytes] = {}
        #: (chain, template) → its number and line parts (see :meth:`_template`).
        self._templates: dict[
            tuple[str, Any], tuple[int, str, bytes, bytes, bytes]
        ] = {}
        #: The native accelerator's line renderer, when it runs (looked up once).
        self._native = _accel.native
        self._next = 0
        #: The declarations the line :meth:`render` returned last carries
        #: (empty for most lines: then :meth:`written` has nothing to do).
        self.pending: list[tuple[Any, Any]] = []

    def reset(self) -> None:
        """Forget every declaration (a new file: they are written again)."""
        self._cids.clear()
        self._templates.clear()

    def render(self, record: SealedRecord) -> bytes:
        """Return the line(s) of *record*: declarations it needs, then the record."""
        fields = record.__dict__["_fields"]
        chain = record.chain
        pending = self.pending
        if pending:
            pending.clear()
        head = b""
        cid = self._cids.get(chain)
        if cid is None:
            cid = short_id(chain)
            head = (
                b'{"@chain":"%s","chain":"%s","key_ref":"%s","custdata_audit":2}\n'
                % (
                    cid,
                    chain.encode("ascii"),
                    record.key_ref.encode("ascii"),
                )
            )
            pending.append((chain, cid))
        if fields.__class__ is tuple and len(fields) == 4:  # noqa: PLR2004 - a prepared event
            template, filled = fields[2], fields[3]
            found = self._templates.get((chain, template))
            if found is None:
                found = self._template(cid, template)
                head += b'{"@tpl":"%s","t":%d,"texts":%s}\n' % (
                    cid,
                    found[0],
                    json.dumps(
                        template.compact()[0], ensure_ascii=False, separators=(",", ":")
                    ).encode("utf-8"),
                )
                pending.append(((chain, template), found))
            native = self._native
            # filled is the tuple of the template's values, in slot order; the
            # native renderer writes the same bytes as the %-formats below (or
            # None for a value it does not write).
            line = (
                None
                if native is None
                else native.v2_line(
                    found[2], record.seq, record.mac, found[3], filled, found[4]
                )
            )
            if line is None:
                values = (found[1] % filled).encode("utf-8")
                line = _RECORD % (
                    cid,
                    record.seq,
                    _b64(record.mac, newline=False),
                    found[0],
                    values,
                )
        else:
            line = _GENERIC % (cid, record.seq, _mac_text(record.mac), record.body)
        return head + line if head else line

    def _template(
        self, cid: bytes, template: Any
    ) -> tuple[int, str, bytes, bytes, bytes]:
        """Number *template* for this file and prepare its record line's parts.

        ``(n, values, head, mid, quoted)``: the template's number, the
        ``%``-format of its values (:meth:`_Template.compact`), and for the
        native renderer the line's text before the seq and from the MAC to
        the values, and per value whether it is written between quotes.
        """
        _, fmt = template.compact()
        self._next += 1
        n = self._next
        slots = fmt[1:-1].split(",") if fmt != "[]" else []
        return (
            n,
            fmt,
            b'{"@":"%s","s":' % cid,
            b'","t":%d,"d":[' % n,
            bytes(slot == '"%s"' for slot in slots),
        )

    def written(self) -> None:
        """Note that the line :meth:`render` returned last was written whole."""
        pending = self.pending
        if not pending:
            return
        for key, value in pending:
            if isinstance(key, str):
                self._cids[key] = value
            else:
                if len(self._templates) >= _TEMPLATES:
                    self._templates.clear()
                self._templates[key] = value
        pending.clear()


def redacted_line(cid: bytes, seq: int, mac: bytes, digest: bytes) -> bytes:
    """Return the v2 line of a record whose body was removed (its digest stays)."""
    return b'{"@":"%s","s":%d,"m":"%s","h":"%s"}\n' % (
        cid,
        seq,
        _mac_text(mac),
        binascii.hexlify(digest),
    )


class CompactReader:
    """Read v2 lines back into stored records (stateful: declarations come first).

    :meth:`feed` returns a record tuple ``(chain, seq, key_ref, prev, mac,
    body_sha256, body)`` for a record line, ``None`` for a declaration or
    template, and raises ``ValueError`` for anything else (malformed, or a
    record whose chain or template was never declared).
    """

    def __init__(self) -> None:
        #: cid → (chain, key_ref).
        self.chains: dict[str, tuple[str, str]] = {}
        #: (cid, n) → the template's static texts, UTF-8, with an empty
        #: slot between each two for the value that goes there.
        self.templates: dict[tuple[str, int], list[bytes]] = {}
        #: cid → {seq: mac} of the chain's recent records.
        self._recent: dict[str, dict[int, bytes]] = {}
        #: The short id as read → (chain, key_ref, its recent MACs), for
        #: the chains read so far (forgotten when a chain is declared:
        #: :attr:`chains` is filled before the first record is read).
        self._known: dict[bytes, tuple[str, str, dict[int, bytes]]] = {}
        #: The native accelerator, when it runs (looked up once).
        self._native = _accel.native

    def recent(self, cid: str) -> dict[int, bytes]:
        """The MACs of chain *cid*'s recent records, by seq (to supply ``prev``)."""
        return self._recent.setdefault(cid, {})

    def feed(
        self, line: bytes
    ) -> tuple[str, int, str, bytes | None, bytes, bytes, bytes | None, bytes] | None:
        """Interpret one v2 line (without its newline).

        Returns ``(chain, seq, key_ref, prev, mac, body_sha256, body, cid)``
        for a record, or ``None`` for a declaration or template. A record line
        must have exactly the writer's layout: its values are body bytes, used
        as they stand (as a v1 body is), never re-encoded.

        Raises:
            ValueError: The line is not a v2 line this reader can use.
            TypeError: The same, for a JSON value of the wrong type.
            RecursionError: Absurdly nested JSON (callers treat it as malformed).
        """
        body: bytes | None
        # The common line, a template record, in one match; any other is
        # read by _other_line.
        m = _TEMPLATE_RECORD.match(line)
        if m is None:
            other = self._other_line(line)
            if other is None:
                return None
            cid_b, seq, mac, digest, body = other
        else:
            cid_b, seq_b, mac_text, n_b, text = m.groups()
            seq = int(seq_b)
            mac = _unb64(mac_text)
            parts = self.templates[cid_b.decode("ascii"), int(n_b)]
            native = self._native
            # The native fill gives the same bytes for values without a comma
            # inside (None otherwise, or without the extension).
            filled = None if native is None else native.v2_body(parts, text, _derived)
            if filled is not None:
                body, digest = filled
            else:
                parts = parts.copy()
                values = text.split(b",")  # split_values' common case, inlined
                if len(values) * 2 + 1 != len(parts):
                    found = split_values(text, len(parts) // 2)
                    if found is None:
                        raise ValueError("template values do not fit")
                    values = found
                parts[1::2] = values
                body = b"".join(parts)
                digest = _derived(hashlib.sha256(body).digest())
        known = self._known.get(cid_b)
        if known is None:
            known = self._know(cid_b)
        chain, key_ref, recent = known
        prev = _ZERO if seq == 1 else recent.get(seq - 1)
        if seq not in recent:
            if len(recent) >= _RECENT:
                for old in sorted(recent)[: _RECENT // 2]:
                    del recent[old]
            recent[seq] = mac
        return chain, seq, key_ref, prev, mac, digest, body, cid_b

    def _know(self, cid_b: bytes) -> tuple[str, str, dict[int, bytes]]:
        """Return (and remember) chain *cid_b*'s declaration and recent MACs.

        Raises:
            KeyError: The chain was never declared.
        """
        cid = cid_b.decode("ascii")
        chain, key_ref = self.chains[cid]
        known = (chain, key_ref, self.recent(cid))
        self._known[cid_b] = known
        return known

    def _other_line(
        self, line: bytes
    ) -> tuple[bytes, int, bytes, bytes, bytes | None] | None:
        """Read a line that is not a template record: ``None`` for a declaration.

        Returns ``(cid, seq, mac, body_sha256, body)`` of a record with its
        body whole (``"b"``) or its digest alone (``"h"``).

        Raises:
            ValueError: The line is not a v2 line this reader can use.
            TypeError: The same, for a JSON value of the wrong type.
            RecursionError: Absurdly nested JSON.
        """
        m = _RECORD_LINE.match(line)
        if m is None:
            self._meta(line)
            return None
        cid_b, seq_b, mac_text, kind = m.groups()
        seq = int(seq_b)
        mac = _unb64(mac_text)
        rest = line[m.end() :]
        if kind == b"t":
            # Not the writer's layout (which the common case matched).
            raise ValueError("bad record")
        if kind == b"b":
            if not rest.endswith(b"}"):
                raise ValueError("bad record")
            body = rest[:-1]
            return cid_b, seq, mac, DerivedDigest(hashlib.sha256(body).digest()), body
        h = _DIGEST_VALUE.match(rest)
        if h is None:
            raise ValueError("bad digest")
        return cid_b, seq, mac, bytes.fromhex(h.group(1).decode("ascii")), None

    def _meta(self, line: bytes) -> None:
        """Take in a declaration or a template line (or raise: not a v2 line)."""
        data = json.loads(line)
        if not isinstance(data, dict):
            raise TypeError("not a v2 line")
        if "@chain" in data:
            cid, chain, key_ref = data["@chain"], data["chain"], data["key_ref"]
            if not all(isinstance(x, str) for x in (cid, chain, key_ref)):
                raise ValueError("bad declaration")
            self.chains[cid] = (chain, key_ref)
            self._known.clear()
            return
        cid, n, texts = data["@tpl"], data["t"], data["texts"]
        if (
            not isinstance(cid, str)
            or n.__class__ is not int
            or not isinstance(texts, list)
            or not texts
            or not all(isinstance(t, str) for t in texts)
        ):
            raise ValueError("bad template")
        if len(self.templates) >= _TEMPLATES:
            self.templates.clear()
        slots: list[bytes] = []
        for text in texts:
            slots += (text.encode("utf-8"), b"")
        self.templates[cid, n] = slots[:-1]


_RECORD_LINE: Final = re.compile(
    rb'\{"@":"([0-9a-f]{12})","s":(0|[1-9][0-9]{0,18}),"m":"([A-Za-z0-9+/]{43}=)","([tbh])":'
)
#: A template record exactly as the writer lays it out (its values as they stand).
_TEMPLATE_RECORD: Final = re.compile(
    rb'\{"@":"([0-9a-f]{12})","s":(0|[1-9][0-9]{0,18}),"m":"([A-Za-z0-9+/]{43}=)",'
    rb'"t":(0|[1-9][0-9]{0,8}),"d":\[(.*)\]\}\Z',
    re.DOTALL,
)
_DIGEST_VALUE: Final = re.compile(rb'"([0-9a-f]{64})"\}\Z')
_DECODE: Final = json.JSONDecoder().raw_decode
_derived: Final = DerivedDigest


def split_values(text: bytes, n: int) -> list[bytes] | None:
    """Split the JSON texts of *n* values separated by commas, exactly as they stand.

    ``None`` unless *text* is exactly *n* JSON values joined by ``,`` (no
    whitespace). Values without a comma inside (numbers, identifiers) split
    directly; otherwise the JSON scanner finds where each value ends.
    """
    pieces = text.split(b",")
    if len(pieces) == n:
        return pieces
    if len(pieces) < n:
        return None
    try:
        decoded = text.decode("utf-8")
        out = []
        at = 0
        for k in range(n):
            _, end = _DECODE(decoded, at)
            out.append(decoded[at:end].encode("utf-8"))
            if k < n - 1:
                if decoded[end : end + 1] != ",":
                    return None
                end += 1
            at = end
    except (ValueError, RecursionError):
        return None
    if at != len(decoded):
        return None
    return out
