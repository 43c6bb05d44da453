"""Webhook delivery rules, pure: the retry schedule, Retry-After, which endpoints an
alert goes to, and signatures a receiver verifies with the ``standardwebhooks`` package."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from infra.webhooks import matches, new_secret, next_attempt, retry_after, signature, unreachable
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


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data/",  # a cloud's metadata service
        "http://10.0.0.7/hook",
        "http://192.168.1.1/hook",
        "http://[::1]/hook",
        "http://[fe80::1]/hook",
        "http://100.64.0.1/hook",  # shared address space
        "http://0.0.0.0/hook",
    ],
)
def test_a_webhook_to_an_address_that_is_not_public_is_refused_unless_allowed(url: str) -> None:
    refused = unreachable(url, private_allowed=False)
    assert refused is not None and refused.startswith("url: ") and "not a public" in refused
    assert unreachable(url, private_allowed=True) is None


def test_a_webhook_to_a_public_address_or_of_another_scheme() -> None:
    assert unreachable("https://93.184.215.14/hook", private_allowed=False) is None
    assert unreachable("ftp://example.org/x", private_allowed=True) == (
        "url: an http or https URL with a host"
    )
    refused = unreachable("https://no-such-host.invalid/x", private_allowed=False)
    assert refused == "url: the host 'no-such-host.invalid' does not resolve"
