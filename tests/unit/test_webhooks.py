"""Webhook delivery rules, pure: the retry schedule, Retry-After, which endpoints an
alert goes to, and signatures a receiver verifies with the ``standardwebhooks`` package."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from standardwebhooks.webhooks import Webhook

from infra.webhooks import matches, new_secret, next_attempt, retry_after, signature
from projections.alerts import delivered

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
SCHEDULE = (5, 300, 1800)


def test_retries_follow_the_schedule_then_give_up() -> None:
    assert next_attempt(1, SCHEDULE, NOW, None) == NOW + timedelta(seconds=5)
    assert next_attempt(3, SCHEDULE, NOW, None) == NOW + timedelta(seconds=1800)
    assert next_attempt(4, SCHEDULE, NOW, None) is None


def test_retry_after_is_honoured_when_it_asks_for_longer() -> None:
    assert next_attempt(1, SCHEDULE, NOW, timedelta(seconds=60)) == NOW + timedelta(seconds=60)
    assert next_attempt(2, SCHEDULE, NOW, timedelta(seconds=60)) == NOW + timedelta(seconds=300)
    assert retry_after("120", NOW) == timedelta(seconds=120)
    assert retry_after("Sun, 01 Mar 2026 12:10:00 GMT", NOW) == timedelta(minutes=10)
    assert retry_after("Sun, 01 Mar 2026 11:00:00 GMT", NOW) == timedelta(0)
    assert retry_after("soon", NOW) is None and retry_after(None, NOW) is None


def test_an_endpoint_gets_the_rules_and_severities_it_subscribed_to() -> None:
    alert = {"rule": "complaint_sla", "severity": "critical"}
    assert matches({"rules": [], "severities": []}, alert)
    assert matches({"rules": ["complaint_sla"], "severities": ["critical"]}, alert)
    assert not matches({"rules": ["churn_warning"], "severities": []}, alert)
    assert not matches({"rules": [], "severities": ["info"]}, alert)
    assert not delivered({"after": {"silenced_by": "s1"}})
    assert not delivered({"after": {"suppressed": "consent"}})
    assert delivered({"after": {"silenced_by": None, "suppressed": None}})


def test_every_secret_signs_and_a_receiver_verifies_with_either() -> None:
    old, new = new_secret(), new_secret()
    body = '{"type":"alert.opened"}'
    at = datetime.now(UTC)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature([new, old], "msg_1", at, body),
    }
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers) == {"type": "alert.opened"}
