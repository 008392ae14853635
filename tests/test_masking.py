"""Display masks and log redaction (R-SEC-3)."""

from __future__ import annotations

import logging

import pytest
import structlog

import custdata

from custdata import MaskingFilter, MaskingProcessor, mask


CANARY_EMAIL = "canary.taro.7731@example.com"
CANARY_CARD = "4111 1111 1111 7731"
CANARY_PHONE = "090-7731-4455"


class TestMask:
    @pytest.mark.parametrize(
        ("value", "kind", "expected"),
        [
            ("taro@example.com", "email", "t***@example.com"),
            ("not-an-email", "email", "***"),
            ("4111111111111234", "card", "****-****-****-1234"),
            ("4111-1111-1111-1234", "card", "****-****-****-1234"),
            ("1234", "card", "***"),
            ("090-1234-5678", "phone", "***-****-5678"),
            (9012345678, "phone", "******5678"),
            ("Taro Yamada", "name", "T*** Y*****"),
            ("山田太郎", "name", "山***"),
            ("東京都千代田区丸の内1-1-1", "address", "東京都***"),
            ("北海道札幌市中央区", "address", "北海道***"),
            ("1 Main St, Springfield", "address", "***, Springfield"),
            ("anything", "default", "***"),
            (None, "email", ""),
            (12345, "email", "***"),
        ],
    )
    def test_masks(self, value: object, kind: str, expected: str) -> None:
        """Each kind keeps just enough to recognise the value."""
        assert expected == mask(value, kind)

    def test_unknown_kind(self) -> None:
        """An unknown mask kind is a ValueError."""
        with pytest.raises(ValueError, match="unknown mask kind"):
            mask("x", "ssn")


class TestStructlog:
    def test_processor_masks_declared_keys(
        self, sample_policy: custdata.Policy
    ) -> None:
        """The processor masks declared keys, nested ones too, and leaves others."""
        logs: list[dict[str, object]] = []

        def capture(logger: object, method: str, event_dict: dict[str, object]) -> str:
            logs.append(dict(event_dict))
            return "ok"

        policy = sample_policy
        log = structlog.wrap_logger(
            structlog.PrintLogger(),
            processors=[
                MaskingProcessor(
                    {"email": "contact.email", "card": "card"}, policy=policy
                ),
                capture,
            ],
        )
        log.info(
            "checkout", email=CANARY_EMAIL, order=42, payment={"card": CANARY_CARD}
        )
        [event] = logs
        assert {
            "event": "checkout",
            "email": "c***@example.com",
            "order": 42,
            "payment": {"card": "****-****-****-7731"},
        } == event
        assert CANARY_EMAIL not in repr(logs)

    def test_processor_rejects_unknown_kind(self) -> None:
        """A key mapped to neither a mask kind nor a category is rejected at construction."""
        with pytest.raises(ValueError, match="neither a mask kind nor a category"):
            MaskingProcessor({"email": "contact.email"})


class TestLoggingFilter:
    def test_filter_masks_extra_and_mapping_args(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The stdlib filter masks extra attributes and mapping arguments."""
        logger = logging.getLogger("custdata.test.masking")
        handler_filter = MaskingFilter({"email": "email", "phone": "phone"})
        logger.addFilter(handler_filter)
        try:
            with caplog.at_level(logging.INFO, logger=logger.name):
                logger.info("signup %(email)s", {"email": CANARY_EMAIL})
                logger.info("call", extra={"phone": CANARY_PHONE})
        finally:
            logger.removeFilter(handler_filter)
        text = caplog.text + repr([r.__dict__ for r in caplog.records])
        assert "signup c***@example.com" in caplog.text
        assert "***-****-4455" == caplog.records[1].phone  # type: ignore[attr-defined]
        assert CANARY_EMAIL not in text
        assert CANARY_PHONE not in text
