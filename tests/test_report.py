"""``custdata report --html``: the compliance report, as HTML and in a real browser.

The screenshot test renders the report in headless Chromium (``.ci/run``
installs it) and keeps the PNG under the test's temporary folder as the
artefact; the path is printed (``pytest -s`` shows it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from collections.abc import Iterator
from pathlib import Path

import pytest

import custdata

from custdata.audit import AuditTrail, JsonLinesSink
from custdata.cli import main
from custdata.crypto import Keyring
from custdata.governance import FieldRecord, data_map, render_report


ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "custdata.toml"
MODELS = "examples.shop.models:Base"


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def in_root() -> Iterator[None]:
    """Run in the repository root, so ``--models examples.shop.models:Base`` imports."""
    cwd = Path.cwd()
    os.chdir(ROOT)
    yield
    os.chdir(cwd)


@pytest.fixture
def trail(tmp_path: Path, sample_policy: custdata.Policy) -> dict[str, Path]:
    """A real JSON-lines audit trail with a few allowed and denied decisions."""
    ring = Keyring.generate()
    ring.save(tmp_path / "keyring.json")
    path = tmp_path / "audit.jsonl"
    with AuditTrail(ring, sinks=[JsonLinesSink(path)], checkpoint_interval=None) as t:
        custodian = custdata.Custodian(policy=sample_policy, audit=t)
        with custodian.activate():
            for actor in ("u-101", "u-102"):
                with custdata.acting_as(actor, role="support_agent"):
                    with custdata.purpose("support"):
                        pass
                    with pytest.raises(custdata.PurposeNotGrantedError):
                        custdata.purpose("billing").__enter__()
    return {"trail": path, "keyring": tmp_path / "keyring.json"}


def _report(out: Path, *extra: str, today: str = "2027-01-01") -> tuple[int, str]:
    argv = ["report", "--policy", str(EXAMPLE), "--html", str(out)]
    status = main([*argv, "--models", MODELS, "--today", today, *extra])
    return status, (out / "index.html").read_text(
        encoding="utf-8"
    ) if status == 0 else ""


class TestReportHtml:
    def test_page_has_map_fields_and_every_purpose(
        self, tmp_path: Path, in_root: object, sample_policy: custdata.Policy
    ) -> None:
        """The index has the inline SVG map naming every purpose, category and role,
        the fields with their protection, and links to every document page."""
        status, page = _report(tmp_path / "r")
        assert 0 == status
        svg = page[page.index("<svg") : page.index("</svg>")]
        for pid in sample_policy.purposes:
            assert f'data-id="{pid}"' in svg
        for rid in sample_policy.roles:
            assert f'data-id="{rid}"' in svg
        for key in {c for p in sample_policy.purposes.values() for c in p.categories}:
            assert f'data-key="{key}"' in svg
        assert svg.count('class="edge"') > len(sample_policy.purposes)
        assert "<td>shop_customers.card</td>" in page
        assert "AES-256-GCM" in page
        for href in re.findall(r'href="([^"#]+)"', page):
            assert (tmp_path / "r" / href).is_file()

    def test_page_needs_no_network(self, tmp_path: Path, in_root: object) -> None:
        """No script, stylesheet, image or font is loaded from anywhere at view time."""
        _, page = _report(tmp_path / "r")
        assert "<script" not in page
        assert not re.search(r'(?:src|href)="(?:https?:)?//', page)
        assert "@import" not in page
        assert "url(" not in page

    def test_reviews_due_and_findings(self, tmp_path: Path, in_root: object) -> None:
        """Past the policy's review date the report shows it overdue with its finding."""
        _, page = _report(tmp_path / "r", today="2027-10-01")
        assert "<code>policy.next_review</code></td><td>2027-09-30</td>" in page
        assert '<td class="bad">overdue</td>' in page
        assert "POL003" in page

    def test_extension_points(self, tmp_path: Path, in_root: object) -> None:
        """Consent counts are the one marked extension point; incidents, requests and contractors are not."""
        _, page = _report(tmp_path / "r")
        assert "[extension point: consent ledger]" in page
        for ext in ("requests", "incidents"):
            assert f"[extension point: {ext}]" not in page
        assert "No data-subject request is open." in page
        assert 'id="open-requests"' in page
        assert "extension point (provision)" not in page
        assert "No incident register was given" in page

    def test_policy_text_is_escaped(self, tmp_path: Path) -> None:
        """Markup in the policy is escaped in the page and the picture."""
        text = EXAMPLE.read_text(encoding="utf-8").replace(
            'description = "Packs and ships orders"',
            'description = "<img src=x onerror=alert(1)>"',
        )
        text = text.replace(
            'text_en = "To ship orders and tell you about their delivery"',
            'text_en = "<script>alert(1)</script>"',
        )
        policy_path = tmp_path / "p.toml"
        policy_path.write_text(text, encoding="utf-8")
        pages = render_report(
            custdata.Policy.from_toml(policy_path),
            today=custdata.Policy.from_toml(policy_path).effective_date,
        )
        assert "<script>" not in pages["index.html"]
        assert "<img" not in pages["index.html"]

    def test_trail_status_intact_then_tampered(
        self, tmp_path: Path, in_root: object, trail: dict[str, Path]
    ) -> None:
        """With --trail the report shows the verification status: intact, then findings."""
        extra = ("--trail", str(trail["trail"]), "--keyring", str(trail["keyring"]))
        status, page = _report(tmp_path / "ok", *extra)
        assert 0 == status
        assert re.search(r'id="trail-status" class="ok">Intact: \d+ events', page)
        lines = trail["trail"].read_text(encoding="utf-8").splitlines(keepends=True)
        trail["trail"].write_text("".join(lines[:1] + lines[2:]), encoding="utf-8")
        status, page = _report(tmp_path / "bad", *extra)
        assert 0 == status
        assert 'id="trail-status" class="bad">FINDINGS' in page
        assert "<li>MISSING</li>" in page

    @pytest.mark.parametrize(
        ("extra", "message"),
        [
            (("--trail", "nowhere.jsonl"), "--trail needs --keyring"),
            (
                ("--trail", "nowhere.jsonl", "--keyring", "k.json"),
                "cannot load the keyring",
            ),
            (("--models", "no.such.module:Base"), "cannot load"),
        ],
    )
    def test_bad_input_is_one_line(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        extra: tuple[str, ...],
        message: str,
    ) -> None:
        """Bad options are exit 2 with one line on stderr and no page written."""
        argv = [
            "report",
            "--policy",
            str(EXAMPLE),
            "--html",
            str(tmp_path / "r"),
            *extra,
        ]
        assert 2 == main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert 1 == len(err)
        assert message in err[0]
        assert not (tmp_path / "r").exists()

    def test_data_map_layout(self, sample_policy: custdata.Policy) -> None:
        """Every edge joins two nodes of adjacent columns inside the picture;
        recipients are drawn below the roles, never over them."""
        picture = data_map(sample_policy)
        for a, b in picture.edges:
            assert (a[0], b[0]) in {("c", "p"), ("p", "r"), ("p", "x")}
            assert 0 < picture.y(a) < picture.height
            assert 0 < picture.y(b) < picture.height
        last_role = max(picture.y(f"r:{rid}") for rid, _ in picture.handlers)
        assert picture.recipients
        for rid, *_ in picture.recipients:
            assert picture.y(f"x:{rid}") > last_role + picture.ROW

    def test_unknown_field_retention_is_shown_not_raised(
        self, sample_policy: custdata.Policy
    ) -> None:
        """A field naming a retention rule the policy lacks is shown as such."""
        field = FieldRecord(
            table="t", column="c", category="name", purposes=("billing",), retention="x"
        )
        page = render_report(
            sample_policy, today=sample_policy.effective_date, fields=[field]
        )["index.html"]
        assert "unknown retention rule &#39;x&#39;" in page


@pytest.mark.skipif(
    _chromium() is None, reason="chromium is not installed (.ci/run installs it)"
)
class TestReportInBrowser:
    def test_screenshot_in_headless_chromium(
        self, tmp_path: Path, in_root: object
    ) -> None:
        """The report renders in headless Chromium: the screenshot is a real picture
        (not blank, not one flat colour) and the data map's area is drawn."""
        from PIL import Image

        out = tmp_path / "report"
        assert 0 == _report(out)[0]
        png = tmp_path / "report.png"
        chromium = _chromium()
        assert chromium is not None
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--screenshot={png}",
                "--window-size=1280,2000",
                (out / "index.html").as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        print(f"report screenshot: {png}")
        assert png.is_file()
        with Image.open(png) as image:
            assert (1280, 2000) == image.size
            rgb = image.convert("RGB")
            colours = rgb.getcolors(maxcolors=1 << 20)
            assert colours is not None
            assert len(colours) > 50
            # The data map sits in the top part of the page; its coloured boxes
            # (blue categories, green purposes, purple roles, red special care)
            # make that band far from uniform.
            band = rgb.crop((0, 250, 1280, 800))
            band_colours = band.getcolors(maxcolors=1 << 20)
            assert band_colours is not None
            assert len(band_colours) > 50
            # Special-care categories are drawn in their light red fill.
            assert any(
                count > 100 and colour == (0xF9, 0xD2, 0xCF)
                for count, colour in band_colours
            )
            # The contractors and joint users are drawn in their light yellow fill.
            assert any(
                count > 100 and colour == (0xFF, 0xF4, 0xD6)
                for count, colour in band_colours
            )
