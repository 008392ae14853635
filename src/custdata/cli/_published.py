"""The register and published-notice checks ``custdata check`` runs."""

from __future__ import annotations

from pathlib import Path

from custdata._check import Finding
from custdata._errors import ConfigurationError
from custdata._policy import Policy
from custdata.governance import notice_drift, register_findings


__all__ = ["published_findings", "register_findings"]


def published_findings(policy: Policy, path: str) -> list[Finding]:
    """The drift between the notice published at *path* and the rendering.

    Raises:
        ConfigurationError: The file cannot be read as UTF-8 text.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the published notice ({exc.strerror})", path=path
        ) from None
    except UnicodeDecodeError:
        raise ConfigurationError(
            "the published notice is not UTF-8", path=path
        ) from None
    return [
        Finding(code=d.code, key_path=d.key_path, message=d.message)
        for d in notice_drift(policy, text)
    ]
