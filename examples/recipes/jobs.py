"""Recipe: custdata in background jobs.

A job runs as a service actor for one purpose, never as whoever queued it:
the worker enters the job's own context. Worker threads do not inherit the
submitter's context (``concurrent.futures`` runs each call in the worker's
context), so a job that forgot to act as someone is refused, not silently run
as the caller. The same holds for task queues (Celery, RQ, arq): enter
``acting_as`` and ``purpose`` inside the task function.
"""

from __future__ import annotations

import sys
import uuid

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session


sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "shop"))

from models import Customer

import custdata


def monthly_invoice(
    engine: Engine, custodian: custdata.Custodian, customer_id: uuid.UUID
) -> str:
    """One job: address an invoice, as the billing service, for billing."""
    with (
        custodian.activate(),
        custdata.acting_as(
            "svc-invoicing", role="billing_clerk", request_id=f"job-{customer_id}"
        ),
        custdata.purpose("billing"),
        Session(engine) as session,
    ):
        customer = session.get(Customer, customer_id)
        if customer is None:
            return "gone"
        return f"invoice for {customer.name}"


def forgetful_job(engine: Engine, custodian: custdata.Custodian) -> list[str]:
    """A job that forgot to act as someone: custdata refuses it."""
    with custodian.activate(), Session(engine) as session:
        return [c.name for c in session.scalars(select(Customer))]


def run_invoices(
    engine: Engine, custodian: custdata.Custodian, customers: Iterable[uuid.UUID]
) -> list[str]:
    """Run the invoice job for each customer on a pool of worker threads."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(
            pool.map(lambda cid: monthly_invoice(engine, custodian, cid), customers)
        )
