"""Purpose-bound access with the example policy, without a database.

Run: python examples/access_control.py
"""

from __future__ import annotations

from pathlib import Path

import custdata

from custdata import AccessDecision, Action, FieldPolicy


class PrintingRecorder:
    """Prints each decision: what an audit trail would record."""

    def record_decision(self, decision: AccessDecision) -> None:
        fields = ",".join(decision.fields) or "-"
        print(
            f"  [{decision.outcome.value}] actor={decision.actor} role={decision.role} "
            f"purpose={decision.purpose} action={decision.action.value} fields={fields}"
            + (f" reason={decision.reason.value}" if decision.reason else "")
        )


def main() -> None:
    policy = custdata.Policy.from_toml(Path(__file__).with_name("custdata.toml"))
    custodian = custdata.Custodian(policy=policy, audit=PrintingRecorder())
    custodian.make_current()

    email = FieldPolicy(
        category="contact.email", purposes=["billing", "support", "marketing.email"]
    )
    card = FieldPolicy(
        category="payment.card", purposes=["billing"], on_violation="mask"
    )
    medical = FieldPolicy(
        category="special_care.medical_history", purposes=["consultation"]
    )

    print("A support agent reads a customer's e-mail and card:")
    with custdata.acting_as("u-102", role="support_agent"), custdata.purpose("support"):
        decision = custodian.authorize(
            action=Action.READ,
            entity="customers",
            fields={"email": email, "card": card},
            subjects=["c-1"],
            count=2,
        )
        print(
            f"  card is revealed only as a mask: {decision.denied_fields} -> {custdata.mask('4111111111111234', 'card')}"
        )

    print("The same agent tries to read consultation notes:")
    with custdata.acting_as("u-102", role="support_agent"), custdata.purpose("support"):
        try:
            custodian.authorize(
                action=Action.READ, entity="consultations", fields={"history": medical}
            )
        except custdata.PurposeViolationError as exc:
            print(f"  refused: {exc}")

    print("The agent claims marketing, which the role was never granted:")
    with custdata.acting_as("u-102", role="support_agent"):
        try:
            with custdata.purpose("marketing.email"):
                pass
        except custdata.PurposeNotGrantedError as exc:
            print(f"  refused: {exc}")

    print("Nobody is acting:")
    try:
        custodian.authorize(
            action=Action.READ, entity="customers", fields={"email": email}
        )
    except custdata.ActorRequiredError as exc:
        print(f"  refused: {exc}")


if __name__ == "__main__":
    main()
