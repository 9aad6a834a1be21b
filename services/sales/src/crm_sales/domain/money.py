"""Money: integer minor units next to an ISO 4217 code, and the one rounding rule for documents.

The rounding rule (quotes, invoices, credit notes):

* every line is rounded once, on its own, **half-up to the currency's minor unit**:
  ``net = round_half_up(quantity x unit_price x (1 - discount% / 100))`` and
  ``tax = round_half_up(net x tax_rate% / 100)`` (tax on the rounded net);
* a document's subtotal, tax and total are the **sums of its rounded lines**; nothing is rounded
  again, so the lines always add up to the totals printed under them.

Unit prices are already in minor units, so rounding to the minor unit is rounding to an integer.
The arithmetic is exact: quantities, discounts and rates are decimals, and the context has room
for every digit they can have, so the only rounding is the half-up step above.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation

from crm_events.money import minor_digits

# Exact for any amount a document can hold (quantities <= 10^6 with 6 decimals, prices <= 10^11,
# rates with 4 decimals): far fewer than 60 significant digits.
_EXACT = Context(prec=60, rounding=ROUND_HALF_UP)
_HUNDRED = Decimal(100)
MAX_DOCUMENT_MINOR = 10**15
"""No document total may exceed this (it keeps every sum far inside PostgreSQL's bigint)."""

DOCUMENT_ROUNDING_NOTE = (
    "Each line is rounded half-up to the currency's smallest unit: net = quantity x unit price"
    " less its discount, tax on the rounded net. Subtotal, tax and total are the sums of the"
    " rounded lines."
)
"""What a customer reads on a quote: the rounding the totals follow, in their words."""


def exponent(currency: str) -> int:
    """How many decimals the currency's minor unit has (JPY 0, EUR 2, KWD 3): ISO 4217, as
    ``crm_events.money`` (the one table every context reads) has it."""
    return minor_digits(currency)


def round_half_up(value: Decimal) -> int:
    """Round an amount in minor units to a whole minor unit, ties away from zero."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP, context=_EXACT))


def to_decimal(value: str | int | Decimal) -> Decimal:
    """A finite decimal from text or a number; ValueError otherwise."""
    try:
        d = value if isinstance(value, Decimal) else Decimal(value)
    except (InvalidOperation, TypeError):
        raise ValueError(f"{value!r} is not a decimal number") from None
    if not d.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return d


def decimal_text(value: Decimal) -> str:
    """Plain notation without exponent or trailing zeros: ``Decimal('1.50')`` -> ``'1.5'``."""
    text = format(value.normalize(_EXACT), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


@dataclass(frozen=True)
class LineAmounts:
    """One line's amounts in minor units, each rounded as the rule says."""

    gross_minor: int  # round(quantity x unit price): the list amount before discount
    discount_minor: int  # gross - net
    net_minor: int
    tax_minor: int

    @property
    def total_minor(self) -> int:
        return self.net_minor + self.tax_minor


def exact_net(quantity: Decimal, unit_price_minor: int, discount_percent: Decimal) -> Decimal:
    """The unrounded net amount of a line, in minor units."""
    return _EXACT.divide(
        _EXACT.multiply(
            _EXACT.multiply(quantity, Decimal(unit_price_minor)),
            _EXACT.subtract(_HUNDRED, discount_percent),
        ),
        _HUNDRED,
    )


def exact_tax(net_minor: int, tax_rate: Decimal) -> Decimal:
    """The unrounded tax of a line on its rounded net, in minor units."""
    return _EXACT.divide(_EXACT.multiply(Decimal(net_minor), tax_rate), _HUNDRED)


def line_amounts(
    quantity: Decimal, unit_price_minor: int, discount_percent: Decimal, tax_rate: Decimal
) -> LineAmounts:
    """Apply the rounding rule to one line."""
    if quantity <= 0:
        raise ValueError("quantity must be positive")
    if unit_price_minor < 0:
        raise ValueError("unit price must not be negative")
    if not (0 <= discount_percent <= _HUNDRED):
        raise ValueError("discount must be between 0 and 100 percent")
    if not (0 <= tax_rate <= _HUNDRED):
        raise ValueError("tax rate must be between 0 and 100 percent")
    gross = round_half_up(_EXACT.multiply(quantity, Decimal(unit_price_minor)))
    net = round_half_up(exact_net(quantity, unit_price_minor, discount_percent))
    tax = round_half_up(exact_tax(net, tax_rate))
    return LineAmounts(gross_minor=gross, discount_minor=gross - net, net_minor=net, tax_minor=tax)


@dataclass(frozen=True)
class Totals:
    subtotal_minor: int
    discount_minor: int
    tax_minor: int

    @property
    def total_minor(self) -> int:
        return self.subtotal_minor + self.tax_minor


def totals(lines: Iterable[LineAmounts]) -> Totals:
    """A document's totals: plain sums of its rounded lines."""
    subtotal = discount = tax = 0
    for line in lines:
        subtotal += line.net_minor
        discount += line.discount_minor
        tax += line.tax_minor
    return Totals(subtotal_minor=subtotal, discount_minor=discount, tax_minor=tax)


def major(amount_minor: int, currency: str) -> Decimal:
    """The amount in the currency's major unit, exactly: ``(1050, 'EUR')`` -> ``10.50``."""
    exp = exponent(currency)
    return Decimal(amount_minor).scaleb(-exp, _EXACT).quantize(Decimal(1).scaleb(-exp))


def format_money(amount_minor: int, currency: str) -> str:
    """Human form with thousands separators: ``(123456, 'EUR')`` -> ``'1,234.56 EUR'``."""
    exp = exponent(currency)
    return f"{major(amount_minor, currency):,.{exp}f} {currency}"
