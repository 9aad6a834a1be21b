"""crm_events.money: the ISO 4217 currency table against the minor-unit table."""

from __future__ import annotations

from crm_events.money import MINOR_DIGITS, is_currency


def test_every_currency_the_shared_money_table_knows_is_taken() -> None:
    """MINOR_DIGITS lists the currencies whose minor unit is not 2 digits: each must be a
    currency too, or a JPY or KWD deal could not be opened."""
    assert [code for code in MINOR_DIGITS if not is_currency(code)] == []


def test_codes_that_are_not_currencies_are_refused() -> None:
    assert all(is_currency(code) for code in ("EUR", "USD", "GBP", "CHF", "XAF", "XCD"))
    not_currencies = ("XXX", "XTS", "XAU", "XAG", "XDR", "ABC", "eur", "EURO", "", "EU")
    assert [code for code in not_currencies if is_currency(code)] == []
