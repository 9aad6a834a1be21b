"""The segment rule language: an AST, its text form (parser + printer) and its JSON form.

Text form (keywords are case-insensitive)::

    country in [DE, AT] and product_view(category="phones") >= 3 within 7d and not purchased

    rule       := or_rule
    or_rule    := and_rule ("or" and_rule)*
    and_rule   := not_rule ("and" not_rule)*
    not_rule   := "not" not_rule | atom
    atom       := "(" rule ")" | field_test | behaviour | consent
    field_test := FIELD ("=" | "!=") value | FIELD ["not"] "in" "[" value ("," value)* "]"
    behaviour  := ACTION ["(" [key "=" value ("," key "=" value)*] ")"]
                  [("=" | "!=" | ">" | ">=" | "<" | "<=") INT] ["within" INT ("d" | "h")]
    consent    := "consent" "(" CHANNEL ")"
    value      := "json string" | bare word ([A-Za-z0-9_][A-Za-z0-9_.-]*, not a keyword)

FIELD: country, city, language, age_band, industry, company_size (case-insensitive equality;
an unknown value is "not equal"). ACTION: page_view(url=prefix), product_view(category=,
product=), search(query=substring), add_to_cart(category=, product=), purchased(category=,
product=). Without a count an action means ``>= 1``; ``within 7d`` counts only the last 7 days.
CHANNEL: email, sms, push (true when consent for it is granted).

JSON form: ``{"and": [r, ...]}``, ``{"or": [r, ...]}``, ``{"not": r}``,
``{"field": "country", "op": "in" | "not in", "values": [...]}``,
``{"field": "city", "op": "=" | "!=", "value": "..."}``,
``{"action": "product_view", "where": {"category": "phones"}, "op": ">=", "count": 3,
"within": "7d"}``, ``{"consent": "email"}``.

Errors: :class:`RuleError` names where (text: offset, line and column; JSON: the path) and why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

FIELDS = ("country", "city", "language", "age_band", "industry", "company_size")
ACTIONS: dict[str, tuple[str, ...]] = {
    "page_view": ("url",),
    "product_view": ("category", "product"),
    "search": ("query",),
    "add_to_cart": ("category", "product"),
    "purchased": ("category", "product"),
}
CHANNELS = ("email", "sms", "push")
COUNT_OPS = ("=", "!=", ">", ">=", "<", "<=")
KEYWORDS = frozenset({"and", "or", "not", "in", "within", "consent"})
UNIT_HOURS = {"d": 24, "h": 1}
MAX_WINDOW_HOURS = 24 * 3650
MAX_COUNT = 1_000_000
MAX_VALUE_LENGTH = 200
MAX_VALUES = 1000
MAX_DEPTH = 32
MAX_NODES = 500
MAX_TEXT = 20_000

CompareOp = Literal["=", "!="]
CountOp = Literal["=", "!=", ">", ">=", "<", "<="]
Unit = Literal["d", "h"]


# --- the AST -------------------------------------------------------------------------------


@dataclass(frozen=True)
class And:
    items: tuple[Rule, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Rule, ...]


@dataclass(frozen=True)
class Not:
    item: Rule


@dataclass(frozen=True)
class FieldEquals:
    field: str
    op: CompareOp
    value: str


@dataclass(frozen=True)
class FieldIn:
    field: str
    values: tuple[str, ...]
    negated: bool = False


@dataclass(frozen=True)
class Window:
    amount: int
    unit: Unit

    @property
    def hours(self) -> int:
        return self.amount * UNIT_HOURS[self.unit]

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"


@dataclass(frozen=True)
class Behaviour:
    action: str
    where: tuple[tuple[str, str], ...] = ()  # (key, value), sorted by key, keys unique
    op: CountOp = ">="
    count: int = 1
    within: Window | None = None


@dataclass(frozen=True)
class Consent:
    channel: str


Rule = And | Or | Not | FieldEquals | FieldIn | Behaviour | Consent


class RuleError(ValueError):
    """A rule that does not parse or does not make sense: where and why."""

    def __init__(
        self,
        reason: str,
        *,
        offset: int | None = None,
        line: int | None = None,
        column: int | None = None,
        path: str | None = None,
    ) -> None:
        self.reason = reason
        self.offset = offset
        self.line = line
        self.column = column
        self.path = path
        super().__init__(self.describe())

    def describe(self) -> str:
        if self.offset is not None:
            return f"line {self.line}, column {self.column} (offset {self.offset}): {self.reason}"
        if self.path:
            return f"at {self.path}: {self.reason}"
        return self.reason

    def as_problem(self, field: str = "rule") -> dict[str, Any]:
        out: dict[str, Any] = {"field": field, "reason": self.describe()}
        if self.offset is not None:
            out.update(offset=self.offset, line=self.line, column=self.column)
        if self.path is not None:
            out["path"] = self.path
        return out


# --- helpers over the AST --------------------------------------------------------------------


def walk(rule: Rule) -> Iterator[Rule]:
    yield rule
    if isinstance(rule, And | Or):
        for item in rule.items:
            yield from walk(item)
    elif isinstance(rule, Not):
        yield from walk(rule.item)


def has_window(rule: Rule) -> bool:
    """True when membership can change by time passing alone (a ``within`` somewhere)."""
    return any(isinstance(n, Behaviour) and n.within is not None for n in walk(rule))


def _depth(rule: Rule) -> int:
    if isinstance(rule, And | Or):
        return 1 + max(_depth(i) for i in rule.items)
    if isinstance(rule, Not):
        return 1 + _depth(rule.item)
    return 1


def check_size(rule: Rule) -> None:
    if _depth(rule) > MAX_DEPTH:
        raise RuleError(f"the rule nests deeper than {MAX_DEPTH} levels")
    if sum(1 for _ in walk(rule)) > MAX_NODES:
        raise RuleError(f"the rule has more than {MAX_NODES} parts")


# --- printer ---------------------------------------------------------------------------------

_BARE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\Z")


def _value(text: str) -> str:
    if _BARE.match(text) and text.lower() not in KEYWORDS:
        return text
    return json.dumps(text, ensure_ascii=False)


def to_text(rule: Rule) -> str:
    """The canonical text form; ``parse(to_text(r)) == r`` for every valid rule."""
    if isinstance(rule, And | Or):
        word = " and " if isinstance(rule, And) else " or "
        return word.join(_child(i, rule) for i in rule.items)
    if isinstance(rule, Not):
        inner = rule.item
        text = to_text(inner)
        return f"not ({text})" if isinstance(inner, And | Or) else f"not {text}"
    if isinstance(rule, FieldEquals):
        return f"{rule.field} {rule.op} {_value(rule.value)}"
    if isinstance(rule, FieldIn):
        values = ", ".join(_value(v) for v in rule.values)
        return f"{rule.field} {'not in' if rule.negated else 'in'} [{values}]"
    if isinstance(rule, Behaviour):
        out = rule.action
        if rule.where:
            out += "(" + ", ".join(f"{k}={_value(v)}" for k, v in rule.where) + ")"
        if (rule.op, rule.count) != (">=", 1):
            out += f" {rule.op} {rule.count}"
        if rule.within is not None:
            out += f" within {rule.within}"
        return out
    return f"consent({rule.channel})"


def _child(item: Rule, parent: And | Or) -> str:
    text = to_text(item)
    return f"({text})" if isinstance(item, And | Or) else text


# --- tokenizer -------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*")
  | (?P<badstring>")
  | (?P<op>>=|<=|!=|=|>|<)
  | (?P<punct>[()\[\],])
  | (?P<word>[A-Za-z0-9_][A-Za-z0-9_.\-]*)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Tok:
    kind: str  # string, op, punct, word, end
    text: str
    offset: int

    @property
    def value(self) -> str:
        return str(json.loads(self.text)) if self.kind == "string" else self.text

    def describe(self) -> str:
        if self.kind == "end":
            return "the end of the rule"
        return f"'{self.text}'" if len(self.text) <= 40 else f"'{self.text[:37]}...'"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = list(self._tokenize())
        self.i = 0
        self.depth = 0

    def _tokenize(self) -> Iterator[_Tok]:
        pos = 0
        text = self.text
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                self.fail(pos, f"unexpected character {text[pos]!r}")
            kind = m.lastgroup or ""
            if kind == "badstring":
                self.fail(pos, "unterminated or invalid string (strings use JSON escapes)")
            if kind != "ws":
                yield _Tok(kind, m.group(), pos)
            pos = m.end()
        yield _Tok("end", "", len(text))

    def fail(self, offset: int, reason: str) -> NoReturn:
        line = self.text.count("\n", 0, offset) + 1
        column = offset - (self.text.rfind("\n", 0, offset) + 1) + 1
        raise RuleError(reason, offset=offset, line=line, column=column)

    @property
    def tok(self) -> _Tok:
        return self.tokens[self.i]

    def next(self) -> _Tok:
        tok = self.tokens[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def is_word(self, *words: str) -> bool:
        return self.tok.kind == "word" and self.tok.text.lower() in words

    def is_punct(self, ch: str) -> bool:
        return self.tok.kind == "punct" and self.tok.text == ch

    def expect_punct(self, ch: str, what: str) -> _Tok:
        if not self.is_punct(ch):
            self.fail(self.tok.offset, f"expected {what} but found {self.tok.describe()}")
        return self.next()

    # grammar

    def parse(self) -> Rule:
        if self.tok.kind == "end":
            self.fail(0, "the rule is empty")
        rule = self.or_rule()
        if self.tok.kind != "end":
            found = self.tok.describe()
            self.fail(self.tok.offset, f"expected 'and', 'or' or the end but found {found}")
        return rule

    def or_rule(self) -> Rule:
        items = [self.and_rule()]
        while self.is_word("or"):
            self.next()
            items.append(self.and_rule())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_rule(self) -> Rule:
        items = [self.not_rule()]
        while self.is_word("and"):
            self.next()
            items.append(self.not_rule())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_rule(self) -> Rule:
        if self.is_word("not"):
            start = self.next()
            self._enter(start)
            inner = self.not_rule()
            self.depth -= 1
            return Not(inner)
        return self.atom()

    def _enter(self, tok: _Tok) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(tok.offset, f"the rule nests deeper than {MAX_DEPTH} levels")

    def atom(self) -> Rule:
        tok = self.tok
        if self.is_punct("("):
            self.next()
            self._enter(tok)
            rule = self.or_rule()
            self.depth -= 1
            self.expect_punct(")", "')' to close the '(' at offset " + str(tok.offset))
            return rule
        if tok.kind != "word":
            self.fail(
                tok.offset,
                f"expected a field ({', '.join(FIELDS)}), an action ({', '.join(ACTIONS)}),"
                f" consent(...), 'not' or '(' but found {tok.describe()}",
            )
        name = tok.text.lower()
        if name in FIELDS:
            return self.field_test()
        if name in ACTIONS:
            return self.behaviour()
        if name == "consent":
            return self.consent()
        return self.fail(
            tok.offset,
            f"unknown name '{tok.text}': expected a field ({', '.join(FIELDS)}),"
            f" an action ({', '.join(ACTIONS)}) or consent(...)",
        )

    def value(self, what: str) -> str:
        tok = self.tok
        if tok.kind == "string" or (tok.kind == "word" and tok.text.lower() not in KEYWORDS):
            self.next()
            value = tok.value
            if not value.strip():
                self.fail(tok.offset, f"{what} must not be empty")
            if len(value) > MAX_VALUE_LENGTH:
                self.fail(tok.offset, f"{what} is longer than {MAX_VALUE_LENGTH} characters")
            return value
        return self.fail(tok.offset, f"expected {what} but found {tok.describe()}")

    def field_test(self) -> Rule:
        field = self.next().text.lower()
        tok = self.tok
        if tok.kind == "op" and tok.text in ("=", "!="):
            self.next()
            op: CompareOp = "=" if tok.text == "=" else "!="
            return FieldEquals(field, op, self.value(f"a value for {field}"))
        negated = False
        if self.is_word("not"):
            self.next()
            negated = True
            if not self.is_word("in"):
                self.fail(
                    self.tok.offset, f"expected 'in' after 'not' but found {self.tok.describe()}"
                )
        if self.is_word("in"):
            self.next()
            self.expect_punct("[", "'[' to start the list of values")
            values = [self.value(f"a value for {field}")]
            while self.is_punct(","):
                self.next()
                values.append(self.value(f"a value for {field}"))
                if len(values) > MAX_VALUES:
                    self.fail(self.tok.offset, f"a list holds at most {MAX_VALUES} values")
            self.expect_punct("]", "',' or ']' in the list of values")
            return FieldIn(field, tuple(values), negated)
        return self.fail(
            tok.offset,
            f"expected '=', '!=', 'in' or 'not in' after {field} but found {tok.describe()}",
        )

    def behaviour(self) -> Rule:
        action = self.next().text.lower()
        allowed = ACTIONS[action]
        where: dict[str, str] = {}
        if self.is_punct("("):
            self.next()
            while not self.is_punct(")"):
                if where:
                    self.expect_punct(",", "',' or ')'")
                key_tok = self.tok
                if key_tok.kind != "word" or key_tok.text.lower() not in allowed:
                    self.fail(
                        key_tok.offset,
                        f"{action}() takes {', '.join(k + '=' for k in allowed)}"
                        f" but found {key_tok.describe()}",
                    )
                key = self.next().text.lower()
                if key in where:
                    self.fail(key_tok.offset, f"{key}= is given twice")
                if not (self.tok.kind == "op" and self.tok.text == "="):
                    self.fail(
                        self.tok.offset, f"expected '=' after {key} but found {self.tok.describe()}"
                    )
                self.next()
                where[key] = self.value(f"a value for {key}")
            self.next()
        op: CountOp = ">="
        count = 1
        if self.tok.kind == "op":
            op = self.next().text  # type: ignore[assignment]
            count_tok = self.tok
            if count_tok.kind != "word" or not count_tok.text.isdigit():
                self.fail(
                    count_tok.offset,
                    f"expected a whole number after '{op}' but found {count_tok.describe()}",
                )
            self.next()
            count = int(count_tok.text)
            if count > MAX_COUNT:
                self.fail(count_tok.offset, f"a count is at most {MAX_COUNT}")
        within = None
        if self.is_word("within"):
            self.next()
            w = self.tok
            m = re.fullmatch(r"(\d{1,7})([dh])", w.text.lower()) if w.kind == "word" else None
            if m is None:
                self.fail(w.offset, f"expected a window like 7d or 12h but found {w.describe()}")
            self.next()
            within = _window(int(m.group(1)), m.group(2), lambda r: self.fail(w.offset, r))
        return Behaviour(action, tuple(sorted(where.items())), op, count, within)

    def consent(self) -> Rule:
        self.next()
        self.expect_punct("(", "'(' after consent")
        tok = self.tok
        channel = tok.value.lower() if tok.kind in ("word", "string") else ""
        if channel not in CHANNELS:
            self.fail(
                tok.offset,
                f"consent() takes a channel ({', '.join(CHANNELS)}) but found {tok.describe()}",
            )
        self.next()
        self.expect_punct(")", "')' after the channel")
        return Consent(channel)


def _window(amount: int, unit: str, fail: Any) -> Window:
    if amount < 1:
        fail("a window is at least 1")
    u: Unit = "d" if unit == "d" else "h"
    window = Window(amount, u)
    if window.hours > MAX_WINDOW_HOURS:
        fail("a window is at most 3650 days")
    return window


def parse(text: str) -> Rule:
    """Parse the text form; :class:`RuleError` names the offset, line, column and reason."""
    if len(text) > MAX_TEXT:
        raise RuleError(
            f"the rule is longer than {MAX_TEXT} characters",
            offset=MAX_TEXT,
            line=1,
            column=MAX_TEXT + 1,
        )
    rule = _Parser(text).parse()
    check_size(rule)
    return rule


# --- JSON form -------------------------------------------------------------------------------


def to_json(rule: Rule) -> dict[str, Any]:
    if isinstance(rule, And):
        return {"and": [to_json(i) for i in rule.items]}
    if isinstance(rule, Or):
        return {"or": [to_json(i) for i in rule.items]}
    if isinstance(rule, Not):
        return {"not": to_json(rule.item)}
    if isinstance(rule, FieldEquals):
        return {"field": rule.field, "op": rule.op, "value": rule.value}
    if isinstance(rule, FieldIn):
        return {
            "field": rule.field,
            "op": "not in" if rule.negated else "in",
            "values": list(rule.values),
        }
    if isinstance(rule, Behaviour):
        out: dict[str, Any] = {"action": rule.action}
        if rule.where:
            out["where"] = dict(rule.where)
        out["op"] = rule.op
        out["count"] = rule.count
        if rule.within is not None:
            out["within"] = str(rule.within)
        return out
    return {"consent": rule.channel}


def from_json(data: Any) -> Rule:
    """Build a rule from its JSON form; :class:`RuleError` names the path (``rule.and[1].op``)."""
    rule = _from_json(data, "rule", 0)
    check_size(rule)
    return rule


def _fail(path: str, reason: str) -> NoReturn:
    raise RuleError(reason, path=path)


def _keys(data: dict[str, Any], path: str, required: set[str], optional: set[str]) -> None:
    missing = required - data.keys()
    if missing:
        _fail(path, f"missing {', '.join(sorted(missing))}")
    extra = data.keys() - required - optional
    if extra:
        _fail(path, f"unknown key(s) {', '.join(sorted(extra))}")


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        _fail(path, "must be a string")
    if not value.strip():
        _fail(path, "must not be empty")
    if len(value) > MAX_VALUE_LENGTH:
        _fail(path, f"is longer than {MAX_VALUE_LENGTH} characters")
    return str(value)


def _from_json(data: Any, path: str, depth: int) -> Rule:
    if depth > MAX_DEPTH:
        _fail(path, f"the rule nests deeper than {MAX_DEPTH} levels")
    if not isinstance(data, dict):
        return _fail(path, "must be an object (and, or, not, field, action or consent)")
    for key in ("and", "or"):
        if key in data:
            _keys(data, path, {key}, set())
            items = data[key]
            if not isinstance(items, list) or len(items) < 2:
                _fail(f"{path}.{key}", "must be a list of at least two rules")
            rules = tuple(
                _from_json(x, f"{path}.{key}[{n}]", depth + 1) for n, x in enumerate(items)
            )
            return And(rules) if key == "and" else Or(rules)
    if "not" in data:
        _keys(data, path, {"not"}, set())
        return Not(_from_json(data["not"], f"{path}.not", depth + 1))
    if "field" in data:
        field = data["field"]
        if field not in FIELDS:
            _fail(f"{path}.field", f"must be one of {', '.join(FIELDS)}")
        op = data.get("op")
        if op in ("=", "!="):
            _keys(data, path, {"field", "op", "value"}, set())
            return FieldEquals(field, op, _string(data["value"], f"{path}.value"))
        if op in ("in", "not in"):
            _keys(data, path, {"field", "op", "values"}, set())
            values = data["values"]
            if not isinstance(values, list) or not values:
                _fail(f"{path}.values", "must be a non-empty list")
            if len(values) > MAX_VALUES:
                _fail(f"{path}.values", f"holds at most {MAX_VALUES} values")
            return FieldIn(
                field,
                tuple(_string(v, f"{path}.values[{n}]") for n, v in enumerate(values)),
                op == "not in",
            )
        return _fail(f"{path}.op", "must be one of =, !=, in, not in")
    if "action" in data:
        _keys(data, path, {"action"}, {"where", "op", "count", "within"})
        action = data["action"]
        if not isinstance(action, str) or action not in ACTIONS:
            _fail(f"{path}.action", f"must be one of {', '.join(ACTIONS)}")
        where = data.get("where") or {}
        if not isinstance(where, dict):
            _fail(f"{path}.where", "must be an object")
        for key in where:
            if key not in ACTIONS[action]:
                _fail(f"{path}.where.{key}", f"{action} takes {', '.join(ACTIONS[action])}")
        pairs = tuple(sorted((k, _string(v, f"{path}.where.{k}")) for k, v in where.items()))
        op = data.get("op", ">=")
        if op not in COUNT_OPS:
            _fail(f"{path}.op", f"must be one of {', '.join(COUNT_OPS)}")
        count = data.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COUNT:
            _fail(f"{path}.count", f"must be a whole number from 0 to {MAX_COUNT}")
        within = None
        if data.get("within") is not None:
            raw = data["within"]
            m = re.fullmatch(r"(\d{1,7})([dh])", raw) if isinstance(raw, str) else None
            if m is None:
                _fail(f"{path}.within", "must be a window like 7d or 12h")
            within = _window(int(m.group(1)), m.group(2), lambda r: _fail(f"{path}.within", r))
        return Behaviour(action, pairs, op, count, within)
    if "consent" in data:
        _keys(data, path, {"consent"}, set())
        if data["consent"] not in CHANNELS:
            _fail(f"{path}.consent", f"must be one of {', '.join(CHANNELS)}")
        return Consent(data["consent"])
    return _fail(path, "must have one of the keys and, or, not, field, action, consent")


def load(rule: str | dict[str, Any]) -> Rule:
    """A rule from either form: text (a string) or JSON (an object)."""
    return parse(rule) if isinstance(rule, str) else from_json(rule)
