"""The Jinja2 sandbox templates run in, and the budget every render runs under.

The sandbox (:class:`jinja2.sandbox.ImmutableSandboxedEnvironment`) keeps templates away from
dunders, unsafe callables and the mutation of lists, dicts and sets. What it does not bound is
the *amount* of work: nested loops multiply (three loops over 3000, 3000 and 10 items are
90 million iterations), macros can call themselves, and strings can be grown by concatenation,
padding, replacing or formatting. Rendering runs in the event loop, so one such template would
stall the whole service. Every render therefore runs under a :class:`Budget` (held in a context
variable for the duration of :func:`render`), charged by code the compiler adds:

- every loop iteration (``for`` loops, also with empty bodies, filtered and recursive ones):
  at most :data:`MAX_LOOP_ITERATIONS`;
- steps: each time a block of statements runs (the template, a loop body per iteration, a
  branch, a macro per call) it costs its number of template nodes; each call, filter and
  intercepted operator costs one. At most :data:`MAX_STEPS`, and at most
  :data:`MAX_CPU_SECONDS` of the thread's processor time;
- characters: text output (also into ``{% set %}`` blocks and macros) and every string or
  container built by an operator, a call or a filter; at most :data:`MAX_CHARACTERS`. Anything
  that can build a large value from small ones (``*``, ``+``, ``~``, ``%``, ``str.format``,
  ``replace``, ``join``, padding, ``center``, ``indent``, ``wordwrap``...) is checked *before*
  it runs against what is left, so no single step allocates much beyond the budget; a join
  over a generator takes it into a list first, and slices are charged;
- integers: none beyond :data:`MAX_INT_BITS` bits, however made (``from_bytes``, ``int(base=16)``,
  arithmetic: every operator is intercepted), so no single operation can take long.

Going over raises :class:`TooMuchWork` (a :class:`~jinja2.exceptions.SecurityError`). A compiled
template cannot render outside :func:`render`.
"""

from __future__ import annotations

import functools
import re
import string
import time
from collections.abc import Callable, Generator, ItemsView, Iterable, KeysView, Mapping, ValuesView
from contextvars import ContextVar
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.environment import Template
from jinja2.exceptions import SecurityError
from jinja2.filters import do_default
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_REPEAT = 10_000  # items one ``*`` repetition may make
MAX_LOOP_ITERATIONS = 10_000  # per render of one part
MAX_STEPS = 100_000  # template nodes run + calls + filters + loop iterations
MAX_CHARACTERS = 1_000_000  # characters output or built
MAX_CPU_SECONDS = 0.25  # processor time of one render (a backstop: the counts come first)
MAX_INT_BITS = 4_096  # any integer made or computed (arithmetic on larger ones is slow)


class TooMuchWork(SecurityError):
    """The render went over its budget (the message says which limit)."""


class Budget:
    """What one render of one template part may still do."""

    __slots__ = ("_tick", "characters", "deadline", "iterations", "steps")

    def __init__(self) -> None:
        self.iterations = 0
        self.steps = 0
        self.characters = 0
        self._tick = 0
        self.deadline = time.thread_time() + MAX_CPU_SECONDS

    def step(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > MAX_STEPS:
            raise TooMuchWork(
                f"more than {MAX_STEPS} steps (template statements run, calls and filters)"
            )
        self._tick += 1
        if self._tick >= 16:
            self._tick = 0
            self._check_clock()

    def _check_clock(self) -> None:
        if time.thread_time() > self.deadline:
            raise TooMuchWork(f"more than {MAX_CPU_SECONDS} s of processor time")

    def iterate(self) -> None:
        self.iterations += 1
        if self.iterations > MAX_LOOP_ITERATIONS:
            raise TooMuchWork(f"more than {MAX_LOOP_ITERATIONS} loop iterations")
        self.step()

    @property
    def room(self) -> int:
        """Characters that may still be output or built."""
        return MAX_CHARACTERS - self.characters

    def expect(self, size: int) -> None:
        """Refuse, before building it, a value of about ``size`` characters that would not fit."""
        if size > self.room:
            raise TooMuchWork(self._over())

    def charge(self, size: int) -> None:
        self.characters += size
        if self.characters > MAX_CHARACTERS:
            raise TooMuchWork(self._over())
        if size > 4096:  # big values took time to make
            self._check_clock()

    def built(self, value: Any) -> Any:
        """Charge a value an operation made, and pass it on (no integer beyond the bound)."""
        if type(value) is int:
            check_int(value)
        self.charge(weight(value, self.room + 1))
        return value

    def loop(self, iterable: Iterable[Any]) -> Generator[Any, None, None]:
        for item in iterable:
            self.iterate()
            yield item

    @staticmethod
    def _over() -> str:
        return f"more than {MAX_CHARACTERS} characters output or built"


def check_int(value: int) -> None:
    if value.bit_length() > MAX_INT_BITS:
        raise TooMuchWork(f"an integer of more than {MAX_INT_BITS} bits")


_BUDGET: ContextVar[Budget | None] = ContextVar("crm_marketing_template_budget", default=None)


def current() -> Budget:
    budget = _BUDGET.get()
    if budget is None:  # also at compile time: nothing is folded into a constant then
        raise SecurityError("templates render only within a budget")
    return budget


def render(template: Template, values: Mapping[str, object]) -> str:
    """Render one compiled template under a fresh budget (TooMuchWork when over it)."""
    budget = Budget()
    token = _BUDGET.set(budget)
    try:
        text = template.render(values)
        budget._check_clock()  # a render that ran over between two looks at the clock
        return text
    finally:
        _BUDGET.reset(token)


# --- sizes -----------------------------------------------------------------------------------

_TEXT = (str, bytes, bytearray)
_SEQUENCES = (*_TEXT, list, tuple)
_CONTAINERS = (list, tuple, dict, set, frozenset, KeysView, ValuesView, ItemsView)


def weight(value: Any, limit: int = MAX_CHARACTERS + 1) -> int:
    """About how many characters ``value`` takes as text (containers: their contents), counted
    up to a little past ``limit``."""
    if isinstance(value, _TEXT):
        return len(value)
    if not isinstance(value, _CONTAINERS):
        return 8
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, _TEXT):
            total += len(item) + 2
        elif isinstance(item, dict):
            total += 2
            stack.extend(item.items())
        elif isinstance(item, _CONTAINERS):
            total += 2
            stack.extend(item)
        else:
            total += 8
    return total


def _largest(values: Iterable[Any]) -> int:
    return max((weight(v) for v in values), default=0)


def _parts(values: Any) -> Iterable[Any]:
    """The values a ``%`` format takes: a tuple's items, a mapping's values, or the one value."""
    if isinstance(values, tuple):
        return values
    if isinstance(values, Mapping):
        return values.values()
    return (values,)


def _number(digits: str | None) -> int:
    if not digits or digits == "*":
        return 0
    return int(digits) if len(digits) <= 9 else 10**9


_PERCENT = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?[a-zA-Z%]")


def percent_size(fmt: str, values: Any) -> int:
    """An upper bound of the length of ``fmt % values``; SecurityError for ``*`` widths."""
    largest = _largest(_parts(values))
    total = len(fmt)
    for m in _PERCENT.finditer(fmt):
        if m.group(1) == "*" or m.group(2) == "*":
            raise SecurityError("'*' widths in % formats are not allowed in templates")
        total += max(_number(m.group(1)), _number(m.group(2))) + largest
    return total


_DIGITS = re.compile(r"\d+")


def format_size(fmt: str, args: Iterable[Any]) -> int:
    """An upper bound of the length of ``fmt.format(*args)``; SecurityError for a nested field
    in a format spec (its width would come from a value)."""
    largest = _largest(args)
    total = len(fmt)
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return total  # the call fails the same way
    for _, name, spec, _ in fields:
        if name is None:
            continue
        if spec and "{" in spec:
            raise SecurityError("nested replacement fields in a format spec are not allowed")
        total += max((_number(d) for d in _DIGITS.findall(spec or "")), default=0) + largest
    return total


def replace_size(s: Any, old: Any, new: Any, count: Any = None) -> int:
    if not isinstance(s, _TEXT) or not isinstance(old, _TEXT) or not isinstance(new, _TEXT):
        return weight(s) + weight(new) * (weight(s) + 1)
    n = len(s) + 1 if not old else s.count(old)  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        n = min(n, count)
    return len(s) + n * max(0, len(new) - len(old))


def join_size(items: Any, sep: Any) -> int:
    n = len(items) if isinstance(items, _CONTAINERS) else weight(items)
    return weight(items) + weight(sep) * n


def _arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], i: int, name: str, default: Any) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


# --- what calls of str/bytes methods can build --------------------------------------------------


def _method_size(owner: str | bytes, name: str, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    size = len(owner)
    if name in ("center", "ljust", "rjust", "zfill"):
        width = _arg(args, kw, 0, "width", 0)
        return max(size, width if isinstance(width, int) else 0)
    if name == "expandtabs":
        tab = _arg(args, kw, 0, "tabsize", 8)
        tabs = owner.count("\t" if isinstance(owner, str) else b"\t")  # type: ignore[arg-type]
        return size + tabs * (tab if isinstance(tab, int) else 8)
    if name == "replace":
        return replace_size(owner, _arg(args, kw, 0, "old", ""), _arg(args, kw, 1, "new", ""),
                            _arg(args, kw, 2, "count", None))  # fmt: skip
    if name == "join" and args:
        return join_size(args[0], owner)
    if name == "format" and isinstance(owner, str):
        return format_size(owner, (*args, *kw.values()))
    if name == "format_map" and isinstance(owner, str) and args:
        return format_size(owner, _parts(args[0]))
    if name == "translate" and args:
        table = args[0]
        longest = _largest(table.values()) if isinstance(table, Mapping) else 1
        return size * max(1, longest)
    return 0


_VALUES = (*_CONTAINERS, str, bytes, bytearray, int, float)


def _check_call(
    budget: Budget, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """Before a method of a value (a string, a number, a list...) runs: the strings it may build
    fit what is left, and so does a size it is given (``int.to_bytes``). Returns the arguments
    to call it with (an iterable for ``join`` taken into a list, so its size is known)."""
    target = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format
    owner = getattr(target, "__self__", None)
    if not isinstance(owner, _VALUES):
        return (
            args  # a macro, caller(), loop(...), loop.cycle(...): their work is counted as it runs
        )
    name = getattr(target, "__name__", "")
    if isinstance(owner, int) and name == "to_bytes":
        budget.expect(_arg(args, kwargs, 0, "length", 1))
    if isinstance(owner, str | bytes):
        if name == "join" and args and not isinstance(args[0], _CONTAINERS):
            args = (sized(budget, args[0]), *args[1:])
        plain = {k: v for k, v in kwargs.items() if k not in ("_loop_vars", "_block_vars")}
        budget.expect(_method_size(owner, name, args, plain))
    return args


def sized(budget: Budget, items: Iterable[Any]) -> list[Any]:
    """An iterable (a generator from ``map``...) as a list, counted as it is taken."""
    out = []
    for item in items:
        budget.iterate()
        out.append(item)
    return out


# --- filters ----------------------------------------------------------------------------------

FilterCheck = Callable[[tuple[Any, ...], dict[str, Any]], int]


def _center(a: tuple[Any, ...], kw: dict[str, Any]) -> int:
    width = _arg(a, kw, 1, "width", 80)
    return max(weight(a[0]) if a else 0, width if isinstance(width, int) else 0)


def _indent(a: tuple[Any, ...], kw: dict[str, Any]) -> int:
    s, width = (a[0] if a else ""), _arg(a, kw, 1, "width", 4)
    per_line = width if isinstance(width, int) else weight(width)
    lines = s.count("\n") + 1 if isinstance(s, str) else weight(s)
    return weight(s) + lines * max(0, per_line)


def _wordwrap(a: tuple[Any, ...], kw: dict[str, Any]) -> int:
    s = a[0] if a else ""
    width = _arg(a, kw, 1, "width", 79)
    wrap = _arg(a, kw, 3, "wrapstring", None)
    text = s if isinstance(s, str) else ""
    size = weight(s)
    breaks = sum(text.count(c) for c in " \t\n-") + 1 if text else size
    lines = size // max(1, width if isinstance(width, int) else 1) + breaks
    return size + lines * (weight(wrap) if wrap is not None else 1)


def _replace(a: tuple[Any, ...], kw: dict[str, Any]) -> int:
    s = a[0] if a else ""
    return replace_size(
        s, _arg(a, kw, 1, "old", ""), _arg(a, kw, 2, "new", ""), _arg(a, kw, 3, "count", None)
    )


def _format(a: tuple[Any, ...], kw: dict[str, Any]) -> int:
    fmt = a[0] if a else ""
    return percent_size(fmt, kw or tuple(a[1:])) if isinstance(fmt, str) else weight(fmt)


def _join(a: tuple[Any, ...], kw: dict[str, Any]) -> int:
    return join_size(a[0] if a else (), _arg(a, kw, 1, "d", ""))


def _count(index: int, name: str) -> FilterCheck:
    def check(a: tuple[Any, ...], kw: dict[str, Any]) -> int:
        n = _arg(a, kw, index, name, 0)
        return n if isinstance(n, int) else 0

    return check


def _sum(a: tuple[Any, ...], kw: dict[str, Any]) -> int:
    start = _arg(a, kw, 2, "start", 0)
    if not isinstance(start, int | float):
        raise SecurityError("the sum filter adds numbers only")
    return 0


_FILTER_CHECKS: dict[str, FilterCheck] = {
    "center": _center,
    "indent": _indent,
    "wordwrap": _wordwrap,
    "replace": _replace,
    "format": _format,
    "join": _join,
    "batch": _count(1, "linecount"),
    "slice": _count(1, "slices"),
    "sum": _sum,
}


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """``default`` also stands in for an empty value (a profile without a first name has
    ``first_name`` empty, and ``{{ first_name | default('there') }}`` should greet "there")."""
    if value is None or (isinstance(value, str) and not value):
        return default_value
    return do_default(value, default_value, boolean)


def _guard(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    passes = getattr(func, "jinja_pass_arg", None) is not None  # context / environment first
    check = _FILTER_CHECKS.get(name)

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = current()
        budget.step()
        at = 1 if passes else 0  # the filtered value
        if name == "join" and len(args) > at and not isinstance(args[at], _CONTAINERS):
            args = (*args[:at], sized(budget, args[at]), *args[at + 1 :])
        if check is not None:
            budget.expect(check(args[1:] if passes else args, kwargs))
        result = func(*args, **kwargs)
        if type(result) is int:
            check_int(result)
        budget.charge(len(result) if type(result) is str else weight(result, budget.room + 1))
        return result

    return guarded


def _finalize(value: Any) -> Any:
    """Every ``{{ ... }}`` value before it becomes text (also in blocks and macros)."""
    budget = _BUDGET.get()
    if budget is None:
        raise SecurityError("templates render only within a budget")
    budget.characters += len(value) if type(value) is str else weight(value)
    if budget.characters > MAX_CHARACTERS:
        raise TooMuchWork(budget._over())
    return value


# --- the compiler -----------------------------------------------------------------------------

_BLOCKS = ("body", "else_")  # statements of their own: charged when they run


def block_cost(body: list[nodes.Node]) -> tuple[int, int]:
    """(nodes, characters of text and string constants) of a block, not counting the blocks
    nested in it (loop bodies, branches, macro bodies: they are charged when they run)."""
    steps = chars = 0
    stack = list(body)
    while stack:
        node = stack.pop()
        steps += 1
        if isinstance(node, nodes.TemplateData):
            chars += len(node.data)
        elif isinstance(node, nodes.Const) and isinstance(node.value, str):
            chars += len(node.value)
        for field in node.fields:
            if field in _BLOCKS:
                continue
            value = getattr(node, field, None)
            if isinstance(value, nodes.Node):
                stack.append(value)
            elif isinstance(value, list):
                stack.extend(v for v in value if isinstance(v, nodes.Node))
    return steps, chars


class BudgetedCodeGenerator(CodeGenerator):
    """Jinja2's code generator (``Environment.code_generator_class``), with the budget's
    charges: each loop's iterable is wrapped in a counting iterator, each block charges its
    size when it runs, concatenations are checked before they join, and slices and list, tuple
    and dict literals are charged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop_iterables: set[int] = set()

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if id(node) in self._loop_iterables:  # a for loop's iterable
            self._loop_iterables.discard(id(node))
            self.write("environment.budget_loop(")
            super().visit(node, *args, **kwargs)
            self.write(")")
            return None
        return super().visit(node, *args, **kwargs)

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        self._loop_iterables.add(id(node.iter))
        super().visit_For(node, frame)

    def blockvisit(self, nodes_: Iterable[nodes.Node], frame: Frame) -> None:
        body = list(nodes_)
        steps, chars = block_cost(body)
        if steps or chars:
            self.writeline(f"environment.budget_block({steps}, {chars})")
        super().blockvisit(body, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.budget_concat({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def _charged(self, visit: Callable[[Any, Frame], None], node: nodes.Expr, frame: Frame) -> None:
        try:
            node.as_const(frame.eval_ctx)
        except nodes.Impossible:
            self.write("environment.budget_value(")
            visit(node, frame)
            self.write(")")
        else:  # a literal: its size is the template's (charged with its block)
            visit(node, frame)

    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:
        if isinstance(node.arg, nodes.Slice):  # compiled as a plain subscript: a new value
            self.write("environment.budget_value(")
            super().visit_Getitem(node, frame)
            self.write(")")
        else:
            super().visit_Getitem(node, frame)

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._charged(super().visit_List, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._charged(super().visit_Dict, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx == "load":
            self._charged(super().visit_Tuple, node, frame)
        else:  # an assignment target
            super().visit_Tuple(node, frame)


# --- the environment ---------------------------------------------------------------------------


class Sandbox(ImmutableSandboxedEnvironment):
    """No loader, no globals, StrictUndefined, ``**`` refused, ``*`` capped, and the budget."""

    code_generator_class = BudgetedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "-", "/", "//", "%"})

    def __init__(self, autoescape: bool) -> None:
        super().__init__(
            autoescape=autoescape,
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=False,
            finalize=_finalize,
        )
        self.globals.clear()  # no range/cycler/joiner/lipsum/namespace/dict
        self.filters["default"] = self.filters["d"] = _default
        self.filters = {name: _guard(name, f) for name, f in self.filters.items()}

    # called by the generated code
    def budget_loop(self, iterable: Iterable[Any]) -> Generator[Any, None, None]:
        return current().loop(iterable)

    def budget_block(self, steps: int, chars: int) -> None:
        budget = current()
        budget.step(steps)
        budget.characters += chars
        if budget.characters > MAX_CHARACTERS:
            raise TooMuchWork(budget._over())

    def budget_concat(self, join: Callable[[Iterable[Any]], str], values: tuple[Any, ...]) -> str:
        budget = current()
        budget.step()
        budget.expect(sum(weight(v, budget.room + 1) for v in values))
        return budget.built(join(values))  # type: ignore[no-any-return]

    def budget_value(self, value: Any) -> Any:
        budget = current()
        budget.step()
        return budget.built(value)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = current()
        budget.step()
        if operator == "**":
            raise SecurityError("the power operator is not allowed in templates")
        for operand in (left, right):
            if type(operand) is int:
                check_int(operand)
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | bytes | list | tuple) and isinstance(n, int):
                    if len(seq) * n > MAX_REPEAT:
                        raise SecurityError(f"repetition beyond {MAX_REPEAT} items")
                    budget.expect(weight(seq, budget.room + 1) * n)
            ints = isinstance(left, int) and isinstance(right, int)
            if ints and left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise TooMuchWork(f"a product of more than {MAX_INT_BITS} bits")
        elif operator == "+":
            if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
                budget.expect(weight(left, budget.room + 1) + weight(right, budget.room + 1))
        elif operator == "%" and isinstance(left, str):
            budget.expect(percent_size(left, right))
        result = super().call_binop(context, operator, left, right)
        if isinstance(result, _SEQUENCES) or type(result) is int:
            budget.built(result)
        return result

    def call(
        __self,  # the sandbox's own spelling: no clash with a call's keyword arguments
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        budget = current()
        budget.step()
        if isinstance(__obj, LoopContext) and args:  # loop(children) in a recursive loop
            args = (budget.loop(args[0]), *args[1:])
        args = _check_call(budget, __obj, args, kwargs)
        return budget.built(super().call(__context, __obj, *args, **kwargs))
