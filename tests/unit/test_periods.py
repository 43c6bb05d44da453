"""Calendar periods of the migration matrix (projections/analytics.py): half-open
[start, end) in the reporting time zone, named consistently. Pure functions, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from domain.value import Tier, TierCutoffs
from projections.analytics import (
    Purchase,
    next_period,
    period_label,
    period_start,
    period_tiers,
    previous_period,
)

PARIS = ZoneInfo("Europe/Paris")


def bought(at: datetime, amount: str = "10.00") -> Purchase:
    return Purchase(at, Decimal(amount), Decimal(amount), "EUR")


def test_a_quarter_starts_at_local_midnight_of_its_first_day() -> None:
    # 1998-03-31T22:00Z is 1998-04-01T00:00 in Paris (UTC+2, summer time): Q2 there
    boundary = datetime(1998, 3, 31, 22, 0, tzinfo=UTC)
    start = period_start(boundary, "quarter", PARIS)
    assert start == datetime(1998, 4, 1, tzinfo=PARIS)
    assert start.isoformat() == "1998-04-01T00:00:00+02:00"
    # one microsecond earlier is still Q1 in Paris; in UTC both are Q1
    assert period_start(boundary - timedelta(microseconds=1), "quarter", PARIS) == datetime(
        1998, 1, 1, tzinfo=PARIS
    )
    assert period_start(boundary, "quarter", UTC) == datetime(1998, 1, 1, tzinfo=UTC)


def test_periods_follow_each_other_across_summer_time() -> None:
    # Q1 1998 in Paris starts at UTC+1 and ends at UTC+2 (summer time from March 29)
    q1 = datetime(1998, 1, 1, tzinfo=PARIS)
    assert next_period(q1, "quarter").isoformat() == "1998-04-01T00:00:00+02:00"
    assert previous_period(next_period(q1, "quarter"), "quarter") == q1
    assert next_period(datetime(1998, 3, 23, tzinfo=PARIS), "week").isoformat() == (
        "1998-03-30T00:00:00+02:00"
    )
    assert next_period(datetime(1998, 12, 1, tzinfo=PARIS), "month") == datetime(
        1999, 1, 1, tzinfo=PARIS
    )


def test_a_period_label_names_it_and_gives_its_start_and_excluded_end() -> None:
    q2 = datetime(1998, 4, 1, tzinfo=PARIS)
    as_of = datetime(1998, 6, 30, 12, tzinfo=UTC)
    assert period_label(q2, "quarter", as_of=as_of) == {
        "name": "1998-Q2",
        "start": "1998-04-01T00:00:00+02:00",
        "end": "1998-07-01T00:00:00+02:00",
        "complete": False,
    }
    assert period_label(datetime(1998, 6, 8, tzinfo=PARIS), "week", as_of=as_of)["name"] == (
        "1998-W24"
    )
    assert period_label(datetime(1998, 5, 1, tzinfo=PARIS), "month", as_of=as_of) == {
        "name": "1998-05",
        "start": "1998-05-01T00:00:00+02:00",
        "end": "1998-06-01T00:00:00+02:00",
        "complete": True,
    }


def test_a_purchase_at_the_first_instant_of_a_period_counts_in_that_period() -> None:
    """(start, end] counted a purchase at midnight on April 1 in Q1; [start, end) puts
    it in Q2, where the calendar has it."""
    q1, q2 = datetime(1998, 1, 1, tzinfo=PARIS), datetime(1998, 4, 1, tzinfo=PARIS)
    history = {
        "midnight": [bought(q2)],  # 1998-04-01T00:00+02:00 = 1998-03-31T22:00Z
        "q1": [bought(q2 - timedelta(microseconds=1))],
    }
    as_of = datetime(1998, 6, 30, tzinfo=UTC)
    cut = TierCutoffs()
    in_q1 = period_tiers(history, start=q1, end=q2, as_of=as_of, cutoffs=cut)
    in_q2 = period_tiers(
        history, start=q2, end=next_period(q2, "quarter"), as_of=as_of, cutoffs=cut
    )
    assert in_q1 == {"midnight": Tier.PROSPECT, "q1": Tier.VIP}
    assert in_q2 == {"midnight": Tier.VIP, "q1": Tier.INACTIVE}


def test_the_current_period_counts_purchases_up_to_as_of_only() -> None:
    q2 = datetime(1998, 4, 1, tzinfo=UTC)
    as_of = datetime(1998, 5, 15, tzinfo=UTC)
    history = {"later": [bought(as_of + timedelta(days=1))], "now": [bought(as_of)]}
    tiers = period_tiers(
        history, start=q2, end=next_period(q2, "quarter"), as_of=as_of, cutoffs=TierCutoffs()
    )
    assert tiers == {"later": Tier.PROSPECT, "now": Tier.VIP}
