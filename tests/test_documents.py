"""Rendered documents, the published-notice drift check and ``custdata docs render``.

The golden files under ``tests/golden/documents/`` are the documents of the
example policy (``examples/custdata.toml``) with the example shop's models.
After an intended change, rewrite them with::

    CUSTDATA_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_documents.py

and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import sys

from pathlib import Path

import pytest

import custdata

from custdata.cli import main
from custdata.governance import (
    DOCUMENTS,
    EXTENSIONS,
    FieldRecord,
    notice_drift,
    render_document,
    render_documents,
    safety_measures,
)


sys.path.insert(0, str(Path(__file__).parent))
from policy_variants import policy_variant


ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "custdata.toml"
GOLDEN = Path(__file__).resolve().parent / "golden" / "documents"
MODELS = "examples.shop.models:Base"
UPDATE = os.environ.get("CUSTDATA_UPDATE_GOLDEN") == "1"
TEXT_DOCUMENTS = [d for d in DOCUMENTS if d != "fideslang"]


@pytest.fixture(scope="module")
def shop_fields() -> tuple[FieldRecord, ...]:
    """The field inventory of the example shop's models."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from examples.shop.models import Base

    from custdata.sqlalchemy import field_inventory

    return field_inventory(Base)


def _golden(relative: str, actual: str) -> str:
    path = GOLDEN / relative
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    return path.read_text(encoding="utf-8")


class TestGoldenDocuments:
    @pytest.mark.parametrize("lang", ["ja", "en"])
    @pytest.mark.parametrize("name", TEXT_DOCUMENTS)
    def test_markdown_matches_golden(
        self,
        sample_policy: custdata.Policy,
        shop_fields: tuple[FieldRecord, ...],
        name: str,
        lang: str,
    ) -> None:
        """Each document of the example policy renders exactly as its golden file."""
        actual = render_document(
            sample_policy,
            name,
            lang=lang,  # type: ignore[arg-type]
            fields=shop_fields,
        )
        assert _golden(f"{lang}/{name}.md", actual) == actual

    def test_fideslang_matches_golden(
        self, sample_policy: custdata.Policy, shop_fields: tuple[FieldRecord, ...]
    ) -> None:
        """The fideslang export renders exactly as its golden file, and is JSON."""
        actual = render_document(sample_policy, "fideslang", fields=shop_fields)
        assert _golden("fideslang.yml", actual) == actual
        manifest = json.loads(actual)
        declarations = manifest["system"][0]["privacy_declarations"]
        assert len(sample_policy.purposes) == len(declarations)
        assert {"shop_customers", "shop_orders"} == {
            c["name"] for c in manifest["dataset"][0]["collections"]
        }


class TestFideslang:
    def test_export_validates_with_fideslang(
        self, sample_policy: custdata.Policy, shop_fields: tuple[FieldRecord, ...]
    ) -> None:
        """The export is a valid fideslang System and Dataset, and every data
        category, data use and data subject is a key of fideslang's taxonomy."""
        fideslang = pytest.importorskip("fideslang")
        from fideslang.models import Dataset, System

        manifest = json.loads(
            render_document(sample_policy, "fideslang", fields=shop_fields)
        )
        system = System.model_validate(manifest["system"][0])
        dataset = Dataset.model_validate(manifest["dataset"][0])
        taxonomy = fideslang.DEFAULT_TAXONOMY
        categories = {c.fides_key for c in taxonomy.data_category}
        uses = {u.fides_key for u in taxonomy.data_use}
        subjects = {s.fides_key for s in taxonomy.data_subject}
        for declaration in system.privacy_declarations:
            assert declaration.data_use in uses
            assert set(declaration.data_categories) <= categories
            assert set(declaration.data_subjects) <= subjects
        for collection in dataset.collections:
            for field in collection.fields:
                assert set(field.data_categories or ()) <= categories

    def test_round_trip_keeps_categories_and_purposes(
        self, sample_policy: custdata.Policy, shop_fields: tuple[FieldRecord, ...]
    ) -> None:
        """Each exported field keeps its fideslang category and names its purposes."""
        manifest = json.loads(
            render_document(sample_policy, "fideslang", fields=shop_fields)
        )
        exported = {
            (c["name"], f["name"]): f
            for c in manifest["dataset"][0]["collections"]
            for f in c["fields"]
        }
        tax = sample_policy.taxonomy
        for record in shop_fields:
            field = exported[(record.table, record.column)]
            assert [tax[record.category].fideslang] == field["data_categories"]
            assert f"custdata category {record.category};" in field["description"]
            for purpose in record.purposes:
                assert purpose in field["description"]


class TestContent:
    @pytest.mark.parametrize("lang", ["ja", "en"])
    def test_notice_names_every_purpose_and_item(
        self, sample_policy: custdata.Policy, lang: str
    ) -> None:
        """The notice has every purpose's published text and the 公表事項 items."""
        text = render_document(sample_policy, "notice", lang=lang)  # type: ignore[arg-type]
        notice = sample_policy.registers.notice
        for purpose in sample_policy.purposes.values():
            assert (purpose.text_ja if lang == "ja" else purpose.text_en) in text
        for value in (notice.address, notice.representative, notice.complaint_desk):
            assert value in text
        assert (notice.fee_ja if lang == "ja" else notice.fee_en) in text

    @pytest.mark.parametrize("name", TEXT_DOCUMENTS)
    def test_no_register_is_left_an_extension_point(
        self, sample_policy: custdata.Policy, name: str
    ) -> None:
        """Provision, incidents and requests are all rendered from their registers now."""
        assert () == EXTENSIONS
        for lang in ("ja", "en"):
            text = render_document(sample_policy, name, lang=lang)  # type: ignore[arg-type]
            assert "[extension point:" not in text

    def test_technical_measures_come_from_library_state(
        self, sample_policy: custdata.Policy, shop_fields: tuple[FieldRecord, ...]
    ) -> None:
        """The generated encryption entry names the encrypted fields, and counts them."""
        unencrypted = FieldRecord(
            table="t", column="memo", category="inquiry.contents", encrypted=False
        )
        measures = safety_measures(sample_policy, (*shop_fields, unencrypted))
        encryption = next(m for m in measures if m.id == "custdata.encryption")
        assert encryption.generated
        assert encryption.text_en.startswith(
            f"{len(shop_fields)} of {len(shop_fields) + 1} customer-data fields"
        )
        assert "shop_customers.card" in encryption.text_en
        assert "t.memo" not in encryption.text_en
        no_audit = safety_measures(sample_policy, audit=False)
        assert "custdata.audit_trail" not in {m.id for m in no_audit}
        assert "custdata.audit_trail" in {m.id for m in measures}

    def test_html_comes_from_the_same_markdown(
        self, sample_policy: custdata.Policy
    ) -> None:
        """HTML is the Markdown rendered: a page with the same headings and purposes."""
        page = render_document(sample_policy, "notice", lang="en", fmt="html")
        assert page.startswith("<!DOCTYPE html>")
        assert "<h2>2. Purposes of use of retained personal data</h2>" in page
        assert "<script" not in page
        for purpose in sample_policy.purposes.values():
            assert f"<li>{purpose.text_en}" in page.replace("&quot;", '"')

    def test_markup_in_the_policy_is_escaped(self, tmp_path: Path) -> None:
        """Markup in a published text can neither inject HTML nor break a table."""
        canary = "<script>alert(1)</script> | **x** {{ 7*7 }}"
        policy = custdata.Policy.from_toml(
            policy_variant(
                tmp_path,
                'text_en = "To ship orders and tell you about their delivery"',
                f'text_en = "{canary}"',
            )
        )
        page = render_document(policy, "regulation", lang="en", fmt="html")
        assert "<script>" not in page
        assert "&lt;script&gt;" in page
        # Policy text is data, never a template: nothing in it is evaluated.
        assert "{{ 7*7 }}" in page
        assert "49" not in page
        markdown = render_document(policy, "regulation", lang="en")
        row = next(line for line in markdown.splitlines() if "| shipping |" in line)
        # Six cells: seven unescaped pipes; the canary's own pipe is escaped.
        assert 7 == len(re.findall(r"(?<!\\)\|", row))
        assert "\\|" in row

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"name": "minutes"}, "unknown document"),
            ({"name": "notice", "lang": "fr"}, "unknown language"),
            ({"name": "notice", "fmt": "pdf"}, "unknown format"),
        ],
    )
    def test_bad_arguments(
        self, sample_policy: custdata.Policy, kwargs: dict[str, str], message: str
    ) -> None:
        """An unknown document, language or format is a ValueError naming it."""
        with pytest.raises(ValueError, match=message):
            render_document(sample_policy, **kwargs)  # type: ignore[arg-type]

    def test_render_documents_names_files(self, sample_policy: custdata.Policy) -> None:
        """render_documents returns one file per document, named by language."""
        names = set(render_documents(sample_policy, lang="en", fmt="html"))
        assert {
            "regulation.en.html",
            "notice.en.html",
            "ledger.en.html",
            "ropa.en.html",
            "fideslang.yml",
        } == names


class TestDrift:
    @pytest.mark.parametrize("lang", ["ja", "en"])
    @pytest.mark.parametrize("fmt", ["md", "html"])
    def test_current_rendering_has_no_drift(
        self, sample_policy: custdata.Policy, lang: str, fmt: str
    ) -> None:
        """The notice as rendered today matches the policy, in either language and format."""
        published = render_document(sample_policy, "notice", lang=lang, fmt=fmt)  # type: ignore[arg-type]
        assert [] == notice_drift(sample_policy, published)

    def test_purpose_added_without_publishing(
        self, sample_policy: custdata.Policy, tmp_path: Path
    ) -> None:
        """A purpose added to the policy but not to the notice is PUB001, named."""
        published = render_document(sample_policy, "notice", lang="ja")
        policy = custdata.Policy.from_toml(
            policy_variant(
                tmp_path,
                "[roles.support_agent]",
                '[purposes.profiling]\ntext_ja = "購買傾向の分析のため"\n'
                'text_en = "To analyse purchasing trends"\nowner = "cpo"\n'
                'retention = "marketing"\n\n[roles.support_agent]',
            )
        )
        drifts = notice_drift(policy, published)
        assert [("PUB001", "purposes.profiling")] == [
            (d.code, d.key_path) for d in drifts
        ]
        assert "'profiling'" in drifts[0].message

    def test_purpose_removed_but_still_published(
        self, sample_policy: custdata.Policy, tmp_path: Path
    ) -> None:
        """A purpose still published but gone from the policy is PUB002."""
        published = render_document(sample_policy, "notice", lang="en")
        published = published.replace(
            "## 3.", "- To sell your data to anyone\n\n## 3.", 1
        )
        drifts = notice_drift(sample_policy, published)
        assert ["PUB002"] == [d.code for d in drifts]
        assert "To sell your data to anyone" in drifts[0].message

    def test_changed_item_is_drift(self, sample_policy: custdata.Policy) -> None:
        """A 公表事項 item that no longer matches the policy (the fee) is PUB003."""
        published = render_document(sample_policy, "notice", lang="en")
        published = published.replace("JPY 1,000", "JPY 500")
        assert [("PUB003", "notice.fee_en")] == [
            (d.code, d.key_path) for d in notice_drift(sample_policy, published)
        ]

    def test_foreign_country_added_without_publishing(
        self, sample_policy: custdata.Policy, tmp_path: Path
    ) -> None:
        """Data now handled in a foreign country the notice does not name is PUB003
        (PPC FAQ Q10-24: the countries belong in the published safety measures)."""
        published = render_document(sample_policy, "notice", lang="ja")
        policy = custdata.Policy.from_toml(
            policy_variant(
                tmp_path,
                "\nforeign_countries = []",
                '\nforeign_countries = ["ベトナム"]',
            )
        )
        assert [("PUB003", "notice.foreign_countries.ベトナム")] == [
            (d.code, d.key_path) for d in notice_drift(policy, published)
        ]
        republished = render_document(policy, "notice", lang="ja")
        assert "ベトナム" in republished
        assert [] == notice_drift(policy, republished)

    def test_measure_changed_without_publishing(
        self, sample_policy: custdata.Policy, tmp_path: Path
    ) -> None:
        """A registered safety measure whose text changed is PUB003 naming it."""
        published = render_document(sample_policy, "notice", lang="en")
        policy = custdata.Policy.from_toml(
            policy_variant(
                tmp_path,
                'text_en = "Handlers are trained at least once a year."',
                'text_en = "Handlers are trained twice a year."',
            )
        )
        assert [("PUB003", "measures.training.text_en")] == [
            (d.code, d.key_path) for d in notice_drift(policy, published)
        ]


class TestCli:
    def test_docs_render_writes_every_document(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``custdata docs render`` writes both languages and the fideslang export."""
        out = tmp_path / "docs"
        assert 0 == main(
            ["docs", "render", "--policy", str(EXAMPLE), "--out", str(out)]
        )
        expected = {f"{d}.{lang}.md" for d in TEXT_DOCUMENTS for lang in ("ja", "en")}
        assert expected | {"fideslang.yml"} == {p.name for p in out.iterdir()}
        assert str(out / "notice.ja.md") in capsys.readouterr().out

    def test_docs_render_html_with_models(
        self, tmp_path: Path, shop_fields: tuple[FieldRecord, ...]
    ) -> None:
        """With --models the ledger lists the stored fields; --format html writes pages."""
        out = tmp_path / "html"
        argv = ["docs", "render", "--policy", str(EXAMPLE), "--out", str(out)]
        argv += ["--lang", "en", "--format", "html", "--models", MODELS]
        cwd = Path.cwd()
        os.chdir(ROOT)
        try:
            assert 0 == main(argv)
        finally:
            os.chdir(cwd)
        ledger = (out / "ledger.en.html").read_text(encoding="utf-8")
        assert "<td>shop_customers</td>" in ledger
        assert not (out / "ledger.ja.html").exists()

    def test_docs_render_bad_policy(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An invalid policy is exit 2 with one line on stderr and nothing written."""
        bad = policy_variant(
            tmp_path, 'roles = ["billing_clerk"]', 'roles = ["no_such_role"]'
        )
        out = tmp_path / "out"
        assert 2 == main(["docs", "render", "--policy", str(bad), "--out", str(out)])
        err = capsys.readouterr().err
        assert 1 == len(err.strip().splitlines())
        assert "handlers.u-101.roles" in err
        assert "no_such_role" in err
        assert not out.exists()

    def test_check_published_fails_then_passes(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``check --published`` exits 1 naming an unpublished purpose, 0 once published."""
        published = tmp_path / "notice.md"
        main(["docs", "render", "--policy", str(EXAMPLE), "--out", str(tmp_path)])
        published.write_text(
            (tmp_path / "notice.ja.md").read_text(encoding="utf-8"), encoding="utf-8"
        )
        capsys.readouterr()
        base = ["check", "--today", "2027-01-01", "--published", str(published)]
        assert 0 == main([*base, "--policy", str(EXAMPLE)])
        changed = policy_variant(
            tmp_path,
            "[roles.support_agent]",
            '[purposes.profiling]\ntext_ja = "購買傾向の分析のため"\n'
            'text_en = "To analyse purchasing trends"\nowner = "cpo"\n'
            'retention = "marketing"\n\n[roles.support_agent]',
        )
        capsys.readouterr()
        assert 1 == main([*base, "--policy", str(changed)])
        out = capsys.readouterr().out
        assert "PUB001" in out
        assert "'profiling'" in out
        republished = tmp_path / "republished"
        main(["docs", "render", "--policy", str(changed), "--out", str(republished)])
        base[-1] = str(republished / "notice.ja.md")
        assert 0 == main([*base, "--policy", str(changed)])

    def test_check_published_unreadable(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A published notice that cannot be read is exit 2, one line on stderr."""
        argv = [
            "check",
            "--policy",
            str(EXAMPLE),
            "--published",
            str(tmp_path / "none"),
        ]
        assert 2 == main(argv)
        assert "cannot read the published notice" in capsys.readouterr().err
