"""Money in the reporting currency: exchange rates, conversion, and the money left out.

Pure: no I/O, no settings read here. Money is ``Decimal`` throughout; a conversion is
never rounded (rounding each purchase and then summing would bias totals), so figures
keep the precision of amount x rate.

A rate is *units of the reporting currency per unit of the other currency* (EUR
reporting, ``USD: 0.92`` means 1 USD = 0.92 EUR), effective from a date until the next
rate of that currency. A currency with no rate effective on the day of a purchase is
not converted: every measure of money then leaves that purchase's amount out and says
so (``unconverted``), and nothing is invented.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

RateSchedule = Sequence[tuple[date, Decimal]]

DEFAULT_CURRENCY = "EUR"


@dataclass(frozen=True)
class ExchangeRates:
    """The reporting currency and, per other currency, its rates in effective-date order
    (each (from, rate) holds from that day until the next entry's day)."""

    reporting: str
    rates: Mapping[str, RateSchedule] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for currency, schedule in self.rates.items():
            days = [day for day, _ in schedule]
            if not schedule:
                raise ValueError(f"exchange_rates.{currency}: needs at least one rate")
            if any(later <= earlier for earlier, later in itertools.pairwise(days)):
                raise ValueError(f"exchange_rates.{currency}: dates must strictly increase")
            for day, rate in schedule:
                if not (rate.is_finite() and rate > 0):
                    raise ValueError(
                        f"exchange_rates.{currency}: a rate must be positive, got {rate} "
                        f"from {day.isoformat()}"
                    )

    def rate(self, currency: str, on: date) -> Decimal | None:
        """The rate effective on ``on``: 1 for the reporting currency itself; the last
        entry whose date is on or before ``on``; None when there is none."""
        if currency == self.reporting:
            return Decimal(1)
        schedule = self.rates.get(currency)
        if not schedule:
            return None
        position = bisect.bisect_right([day for day, _ in schedule], on)
        return schedule[position - 1][1] if position else None

    def convert(self, amount: Decimal, currency: str, on: date) -> Decimal | None:
        """``amount`` of ``currency`` on day ``on`` in the reporting currency (see
        ``convert``), None when no rate is effective that day."""
        rate = self.rate(currency, on)
        return None if rate is None else convert(amount, rate)


def convert(amount: Decimal, rate: Decimal) -> Decimal:
    """value in the reporting currency = amount x rate, with rate in units of the
    reporting currency per unit of the amount's currency. Exact (Decimal, unrounded)."""
    return amount * rate


def reporting_currency(
    configured: str, *, explicit: bool, has_rates: bool, seen: Collection[str]
) -> str:
    """Which currency the money measures report in.

    - ``PEAKEND_CURRENCY`` set explicitly (``explicit``), or exchange rates configured
      (rates are quoted against the configured currency): ``configured``;
    - otherwise, when every purchase recorded is in one currency: that currency, so a
      single-currency data set (all USD, say) needs no configuration;
    - otherwise (several currencies, or none yet): ``configured`` (EUR by default), and
      the other currencies show as ``unconverted``.
    """
    if explicit or has_rates or len(seen) != 1:
        return configured
    (only,) = seen
    return only


def add_unconverted(totals: dict[str, Decimal], currency: str, amount: Decimal) -> None:
    """Accumulate an amount left out of a measure, per currency (in place)."""
    totals[currency] = totals.get(currency, Decimal(0)) + amount


def unconverted_out(totals: Mapping[str, Decimal]) -> dict[str, str]:
    """The money left out, as an answer shows it: exact decimal strings per currency,
    sorted by code."""
    return {currency: str(totals[currency]) for currency in sorted(totals)}


def merge_unconverted(parts: Iterable[Mapping[str, Decimal]]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    for part in parts:
        for currency, amount in part.items():
            add_unconverted(totals, currency, amount)
    return totals
