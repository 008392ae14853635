"""Consent: who agreed to what, and whether that agreement is in force.

This module is the one home of consent in custdata. The consent ledger and its
rules are built on the :class:`ConsentSource` protocol below; every other part
that needs to know whether a subject consented (reads for consent-required
purposes, the provision gate, data-subject requests) asks a ``ConsentSource``.
"""

from __future__ import annotations

import datetime as dt

from typing import Protocol


__all__ = ["ConsentSource"]


class ConsentSource(Protocol):
    """Answers whether a subject's consent to a purpose is in force.

    Subjects are named by their subject-key value as the application declares
    it (a UUID, an int or a str; the ledger canonicalises it).
    """

    def consent_in_force(
        self, subject: object, purpose: str, at: dt.datetime
    ) -> str | None:
        """The id of the consent record in force for *subject* and *purpose*.

        Args:
            subject: The subject's id (its ``subject_key()`` value).
            purpose: The purpose's name.
            at: The time the question is about (time-zone aware).

        Returns:
            The consent record's id, or ``None`` when no consent is in force
            (never given, withdrawn, or out of the consent's scope).
        """
        ...
