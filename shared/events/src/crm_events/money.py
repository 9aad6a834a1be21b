"""Currencies' minor units (ISO 4217) and the one conversion of an amount to the base currency.

Every context keeps money as an integer in the currency's minor unit (``amount_minor``: cents
for EUR, yen for JPY, fils for KWD) next to its ISO 4217 code. An exchange rate is the value of
**one major unit** of the currency in the base currency (``0.0061``: 1 JPY = 0.0061 EUR), as
``crm.sales.exchange_rate.set`` and the deal events carry it. An amount in the base currency's
minor unit is therefore

    amount_minor x rate x 10^(base digits - currency digits)

¥1,000,000 at 0.0061 to EUR: 1,000,000 x 0.0061 x 10^(2 - 0) = 610,000 cents (€6,100.00);
1.000 KWD (1,000 fils) at 2.98: 1,000 x 2.98 x 10^(2 - 3) = 298 cents (€2.98).

This module is the one source of truth for the minor digits: the sales service's documents, its
deal amounts and the analytics projections all read them from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Context, Decimal
from types import MappingProxyType

# ISO 4217 currencies whose minor unit does not have 2 decimals. Every other code has 2.
MINOR_DIGITS: Mapping[str, int] = MappingProxyType(
    {
        **dict.fromkeys(
            (
                "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX",
                "UYI", "VND", "VUV", "XAF", "XOF", "XPF",
            ),
            0,
        ),
        **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
        "CLF": 4,
        "UYW": 4,
    }
)  # fmt: skip

# ISO 4217 list one (Debian's iso-codes 4.15, plus ZWG of 2024 and XCG of 2025): currencies and
# funds in use, and some recently withdrawn ones old documents still carry (HRK, ANG, SLL, ZWL,
# CUC). Not listed, as not currencies: XXX (none),
# XTS (testing), XAU/XAG/XPD/XPT (metals), XDR, XSU, XUA and XBA-XBD (units of account).
# Every code of MINOR_DIGITS is one of them (tested).
_ISO_4217_CODES = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN
    BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP
    ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HRK HTG HUF IDR ILS INR IQD IRR
    ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD
    MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR
    PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL
    THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF
    XCD XCG XOF XPF YER ZAR ZMW ZWG ZWL
"""
ISO_4217: frozenset[str] = frozenset(_ISO_4217_CODES.split())


def is_currency(code: str) -> bool:
    """Whether ``code`` is the ISO 4217 code of a currency (exactly: three capital letters)."""
    return code in ISO_4217


# Room for every digit an amount (bigint) times a rate (18 digits) can have: no rounding here.
_EXACT = Context(prec=60)


def minor_digits(currency: str) -> int:
    """How many decimals the currency's minor unit has (JPY 0, EUR 2, KWD 3)."""
    return MINOR_DIGITS.get(currency, 2)


def base_factor(currency: str, base_currency: str) -> Decimal:
    """``10^(base digits - currency digits)``: turns ``amount_minor x rate`` into base minor
    units (JPY to EUR: 100; KWD to EUR: 0.1; same digits: 1)."""
    return Decimal(1).scaleb(minor_digits(base_currency) - minor_digits(currency), _EXACT)


def to_base_minor(
    amount_minor: int, currency: str, rate: Decimal | str, base_currency: str
) -> Decimal:
    """The amount in the base currency's minor unit, exactly (not rounded): ``rate`` is one major
    unit of ``currency`` in ``base_currency``."""
    value = _EXACT.multiply(Decimal(amount_minor), Decimal(rate))
    return value.scaleb(minor_digits(base_currency) - minor_digits(currency), _EXACT)


def minor_digits_sql(column: str) -> str:
    """A SQL expression for the minor digits of the currency code held in ``column`` (a column
    name of the caller's own query, never user input): the same table, for queries that convert
    rows in the database."""
    codes: dict[int, list[str]] = {}
    for code, digits in sorted(MINOR_DIGITS.items()):
        codes.setdefault(digits, []).append(f"'{code}'")
    whens = " ".join(
        f"WHEN {column} IN ({', '.join(listed)}) THEN {digits}"
        for digits, listed in sorted(codes.items())
    )
    return f"(CASE {whens} ELSE 2 END)"


def base_factor_sql(currency_column: str, base_column: str) -> str:
    """SQL for :func:`base_factor` of the codes in two columns: ``10^(base - currency digits)``
    as an exact numeric (multiply ``amount_minor * rate`` by it)."""
    exponent = f"{minor_digits_sql(base_column)} - {minor_digits_sql(currency_column)}"
    return f"power(10::numeric, {exponent})"
