"""The regulation's documents, the drift check, a review and the compliance report.

Renders the example policy's documents and report into a temporary folder,
shows that the published notice matches, then adds a purpose without
publishing it and shows the drift check naming it.

Run: ``python examples/regulation_documents.py``.
"""

from __future__ import annotations

import datetime as dt
import tempfile

from pathlib import Path

import attrs

import custdata

from custdata.governance import (
    notice_drift,
    render_document,
    render_documents,
    render_report,
    review_report,
)


POLICY = Path(__file__).resolve().parent / "custdata.toml"


def main() -> None:
    policy = custdata.Policy.from_toml(POLICY)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for lang in ("ja", "en"):
            for name, text in render_documents(policy, lang=lang).items():
                (folder / name).write_text(text, encoding="utf-8")
        print("rendered:", ", ".join(sorted(p.name for p in folder.iterdir())))

        published = render_document(policy, "notice", lang="ja")
        print("drift against the published notice:", notice_drift(policy, published))

        # A new purpose enters the policy, but nobody republishes the notice.
        profiling = custdata.Purpose(
            id="profiling",
            text_ja="購買傾向の分析のため",
            text_en="To analyse purchasing trends",
            owner="cpo",
            retention="marketing",
        )
        changed = attrs.evolve(
            policy, purposes={**policy.purposes, "profiling": profiling}
        )
        for drift in notice_drift(changed, published):
            print(f"{drift.code} {drift.key_path}: {drift.message}")

        report, _ = review_report(policy, today=dt.date(2027, 10, 1))
        print(report.splitlines()[0])

        pages = render_report(policy, today=dt.date(2027, 1, 1))
        (folder / "report").mkdir()
        for name, text in pages.items():
            (folder / "report" / name).write_text(text, encoding="utf-8")
        print("report pages:", len(pages))


if __name__ == "__main__":
    main()
