"""Alerts on real PostgreSQL: an SLA breach is raised by the clock with no further event,
and after every process restarted; an operator's acknowledgement is an event the
projectors apply; a replay of the log gives the same alerts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from domain.touchpoints import parse_touchpoint
from infra import alerts as service
from infra import jobs
from infra.bootstrap import Platform, bootstrap
from projections.alerts import Rule, delivered
from streams.projector import replay
from tests.builders import complaint, envelope, purchase, survey_answer
from tests.conftest import customer_of, embedded
from tests.integration.test_projections import record


def alerts_now(platform: Platform) -> list[dict[str, Any]]:
    return service.alert_page(platform, before=None, limit=1000)


def stable(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Alerts without their feed position (a replay numbers the feed afresh)."""
    return sorted(({k: v for k, v in a.items() if k != "position"} for a in found), key=str)


def test_a_complaint_sla_breach_is_raised_by_the_clock_and_after_a_restart(
    platform: Platform,
) -> None:
    filed = datetime.now(UTC) - timedelta(minutes=10)
    record(platform, [parse_touchpoint(complaint("C1", "filed", filed, severity="high"))])
    customer_id = customer_of(platform, "C1")
    assert alerts_now(platform) == []

    jobs.drive_clock(platform, filed + timedelta(hours=4, minutes=1))  # no event: the clock
    (breach,) = alerts_now(platform)
    assert breach["rule"] == "complaint_sla" and breach["status"] == "open"
    assert breach["subject"] == {
        "kind": "complaint",
        "id": "K1",
        "step": "acknowledge",
        "customer_id": customer_id,
    }
    assert breach["severity"] == "critical"
    assert breach["opened_at"] == breach["evidence"]["deadline"]  # at the deadline itself
    (opened,) = service.alert_stream_page(platform, 0, 100)
    assert opened["cause"] == {"clock": breach["evidence"]["deadline"]}

    # Every process stops; the next one raises the next breach, still by the clock.
    settings = platform.settings
    platform.close()
    again = bootstrap(settings)
    try:
        jobs.drive_clock(again, filed + timedelta(days=2, minutes=1))
        found = {a["subject"]["step"]: a for a in alerts_now(again)}
        assert set(found) == {"acknowledge", "resolve"}
        assert found["acknowledge"]["id"] == breach["id"]  # the same alert, not a second
    finally:
        again.close()


def test_an_operator_acknowledges_an_alert_and_a_follow_up_resolves_it(platform: Platform) -> None:
    answered = datetime.now(UTC) - timedelta(minutes=30)
    record(platform, [parse_touchpoint(survey_answer("C2", "nps", 2, answered))])
    (alert,) = alerts_now(platform)
    assert alert["rule"] == "detractor_follow_up"

    acted = service.act(platform, alert["id"], "acknowledge", "ops-team", "calling back")
    assert embedded(platform).wait_until_projected()
    (acked,) = alerts_now(platform)
    assert acked["status"] == "acknowledged" and acked["acknowledged_by"] == "ops-team"
    assert acted.action_id

    called = answered + timedelta(minutes=20)
    record(platform, [parse_touchpoint(envelope("C2", called, type="call"))])
    jobs.drive_clock(platform, datetime.now(UTC) + timedelta(minutes=6))  # the hold-down
    (resolved,) = alerts_now(platform)
    assert resolved["status"] == "resolved" and resolved["resolution"] == "cleared"
    kinds = [c["kind"] for c in service.alert_stream_page(platform, 0, 100)]
    assert kinds == ["alert_opened", "alert_acknowledged", "alert_resolved"]


def test_a_replay_gives_the_same_alerts(platform: Platform) -> None:
    now = datetime.now(UTC)
    record(
        platform,
        [
            parse_touchpoint(survey_answer("C3", "nps", 1, now - timedelta(days=4))),
            parse_touchpoint(complaint("C4", "filed", now - timedelta(days=3), severity="low")),
            parse_touchpoint(envelope("C5", now - timedelta(days=5), emotion=-3)),
        ],
    )
    jobs.drive_clock(platform, now)
    (opened,) = [a for a in alerts_now(platform) if a["rule"] == "detractor_follow_up"]
    service.act(platform, opened["id"], "resolve", "lead", None)
    assert embedded(platform).wait_until_projected()
    live = alerts_now(platform)
    assert {a["rule"] for a in live} >= {
        "detractor_follow_up",
        "complaint_sla",
        "silent_dissatisfaction",
    }
    replay(platform.records, platform.store, batch_size=7)
    assert embedded(platform).wait_until_projected()
    assert stable(alerts_now(platform)) == stable(live)


def test_a_merged_away_customers_alerts_end_and_the_survivor_raises_its_own(
    platform: Platform,
) -> None:
    then = datetime.now(UTC) - timedelta(hours=1)
    record(
        platform,
        [
            parse_touchpoint(survey_answer({"email": "a1@example.com"}, "nps", 2, then)),
            parse_touchpoint(survey_answer({"phone": "+33612345670"}, "nps", 1, then)),
        ],
    )
    assert len(alerts_now(platform)) == 2
    both = {"email": "a1@example.com", "phone": "+33612345670"}
    record(platform, [parse_touchpoint(envelope(both, then + timedelta(minutes=1)))])
    found = alerts_now(platform)
    merged = [a for a in found if a["resolution"] == "merged"]
    still = [a for a in found if a["status"] == "open"]
    assert len(merged) == 1 and len(still) == 1
    assert still[0]["customer_id"] != merged[0]["customer_id"]


def test_a_backtest_over_the_recorded_history_equals_what_the_live_rules_raised(
    platform: Platform,
) -> None:
    now = datetime.now(UTC)
    ago = [now - timedelta(hours=h) for h in (80, 60, 30, 10, 2)]
    sent = [
        survey_answer("B1", "nps", 2, ago[0]),
        envelope("B1", ago[2], type="call"),
        survey_answer("B2", "csat", 1, ago[1]),
        complaint("B3", "filed", ago[0], severity="high"),
        complaint("B3", "acknowledged", ago[1]),
        complaint("B4", "filed", ago[3], severity="low", complaint_id="K4"),
        envelope("B5", ago[1], emotion=-3),
        envelope("B6", ago[4], emotion=-2),
        complaint("B6", "filed", ago[4] + timedelta(minutes=5), complaint_id="K6"),
    ]
    for raw in sent:  # one at a time: each is recorded, and derived, at its own instant
        record(platform, [parse_touchpoint(raw)])
    until = now + timedelta(days=4)
    jobs.drive_clock(platform, until)
    start = now - timedelta(days=10)

    def key(a: dict[str, Any]) -> tuple[Any, ...]:
        return (a["customer_id"], sorted(a["subject"].items()), a["opened_at"], a["resolved_at"])

    live = alerts_now(platform)
    assert {a["rule"] for a in live} >= {
        "detractor_follow_up",
        "complaint_sla",
        "silent_dissatisfaction",
    }
    for rule in ("detractor_follow_up", "complaint_sla", "silent_dissatisfaction"):
        found = service.backtest(platform, Rule(rule), {}, start, until)
        assert found["raised"] == len(found["alerts"])
        raised = sorted(key(a) for a in found["alerts"])
        assert raised == sorted(key(a) for a in live if a["rule"] == rule), rule

    # A stricter candidate raises less: no SLA breach under targets of a week.
    week = 7 * 86400
    lenient = service.backtest(
        platform,
        Rule("complaint_sla"),
        {"targets": {s: {"acknowledge": week, "resolve": week} for s in ("low", "high")}},
        start,
        until,
    )
    assert lenient["raised"] < len([a for a in live if a["rule"] == "complaint_sla"])


def test_revenue_at_risk_is_maintained_as_alerts_open_and_close(platform: Platform) -> None:
    then = datetime.now(UTC) - timedelta(hours=2)
    record(
        platform,
        [
            parse_touchpoint(purchase("R1", "300.00", then - timedelta(days=3))),
            parse_touchpoint(purchase("R2", "80.00", then - timedelta(days=3))),
        ],
    )
    assert service.revenue_at_risk(platform)["overall"]["customers"] == 0
    record(
        platform,
        [
            parse_touchpoint(survey_answer("R1", "nps", 3, then)),
            parse_touchpoint(survey_answer("R2", "nps", 9, then)),
        ],
    )
    risk = service.revenue_at_risk(platform)
    # No lifetime-value model: half the trailing revenue counts as at risk.
    assert risk["overall"] == {"amount": Decimal("150.00"), "customers": 1}
    assert risk["by_rule"]["detractor_follow_up"]["amount"] == Decimal("150.00")
    assert risk["by_rule"]["churn_warning"]["customers"] == 0

    record(platform, [parse_touchpoint(envelope("R1", then + timedelta(minutes=5), type="call"))])
    jobs.drive_clock(platform, datetime.now(UTC) + timedelta(minutes=6))  # the hold-down
    assert service.revenue_at_risk(platform)["overall"] == {"amount": Decimal(0), "customers": 0}
    replay(platform.records, platform.store, batch_size=3)
    assert embedded(platform).wait_until_projected()
    assert service.revenue_at_risk(platform)["overall"]["customers"] == 0


def test_a_channel_above_capacity_raises_an_alert_that_the_clock_resolves(
    make_platform: Callable[..., Platform],
) -> None:
    platform = make_platform(
        alert_rules={
            "capacity": {
                "channels": {"call": {"optimal": 3, "maximum": 6}},
                "slot_seconds": 600,
                "sustained_slots": 1,
            }
        }
    )
    now = datetime.now(UTC)
    calls = [
        envelope(f"Q{i}", now - timedelta(seconds=10), type="call", channel="call")
        for i in range(7)
    ]
    record(platform, [parse_touchpoint(raw) for raw in calls[:4]])
    (warning,) = [a for a in alerts_now(platform) if a["rule"] == "capacity"]
    assert warning["severity"] == "warning" and warning["customer_id"] == "channel:call"
    record(platform, [parse_touchpoint(raw) for raw in calls[4:]])
    (critical,) = [a for a in alerts_now(platform) if a["rule"] == "capacity"]
    assert critical["severity"] == "critical" and critical["id"] == warning["id"]

    jobs.drive_clock(platform, now + timedelta(minutes=30))  # quiet slots, the hold-down
    (ended,) = [a for a in alerts_now(platform) if a["rule"] == "capacity"]
    assert ended["status"] == "resolved" and ended["resolution"] == "cleared"

    # A back-test over the same history raises the same alert, severity and times.
    start, until = now - timedelta(hours=1), now + timedelta(minutes=30)
    found = service.backtest(platform, Rule.CAPACITY, {}, start, until)
    assert found["customers"] == 1  # the one watched channel
    (again,) = found["alerts"]
    assert (again["customer_id"], again["severity"]) == ("channel:call", "critical")
    assert (again["opened_at"], again["resolved_at"]) == (ended["opened_at"], ended["resolved_at"])
    higher = {"channels": {"call": {"optimal": 10, "maximum": 20}}}  # 7 calls: none
    assert service.backtest(platform, Rule.CAPACITY, higher, start, until)["raised"] == 0
    live = stable(alerts_now(platform))
    replay(platform.records, platform.store, batch_size=2)
    assert embedded(platform).wait_until_projected()
    assert stable(alerts_now(platform)) == live


def test_a_silence_holds_back_the_transitions_of_an_alert_open_before_it(
    platform: Platform,
) -> None:
    answered = datetime.now(UTC) - timedelta(minutes=30)
    record(platform, [parse_touchpoint(survey_answer("C7", "nps", 3, answered))])
    (alert,) = alerts_now(platform)
    assert alert["silenced_by"] is None
    silence = service.create_silence(
        platform,
        {"rule": "detractor_follow_up"},
        datetime.now(UTC) + timedelta(hours=1),
        "ops",
        None,
    )
    assert embedded(platform).wait_until_projected()
    (shown,) = alerts_now(platform)
    assert shown["silenced_by"] == silence  # it holds the open alert now

    service.act(platform, alert["id"], "acknowledge", "ops", None)
    assert embedded(platform).wait_until_projected()
    record(
        platform, [parse_touchpoint(envelope("C7", answered + timedelta(minutes=5), type="call"))]
    )
    jobs.drive_clock(platform, datetime.now(UTC) + timedelta(minutes=6))  # the hold-down
    feed = service.alert_stream_page(platform, 0, 100)
    assert [(c["kind"], c["after"]["silenced_by"]) for c in feed] == [
        ("alert_opened", None),  # delivered: before the silence
        ("alert_acknowledged", silence),  # held back
        ("alert_resolved", silence),
    ]
    assert [c["kind"] for c in feed if delivered(c)] == ["alert_opened"]

    assert service.expire_silence(platform, silence, "ops")
    assert embedded(platform).wait_until_projected()
    record(platform, [parse_touchpoint(survey_answer("C8", "nps", 1, datetime.now(UTC)))])
    (fresh,) = [a for a in alerts_now(platform) if a["status"] == "open"]
    assert fresh["silenced_by"] is None
    (resolved,) = [a for a in alerts_now(platform) if a["status"] == "resolved"]
    assert resolved["silenced_by"] == silence  # what its resolution was recorded with


def test_a_channel_whose_callers_wait_too_long_raises_a_capacity_alert(
    make_platform: Callable[..., Platform],
) -> None:
    platform = make_platform(
        alert_rules={
            "capacity": {
                "channels": {"call": {"measure": "wait_seconds", "optimal": 60, "maximum": 600}},
                "slot_seconds": 600,
                "sustained_slots": 1,
            }
        }
    )
    now = datetime.now(UTC) - timedelta(seconds=10)

    def call(i: int, wait: int | None) -> Any:
        payload = {"wait_seconds": wait} if wait is not None else {}
        return parse_touchpoint(
            envelope(f"W{i}", now, type="call", channel="call", payload=payload)
        )

    record(platform, [call(0, 20), call(1, 40), call(2, None)])  # mean wait 30 s
    assert [a for a in alerts_now(platform) if a["rule"] == "capacity"] == []
    record(platform, [call(3, 150)])  # (20 + 40 + 150) / 3 = 70 s
    (warning,) = [a for a in alerts_now(platform) if a["rule"] == "capacity"]
    assert warning["severity"] == "warning"
    assert warning["evidence"]["measure"] == "wait_seconds"
    assert list(warning["evidence"]["demand"].values()) == [70.0]
    record(platform, [call(4, 3000)])  # (210 + 3000) / 4 = 802.5 s
    (critical,) = [a for a in alerts_now(platform) if a["rule"] == "capacity"]
    assert critical["severity"] == "critical" and critical["id"] == warning["id"]
    live = stable(alerts_now(platform))
    replay(platform.records, platform.store, batch_size=2)
    assert embedded(platform).wait_until_projected()
    assert stable(alerts_now(platform)) == live
