"""The Product aggregate: one catalogue entry with its price book (a unit price per currency).

Quotes copy what they use of a product (SKU, name, price, tax rate) into their lines, so a later
price change or deactivation never changes a quote that was already drafted.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from crm_events.schemas.sales_billing import (
    ProductActivated,
    ProductCreated,
    ProductDeactivated,
    ProductUpdated,
)
from crm_runtime.aggregate import Aggregate, applies
from crm_runtime.errors import DomainError, InvalidInput
from crm_sales.domain.money import decimal_text, to_decimal

PRODUCT_FIELDS = ("sku", "name", "description", "unit", "tax_rate", "prices")


def normalise_sku(sku: str) -> str:
    """The form SKUs are compared in: ``' ab-1 '`` and ``'AB-1'`` are the same product."""
    return sku.strip().upper()


def _check_rate(tax_rate: str) -> str:
    try:
        rate = to_decimal(tax_rate)
    except ValueError:
        raise InvalidInput("tax_rate", "must be a decimal number of percent") from None
    if not (0 <= rate <= 100):
        raise InvalidInput("tax_rate", "must be between 0 and 100 percent")
    return decimal_text(rate)


def _check_prices(prices: dict[str, int]) -> dict[str, int]:
    for currency, price in prices.items():
        if len(currency) != 3 or not currency.isalpha() or not currency.isupper():
            raise InvalidInput(f"prices.{currency}", "an ISO 4217 code of three capital letters")
        if price < 0:
            raise InvalidInput(f"prices.{currency}", "a price must not be negative")
    return dict(sorted(prices.items()))


@dataclass(frozen=True)
class ProductSpec:
    """The changeable fields of a product."""

    sku: str
    name: str
    description: str | None
    unit: str
    tax_rate: str
    prices: dict[str, int]


class Product(Aggregate):
    stream_type = "product"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.sku = ""
        self.name = ""
        self.description: str | None = None
        self.unit = "each"
        self.tax_rate = "0"
        self.prices: dict[str, int] = {}
        self.active = True
        self.deactivation_reason: str | None = None

    @property
    def sku_key(self) -> str:
        return normalise_sku(self.sku)

    def price_in(self, currency: str) -> int | None:
        return self.prices.get(currency)

    def tax_rate_decimal(self) -> Decimal:
        return Decimal(self.tax_rate)

    @classmethod
    def create(cls, product_id: str, spec: ProductSpec) -> Product:
        product = cls(product_id)
        product.record(
            ProductCreated(
                product_id=product_id,
                sku=spec.sku.strip(),
                name=spec.name.strip(),
                description=spec.description,
                unit=spec.unit,
                tax_rate=_check_rate(spec.tax_rate),
                prices=_check_prices(spec.prices),
            )
        )
        return product

    def update(self, values: dict[str, Any]) -> list[str]:
        """Set the given fields (a subset of PRODUCT_FIELDS); returns the ones that changed."""
        unknown = set(values) - set(PRODUCT_FIELDS)
        if unknown:
            raise InvalidInput(sorted(unknown)[0], "is not a product field")
        clean = dict(values)
        if "sku" in clean:
            if not clean["sku"] or not str(clean["sku"]).strip():
                raise InvalidInput("sku", "must not be empty")
            clean["sku"] = str(clean["sku"]).strip()
        if "name" in clean:
            if not clean["name"] or not str(clean["name"]).strip():
                raise InvalidInput("name", "must not be empty")
            clean["name"] = str(clean["name"]).strip()
        if "unit" in clean and not clean["unit"]:
            raise InvalidInput("unit", "must not be empty")
        if "tax_rate" in clean:
            clean["tax_rate"] = _check_rate(str(clean["tax_rate"]))
        if "prices" in clean:
            clean["prices"] = _check_prices(dict(clean["prices"] or {}))
        changed = [f for f in PRODUCT_FIELDS if f in clean and getattr(self, f) != clean[f]]
        if changed:
            self.record(
                ProductUpdated(
                    product_id=self.id, changed=changed, **{f: clean[f] for f in changed}
                )
            )
        return changed

    def deactivate(self, reason: str | None) -> None:
        if not self.active:
            raise DomainError(f"product {self.sku} is already inactive")
        self.record(ProductDeactivated(product_id=self.id, reason=reason))

    def activate(self) -> None:
        if self.active:
            raise DomainError(f"product {self.sku} is already active")
        self.record(ProductActivated(product_id=self.id))

    @applies(ProductCreated)
    def _created(self, e: ProductCreated) -> None:
        self.sku = e.sku
        self.name = e.name
        self.description = e.description
        self.unit = e.unit
        self.tax_rate = e.tax_rate
        self.prices = dict(e.prices)
        self.active = True

    @applies(ProductUpdated)
    def _updated(self, e: ProductUpdated) -> None:
        for name in e.changed:
            value = getattr(e, name)
            setattr(self, name, dict(value or {}) if name == "prices" else value)

    @applies(ProductDeactivated)
    def _deactivated(self, e: ProductDeactivated) -> None:
        self.active = False
        self.deactivation_reason = e.reason

    @applies(ProductActivated)
    def _activated(self, e: ProductActivated) -> None:
        self.active = True
        self.deactivation_reason = None
