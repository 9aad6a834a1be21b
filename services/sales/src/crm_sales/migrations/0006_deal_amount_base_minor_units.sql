-- deals.amount_base is the amount in the base currency's minor unit:
--     amount_minor x rate x 10^(base digits - currency digits)
-- (the rate is one major unit of the deal currency in the base currency). Rows written before
-- this migration left the last factor out, which is right only where both currencies have 2
-- decimals: a JPY deal to EUR was 100 times too small, a KWD deal 10 times too large. This
-- corrects them. The digits are ISO 4217's as crm_events.money has them (the code reads them
-- from there; this list is the snapshot the correction needs). The base currency of a deal in
-- another currency is the one its exchange rate was set against.
WITH digits (currency, d) AS (
    VALUES ('BIF', 0), ('CLP', 0), ('DJF', 0), ('GNF', 0), ('ISK', 0), ('JPY', 0), ('KMF', 0),
           ('KRW', 0), ('PYG', 0), ('RWF', 0), ('UGX', 0), ('UYI', 0), ('VND', 0), ('VUV', 0),
           ('XAF', 0), ('XOF', 0), ('XPF', 0),
           ('BHD', 3), ('IQD', 3), ('JOD', 3), ('KWD', 3), ('LYD', 3), ('OMR', 3), ('TND', 3),
           ('CLF', 4), ('UYW', 4)
),
factors AS (
    SELECT r.currency,
           ('1e' || (coalesce(b.d, 2) - coalesce(c.d, 2)))::numeric AS factor  -- 100, 0.1, ...
    FROM exchange_rates r
    LEFT JOIN digits c ON c.currency = r.currency
    LEFT JOIN digits b ON b.currency = r.base_currency
    WHERE coalesce(b.d, 2) <> coalesce(c.d, 2)
)
UPDATE deals AS d
SET amount_base = d.amount_base * f.factor
FROM factors f
WHERE f.currency = d.currency;
