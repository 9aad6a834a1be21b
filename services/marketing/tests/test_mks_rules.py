"""The segment rule language: parse ∘ print round trips, JSON both ways, errors with positions."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mks_strategies import rules

from crm_marketing.segments import rules as r

ISSUE_EXAMPLE = (
    'country in [DE, AT] and product_view(category="phones") >= 3 within 7d and not purchased'
)


def test_the_issue_example_parses_to_what_it_says() -> None:
    rule = r.parse(ISSUE_EXAMPLE)
    assert rule == r.And(
        (
            r.FieldIn("country", ("DE", "AT")),
            r.Behaviour("product_view", (("category", "phones"),), ">=", 3, r.Window(7, "d")),
            r.Not(r.Behaviour("purchased")),
        )
    )
    assert r.to_text(rule) == (
        "country in [DE, AT] and product_view(category=phones) >= 3 within 7d and not purchased"
    )
    assert r.has_window(rule)
    assert r.from_json(json.loads(json.dumps(r.to_json(rule)))) == rule


def test_precedence_not_binds_tighter_than_and_than_or() -> None:
    a, b, c = (r.Consent(ch) for ch in ("email", "sms", "push"))
    assert r.parse("consent(email) or consent(sms) and consent(push)") == r.Or((a, r.And((b, c))))
    assert r.parse("not consent(email) and consent(sms)") == r.And((r.Not(a), b))
    assert r.parse("not (consent(email) and consent(sms))") == r.Not(r.And((a, b)))
    assert r.parse("(consent(email) or consent(sms)) and consent(push)") == r.And((r.Or((a, b)), c))
    assert r.parse("consent(email) and (consent(sms) and consent(push))") == r.And(
        (a, r.And((b, c)))
    )


def test_keywords_are_case_insensitive_and_values_keep_their_case() -> None:
    rule = r.parse('Country NOT IN [de, "At"] AND Search(Query="iPhone 15") < 2 WITHIN 12H')
    assert rule == r.And(
        (
            r.FieldIn("country", ("de", "At"), negated=True),
            r.Behaviour("search", (("query", "iPhone 15"),), "<", 2, r.Window(12, "h")),
        )
    )


def test_filters_are_kept_sorted_so_order_does_not_matter() -> None:
    one = r.parse('add_to_cart(product="p-1", category=phones)')
    two = r.parse('add_to_cart(category="phones", product=p-1)')
    assert one == two
    assert r.to_text(one) == "add_to_cart(category=phones, product=p-1)"


@settings(max_examples=400, deadline=None)
@given(rules())
def test_parse_of_print_is_the_identity(rule: r.Rule) -> None:
    text = r.to_text(rule)
    assert r.parse(text) == rule
    assert r.to_text(r.parse(text)) == text  # print ∘ parse is stable


@settings(max_examples=300, deadline=None)
@given(rules())
def test_json_form_round_trips_through_json_text(rule: r.Rule) -> None:
    data = json.loads(json.dumps(r.to_json(rule)))
    assert r.from_json(data) == rule
    assert r.parse(r.to_text(r.from_json(data))) == rule


def _noisy(rule: r.Rule, data: st.DataObject) -> str:
    """Another spelling of the same rule: random case, spacing, quoting and redundant parens."""
    sp = data.draw(st.sampled_from([" ", "  ", "\n", "\t ", " \r\n "]))

    def kw(word: str) -> str:
        return data.draw(st.sampled_from([word, word.upper(), word.capitalize()]))

    def val(v: str) -> str:
        return json.dumps(v) if data.draw(st.booleans()) else r._value(v)

    if isinstance(rule, r.And | r.Or):
        word = kw("and" if isinstance(rule, r.And) else "or")
        parts = [
            f"({_noisy(i, data)})" if isinstance(i, r.And | r.Or) else _noisy(i, data)
            for i in rule.items
        ]
        return f"{sp}{word}{sp}".join(parts)
    if isinstance(rule, r.Not):
        inner = _noisy(rule.item, data)
        return f"{kw('not')}{sp}({inner})"
    if isinstance(rule, r.FieldEquals):
        return f"{kw(rule.field)}{sp}{rule.op}{val(rule.value)}"
    if isinstance(rule, r.FieldIn):
        neg = f"{kw('not')} " if rule.negated else ""
        values = f",{sp}".join(val(v) for v in rule.values)
        return f"{rule.field} {neg}{kw('in')}{sp}[{sp}{values}{sp}]"
    if isinstance(rule, r.Behaviour):
        out = kw(rule.action)
        if rule.where or data.draw(st.booleans()):
            out += "(" + ", ".join(f"{k}{sp}={sp}{val(v)}" for k, v in rule.where) + ")"
        if (rule.op, rule.count) != (">=", 1) or data.draw(st.booleans()):
            out += f"{sp}{rule.op}{sp}{rule.count}"
        if rule.within is not None:
            out += f"{sp}{kw('within')} {rule.within.amount}{kw(rule.within.unit)}"
        return f"({out})" if data.draw(st.booleans()) else out
    assert isinstance(rule, r.Consent)
    channel = json.dumps(rule.channel) if data.draw(st.booleans()) else rule.channel
    return f"{kw('consent')}({sp}{channel}{sp})"


@settings(max_examples=300, deadline=None)
@given(rules(), st.data())
def test_any_spelling_parses_to_the_same_rule_and_prints_canonically(
    rule: r.Rule, data: st.DataObject
) -> None:
    text = _noisy(rule, data)
    assert r.parse(text) == rule
    assert r.to_text(r.parse(text)) == r.to_text(rule)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_arbitrary_text_parses_or_fails_with_a_position(text: str) -> None:
    try:
        rule = r.parse(text)
    except r.RuleError as exc:
        error: r.RuleError | None = exc
    else:
        error = None
        assert r.parse(r.to_text(rule)) == rule
    if error is not None:
        assert error.offset is not None and 0 <= error.offset <= len(text)
        assert error.line is not None and error.line >= 1
        assert error.column is not None and error.column >= 1
        assert error.reason


@pytest.mark.parametrize(
    ("text", "offset", "line", "column", "reason"),
    [
        ("country in [DE, AT", 18, 1, 19, "expected ',' or ']'"),
        ("country ~ DE", 8, 1, 9, "unexpected character '~'"),
        ("colour = red", 0, 1, 1, "unknown name 'colour'"),
        ('product_view(colour="red")', 13, 1, 14, "product_view() takes category=, product="),
        ("consent(fax)", 8, 1, 9, "consent() takes a channel"),
        ("(country = DE", 13, 1, 14, "expected ')' to close the '(' at offset 0"),
        ("country = DE and\n  purchased >= x", 32, 2, 16, "expected a whole number"),
        ("purchased within 0d", 17, 1, 18, "a window is at least 1"),
        ("page_view within 7w", 17, 1, 18, "expected a window like 7d or 12h"),
        ('city = "Berlin', 7, 1, 8, "unterminated or invalid string"),
        ("country = DE country = AT", 13, 1, 14, "expected 'and', 'or' or the end"),
        ("", 0, 1, 1, "the rule is empty"),
        ("country in []", 12, 1, 13, "expected a value for country"),
        ("country = and", 10, 1, 11, "expected a value for country but found 'and'"),
        ('search(query="a", query="b")', 18, 1, 19, "query= is given twice"),
        ("purchased >= 3 within 3651d", 22, 1, 23, "a window is at most 3650 days"),
        ("country not = DE", 12, 1, 13, "expected 'in' after 'not'"),
    ],
)
def test_errors_name_offset_line_column_and_reason(
    text: str, offset: int, line: int, column: int, reason: str
) -> None:
    with pytest.raises(r.RuleError) as caught:
        r.parse(text)
    exc = caught.value
    assert (exc.offset, exc.line, exc.column) == (offset, line, column), exc.describe()
    assert reason in exc.reason
    problem = exc.as_problem()
    assert problem["field"] == "rule" and problem["offset"] == offset
    assert f"line {line}, column {column}" in problem["reason"]


def test_nesting_and_size_are_bounded() -> None:
    deep = "not " * 40 + "consent(email)"
    with pytest.raises(r.RuleError, match="nests deeper"):
        r.parse(deep)
    wide = " or ".join(["consent(email)"] * 600)
    with pytest.raises(r.RuleError, match="more than 500 parts"):
        r.parse(wide)


@pytest.mark.parametrize(
    ("data", "path", "reason"),
    [
        ([], "rule", "must be an object"),
        ({"and": [{"consent": "email"}]}, "rule.and", "at least two rules"),
        ({"or": [{"consent": "email"}, {"field": "planet"}]}, "rule.or[1].field", "must be one of"),
        ({"field": "country", "op": "like", "value": "D%"}, "rule.op", "must be one of"),
        ({"field": "country", "op": "in", "values": []}, "rule.values", "non-empty list"),
        ({"field": "city", "op": "=", "value": 3}, "rule.value", "must be a string"),
        ({"not": {"action": "purchased", "count": -1}}, "rule.not.count", "whole number"),
        ({"action": "purchased", "count": True}, "rule.count", "whole number"),
        ({"action": "search", "where": {"url": "/x"}}, "rule.where.url", "search takes query"),
        ({"action": "page_view", "within": "7 days"}, "rule.within", "like 7d or 12h"),
        ({"action": ["page_view"]}, "rule.action", "must be one of"),
        ({"consent": "email", "extra": 1}, "rule", "unknown key(s) extra"),
        ({"colour": "red"}, "rule", "must have one of the keys"),
    ],
)
def test_json_errors_name_the_path(data: object, path: str, reason: str) -> None:
    with pytest.raises(r.RuleError) as caught:
        r.from_json(data)
    assert caught.value.path == path
    assert reason in caught.value.reason


def test_load_takes_either_form() -> None:
    text = "consent(email) and not country = DE"
    assert r.load(text) == r.load(r.to_json(r.parse(text)))
