"""Per-subject masking inside a fetched batch (internal).

When a decision withholds some subjects of a batch (no consent in force, or
their use restricted, for fields that all say ``on_violation = "mask"``; see
:attr:`custdata.AccessDecision.withheld`), their values are revealed only as
the mask text and never decrypted, while the other rows are released. These
helpers are the one per-batch hook the cursor calls, only when a decision
withheld someone: the common path pays nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._binding import subject_parts
from ._sealed import MASK_TEXT, Grant


__all__ = ["mask_grant", "open_withheld", "row_subjects", "split_withheld"]


def row_subjects(rows: Sequence[Any], sources: Sequence[Any]) -> list[list[str | None]]:
    """Per subject source, each row's canonical subject text (``None``: no subject).

    Args:
        rows: The fetched rows.
        sources: The plan's ``(position, kind, packed)`` per subject source.
    """
    out: list[list[str | None]] = []
    for index, kind, packed in sources:
        memo: dict[object, str] = {}
        texts: list[str | None] = []
        for row in rows:
            raw = row[index]
            if raw is not None and packed:
                raw = raw.partition(b"|" if raw.__class__ is bytes else "|")[0]
            if raw is None:
                texts.append(None)
                continue
            text = memo.get(raw)
            if text is None:
                text = memo[raw] = subject_parts(raw, kind)[0]
            texts.append(text)
        out.append(texts)
    return out


def _hidden(
    plan: Any, rows: Sequence[Any], withheld: Mapping[str, frozenset[str]]
) -> list[tuple[int, int, int]]:
    """The (row, position, source) of every value of a withheld subject."""
    texts = row_subjects(rows, plan.sources)
    cells: list[tuple[int, int, int]] = []
    for pos, b, _text, src in plan.columns:
        out = withheld.get(b.table or "?")
        if not out:
            continue
        # A value with no subject of its own cannot be told released: masked.
        cells.extend(
            (i, pos, src)
            for i in range(len(rows))
            if src < 0 or texts[src][i] is None or texts[src][i] in out
        )
    return cells


def open_withheld(  # noqa: PLR0917
    rows: Sequence[Any],
    plan: Any,
    opens: Sequence[tuple[int, Any, bool, int]],
    tails: list[list[bytes | None]],
    blobs: dict[int, list[Any]],
    masks: Sequence[int],
    withheld: Mapping[str, frozenset[str]],
    open_rows: Callable[..., list[Any]],
) -> list[Any]:
    """Decrypt a batch's released values; withheld subjects' values become masks.

    The withheld values are never decrypted: they are taken out of the batch
    before *open_rows* (the cursor's decrypting step) runs, and the mask text
    is put in their place afterwards (``NULL`` stays ``NULL``).
    """
    cells = _hidden(plan, rows, withheld)
    cut = [list(row) for row in rows]
    blobs = {src: list(values) for src, values in blobs.items()}
    masked: list[tuple[int, int]] = []
    for i, pos, src in cells:
        packed = blobs.get(src) if src >= 0 else None
        value = cut[i][pos] if packed is None else packed[i]
        if value is not None:
            masked.append((i, pos))
        cut[i][pos] = None
        if packed is not None:
            packed[i] = None
    opened = [
        list(row)
        for row in open_rows([tuple(r) for r in cut], opens, tails, blobs, masks)
    ]
    for i, pos in masked:
        opened[i][pos] = MASK_TEXT
    return [tuple(row) for row in opened]


def mask_grant(grant: Grant) -> Grant:
    """A grant like *grant* that reveals every field it opens only as its mask."""
    return Grant(grant.context, grant.custodian, dict.fromkeys(grant.opens, MASK_TEXT))


def split_withheld(
    rows: Sequence[Any], plan: Any, withheld: Mapping[str, frozenset[str]]
) -> list[bool]:
    """Per row of a sealed load, whether a value of it belongs to a withheld subject."""
    flags = [False] * len(rows)
    for i, _pos, _src in _hidden(plan, rows, withheld):
        flags[i] = True
    return flags
