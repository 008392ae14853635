"""Verifying a stored trail against its keys and its anchored checkpoints.

The verifier reads every record of a JSON-lines file or the audit tables,
recomputes each chain (body hash, MAC with the evolved key, ``prev`` links,
contiguous ``seq``), checks derived database columns against the body, then
replays the anchored checkpoints: signatures, ``prev`` links between notes,
Merkle roots, and whether every anchored chain head is still present.
Findings are grouped into runs per chain, so one tampered range is one finding.
Two records that share a position and both chain from the same predecessor are
a ``FORK``; a body-less record is ``REDACTED`` when a valid ``audit.redact``
event names it, and ``MODIFIED`` otherwise.
"""

from __future__ import annotations

import binascii
import bisect
import collections
import datetime as dt
import enum
import hashlib
import heapq
import hmac
import itertools
import json

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import attrs

from custdata.crypto._hmac import TRANS_5C, TRANS_36

from . import _accel, _store
from ._chain import _MAC_LABEL, ZERO_MAC
from ._checkpoint import Checkpoint, CheckpointAnchor, CheckpointVerifier
from ._compact import (
    RECORD_HEAD,
    V2_HEAD,
    CompactReader,
    DerivedDigest,
    split_values,
)
from ._keys import _EVOLVE_LABEL as _EVOLVE
from ._keys import AuditKeySource, chain_initial_key, root_for
from ._merkle import MerkleAccumulator, leaf_hash
from ._schema import REDACT_REASONS, parse_ts
from ._spill import ChainMacs, MacSpill
from ._sql import CLEARED_ON_REDACT, derived_columns
from ._store import (
    _HEAD,
    _HEAD_LEN,
    JsonLinesSource,
    LineCursor,
    Malformed,
    SqlSource,
    StoredRecord,
    Torn,
    TrailSource,
    _ident,
)


__all__ = ["Finding", "FindingKind", "VerificationReport", "verify_trail"]


class FindingKind(str, enum.Enum):
    """The kinds of finding the verifier reports."""

    #: A body no longer hashes to its recorded digest, or is missing or unreadable.
    MODIFIED = "MODIFIED"
    #: A derived database column (or the subject fan-out) disagrees with the body.
    COLUMN_MISMATCH = "COLUMN_MISMATCH"
    #: Positions are missing from the middle of a chain.
    MISSING = "MISSING"
    #: A MAC does not verify: reordered, forged, copied or relabelled records.
    MAC_INVALID = "MAC_INVALID"
    #: A chain ends before the head an anchored checkpoint recorded.
    TRUNCATED = "TRUNCATED"
    #: Several chains end before their anchored heads: an older copy was restored.
    ROLLBACK = "ROLLBACK"
    #: Checkpoints are missing from the anchor (broken link or heartbeat).
    CHECKPOINT_GAP = "CHECKPOINT_GAP"
    #: A checkpoint's signature or heads list does not verify.
    SIGNATURE_INVALID = "SIGNATURE_INVALID"
    #: A chain that an anchored checkpoint covers is gone.
    CHAIN_MISSING = "CHAIN_MISSING"
    #: A recomputed Merkle root differs from the anchored one.
    ROOT_MISMATCH = "ROOT_MISMATCH"
    #: Two different records at one position both chain from the same
    #: predecessor: two writers continued one chain (a fork without reset).
    FORK = "FORK"
    #: One record stored more than once (the same chain, seq and MAC).
    DUPLICATE = "DUPLICATE"
    #: A trail that records it is checkpointed has no checkpoints, or none
    #: covering its records (an emptied, deleted or older checkpoint file).
    CHECKPOINT_MISSING = "CHECKPOINT_MISSING"
    #: Informational: records newer than the last anchored checkpoint.
    UNANCHORED_TAIL = "UNANCHORED_TAIL"
    #: Informational, an I/O artefact: the start of a record whose write never
    #: finished (a crash or a full disk). Not a record; a gap it leaves in a
    #: chain is ``MISSING``, a tail an anchored head covers ``TRUNCATED``.
    CRASH_TRUNCATED = "CRASH_TRUNCATED"
    #: Informational: a body removed by :func:`custdata.audit.redact`, covered
    #: by a valid ``audit.redact`` event naming the record.
    REDACTED = "REDACTED"


_INFORMATIONAL = frozenset(
    {FindingKind.UNANCHORED_TAIL, FindingKind.REDACTED, FindingKind.CRASH_TRUNCATED}
)


@attrs.frozen(kw_only=True)
class Finding:
    """One thing the verifier found.

    Attributes:
        kind: What was found.
        chain: The chain concerned, if any.
        seq: The first position concerned, if any.
        last_seq: The last position of a run (equal to ``seq`` for one record).
        column: The derived column that disagrees (``COLUMN_MISMATCH``).
        count: How many records (``UNANCHORED_TAIL``, ``ROLLBACK``).
        detail: A value-free explanation.
    """

    kind: FindingKind
    chain: str | None = None
    seq: int | None = None
    last_seq: int | None = None
    column: str | None = None
    count: int | None = None
    detail: str = ""

    @property
    def informational(self) -> bool:
        """Whether this finding is not evidence of tampering."""
        return self.kind in _INFORMATIONAL

    def to_dict(self) -> dict[str, Any]:
        """Return the finding as JSON-ready data (``None`` fields omitted)."""
        data: dict[str, Any] = {
            "kind": self.kind.value,
            "informational": self.informational,
        }
        for name in ("chain", "seq", "last_seq", "column", "count"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        data["detail"] = self.detail
        return data

    def __str__(self) -> str:
        where = ""
        if self.chain is not None:
            where = f" chain={self.chain}"
            if self.seq is not None:
                rng = (
                    self.seq
                    if self.last_seq in (None, self.seq)
                    else f"{self.seq}..{self.last_seq}"
                )
                where += f" seq={rng}"
        if self.column:
            where += f" column={self.column}"
        if self.count is not None:
            where += f" count={self.count}"
        return f"{self.kind.value}{where}: {self.detail}"


@attrs.frozen(kw_only=True)
class VerificationReport:
    """The result of :func:`verify_trail`.

    Attributes:
        source: What was verified (a path or a URL without password).
        findings: Every finding, tampering first, informational last.
        events: How many records were read.
        chains: How many chains they form.
        checkpoints: How many anchored checkpoints were read.
        verified_through: The latest anchored checkpoint with a valid signature.
        unanchored: How many records are newer than that checkpoint.
    """

    source: str
    findings: tuple[Finding, ...]
    events: int
    chains: int
    checkpoints: int
    verified_through: Checkpoint | None
    unanchored: int

    @property
    def intact(self) -> bool:
        """Whether no finding is evidence of tampering."""
        return not any(not f.informational for f in self.findings)

    def kinds(self) -> list[str]:
        """Return the kinds of the findings, in report order."""
        return [f.kind.value for f in self.findings]

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        vt = self.verified_through
        return {
            "source": self.source,
            "intact": self.intact,
            "events": self.events,
            "chains": self.chains,
            "checkpoints": self.checkpoints,
            "verified_through": None
            if vt is None
            else {
                "tree_size": vt.tree_size,
                "time": vt.time.isoformat().replace("+00:00", "Z"),
            },
            "unanchored": self.unanchored,
            "findings": [f.to_dict() for f in self.findings],
        }


class _Collector:
    """Collects findings, merging consecutive positions of one kind and chain."""

    def __init__(self) -> None:
        self.items: list[Finding] = []

    def add(
        self,
        kind: FindingKind,
        chain: str | None = None,
        seq: int | None = None,
        **kw: Any,
    ) -> None:
        last = self.items[-1] if self.items else None
        if (
            last is not None
            and seq is not None
            and last.kind is kind
            and last.chain == chain
            and last.last_seq is not None
            and last.last_seq + 1 == seq
            and last.detail == kw.get("detail", "")
            and last.column == kw.get("column")
        ):
            self.items[-1] = attrs.evolve(last, last_seq=kw.get("last_seq", seq))
            return
        self.items.append(
            Finding(
                kind=kind, chain=chain, seq=seq, last_seq=kw.pop("last_seq", seq), **kw
            )
        )

    def placeholder(self, rec: StoredRecord, redactions: _Redactions) -> None:
        """Hold a place for the finding of a body-less record (see :class:`_Redactions`)."""
        redactions.pending.append((len(self.items), rec))
        self.items.append(Finding(kind=FindingKind.MODIFIED, detail=_PENDING))

    def resolve(self, redactions: _Redactions, fanout: _Fanout) -> None:
        """Replace each placeholder with its findings, merging runs as :meth:`add` does."""
        if not redactions.pending:
            return
        found = {idx: redactions.judge(rec, fanout) for idx, rec in redactions.pending}
        items, self.items = self.items, []
        for idx, item in enumerate(items):
            for finding in found.get(idx, (item,)):
                if finding.seq is None:
                    self.items.append(finding)
                    continue
                self.add(
                    finding.kind,
                    finding.chain,
                    finding.seq,
                    last_seq=finding.last_seq,
                    column=finding.column,
                    count=finding.count,
                    detail=finding.detail,
                )
        redactions.pending.clear()


_PENDING = "\x00pending"
_Fanout = Mapping[tuple[str, int], set[str]] | None
_REDACT_MARK = b'"action":"audit.redact"'


class _Redactions:
    """What the verifier learns about redacted bodies across all chains.

    A record whose body is missing but whose MAC (over its recorded digest)
    verifies and links is *pending* until every chain is read: it is
    ``REDACTED`` when a valid ``audit.redact`` event (one that verified and
    linked in its own chain) names its chain, seq and MAC, and ``MODIFIED``
    otherwise. The redaction event may sit in any chain, before or after it.
    """

    def __init__(self) -> None:
        #: (chain, seq, mac) of a redacted record → the redaction's reason.
        self.claims: dict[tuple[str, int, bytes], str] = {}
        self.pending: list[tuple[int, StoredRecord]] = []

    def claim(self, body: bytes) -> None:
        """Register the target of a valid record's body if it is a redaction event."""
        self.claim_into(self.claims, body)

    @staticmethod
    def claim_into(claims: dict[tuple[str, int, bytes], str], body: bytes) -> None:
        """:meth:`claim` into *claims*."""
        try:
            fields = json.loads(body)
            target = fields["target"]
            reason = fields["reason"]
            if fields["action"] != "audit.redact" or reason not in REDACT_REASONS:
                return
            key = (
                str(target["chain"]),
                int(target["seq"]),
                bytes.fromhex(target["mac"]),
            )
        except (ValueError, KeyError, TypeError, RecursionError):
            return
        claims[key] = reason

    def judge(self, rec: StoredRecord, fanout: _Fanout) -> list[Finding]:
        """Return the findings of a pending body-less record."""
        chain, seq = rec.chain, rec.seq
        reason = self.claims.get((chain, seq, rec.mac))  # type: ignore[arg-type]
        if reason is None:
            return [
                Finding(
                    kind=FindingKind.MODIFIED,
                    chain=chain,
                    seq=seq,
                    last_seq=seq,
                    detail="body missing or unreadable",
                )
            ]
        found = [
            Finding(
                kind=FindingKind.REDACTED,
                chain=chain,
                seq=seq,
                last_seq=seq,
                detail=f"body removed by a valid audit.redact event ({reason})",
            )
        ]
        # A proper redaction clears the nullable derived columns and the
        # subject fan-out; anything left there no body can vouch for.
        columns = rec.columns
        if columns is not None:
            found.extend(
                Finding(
                    kind=FindingKind.COLUMN_MISMATCH,
                    chain=chain,
                    seq=seq,
                    last_seq=seq,
                    column=column,
                    detail="a redacted record keeps a derived column",
                )
                for column in CLEARED_ON_REDACT
                if columns.get(column) is not None
            )
        if fanout is not None and fanout.get((chain, seq)):
            found.append(
                Finding(
                    kind=FindingKind.COLUMN_MISMATCH,
                    chain=chain,
                    seq=seq,
                    last_seq=seq,
                    column="subject_fanout",
                    detail="a redacted record keeps subject fan-out rows",
                )
            )
        return found


def _naive_utc(value: object) -> object:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def _check_columns(
    out: _Collector,
    rec: StoredRecord,
    stored_refs: set[str] | None,
) -> None:
    """Check a valid row's derived columns, and its fan-out rows (*stored_refs*) if given."""
    assert rec.body is not None  # noqa: S101 - checked by the caller
    assert rec.columns is not None  # noqa: S101
    try:
        fields = json.loads(rec.body)
        expected = derived_columns(fields)
    except (ValueError, KeyError, TypeError, RecursionError, AttributeError):
        out.add(
            FindingKind.MODIFIED, rec.chain, rec.seq, detail="body is not a valid event"
        )
        return
    for column, want in expected.items():
        have = rec.columns.get(column)
        if column == "ts":
            have = _naive_utc(have)
        if have != want:
            out.add(
                FindingKind.COLUMN_MISMATCH,
                rec.chain,
                rec.seq,
                column=column,
                detail="derived column differs from the body",
            )
    if stored_refs is not None:
        refs = set(fields.get("subjects") or ())
        if fields.get("subject_ref"):
            refs.add(fields["subject_ref"])
        if stored_refs != refs:
            out.add(
                FindingKind.COLUMN_MISMATCH,
                rec.chain,
                rec.seq,
                column="subject_fanout",
                detail="subject fan-out rows differ from the body",
            )


def _verify_chain(  # noqa: PLR0917 - internal, called once
    chain: str,
    recs: list[StoredRecord],
    keys: AuditKeySource,
    out: _Collector,
    valid: dict[str, dict[int, bytes]],
    fanout: Mapping[tuple[str, int], set[str]] | None,
    redactions: _Redactions,
) -> int:
    """Verify one chain; return the highest seq present.

    Each position normally holds one record. A record whose MAC verifies but
    that meets another valid record at its position, or does not link to the
    record before it, is judged by :func:`_branch`: the same record again (no
    finding), a second record chaining from the same predecessor (``FORK``,
    once, at the position where the branches part), a record continuing such
    a second branch (no further finding), or a record that links to nothing
    valid (``MAC_INVALID``). ``valid`` keeps the first branch.
    """
    recs.sort(key=lambda r: r.seq)
    key_ref = collections.Counter(r.key_ref for r in recs).most_common(1)[0][0]
    try:
        root = root_for(keys, key_ref)
    except LookupError:
        out.add(
            FindingKind.MAC_INVALID,
            chain,
            recs[0].seq,
            last_seq=recs[-1].seq,
            detail="the chain's key_ref names no known audit root key",
        )
        return recs[-1].seq
    key = chain_initial_key(root, chain)
    prefix = _MAC_LABEL + chain.encode() + b"\x00" + key_ref.encode() + b"\x00"
    # HMAC-SHA256 from its padded keys (RFC 2104): the chain key changes with
    # every record, so the one-shot set-up of hmac.digest buys nothing.
    pad = bytes(32)
    t36, t5c = TRANS_36, TRANS_5C
    cur = 1
    expected = 1
    sha256 = hashlib.sha256
    digest_eq = hmac.compare_digest
    cvalid: dict[int, bytes] = {0: ZERO_MAC}
    prev_seq = -1
    prev_rec: StoredRecord | None = None
    # Per position, the records on other branches than the first: {mac: prev}.
    forks: dict[int, dict[bytes, bytes]] | None = None
    for rec in recs:
        _, _, seq, kref, prev, rmac, rdigest, body, columns = rec
        if seq == prev_seq and rec[1:] == prev_rec[1:]:  # type: ignore[index]
            _duplicate(out, chain, seq)  # a replayed line or row, byte for byte
            continue
        prev_seq, prev_rec = seq, rec
        if seq < 1:
            out.add(
                FindingKind.MAC_INVALID,
                chain,
                seq,
                detail="sequence number out of range",
            )
            continue
        if seq > expected:
            out.add(
                FindingKind.MISSING,
                chain,
                expected,
                last_seq=seq - 1,
                detail="records missing",
            )
        if seq >= expected:
            expected = seq + 1
        while cur < seq:
            key = sha256(_EVOLVE + key).digest()
            cur += 1
        if rdigest is None:
            out.add(
                FindingKind.MODIFIED, chain, seq, detail="body missing or unreadable"
            )
            continue
        if body is None or rdigest.__class__ is DerivedDigest:
            # Redacted, or removed without a redaction: the MAC covers the
            # recorded digest, so the chain still verifies; which of the two
            # is decided once every chain's redaction events are known. Or
            # the reader computed the digest from this body (format 2).
            h = rdigest
        else:
            h = sha256(body).digest()
            if h != rdigest:
                out.add(
                    FindingKind.MODIFIED,
                    chain,
                    seq,
                    detail="body does not match its digest",
                )
                continue
        if rmac is None or prev is None or kref != key_ref:
            out.add(FindingKind.MAC_INVALID, chain, seq, detail="MAC does not verify")
            continue
        padded = key + pad
        inner = sha256(
            b"".join((padded.translate(t36), prefix, seq.to_bytes(8, "big"), prev, h))
        ).digest()
        if not digest_eq(sha256(padded.translate(t5c) + inner).digest(), rmac):
            out.add(FindingKind.MAC_INVALID, chain, seq, detail="MAC does not verify")
            continue
        linked = cvalid.get(seq - 1)
        if seq in cvalid or (linked is not None and linked != prev):
            if forks is None:
                forks = {}
            verdict = _branch(recs, seq, rmac, prev, cvalid, forks)
            if verdict is _Branch.SAME:
                # The MAC covers chain, seq, prev and body: the same record again.
                _duplicate(out, chain, seq)
                continue
            if verdict is _Branch.BROKEN:
                out.add(
                    FindingKind.MAC_INVALID,
                    chain,
                    seq,
                    detail="does not link to a valid record before it",
                )
                continue
            if verdict is _Branch.FORK:
                out.add(
                    FindingKind.FORK,
                    chain,
                    seq,
                    detail="two records chain from the same predecessor: two "
                    "writers continued this chain",
                )
            forks.setdefault(seq, {})[rmac] = prev
        else:
            cvalid[seq] = rmac
        if body is None:
            out.placeholder(rec, redactions)
            continue
        if _REDACT_MARK in body:
            redactions.claim(body)
        if columns is not None:
            _check_columns(
                out, rec, None if fanout is None else fanout.get((chain, seq), set())
            )
    del cvalid[0]
    valid[chain] = cvalid
    return expected - 1


def _duplicate(out: _Collector, chain: str, seq: int) -> None:
    out.add(
        FindingKind.DUPLICATE,
        chain,
        seq,
        detail="the same record is stored more than once",
    )


class _Branch(enum.Enum):
    """How a record that meets another at its position relates to the chain."""

    SAME = "same"
    FORK = "fork"
    CONTINUES = "continues"
    BROKEN = "broken"


def _branch(  # noqa: PLR0917 - internal, the state of _verify_chain
    recs: Sequence[StoredRecord],
    seq: int,
    mac: bytes,
    prev: bytes,
    cvalid: Mapping[int, bytes],
    forks: Mapping[int, Mapping[bytes, bytes]],
) -> _Branch:
    """Judge a MAC-valid record at a taken position or off the first branch."""
    here = forks.get(seq, {})
    first = cvalid.get(seq)
    if mac == first or mac in here:
        return _Branch.SAME  # the MAC covers everything else: the same record
    siblings = set(here.values())
    if first is not None:
        # The prev of the first branch's record here (recs is sorted by seq).
        lo = bisect.bisect_left(recs, seq, key=lambda r: r.seq)
        hi = bisect.bisect_right(recs, seq, key=lambda r: r.seq)
        siblings.update(r.prev for r in recs[lo:hi] if r.mac == first and r.prev)
    if prev in siblings:
        return _Branch.FORK
    if prev == cvalid.get(seq - 1) or prev in forks.get(seq - 1, {}):
        return _Branch.CONTINUES
    return _Branch.BROKEN


class _FastChain:
    """The state of one chain during :func:`_verify_json_lines_fast`."""

    __slots__ = (
        "first",
        "fixed",
        "head",
        "key",
        "key_ref",
        "keys",
        "last",
        "macs",
        "mid",
        "prefix",
        "prev",
        "prev_hex",
        "seq",
        "v2",
    )

    def __init__(
        self, head: bytes, mid: bytes, prefix: bytes, key: bytes, macs: ChainMacs
    ) -> None:
        self.head = head
        self.mid = mid
        self.prefix = prefix
        self.key = key
        #: The chain's key id, and its key at positions 1, 1025, 2049, …
        self.key_ref = ""
        self.keys = [key]
        self.seq = 0
        self.prev = ZERO_MAC
        self.prev_hex = binascii.hexlify(ZERO_MAC)
        self.macs = macs
        #: The chain's first and last lines (for its start and end facts).
        self.first = self.last = b""
        #: The length of a line's envelope before the body, less the seq digits.
        self.fixed = len(head) + len(mid) + _ENVELOPE_HEX
        #: Whether the chain is written in the compact format (v2).
        self.v2 = False


_SEQ_MARK = b'","seq":'
_REF_MARK = b',"key_ref":"'
_PREV_MARK = b'","prev":"'
_MAC_MARK = b'","mac":"'
_DIGEST_MARK = b'","body_sha256":"'
_BODY_MARK = b'","body":'
_ENVELOPE_HEX = 64 + len(_MAC_MARK) + 64 + len(_DIGEST_MARK) + 64 + len(_BODY_MARK)
_CLOSE = ord("}")
#: The one-pass check offers its MACs to the spill file every 65,536 records.
_SPILL_EVERY = 0xFFFF
#: The one-pass check keeps the chain key of every 1,024th position (see _KEY_EVERY).
_KEY_MASK = 1023


class _Resume(NamedTuple):
    """Where a one-pass check that gave up left off, for the full algorithm."""

    #: The lines read before the one it gave up at.
    before: int
    line: bytes
    rest: Iterator[bytes]
    states: dict[bytes, _FastChain]
    compact: dict[bytes, _FastChain]
    templates: dict[bytes, dict[bytes, list[bytes]]]
    events: int
    #: The bodies of the redaction events among the records accepted.
    claims: list[bytes]
    #: Where the accepted chains' MACs spill (the full algorithm goes on with it).
    spill: MacSpill


def _fast_chain(
    line: bytes, end: int, keys: AuditKeySource, spill: MacSpill
) -> _FastChain | None:
    """Start the state of the chain whose first line is *line* (chain id ends at *end*)."""
    ref_at = line.find(_REF_MARK, end)
    ref_end = line.find(_PREV_MARK, ref_at)
    if ref_at < 0 or ref_end < 0:
        return None
    chain_b = line[_HEAD_LEN:end]
    ref_b = line[ref_at + len(_REF_MARK) : ref_end]
    try:
        chain = _ident(chain_b)
        key_ref = _ident(ref_b)
        root = root_for(keys, key_ref)
    except (ValueError, LookupError):
        return None
    state = _FastChain(
        _HEAD + chain_b + _SEQ_MARK,
        _REF_MARK + ref_b + _PREV_MARK,
        _MAC_LABEL + chain_b + b"\x00" + ref_b + b"\x00",
        chain_initial_key(root, chain),
        spill.chain(),
    )
    state.key_ref = key_ref
    return state


def _verify_json_lines_fast(
    source: JsonLinesSource, keys: AuditKeySource, spill: MacSpill | None = None
) -> (
    tuple[
        int,
        dict[str, ChainMacs],
        dict[str, tuple[bytes | None, bytes | None]],
    ]
    | None
):
    """Verify an intact JSON-lines trail in one pass, or return ``None``.

    The common case (every chain's lines in order from seq 1, exactly as
    :class:`~custdata.audit.JsonLinesSink` writes them, nothing missing,
    altered or repeated) needs no grouping, sorting or record objects: each
    line is checked as it is read. For the line of ``seq`` in a chain, the
    body (everything between the envelope and the closing brace) is hashed,
    the MAC recomputed from the chain's evolved key, previous MAC and that
    digest, and then the whole envelope this writer would have written,
    ``{"custdata_audit":1,"chain":…,"seq":…,"key_ref":…,"prev":…,"mac":…,
    "body_sha256":…,"body":``, is rebuilt from those values and compared with
    the line byte for byte: one comparison checks the layout, the chain and
    key ids, the sequence number, the ``prev`` link, the MAC and the digest.

    At the first line that is not exactly that (a malformed or blank line, a
    gap, a duplicate, a bad digest or MAC, an unknown key) it gives up and
    returns ``None``: the caller then runs the full algorithm, which names the
    findings. So this path accepts only what the full algorithm accepts
    without findings, with the same chain heads and MACs.

    With the native accelerator (:func:`custdata.audit.native_enabled`) the
    lines after an accepted one are checked in the source's block by one
    native call (``_native.run``), with exactly these checks, up to the first
    line it does not accept (another chain's, a declaration or template, the
    first of a chain, a redaction event, a list or comma among the values, any
    mismatch), which this loop then takes as before.

    Memory is bounded at any size: per chain, its state, its first and last
    lines, and its MACs, which move to a temporary file beyond
    :data:`~custdata.audit._spill.MEMORY_LIMIT` (*spill*).

    Returns:
        ``(events, macs, ends)``: the number of lines; per chain, its MACs by
        seq (1 to its head); per chain, the bodies of its first and last
        records. Or ``None``.
    """
    if spill is None:
        spill = MacSpill()
    spill_every = _SPILL_EVERY
    states: dict[bytes, _FastChain] = {}
    sha256 = hashlib.sha256
    hexlify = binascii.hexlify
    t36, t5c = TRANS_36, TRANS_5C
    pad = bytes(32)
    evolve = _EVOLVE
    mac_mark, digest_mark, body_mark = _MAC_MARK, _DIGEST_MARK, _BODY_MARK
    close = _CLOSE
    digest_eq = hmac.compare_digest
    # From the start of the stored MAC to the start of the body.
    mac_end = 64 + len(_DIGEST_MARK) + 64 + len(_BODY_MARK)
    events = 0
    # The current chain's state lives in locals; it is saved on a switch.
    state: _FastChain | None = None
    head = b"\x00"  # matches no line
    mid = prefix = key = prev = prev_hex = b""
    seq = fixed = 0
    add_mac = bytearray().extend
    last = b""
    # The compact (v2) chains by short id, and their templates.
    compact: dict[bytes, _FastChain] = {}
    templates: dict[bytes, dict[bytes, list[bytes]]] = {}
    tpls: dict[bytes, list[bytes]] = {}
    v2 = False
    b64 = binascii.b2a_base64
    claims: list[bytes] = []
    # Bodies are canonical JSON: "action" is always their first key.
    redact_head = b"{" + _REDACT_MARK
    key_mask = _KEY_MASK
    metas = 0
    counted = False
    keys_add = [ZERO_MAC].append  # replaced at the first chain
    # With the native accelerator, runs of lines are checked in the source's
    # blocks (see _block_lines); the loop below takes every other line.
    native = _accel.native
    cursor = LineCursor()
    run = None if native is None else native.run
    max_line = _store.MAX_LINE  # the reader's limit (looked up now, as it does)
    lines = (
        source._lines()  # noqa: SLF001 - the source's own reader
        if run is None
        else source._block_lines(cursor)  # noqa: SLF001
    )
    for line in lines:
        counted = False
        if not line.startswith(head):
            if line.startswith(V2_HEAD):
                if not line.startswith(RECORD_HEAD):
                    # A declaration or a template: rare, read as JSON.
                    if not _fast_meta(line, keys, spill, states, compact, templates):
                        break
                    metas += 1
                    continue
                cid = line[_RECORD_HEAD_LEN : _RECORD_HEAD_LEN + _CID_LEN]
                found = compact.get(cid)
                if found is None:
                    break
                tpls = templates[cid]
            else:
                end = line.find(_SEQ_MARK, _HEAD_LEN)
                if end < 0 or not line.startswith(_HEAD):
                    break
                chain_b = line[_HEAD_LEN:end]
                found = states.get(chain_b)
                if found is None:
                    found = _fast_chain(line, end, keys, spill)
                    if found is None:
                        break
                    found.first = line
                    states[chain_b] = found
            if state is not None:
                state.key, state.seq, state.prev, state.prev_hex, state.last = (
                    key,
                    seq,
                    prev,
                    prev_hex,
                    last,
                )
            state = found
            head, mid, prefix, fixed = state.head, state.mid, state.prefix, state.fixed
            key, seq, prev, prev_hex = state.key, state.seq, state.prev, state.prev_hex
            add_mac = state.macs.buf.extend
            keys_add = state.keys.append
            v2 = state.v2
        seq += 1
        counted = True
        seq_b = b"%d" % seq
        at = fixed + len(seq_b)  # where the body (v1) or the MAC (v2) starts
        if v2:
            # {"@":"<cid>","s":<seq>,"m":"<MAC>","t":<n>,"d":[…]} or …,"b":{…}}
            if line[at - _M_LEN : at] != _M_MARK:
                break
            stored = line[at : at + _MAC_B64]
            kind = line[at + _MAC_B64 : at + _KIND_END]
            if kind == _T_MARK:
                cut = line.find(_D_MARK, at + _KIND_END)
                tpl = tpls.get(line[at + _KIND_END : cut]) if cut > 0 else None
                if tpl is None or line[-2:] != _D_CLOSE:
                    break
                values = line[cut + _D_LEN : -2].split(b",")
                if len(values) * 2 + 1 == len(tpl):
                    buf = tpl.copy()
                    buf[1::2] = values
                else:  # a list among the values: read them as JSON
                    filled = _fill_json(tpl, line[cut + _D_LEN - 1 : -1])
                    if filled is None:
                        break
                    buf = filled
                body = b"".join(buf)
            elif kind == _B_MARK and line[-1] == close:
                body = line[at + _KIND_END : -1]
            else:
                break
            h = sha256(body).digest()
            padded = key + pad
            inner = sha256(
                b"".join(
                    (padded.translate(t36), prefix, seq.to_bytes(8, "big"), prev, h)
                )
            ).digest()
            mac = sha256(padded.translate(t5c) + inner).digest()
            if not digest_eq(stored, b64(mac, newline=False)):
                break
            if seq == 1:
                state.first = body  # type: ignore[union-attr]
            if body.startswith(redact_head):
                claims.append(body)
            last = body
        else:
            h = sha256(line[at:-1]).digest()
            padded = key + pad
            inner = sha256(
                b"".join(
                    (padded.translate(t36), prefix, seq.to_bytes(8, "big"), prev, h)
                )
            ).digest()
            mac = sha256(padded.translate(t5c) + inner).digest()
            # The stored MAC is compared in constant time; the envelope around it
            # (built with the stored MAC) byte for byte.
            stored = line[at - mac_end : at - mac_end + 64]
            envelope = b"".join(
                (
                    head,
                    seq_b,
                    mid,
                    prev_hex,
                    mac_mark,
                    stored,
                    digest_mark,
                    hexlify(h),
                    body_mark,
                )
            )
            if (
                not digest_eq(stored, hexlify(mac))
                or not line.startswith(envelope)
                or line[-1] != close
            ):
                break
            prev_hex = stored
            if line.startswith(redact_head, at):
                claims.append(line[at:-1])
            last = line
        add_mac(mac)
        prev = mac
        key = sha256(evolve + key).digest()
        if not seq & key_mask:
            keys_add(key)
        events += 1
        if not events & spill_every:
            spill.maybe_spill()
            if state is not None:
                add_mac = state.macs.buf.extend
        if run is not None and cursor.pos < cursor.end and state is not None:
            # The native run: the lines of this chain that follow, checked as
            # above, up to the first it cannot accept (left to this loop) or
            # the next spill check.
            got = run(
                cursor.buf,
                cursor.pos,
                cursor.end,
                head,
                mid,
                prefix,
                evolve,
                redact_head,
                tpls,
                fixed,
                v2,
                key,
                seq,
                prev,
                prev_hex,
                state.macs.buf,
                state.keys,
                spill_every + 1 - (events & spill_every),
                max_line,
            )
            if got is not None:
                cursor.pos, done, key, prev, prev_hex, last = got
                seq += done
                events += done
                if not events & spill_every:
                    spill.maybe_spill()
                    add_mac = state.macs.buf.extend
    else:
        if state is not None:
            state.seq, state.last = seq, last
        ends = {
            _text(c): (st.first, st.last)
            if st.v2
            else (_line_body(st.first), _line_body(st.last))
            for c, st in states.items()
        }
        return events, {_text(c): st.macs for c, st in states.items()}, ends
    # Gave up at *line*: leave where it stopped for the full algorithm.
    if state is not None:
        state.key, state.seq, state.prev, state.prev_hex, state.last = (
            key,
            seq - 1 if counted else seq,
            prev,
            prev_hex,
            last,
        )
    source._resume = _Resume(  # noqa: SLF001 - handed to verify_trail
        events + metas,
        line,
        lines,
        states,
        compact,
        templates,
        events,
        claims,
        spill,
    )
    return None


_RECORD_HEAD_LEN = len(RECORD_HEAD)
_CID_LEN = 12
_M_MARK = b',"m":"'
_M_LEN = len(_M_MARK)
_MAC_B64 = 44
_T_MARK = b'","t":'
_B_MARK = b'","b":'
_KIND_END = _MAC_B64 + len(_T_MARK)
_D_MARK = b',"d":['
_D_LEN = len(_D_MARK)
_D_CLOSE = b"]}"


def _fill_json(tpl: list[bytes], array: bytes) -> list[bytes] | None:
    """Fill template *tpl* with the values of the JSON *array* text, exactly as they stand."""
    if not (array.startswith(b"[") and array.endswith(b"]")):
        return None
    values = split_values(array[1:-1], len(tpl) // 2)
    if values is None:
        return None
    buf = tpl.copy()
    buf[1::2] = values
    return buf


def _fast_meta(  # noqa: PLR0917 - the one-pass check's state
    line: bytes,
    keys: AuditKeySource,
    spill: MacSpill,
    states: dict[bytes, _FastChain],
    compact: dict[bytes, _FastChain],
    templates: dict[bytes, dict[bytes, list[bytes]]],
) -> bool:
    """Take in a v2 declaration or template line; ``False``: leave it to the full algorithm."""
    try:
        data = json.loads(line)
        if "@chain" in data:
            cid = data["@chain"].encode("ascii")
            chain = _ident(data["chain"].encode("ascii"))
            key_ref = _ident(data["key_ref"].encode("ascii"))
            prefix = _MAC_LABEL + chain.encode() + b"\x00" + key_ref.encode() + b"\x00"
            known = compact.get(cid)
            if known is not None:
                return known.prefix == prefix
            if len(cid) != _CID_LEN or chain.encode() in states:
                return False
            head = RECORD_HEAD + cid + b'","s":'
            state = _FastChain(
                head,
                b"",
                prefix,
                chain_initial_key(root_for(keys, key_ref), chain),
                spill.chain(),
            )
            state.v2 = True
            state.key_ref = key_ref
            state.fixed = len(head) + _M_LEN
            states[chain.encode()] = compact[cid] = state
            templates[cid] = {}
            return True
        cid = data["@tpl"].encode("ascii")
        n, texts = data["t"], data["texts"]
        if cid not in templates or n.__class__ is not int or not texts:
            return False
        tpl: list[bytes] = []
        for text in texts:
            tpl += (text.encode("utf-8"), b"")
        templates[cid][b"%d" % n] = tpl[:-1]
    except (ValueError, KeyError, TypeError, AttributeError, LookupError):
        return False
    except RecursionError:
        return False
    return True


def _line_body(line: bytes) -> bytes | None:
    """Return the body of a line the writer wrote (the envelope's last member)."""
    cut = line.find(b',"body":')
    return None if cut < 0 else line[cut + 8 : -1]


class _ChainFacts(NamedTuple):
    """What a chain's first and last records say about it."""

    #: ``"writer"`` (its writer checkpoints, and at close), ``"external"``
    #: (another process does), or ``None`` (not recorded: not checkpointed, or
    #: a trail written before the flag existed).
    checkpointed: str | None
    #: The time of the chain's last record, when readable.
    last_ts: dt.datetime | None
    #: Whether the last record is ``audit.chain_stop`` (a clean close).
    stopped: bool


def _chain_facts(first: bytes | None, last: bytes | None) -> _ChainFacts:
    """Read the checkpoint flag from a chain's start and the time of its end."""
    checkpointed = None
    last_ts = None
    stopped = False
    try:
        start = json.loads(first) if first is not None else None
        if isinstance(start, dict) and start.get("action") == "audit.chain_start":
            info = start.get("chain_info")
            flag = info.get("checkpointed") if isinstance(info, dict) else None
            checkpointed = flag if flag in ("writer", "external") else None
        end = json.loads(last) if last is not None else None
        if isinstance(end, dict):
            last_ts = parse_ts(str(end.get("ts")))
            stopped = end.get("action") == "audit.chain_stop"
    except (ValueError, RecursionError):
        pass
    return _ChainFacts(checkpointed, last_ts, stopped)


def _text(chain: bytes) -> str:
    return chain.decode("ascii")


def _load_checkpoints(
    anchor: CheckpointAnchor | Sequence[str],
    verifier: CheckpointVerifier,
    out: _Collector,
    *,
    heartbeat: float | None,
) -> list[tuple[Checkpoint, bool]]:
    """Return ``(checkpoint, linked_to_previous)`` for every valid checkpoint."""
    records = anchor.records() if isinstance(anchor, CheckpointAnchor) else list(anchor)
    result: list[tuple[Checkpoint, bool]] = []
    prev: Checkpoint | None = None
    for n, record in enumerate(records, 1):
        try:
            cp = verifier.verify(record)
        except ValueError as exc:
            out.add(FindingKind.SIGNATURE_INVALID, detail=f"checkpoint {n}: {exc}")
            continue
        linked = cp.prev == (None if prev is None else prev.note_hash)
        if not linked:
            out.add(
                FindingKind.CHECKPOINT_GAP,
                detail=f"checkpoint {n} does not link to the one before it",
            )
        elif prev is not None and (
            cp.tree_size < prev.tree_size or cp.time < prev.time
        ):
            out.add(
                FindingKind.CHECKPOINT_GAP,
                detail=f"checkpoint {n} goes back in size or time",
            )
            linked = False
        elif (
            prev is not None
            and heartbeat is not None
            and (cp.time - prev.time).total_seconds() > heartbeat * 1.5
        ):
            out.add(
                FindingKind.CHECKPOINT_GAP,
                detail=f"no checkpoint for {int((cp.time - prev.time).total_seconds())} s before checkpoint {n}",
            )
        result.append((cp, linked))
        prev = cp
    return result


def _replay(
    cps: list[tuple[Checkpoint, bool]],
    valid: Mapping[str, Mapping[int, bytes] | ChainMacs],
    out: _Collector,
) -> None:
    """Recompute each checkpoint's Merkle root from its predecessor's range."""
    prev: Checkpoint | None = None
    for n, (cp, linked) in enumerate(cps, 1):
        base = prev
        prev = cp
        if not linked:
            continue
        if base is None:
            tree, before = MerkleAccumulator(), {}
        else:
            try:
                tree = MerkleAccumulator(base.tree_size, base.subtrees)
            except ValueError:
                continue
            if tree.root() != base.root:
                continue  # the unsigned range was edited; cannot replay this step
            before = {c: s for c, s, _ in base.heads}
        complete = True
        for chain, head, head_mac in cp.heads:
            macs = valid.get(chain, {})
            first = before.get(chain, 0) + 1
            if isinstance(macs, ChainMacs):
                # Seqs 1 to len(macs), all present: read as a range.
                if len(macs) < head:
                    complete = False
                    break
                for seq, leaf in zip(
                    range(first, head + 1), macs.range(first, head), strict=True
                ):
                    if leaf == ZERO_MAC:  # no valid record at seq
                        complete = False
                        break
                    tree.append(leaf_hash(chain, seq, leaf))
                if not complete:
                    break
                if head and macs.get(head, head_mac) != head_mac:
                    complete = False
                    break
                continue
            for seq in range(first, head + 1):
                mac = macs.get(seq)
                if mac is None:
                    complete = False
                    break
                tree.append(leaf_hash(chain, seq, mac))
            else:
                if head and macs.get(head, head_mac) != head_mac:
                    complete = False
            if not complete:
                break
        if complete and (tree.size != cp.tree_size or tree.root() != cp.root):
            out.add(
                FindingKind.ROOT_MISMATCH,
                detail=f"checkpoint {n}: recomputed Merkle root differs from the anchored root",
            )


def _verify_records(
    source: TrailSource,
    keys: AuditKeySource,
    out: _Collector,
    valid: dict[str, dict[int, bytes]],
    tops: dict[str, int],
) -> tuple[int, dict[str, list[StoredRecord]]]:
    """Verify every record of *source* (the full algorithm, any source).

    Fills *valid* (per chain, the MACs that verified, by seq) and *tops* (per
    chain, the highest seq present) and returns ``(events, records by chain)``.
    """
    chains: dict[str, list[StoredRecord]] = {}
    events = 0
    last_chain: str | None = None
    last_list: list[StoredRecord] = []
    for rec in source.records():
        if rec.__class__ is Torn:
            out.add(
                FindingKind.CRASH_TRUNCATED,
                detail=f"{rec.loc}: the start of a record whose write never "
                "finished (a crash or a full disk)",
            )
            continue
        events += 1
        if rec.__class__ is Malformed:
            out.add(FindingKind.MODIFIED, detail=f"{rec.loc}: not an audit record")
            continue
        chain = rec.chain  # type: ignore[union-attr]
        if chain is not last_chain:
            last_chain = chain
            last_list = chains.setdefault(chain, [])
        last_list.append(rec)  # type: ignore[arg-type]
    fanout: dict[tuple[str, int], set[str]] | None = None
    if isinstance(source, SqlSource):
        fanout = {}
        for chain, seq, ref in source.subject_rows():
            fanout.setdefault((chain, seq), set()).add(ref)
    redactions = _Redactions()
    for chain in sorted(chains):
        tops[chain] = _verify_chain(
            chain, chains[chain], keys, out, valid, fanout, redactions
        )
    out.resolve(redactions, fanout)
    if fanout is not None:
        # The fan-out table is read after the events, so rows of events that a
        # live writer committed in between are ahead of every chain head read:
        # only rows at or below a chain's last record read can be orphans.
        present = {(c, r.seq) for c, rs in chains.items() for r in rs}
        read_to = {c: max(r.seq for r in rs) for c, rs in chains.items() if rs}
        orphans = {(c, q) for c, q in set(fanout) - present if q <= read_to.get(c, -1)}
        for chain, seq in sorted(orphans):
            out.add(
                FindingKind.COLUMN_MISMATCH,
                chain,
                seq,
                column="subject_fanout",
                detail="fan-out rows for a record that does not exist",
            )
    return events, chains


#: How far out of place (in records of its chain) a record may be stored and
#: still be verified in its place by the streaming verifier.
REORDER_WINDOW = 512
#: The streaming verifier keeps the chain key of every this many positions,
#: to check a record stored further out of place than the window.
_KEY_EVERY = 1024


class _StreamChain:
    """One chain in :func:`_verify_stream`: :func:`_verify_chain`, record by record.

    Records arrive in file order. They are verified in seq order through a
    small reorder buffer (:data:`REORDER_WINDOW` records), which is the same
    as sorting the chain whenever no record is stored further than that from
    its place; a record that is (a "late" record) is still checked (its MAC
    with the key recomputed from a kept key, its position against the MACs
    kept), and named ``DUPLICATE``, ``FORK`` or ``MAC_INVALID``. Memory per
    chain: the buffer, the kept keys and the 32-byte MACs (which spill to
    disk), never the records.
    """

    def __init__(self, chain: str, spill: MacSpill, anchored: int) -> None:
        self.chain = chain
        self.out = _Collector()
        self.redactions = _Redactions()
        self.cvalid = spill.chain()
        #: How many positions ``cvalid`` holds, and the MAC at the last (or zeros).
        self.held = 0
        self.last_valid = ZERO_MAC
        self.heap: list[tuple[int, int, StoredRecord]] = []
        self.arrival = 0
        self.started = False
        self.key_ref = ""
        self.no_key = False
        self.key = b""
        self.prefix = b""
        self.cur = 1
        self.keys: list[bytes] = []
        #: The position and key of the last late record (see _key_at).
        self.late_key: tuple[int, bytes] | None = None
        self.expected = 1
        self.prev_seq = -1
        self.prev_rec: StoredRecord | None = None
        #: The prev of the first-branch record at ``prev_seq``.
        self.first_prev: bytes | None = None
        self.forks: dict[int, dict[bytes, bytes]] = {}
        self.released = 0
        self.count = 0
        self.anchored = anchored
        self.upto = 0
        self.first_seq: int | None = None
        self.last_seq = 0
        self.first_body: bytes | None = None
        self.last_body: bytes | None = None
        #: The audit tables only: the subject fan-out of the records read and
        #: not yet passed (by seq), and of the body-less ones (by chain and seq).
        self.fanout: collections.OrderedDict[int, set[str]] | None = None
        self.kept: dict[tuple[str, int], set[str]] = {}
        #: The native accelerator's module, when it runs (see custdata.audit._accel).
        self.native = _accel.native

    @classmethod
    def resumed(
        cls, chain: str, spill: MacSpill, anchored: int, fast: _FastChain
    ) -> _StreamChain:
        """Continue a chain the one-pass check accepted up to ``fast.seq``.

        Those records were valid and linked, in order: the state is what
        :meth:`_process` would have left after them.
        """
        self = cls(chain, spill, anchored)
        seq = fast.seq
        if not seq:
            return self
        self.cvalid = fast.macs
        self.held, self.last_valid = seq, fast.prev
        self.started = True
        self.key_ref = fast.key_ref
        self.keys = fast.keys
        self.prefix = fast.prefix
        # The key of the last position accepted (a repeat of it may follow).
        self.cur = seq
        self.key = self._key_at(seq)
        self.expected = seq + 1
        self.prev_seq = seq
        self.first_prev = ZERO_MAC if seq == 1 else fast.macs.get(seq - 1)
        self.count = seq
        self.upto = min(seq, anchored)
        self.first_seq = 1
        self.last_seq = seq
        if fast.v2:
            self.first_body, self.last_body = fast.first, fast.last
        else:
            self.first_body = _line_body(fast.first)
            self.last_body = _line_body(fast.last)
        return self

    def feed(self, rec: StoredRecord, keys: AuditKeySource) -> None:
        """Take one record in file order."""
        self.count += 1
        if rec.seq <= self.anchored:
            self.upto += 1
        heap = self.heap
        if self.started and not heap and rec.seq in (self.prev_seq, self.prev_seq + 1):
            if not self._next_in_order(rec):
                self._process(rec)
            return
        if self.started and rec.seq < self.prev_seq:
            self._late(rec)
            return
        self.arrival += 1
        heapq.heappush(heap, (rec.seq, self.arrival, rec))
        if not self.started:
            if len(heap) < REORDER_WINDOW:
                return
            self._start(keys)
        while heap and (
            heap[0][0] in (self.prev_seq, self.prev_seq + 1)
            or len(heap) > REORDER_WINDOW
        ):
            self._process(heapq.heappop(heap)[2])

    def _next_in_order(self, rec: StoredRecord) -> bool:
        """:meth:`_process` for the common case, or ``False`` having changed nothing.

        The common case: a JSON-lines record with its body, at the next
        position of a chain whose every earlier position was valid, linking
        to the last valid MAC, with a digest and MAC that verify. Anything
        else (a finding, a gap, a repeat, a branch, a redaction, a database
        row) is left to :meth:`_process`, which starts again from the same state.
        """
        seq = rec.seq
        held = self.held
        if (
            seq != held + 1
            or seq != self.expected
            or self.cur != held
            or self.no_key
            or self.first_seq is None
            or self.fanout is not None
        ):
            return False
        _, _, _, kref, prev, rmac, rdigest, body, columns = rec
        if (
            body is None
            or rdigest is None
            or rmac is None
            or columns is not None
            or kref != self.key_ref
            or prev != self.last_valid
        ):
            return False
        native = self.native
        if native is not None:
            # The same checks and key step, in one native call.
            found = native.next_in_order(
                self.key,
                self.prefix,
                _EVOLVE,
                seq,
                prev,
                rdigest,
                None if rdigest.__class__ is DerivedDigest else body,
                rmac,
            )
            if found is None:
                return False
            key = found
        else:
            if (
                rdigest.__class__ is not DerivedDigest
                and _sha256(body).digest() != rdigest
            ):
                return False
            # The key of position seq: one step from the key of the last (held).
            key = _sha256(_EVOLVE + self.key).digest()
            padded = key + _PAD
            inner = _sha256(
                b"".join(
                    (
                        padded.translate(TRANS_36),
                        self.prefix,
                        seq.to_bytes(8, "big"),
                        prev,
                        rdigest,
                    )
                )
            ).digest()
            if not _digest_eq(
                _sha256(padded.translate(TRANS_5C) + inner).digest(), rmac
            ):
                return False
        # What _process leaves after a valid record at the next position.
        self.cur, self.key = seq, key
        if not held % _KEY_EVERY:
            self.keys.append(key)
        self.last_seq = max(self.last_seq, seq)
        self.last_body = body
        self.prev_seq, self.prev_rec = seq, rec
        self.expected = seq + 1
        self.cvalid.append(rmac)
        self.held, self.last_valid = seq, rmac
        self.first_prev = prev
        if _REDACT_MARK in body:
            self.redactions.claim(body)
        return True

    def finish(self, keys: AuditKeySource) -> None:
        """Process what the buffer holds (the end of the file)."""
        if not self.started:
            if not self.heap:
                return
            self._start(keys)
        while self.heap:
            self._process(heapq.heappop(self.heap)[2])
        if self.no_key and self.first_seq is not None:
            self.out.add(
                FindingKind.MAC_INVALID,
                self.chain,
                self.first_seq,
                last_seq=self.last_seq,
                detail="the chain's key_ref names no known audit root key",
            )

    def _start(self, keys: AuditKeySource) -> None:
        """Choose the chain's key id (the most common among the first records)."""
        self.started = True
        counts = collections.Counter(r.key_ref for _, _, r in self.heap)
        self.key_ref = counts.most_common(1)[0][0]
        try:
            root = root_for(keys, self.key_ref)
        except LookupError:
            self.no_key = True
            return
        self.key = chain_initial_key(root, self.chain)
        self.keys.append(self.key)
        self.prefix = (
            _MAC_LABEL + self.chain.encode() + b"\x00" + self.key_ref.encode() + b"\x00"
        )

    def _key_at(self, seq: int) -> bytes:
        """The chain key of position *seq* (>= 1), for a late record.

        From the nearest kept key, or from the last late record's key when it
        is nearer (a replayed run of records costs one step each).
        """
        index = min((seq - 1) // _KEY_EVERY, len(self.keys) - 1)
        at, key = 1 + index * _KEY_EVERY, self.keys[index]
        late = self.late_key
        if late is not None and at <= late[0] <= seq:
            at, key = late
        for _ in range(seq - at):
            key = hashlib.sha256(_EVOLVE + key).digest()
        self.late_key = (seq, key)
        return key

    def _valid(self, seq: int) -> bytes | None:
        if seq == 0:
            return ZERO_MAC
        mac = self.cvalid.get(seq)
        return None if mac is None or mac == ZERO_MAC else mac

    def _mac_ok(self, rec: StoredRecord, key: bytes) -> bool:
        """Check the digest and the MAC of *rec*; add the finding when one fails."""
        _, _, seq, kref, prev, rmac, rdigest, body, _ = rec
        if rdigest is None:
            self.out.add(
                FindingKind.MODIFIED,
                self.chain,
                seq,
                detail="body missing or unreadable",
            )
            return False
        if body is None or rdigest.__class__ is DerivedDigest:
            # Redacted (the MAC covers the recorded digest), or the reader
            # computed the digest from this very body (format 2): no rehash.
            h = rdigest
        else:
            h = _sha256(body).digest()
            if h != rdigest:
                self.out.add(
                    FindingKind.MODIFIED,
                    self.chain,
                    seq,
                    detail="body does not match its digest",
                )
                return False
        native = self.native
        if (
            native is not None
            and rmac is not None
            and prev is not None
            and kref == self.key_ref
            and len(prev) == len(key) == len(h) == len(ZERO_MAC)
        ):
            if _digest_eq(native.step(key, self.prefix, seq, prev, h), rmac):
                return True
        elif rmac is not None and prev is not None and kref == self.key_ref:
            padded = key + _PAD
            inner = _sha256(
                b"".join(
                    (
                        padded.translate(TRANS_36),
                        self.prefix,
                        seq.to_bytes(8, "big"),
                        prev,
                        h,
                    )
                )
            ).digest()
            if _digest_eq(_sha256(padded.translate(TRANS_5C) + inner).digest(), rmac):
                return True
        self.out.add(
            FindingKind.MAC_INVALID, self.chain, seq, detail="MAC does not verify"
        )
        return False

    def _process(self, rec: StoredRecord) -> None:
        """Verify the next record in seq order (the body of _verify_chain's loop)."""
        chain, out, seq = self.chain, self.out, rec.seq
        if self.first_seq is None:
            self.first_seq = seq
            self.first_body = rec.body if seq == 1 else None
        self.last_seq = max(self.last_seq, seq)
        self.last_body = rec.body
        if self.no_key:
            return
        if (
            seq == self.prev_seq
            and self.prev_rec is not None
            and rec[1:] == self.prev_rec[1:]
        ):
            _duplicate(out, chain, seq)
            return
        if seq != self.prev_seq:
            self.first_prev = None
        self.prev_seq, self.prev_rec = seq, rec
        if seq < 1:
            out.add(
                FindingKind.MAC_INVALID,
                chain,
                seq,
                detail="sequence number out of range",
            )
            return
        if seq > self.expected:
            out.add(
                FindingKind.MISSING,
                chain,
                self.expected,
                last_seq=seq - 1,
                detail="records missing",
            )
        if seq >= self.expected:
            self.expected = seq + 1
        key = self.key
        while self.cur < seq:
            key = hashlib.sha256(_EVOLVE + key).digest()
            self.cur += 1
            if not (self.cur - 1) % _KEY_EVERY:
                self.keys.append(key)
        self.key = key
        if not self._mac_ok(rec, key):
            return
        rmac, prev = rec.mac, rec.prev
        assert rmac is not None  # noqa: S101 - checked by _mac_ok
        assert prev is not None  # noqa: S101
        # The common case, the next position: nothing there yet, and the
        # record before it is the last valid one.
        held = self.held
        first = None if seq > held else self._valid(seq)
        linked = self.last_valid if seq - 1 == held else self._valid(seq - 1)
        if first is not None or (linked is not None and linked != prev):
            self._off_branch(
                rec, first, self.first_prev if seq == self.prev_seq else None
            )
            return
        self._set_valid(seq, rmac)
        self.first_prev = prev
        self._after_valid(rec)

    def _off_branch(
        self, rec: StoredRecord, first: bytes | None, first_prev: bytes | None
    ) -> None:
        """Judge a valid record at a taken position or off the first branch (:func:`_branch`)."""
        chain, seq, rmac, prev = rec.chain, rec.seq, rec.mac, rec.prev
        assert rmac is not None  # noqa: S101 - a valid record
        assert prev is not None  # noqa: S101
        verdict = self._branch(seq, rmac, prev, first, first_prev)
        if verdict is _Branch.SAME:
            _duplicate(self.out, chain, seq)
            return
        if verdict is _Branch.BROKEN:
            self.out.add(
                FindingKind.MAC_INVALID,
                chain,
                seq,
                detail="does not link to a valid record before it",
            )
            return
        if verdict is _Branch.FORK:
            self.out.add(
                FindingKind.FORK,
                chain,
                seq,
                detail="two records chain from the same predecessor: two "
                "writers continued this chain",
            )
        self.forks.setdefault(seq, {})[rmac] = prev
        self._after_valid(rec)

    def _after_valid(self, rec: StoredRecord) -> None:
        fanout = self.fanout
        if rec.body is None:
            self.out.placeholder(rec, self.redactions)
            if fanout is not None and fanout.get(rec.seq):
                self.kept[rec.chain, rec.seq] = fanout[rec.seq]
            return
        if _REDACT_MARK in rec.body:
            self.redactions.claim(rec.body)
        if rec.columns is not None:
            _check_columns(
                self.out, rec, None if fanout is None else fanout.get(rec.seq, set())
            )

    def passed(self) -> None:
        """Forget the fan-out of the positions this chain has passed (audit tables)."""
        fanout = self.fanout
        if fanout is None:
            return
        while fanout and next(iter(fanout)) < self.prev_seq:
            fanout.popitem(last=False)

    def _set_valid(self, seq: int, mac: bytes) -> None:
        macs = self.cvalid
        gap = seq - 1 - self.held
        if gap > 0:
            macs.buf += ZERO_MAC * gap
        macs.append(mac)
        self.held, self.last_valid = seq, mac

    def _branch(
        self,
        seq: int,
        mac: bytes,
        prev: bytes,
        first: bytes | None,
        first_prev: bytes | None,
    ) -> _Branch:
        """:func:`_branch` on the streaming state (*first_prev*: the first branch's prev)."""
        here = self.forks.get(seq, {})
        if mac == first or mac in here:
            return _Branch.SAME
        siblings = set(here.values())
        if first is not None and first_prev is not None:
            siblings.add(first_prev)
        if prev in siblings:
            return _Branch.FORK
        if prev == self._valid(seq - 1) or prev in self.forks.get(seq - 1, {}):
            return _Branch.CONTINUES
        return _Branch.BROKEN

    def _late(self, rec: StoredRecord) -> None:
        """Check a record whose position the chain has passed (a repeat, a branch, or far out of place)."""
        chain, seq, out = self.chain, rec.seq, self.out
        self.last_seq = max(self.last_seq, seq)
        if self.no_key:
            return
        if seq < 1:
            out.add(
                FindingKind.MAC_INVALID,
                chain,
                seq,
                detail="sequence number out of range",
            )
            return
        if not self._mac_ok(rec, self._key_at(seq)):
            return
        rmac, prev = rec.mac, rec.prev
        assert rmac is not None  # noqa: S101 - checked by _mac_ok
        assert prev is not None  # noqa: S101
        first = self._valid(seq)
        if first is None and rmac not in self.forks.get(seq, {}):
            out.add(
                FindingKind.MAC_INVALID,
                chain,
                seq,
                detail=f"a valid record stored more than {REORDER_WINDOW} records "
                "out of place in its chain",
            )
            return
        # The first branch's record at seq linked to the record before it.
        self._off_branch(rec, first, self._valid(seq - 1))


_sha256 = hashlib.sha256
_digest_eq = hmac.compare_digest
_PAD = bytes(32)


def _verify_stream(
    source: JsonLinesSource,
    keys: AuditKeySource,
    out: _Collector,
    spill: MacSpill,
    anchored: Mapping[str, int],
) -> tuple[int, dict[str, _StreamChain]]:
    """Verify every record of a JSON-lines file in one streaming pass.

    The full algorithm (every finding named) in bounded memory: per chain, a
    :class:`_StreamChain`. Findings not tied to a chain go to *out*; each
    chain's own findings stay with it (merged in chain order afterwards).
    """
    chains: dict[str, _StreamChain] = {}
    events = 0
    claims: dict[tuple[str, int, bytes], str] = {}
    last_chain: str | None = None
    last: _StreamChain | None = None
    spill_every = _SPILL_EVERY
    resume: _Resume | None = source._resume  # noqa: SLF001 - left by the one-pass check
    source._resume = None  # noqa: SLF001
    records: Iterator[StoredRecord | Malformed | Torn]
    if resume is None:
        records = source.records()
    else:
        # Go on from where the one-pass check gave up, with its chains (and
        # the spill file their MACs are in).
        spill = resume.spill
        events = resume.events
        reader = CompactReader()
        for chain_b, fast in resume.states.items():
            name = _text(chain_b)
            state = _StreamChain.resumed(name, spill, anchored.get(name, 0), fast)
            state.redactions.claims = claims
            chains[name] = state
        for cid, fast in resume.compact.items():
            key = cid.decode("ascii")
            name = _text(fast.prefix[len(_MAC_LABEL) :].split(b"\x00", 1)[0])
            reader.chains[key] = (name, fast.key_ref)
            # The MACs that supply the prev of the records still to come.
            recent = reader.recent(key)
            low = max(1, fast.seq - 63)
            for seq, mac in zip(
                range(low, fast.seq + 1), fast.macs.range(low, fast.seq), strict=True
            ):
                recent[seq] = mac
            for n, tpl in resume.templates.get(cid, {}).items():
                reader.templates[key, int(n)] = tpl
        for body in resume.claims:
            _Redactions.claim_into(claims, body)
        records = source.records_from(
            itertools.chain((resume.line,), resume.rest), resume.before, reader
        )
    for rec in records:
        if rec.__class__ is Torn:
            out.add(
                FindingKind.CRASH_TRUNCATED,
                detail=f"{rec.loc}: the start of a record whose write never "
                "finished (a crash or a full disk)",
            )
            continue
        events += 1
        if not events & spill_every:
            spill.maybe_spill()
        if rec.__class__ is Malformed:
            out.add(FindingKind.MODIFIED, detail=f"{rec.loc}: not an audit record")
            continue
        chain = rec.chain  # type: ignore[union-attr]
        if chain is not last_chain:
            last_chain = chain
            last = chains.get(chain)
            if last is None:
                last = chains[chain] = _StreamChain(
                    chain, spill, anchored.get(chain, 0)
                )
                last.redactions.claims = claims
        last.feed(rec, keys)  # type: ignore[union-attr, arg-type]
    for name in sorted(chains):
        chains[name].finish(keys)
    for name in sorted(chains):
        state = chains[name]
        state.out.resolve(state.redactions, None)
        out.items.extend(state.out.items)
    return events, chains


def _verify_sql_stream(
    source: SqlSource,
    keys: AuditKeySource,
    out: _Collector,
    spill: MacSpill,
    anchored: Mapping[str, int],
) -> tuple[int, dict[str, _StreamChain]]:
    """Verify the audit tables chain by chain, streaming, in bounded memory.

    The full algorithm of :func:`_verify_stream` (a :class:`_StreamChain` per
    chain) on rows read a page at a time (:meth:`SqlSource.chain_records`),
    with each chain's subject fan-out read alongside in the same seq order
    (:meth:`SqlSource.chain_fanout`) and merged with its rows. Held at any
    time: a page of rows, the reorder buffer, the fan-out of the records
    buffered, and per chain its state and MACs (which spill to disk).
    """
    chains: dict[str, _StreamChain] = {}
    claims: dict[tuple[str, int, bytes], str] = {}
    kept: dict[tuple[str, int], set[str]] = {}
    # Fan-out rows with no record read at their position: orphans if their
    # chain has a record further on (rows past a chain's last record read
    # were committed by a live writer after it was read).
    loose: set[tuple[str, int]] = set()
    events = 0
    spill_every = _SPILL_EVERY
    for name in source.chains():
        if name in chains:
            continue  # read with a spelling the database's collation equates
        fan_rows = source.chain_fanout(name)
        upcoming = next(fan_rows, None)
        at_seq: int | None = None
        here: dict[str, set[str]] = {}
        claimed: set[str] = set()
        group: list[_StreamChain] = []
        for rec in source.chain_records(name):
            events += 1
            if not events & spill_every:
                spill.maybe_spill()
            seq = rec.seq
            if seq != at_seq:
                loose.update((c, at_seq) for c in here if c not in claimed)  # type: ignore[misc]
                while upcoming is not None and upcoming[1] < seq:
                    loose.add(upcoming[:2])
                    upcoming = next(fan_rows, None)
                here, claimed, at_seq = {}, set(), seq
                while upcoming is not None and upcoming[1] == seq:
                    here.setdefault(upcoming[0], set()).add(upcoming[2])
                    upcoming = next(fan_rows, None)
            state = chains.get(rec.chain)
            if state is None:
                state = chains[rec.chain] = _StreamChain(
                    rec.chain, spill, anchored.get(rec.chain, 0)
                )
                state.redactions.claims = claims
                state.fanout = collections.OrderedDict()
                state.kept = kept
                group.append(state)
            claimed.add(rec.chain)
            state.fanout[seq] = here.get(rec.chain, set())  # type: ignore[index]
            state.feed(rec, keys)
            state.passed()
        loose.update((c, at_seq) for c in here if c not in claimed)  # type: ignore[misc]
        for state in group:
            state.finish(keys)
            state.fanout = None
    for name in sorted(chains):
        state = chains[name]
        state.out.resolve(state.redactions, kept)
        out.items.extend(state.out.items)
    read_to = {c: st.last_seq for c, st in chains.items() if st.count}
    for chain, seq in sorted(loose):
        if seq <= read_to.get(chain, -1):
            out.add(
                FindingKind.COLUMN_MISMATCH,
                chain,
                seq,
                column="subject_fanout",
                detail="fan-out rows for a record that does not exist",
            )
    return events, chains


def verify_trail(
    source: TrailSource,
    keys: AuditKeySource,
    *,
    checkpoints: CheckpointAnchor | Sequence[str] | None = None,
    verifier: CheckpointVerifier | None = None,
    heartbeat: float | None = None,
    now: dt.datetime | None = None,
) -> VerificationReport:
    """Verify a stored trail.

    Args:
        source: The stored trail.
        keys: Gives the audit root key for each ``key_ref``.
        checkpoints: The anchor (or its records). Without it, every record is an
            unanchored tail and truncation cannot be detected.
        verifier: The pinned checkpoint verifier key; required with *checkpoints*.
        heartbeat: The checkpoint interval in seconds; a silence longer than 1.5
            intervals between checkpoints, or between the latest checkpoint and
            a chain's last record, is a ``CHECKPOINT_GAP``, and a trail with no
            checkpoint at all is ``CHECKPOINT_MISSING``.
        now: Accepted for compatibility and ignored: silences are measured
            against the trail's own times, so a trail verified long after it
            was written (or written under load) is judged the same.

    Returns:
        The report; :attr:`VerificationReport.intact` says whether it is clean.

    Raises:
        ValueError: *checkpoints* is given without *verifier*.
    """
    if checkpoints is not None and verifier is None:
        raise ValueError("verifying checkpoints needs the checkpoint verifier key")
    out = _Collector()
    fast = (
        _verify_json_lines_fast(source, keys)
        if type(source) is JsonLinesSource
        else None
    )
    spill = MacSpill()
    resumed: MacSpill | None = None
    try:
        stream = None
        cps: list[tuple[Checkpoint, bool]] | None = None
        if fast is None and isinstance(source, JsonLinesSource):
            # The streaming full algorithm needs the anchored heads as it reads
            # (to count the unanchored tail); checkpoint findings follow the
            # record findings, as they would have.
            cp_out = _Collector()
            cps = []
            if checkpoints is not None and verifier is not None:
                cps = _load_checkpoints(
                    checkpoints, verifier, cp_out, heartbeat=heartbeat
                )
            anchored = {c: s for c, s, _ in cps[-1][0].heads} if cps else {}
            if source._resume is not None:  # noqa: SLF001
                resumed = source._resume.spill  # noqa: SLF001
            stream = _verify_stream(source, keys, out, spill, anchored)
            out.items.extend(cp_out.items)
        elif type(source) is SqlSource:
            # The audit tables, streaming (as above).
            cp_out = _Collector()
            cps = []
            if checkpoints is not None and verifier is not None:
                cps = _load_checkpoints(
                    checkpoints, verifier, cp_out, heartbeat=heartbeat
                )
            anchored = {c: s for c, s, _ in cps[-1][0].heads} if cps else {}
            stream = _verify_sql_stream(source, keys, out, spill, anchored)
            out.items.extend(cp_out.items)
        return _conclude(
            source, out, fast, stream, cps, keys, checkpoints, verifier, heartbeat
        )
    finally:
        spill.close()
        if resumed is not None:
            resumed.close()
        if fast is not None:
            for macs in fast[1].values():
                macs.spill.close()


def _conclude(  # noqa: PLR0917 - verify_trail's state, in order
    source: TrailSource,
    out: _Collector,
    fast: tuple[int, dict[str, ChainMacs], dict[str, tuple[bytes | None, bytes | None]]]
    | None,
    stream: tuple[int, dict[str, _StreamChain]] | None,
    loaded: list[tuple[Checkpoint, bool]] | None,
    keys: AuditKeySource,
    checkpoints: CheckpointAnchor | Sequence[str] | None,
    verifier: CheckpointVerifier | None,
    heartbeat: float | None,
) -> VerificationReport:
    """Finish :func:`verify_trail` after the one-pass check or the streaming algorithm.

    *fast* is the one-pass result (or ``None``); *stream* the streaming full
    algorithm's, with the checkpoints it *loaded*; with neither, the records
    are verified here in memory (the audit tables).
    """
    valid: dict[str, dict[int, bytes]] | dict[str, ChainMacs] = {}
    tops: dict[str, int] = {}
    # Per chain, how many records were read: in all, and at or below a seq.
    read: dict[str, int]
    read_upto: Callable[[str, int], int]
    facts: dict[str, _ChainFacts]
    if fast is not None:
        events, valid, ends = fast
        facts = {c: _chain_facts(*pair) for c, pair in ends.items()}
        tops = {chain: len(macs) for chain, macs in valid.items()}
        read = tops

        def read_upto(chain: str, seq: int) -> int:
            return min(seq, tops[chain])

    elif stream is not None:
        events, streamed = stream
        valid = {c: st.cvalid for c, st in streamed.items()}
        tops = {
            c: st.last_seq if st.no_key else st.expected - 1
            for c, st in streamed.items()
        }
        read = {c: st.count for c, st in streamed.items()}
        facts = {
            c: _chain_facts(st.first_body, st.last_body)
            for c, st in streamed.items()
            if st.first_seq is not None
        }

        def read_upto(chain: str, seq: int) -> int:
            # Counted while reading, against the anchored heads (preloaded).
            return streamed[chain].upto

    else:
        full: dict[str, dict[int, bytes]] = {}
        valid = full
        events, chains = _verify_records(source, keys, out, full, tops)
        read = {chain: len(recs) for chain, recs in chains.items()}
        facts = {
            c: _chain_facts(recs[0].body if recs[0].seq == 1 else None, recs[-1].body)
            for c, recs in chains.items()
            if recs
        }

        def read_upto(chain: str, seq: int) -> int:
            # Each list is sorted by seq after _verify_chain.
            return bisect.bisect_right(chains[chain], seq, key=lambda r: r.seq)

    cps: list[tuple[Checkpoint, bool]] = []
    if loaded is not None:
        cps = loaded
        _replay(cps, valid, out)
    elif checkpoints is not None and verifier is not None:
        cps = _load_checkpoints(checkpoints, verifier, out, heartbeat=heartbeat)
        _replay(cps, valid, out)
    latest = cps[-1][0] if cps else None
    anchored: dict[str, int] = {}
    if latest is not None:
        anchored = {c: s for c, s, _ in latest.heads}
        _check_heads(latest, tops, out)
    if checkpoints is not None:
        _check_coverage(latest, anchored, tops, facts, heartbeat, out)
    unanchored = 0
    for chain, count in read.items():
        unanchored += count - read_upto(chain, anchored.get(chain, 0))
    if unanchored:
        out.add(
            FindingKind.UNANCHORED_TAIL,
            count=unanchored,
            detail="records newer than the last anchored checkpoint; their tail "
            "could be truncated undetectably",
        )
    findings = sorted(out.items, key=lambda f: f.informational)
    return VerificationReport(
        source=source.description,
        findings=tuple(findings),
        events=events,
        chains=len(read),
        checkpoints=len(cps),
        verified_through=latest,
        unanchored=unanchored,
    )


def _check_coverage(  # noqa: PLR0917 - internal, called once
    latest: Checkpoint | None,
    anchored: Mapping[str, int],
    tops: Mapping[str, int],
    facts: Mapping[str, _ChainFacts],
    heartbeat: float | None,
    out: _Collector,
) -> None:
    """Check that the checkpoints cover what the trail says they should.

    A chain whose start records that it is checkpointed, or any chain when a
    *heartbeat* is demanded, needs checkpoints: none at all is
    ``CHECKPOINT_MISSING``. A chain whose own writer checkpoints made a final
    checkpoint after its clean stop; a latest checkpoint that does not reach
    that stop is ``CHECKPOINT_MISSING`` too (an older or cut checkpoint file).
    With a *heartbeat*, a chain's last record more than 1.5 intervals after the
    latest checkpoint is a ``CHECKPOINT_GAP``: the silence is measured against
    the trail's own times, never the verifier's clock.
    """
    wanted = sorted(c for c, f in facts.items() if f.checkpointed or heartbeat)
    if not wanted:
        return
    if latest is None:
        out.add(
            FindingKind.CHECKPOINT_MISSING,
            count=len(wanted),
            detail=f"{len(wanted)} chains record that they are checkpointed, "
            "but the anchor holds no valid checkpoint",
        )
        return
    for chain in wanted:
        fact = facts[chain]
        top = tops.get(chain, 0)
        if (
            fact.checkpointed == "writer"
            and fact.stopped
            and anchored.get(chain, 0) < top
        ):
            out.add(
                FindingKind.CHECKPOINT_MISSING,
                chain,
                anchored.get(chain, 0) + 1,
                last_seq=top,
                detail="the chain closed, and its final checkpoint is not in the anchor",
            )
        elif (
            heartbeat is not None
            and fact.last_ts is not None
            and (fact.last_ts - latest.time).total_seconds() > heartbeat * 1.5
        ):
            late = int((fact.last_ts - latest.time).total_seconds())
            out.add(
                FindingKind.CHECKPOINT_GAP,
                chain,
                detail=f"records written {late} s after the latest checkpoint",
            )


def _check_heads(latest: Checkpoint, tops: Mapping[str, int], out: _Collector) -> None:
    short = [(c, tops.get(c), s) for c, s, _ in latest.heads if tops.get(c, 0) < s]
    partial = [x for x in short if x[1] is not None]
    if partial and len(short) > 1:
        missing = sum(s - (top or 0) for _, top, s in short)
        out.add(
            FindingKind.ROLLBACK,
            count=latest.tree_size - missing,
            detail=f"the store holds {latest.tree_size - missing} of the "
            f"{latest.tree_size} anchored records; {len(short)} chains end early",
        )
        return
    for chain, top, head in short:
        if top is None:
            out.add(
                FindingKind.CHAIN_MISSING,
                chain,
                detail=f"an anchored chain with {head} records is gone",
            )
        else:
            out.add(
                FindingKind.TRUNCATED,
                chain,
                top + 1,
                last_seq=head,
                detail=f"chain ends at {top}; the anchored head is {head}",
            )
