"""Money in the reporting currency (domain/money.py): rates, conversion, and the rule
that picks the reporting currency. Expected values are worked out by hand."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from domain.money import ExchangeRates, convert, reporting_currency, unconverted_out
from infra.settings import Settings


def test_conversion_is_amount_times_rate_exactly() -> None:
    # 100.50 USD at 0.92 EUR per USD = 92.4600 EUR, not rounded
    assert convert(Decimal("100.50"), Decimal("0.92")) == Decimal("92.4600")


def test_the_reporting_currency_converts_at_one_and_an_unknown_one_not_at_all() -> None:
    rates = ExchangeRates(reporting="EUR", rates={"USD": [(date.min, Decimal("0.92"))]})
    assert rates.convert(Decimal("10.00"), "EUR", date(1997, 1, 1)) == Decimal("10.00")
    assert rates.convert(Decimal("10.00"), "USD", date(1997, 1, 1)) == Decimal("9.2000")
    assert rates.convert(Decimal("10.00"), "GBP", date(1997, 1, 1)) is None


def test_a_dated_rate_holds_from_its_day_until_the_next_one() -> None:
    rates = ExchangeRates(
        reporting="EUR",
        rates={"USD": [(date(1990, 1, 1), Decimal("0.92")), (date(2025, 1, 1), Decimal("0.95"))]},
    )
    assert rates.rate("USD", date(1989, 12, 31)) is None  # before the first rate
    assert rates.rate("USD", date(1990, 1, 1)) == Decimal("0.92")
    assert rates.rate("USD", date(2024, 12, 31)) == Decimal("0.92")
    assert rates.rate("USD", date(2025, 1, 1)) == Decimal("0.95")


@pytest.mark.parametrize(
    ("schedule", "reason"),
    [
        ([(date(2020, 1, 1), Decimal(0))], "positive"),
        ([(date(2020, 1, 1), Decimal("NaN"))], "positive"),
        ([(date(2020, 1, 1), Decimal(1)), (date(2020, 1, 1), Decimal(2))], "increase"),
        ([], "at least one"),
    ],
)
def test_wrong_rates_are_refused_naming_the_currency(
    schedule: list[tuple[date, Decimal]], reason: str
) -> None:
    with pytest.raises(ValueError, match=rf"exchange_rates\.USD: .*{reason}"):
        ExchangeRates(reporting="EUR", rates={"USD": schedule})


def test_a_single_currency_data_set_reports_in_its_currency_without_configuration() -> None:
    assert reporting_currency("EUR", explicit=False, has_rates=False, seen={"USD"}) == "USD"
    # several currencies, none yet, an explicit setting or configured rates: as configured
    assert reporting_currency("EUR", explicit=False, has_rates=False, seen={"USD", "EUR"}) == (
        "EUR"
    )
    assert reporting_currency("EUR", explicit=False, has_rates=False, seen=set()) == "EUR"
    assert reporting_currency("EUR", explicit=True, has_rates=False, seen={"USD"}) == "EUR"
    assert reporting_currency("EUR", explicit=False, has_rates=True, seen={"USD"}) == "EUR"


def test_unconverted_money_is_shown_as_exact_strings_by_currency() -> None:
    assert unconverted_out({"USD": Decimal("100.50"), "GBP": Decimal("1.0")}) == {
        "GBP": "1.0",
        "USD": "100.50",
    }


def test_exchange_rates_setting_takes_one_rate_or_dated_rates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "PEAKEND_EXCHANGE_RATES",
        '{"USD": "0.92", "GBP": [["2020-01-01", "1.10"], ["2025-01-01", "1.20"]]}',
    )
    settings = Settings()
    assert settings.exchange_rates == {
        "USD": [(date.min, Decimal("0.92"))],
        "GBP": [(date(2020, 1, 1), Decimal("1.10")), (date(2025, 1, 1), Decimal("1.20"))],
    }
    assert "currency" not in settings.model_fields_set  # the default, not explicit


@pytest.mark.parametrize(
    ("rates", "reason"),
    [
        ('{"usd": "0.92"}', "ISO 4217"),
        ('{"USD": "-1"}', "positive"),
        ('{"USD": [["2025-01-01", "1"], ["2020-01-01", "2"]]}', "increase"),
    ],
)
def test_exchange_rates_setting_refuses_wrong_rates(
    monkeypatch: pytest.MonkeyPatch, rates: str, reason: str
) -> None:
    monkeypatch.setenv("PEAKEND_EXCHANGE_RATES", rates)
    with pytest.raises(ValueError, match=reason):
        Settings()


def test_reporting_timezone_setting_must_be_an_iana_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEAKEND_REPORTING_TIMEZONE", "Europe/Paris")
    assert str(Settings().reporting_zone) == "Europe/Paris"
    monkeypatch.setenv("PEAKEND_REPORTING_TIMEZONE", "Mars/Olympus")
    with pytest.raises(ValueError, match="reporting_timezone"):
        Settings()
