"""Templates in a Jinja2 sandbox: checked at save time, rendered per recipient. No I/O.

Safety (:mod:`.sandbox`): :class:`jinja2.sandbox.ImmutableSandboxedEnvironment` (no access to
dunders or unsafe callables, no mutating of lists, dicts and sets), :class:`StrictUndefined` (a
missing variable is an error, not an empty string), no loader (no include/import/extends), no
globals (no ``range``, ``cycler``...), string or list repetition with ``*`` capped, and a budget
for every render (loop iterations, steps, characters built, processor time) so no template can
keep the service busy. At save time a template is parsed, its variables checked against
:data:`VARIABLES`, its attribute accesses checked (nothing starting with ``_``), and it is
rendered once with sample values so channel limits (SMS segments, push lengths) and the budget
are checked too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from html import unescape
from html.parser import HTMLParser
from typing import Literal

from jinja2 import TemplateError, meta, nodes
from jinja2.environment import Template
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError

from crm_marketing.templates import sandbox
from crm_marketing.templates.sandbox import Sandbox, TooMuchWork
from crm_runtime.http.inputs import is_blank

Channel = Literal["email", "sms", "push"]

# The personalisation variables a template may use, with what they hold.
VARIABLES: dict[str, str] = {
    "customer_id": "the customer's id",
    "first_name": "first name",
    "last_name": "last name",
    "full_name": "first and last name",
    "email": "e-mail address",
    "phone": "phone number",
    "company": "company name",
    "country": "country code (ISO 3166-1 alpha-2)",
    "city": "city",
    "language": "preferred language",
    "age_band": "age band, e.g. 25-34",
    "industry": "industry",
    "company_size": "company size band",
    "timezone": "IANA time zone",
    "unsubscribe_url": "the recipient's unsubscribe link (set at send time)",
    "view_in_browser_url": "the message's web version (set at send time)",
}

# What a preview (and the save-time check) fills in when no customer is given.
SAMPLE: dict[str, str] = {
    "customer_id": "00000000-0000-4000-8000-000000000000",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "full_name": "Ada Lovelace",
    "email": "ada.lovelace@example.com",
    "phone": "+44 20 7946 0000",
    "company": "Analytical Engines Ltd",
    "country": "GB",
    "city": "London",
    "language": "en",
    "age_band": "35-44",
    "industry": "Engineering",
    "company_size": "11-50",
    "timezone": "Europe/London",
    "unsubscribe_url": "https://marketing.example.com/u/sample-token",
    "view_in_browser_url": "https://marketing.example.com/v/sample-token",
}

PARTS: dict[Channel, tuple[str, ...]] = {
    "email": ("subject", "html", "text"),
    "sms": ("text",),
    "push": ("title", "body"),
}
REQUIRED: dict[Channel, tuple[str, ...]] = {
    "email": ("subject", "html"),
    "sms": ("text",),
    "push": ("title", "body"),
}
MAX_SOURCE = 200_000
SUBJECT_MAX = 255


@dataclass(frozen=True)
class Limits:
    sms_max_segments: int = 3
    push_title_max: int = 65
    push_body_max: int = 240


class TemplateProblem(ValueError):
    """A template that cannot be saved or rendered: which part and why."""

    def __init__(self, part: str, reason: str) -> None:
        self.part = part
        self.reason = reason
        super().__init__(f"{part}: {reason}")


# --- the sandbox -----------------------------------------------------------------------------

_HTML_ENV = Sandbox(autoescape=True)
_TEXT_ENV = Sandbox(autoescape=False)


def _env(part: str) -> Sandbox:
    return _HTML_ENV if part == "html" else _TEXT_ENV


def _unsafe_nodes(tree: nodes.Template) -> Iterator[str]:
    for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        yield f"'{type(node).__name__.lower()}' is not allowed (templates stand alone)"
    for attr in tree.find_all(nodes.Getattr):
        if attr.attr.startswith("_"):
            yield f"access to the attribute '{attr.attr}' is not allowed (line {attr.lineno})"
    for item in tree.find_all(nodes.Getitem):
        arg = item.arg
        if (
            isinstance(arg, nodes.Const)
            and isinstance(arg.value, str)
            and arg.value.startswith("_")
        ):
            yield f"access to the item '{arg.value}' is not allowed (line {item.lineno})"


def check_source(part: str, source: str) -> Template:
    """Parse and compile one part; TemplateProblem names a syntax error, an unknown variable or
    an unsafe construct."""
    if len(source) > MAX_SOURCE:
        raise TemplateProblem(part, f"is longer than {MAX_SOURCE} characters")
    env = _env(part)
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(part, f"line {exc.lineno}: {exc.message}") from None
    except RecursionError:
        raise TemplateProblem(part, "is nested too deeply") from None
    for problem in _unsafe_nodes(tree):
        raise TemplateProblem(part, problem)
    try:
        used = meta.find_undeclared_variables(tree)
    except TemplateError as exc:  # e.g. an unknown filter or test
        raise TemplateProblem(part, str(exc.message or exc)) from None
    unknown = sorted(used - VARIABLES.keys())
    if unknown:
        raise TemplateProblem(
            part,
            f"unknown variable(s) {', '.join(unknown)}; allowed: {', '.join(VARIABLES)}",
        )
    try:
        return env.from_string(tree)
    except TemplateError as exc:  # e.g. an unknown filter or test
        raise TemplateProblem(part, str(exc.message or exc)) from None
    except RecursionError:
        raise TemplateProblem(part, "is nested too deeply") from None


# --- SMS length: GSM 03.38 or UCS-2 --------------------------------------------------------------

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")


@dataclass(frozen=True)
class SmsInfo:
    encoding: Literal["GSM-7", "UCS-2"]
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int
    characters: int


def _pack(costs: list[int], single: int, per_part: int) -> int:
    """Segments needed; a character's units never straddle two segments."""
    total = sum(costs)
    if total == 0:
        return 0
    if total <= single:
        return 1
    parts, used = 1, 0
    for cost in costs:
        if used + cost > per_part:
            parts += 1
            used = 0
        used += cost
    return parts


def sms_info(text: str) -> SmsInfo:
    """Encoding and segment count of an SMS: GSM-7 160/153 septets (extension characters take
    two), else UCS-2 70/67 UTF-16 units (characters beyond the BMP take two)."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text):
        costs = [2 if c in GSM7_EXTENDED else 1 for c in text]
        return SmsInfo("GSM-7", sum(costs), _pack(costs, 160, 153), len(text))
    costs = [2 if ord(c) > 0xFFFF else 1 for c in text]
    return SmsInfo("UCS-2", sum(costs), _pack(costs, 70, 67), len(text))


# --- plain text from HTML (when an e-mail template has no text part) ----------------------------

_BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table"})
_SKIPPED = frozenset({"script", "style", "head", "title"})


class _Text(HTMLParser):
    """The reference reading of any markup (stdlib parser); :func:`html_to_text` takes a faster
    path for the plain markup templates are made of, with the same result."""

    BLOCKS = _BLOCKS

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.links: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self.skip += 1
        elif tag in _BLOCKS:
            self.out.append("\n")
        if tag == "a":
            self.links.append(dict(attrs).get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCKS:
            self.out.append("\n")
        if tag == "a" and self.links:
            href = self.links.pop()
            if href and href.startswith(("http://", "https://", "mailto:")):
                self.out.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(data)


# The fast path reads a strict subset of HTML on which every version of the stdlib parser agrees
# (ASCII blanks between attributes, quoted values without < or >, comments and doctypes without
# < or >, script/style/title holding no <); anything else (a stray <, a processing instruction,
# CDATA, conditional comments, raw-text elements...) is read by the stdlib parser instead.
_SP = r"[ \t\n\r\f]"
_VALUE = rf"""(?:"[^"<>]*"|'[^'<>]*'|[^\s"'=<>`]*[^\s"'=<>`/](?={_SP}|>))"""
_ATTR = rf"{_SP}+([a-zA-Z_:][-a-zA-Z0-9_:.]*)(?:{_SP}*={_SP}*({_VALUE}))?"
_ANY_ATTRS = rf"(?:{_SP}+[a-zA-Z_:][-a-zA-Z0-9_:.]*(?:{_SP}*={_SP}*{_VALUE})?)*"
_TOKEN = re.compile(
    r"([^<]+)"  # 1: text
    # 2: script, style or title, 3: its attributes, 4: its content, 5: its end tag's name
    rf"|<((?i:script|style|title))({_ANY_ATTRS}){_SP}*>([^<]*)</([a-zA-Z]+)>"
    rf"|<([a-zA-Z][a-zA-Z0-9]*)({_ANY_ATTRS}){_SP}*(/?)>"  # 6: tag, 7: attributes, 8: "/"
    r"|</([a-zA-Z][a-zA-Z0-9]*)>"  # 9: end tag
    rf"|<!--{_SP}[^<>-]*(?:-[^<>-]+)*-->"  # a comment
    r"|<![dD][oO][cC][tT][yY][pP][eE][^<>]*>"  # the doctype
    r"|(<)"  # 10: anything else
)
_ATTRS = re.compile(_ATTR)
# Elements whose content the stdlib parser reads as raw text (newer ones: also the last six, and
# title and textarea as escapable raw text; plaintext to the end of the input). Script, style and
# title are read whole by the fast path when they hold no "<" (all three are dropped anyway).
_RAW = frozenset(
    {"script", "style", "title", "textarea", "xmp", "iframe", "noembed", "noframes", "noscript"}
    | {"plaintext"}
)
_BLANKS = re.compile(r"(?: |[\t\r\f\v])[ \t\r\f\v]+|[\t\r\f\v]")  # runs to one " "; " " stays
_GAPS = re.compile(r"\n{3,}")


def _href(attributes: str) -> str | None:
    """What the stdlib parser gives as ``dict(attrs).get("href")`` of these attributes (the
    tag's, with its closing ``>``)."""
    href: str | None = None
    for m in _ATTRS.finditer(attributes):
        if m.group(1).lower() == "href":
            value = m.group(2)
            if value is None:
                href = None
            else:
                if value[:1] in ("'", '"'):
                    value = value[1:-1]
                href = unescape(value) if value else value
    return href


def _fast_text(markup: str) -> list[str] | None:
    """The pieces ``_Text`` collects from ``markup``, or None when it is not plain enough."""
    out: list[str] = []
    links: list[str | None] = []
    skip = 0
    for text, raw, _, _, raw_end, tag, attrs, alone, end, other in _TOKEN.findall(markup):
        if text:
            if not skip:
                out.append(unescape(text) if "&" in text else text)
            continue
        if tag:
            tag = tag.lower()
            if tag in _RAW:
                return None  # "<" inside, self-closed or not closed
            if tag == "head":
                skip += 1
            elif tag in _BLOCKS:
                out.append("\n")
            elif tag == "a":
                links.append(_href(attrs + ">"))
            if not alone:
                continue
            end = tag  # <br/>: a start and an end tag
        elif raw:
            if raw.lower() != raw_end.lower():
                return None
            continue  # dropped whole: skip goes up and down again
        elif other:
            return None
        if end:
            tag = end.lower()
            if tag in _RAW:
                return None
            if tag in _SKIPPED:
                skip = max(0, skip - 1)
            elif tag in _BLOCKS:
                out.append("\n")
            elif tag == "a" and links:
                href = links.pop()
                if href and href.startswith(("http://", "https://", "mailto:")):
                    out.append(f" ({href})")
    return out


def html_to_text(markup: str) -> str:
    """The text part of an e-mail whose template has none: block elements as line breaks, links
    followed by their URL, script/style/head dropped, blanks collapsed."""
    out = _fast_text(markup)
    if out is None:
        parser = _Text()
        parser.feed(markup)
        parser.close()
        out = parser.out
    text = _BLANKS.sub(" ", "".join(out))
    lines = [line.strip() for line in text.split("\n")]
    return _GAPS.sub("\n\n", "\n".join(lines)).strip() + "\n"


# --- whole templates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    channel: Channel
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    title: str | None = None
    body: str | None = None
    sms: SmsInfo | None = None
    warnings: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Compiled:
    channel: Channel
    parts: Mapping[str, Template]


def compile_template(channel: Channel, content: Mapping[str, str | None]) -> Compiled:
    """Check a template's parts (syntax, variables, safety); raises TemplateProblem (a
    TemplateProblems when more than one part is wrong)."""
    compiled, problems = _compile(channel, content)
    if problems:
        raise _combined(problems)
    return compiled


def _compile(
    channel: Channel, content: Mapping[str, str | None]
) -> tuple[Compiled, list[TemplateProblem]]:
    """The parts that compile, and a problem for each part that does not (or is missing)."""
    allowed = PARTS[channel]
    problems = [
        TemplateProblem(part, f"a {channel} template has only {', '.join(allowed)}")
        for part, value in content.items()
        if value is not None and part not in allowed
    ]
    for part in REQUIRED[channel]:
        value = content.get(part)
        if value is None or is_blank(value):
            problems.append(TemplateProblem(part, f"a {channel} template needs a {part}"))
    parts: dict[str, Template] = {}
    for part in allowed:
        value = content.get(part)
        if value is None or is_blank(value):
            continue
        try:
            parts[part] = check_source(part, value)
        except TemplateProblem as exc:
            problems.append(exc)
    return Compiled(channel, parts), problems


class TemplateProblems(TemplateProblem):
    """More than one part is wrong: ``problems`` has one per part (``part``, ``reason``: the
    first's, for callers that report one)."""

    def __init__(self, problems: list[TemplateProblem]) -> None:
        super().__init__(problems[0].part, problems[0].reason)
        self.problems = problems
        self.args = ("; ".join(str(p) for p in problems),)


def problems_of(exc: TemplateProblem) -> list[TemplateProblem]:
    """Every part's problem an exception carries (one, unless it is a TemplateProblems)."""
    return list(exc.problems) if isinstance(exc, TemplateProblems) else [exc]


def _combined(problems: list[TemplateProblem]) -> TemplateProblem:
    first: dict[str, TemplateProblem] = {}
    for problem in problems:
        first.setdefault(problem.part, problem)
    unique = list(first.values())
    return unique[0] if len(unique) == 1 else TemplateProblems(unique)


def _prepare(variables: Mapping[str, object]) -> dict[str, object]:
    values = {k: ("" if v is None else v) for k, v in variables.items() if k in VARIABLES}
    if "full_name" not in values and ("first_name" in values or "last_name" in values):
        first, last = values.get("first_name", ""), values.get("last_name", "")
        values["full_name"] = f"{first} {last}".strip()
    return values


TOO_MUCH_WORK = "the template does too much work when rendered"


def _run(part: str, template: Template, values: Mapping[str, object]) -> str:
    try:
        return sandbox.render(template, values)
    except UndefinedError as exc:
        raise TemplateProblem(
            part, f"{exc.message}: give it a value or use | default(...)"
        ) from None
    except TooMuchWork as exc:
        raise TemplateProblem(part, f"{TOO_MUCH_WORK}: {exc}") from None
    except RecursionError:
        raise TemplateProblem(part, f"{TOO_MUCH_WORK}: macros call themselves too deeply") from None
    except SecurityError as exc:
        raise TemplateProblem(part, f"unsafe construct refused: {exc}") from None
    except TemplateError as exc:
        raise TemplateProblem(part, str(exc)) from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise TemplateProblem(part, f"{type(exc).__name__}: {exc}") from None


def render_compiled(
    compiled: Compiled, variables: Mapping[str, object], limits: Limits
) -> Rendered:
    """Render for one recipient and check the channel's limits (TemplateProblem if over)."""
    rendered, problems = _render(compiled, variables, limits)
    if problems or rendered is None:
        raise _combined(problems or [TemplateProblem("template", "does not render")])
    return rendered


def _render(
    compiled: Compiled, variables: Mapping[str, object], limits: Limits
) -> tuple[Rendered | None, list[TemplateProblem]]:
    """Render every compiled part and check each against the channel's limits: the message
    (None unless every part rendered within its limits) and a problem per bad part."""
    values = _prepare(variables)
    out: dict[str, str] = {}
    problems: list[TemplateProblem] = []
    for part, template in compiled.parts.items():
        try:
            out[part] = _run(part, template, values)
        except TemplateProblem as exc:
            problems.append(exc)
    if compiled.channel == "email":
        subject: str | None = None
        if "subject" in out:
            subject = " ".join(out["subject"].split())  # one header line, always
            if not subject:
                problems.append(TemplateProblem("subject", "renders empty"))
            elif len(subject) > SUBJECT_MAX:
                problems.append(
                    TemplateProblem("subject", f"renders longer than {SUBJECT_MAX} characters")
                )
        if problems or subject is None or "html" not in out:
            return None, problems
        text = out.get("text") or html_to_text(out["html"])
        return Rendered("email", subject=subject, html=out["html"], text=text), []
    if compiled.channel == "sms":
        if problems or "text" not in out:
            return None, problems
        text = out["text"].strip()
        if not text:
            return None, [TemplateProblem("text", "renders empty")]
        info = sms_info(text)
        if info.segments > limits.sms_max_segments:
            return None, [
                TemplateProblem(
                    "text",
                    f"renders to {info.segments} SMS segments ({info.encoding}, {info.units}"
                    f" units); at most {limits.sms_max_segments} are allowed",
                )
            ]
        warnings: tuple[str, ...] = ()
        if info.encoding == "UCS-2":
            warnings = ("characters outside GSM-7 make this a UCS-2 SMS (70 per segment)",)
        return Rendered("sms", text=text, sms=info, warnings=warnings), []
    push: dict[str, str] = {}
    for part, most in (("title", limits.push_title_max), ("body", limits.push_body_max)):
        if part not in out:
            continue
        value = out[part].strip()
        if not value:
            problems.append(TemplateProblem(part, "renders empty"))
        elif len(value) > most:
            problems.append(
                TemplateProblem(part, f"renders {len(value)} characters; at most {most}")
            )
        else:
            push[part] = value
    if problems or len(push) < 2:
        return None, problems
    return Rendered("push", title=push["title"], body=push["body"]), []


def validate(channel: Channel, content: Mapping[str, str | None], limits: Limits) -> Rendered:
    """Save-time check: compile, then render with the sample values (limits included). Every
    bad part is reported (a TemplateProblems when there is more than one): the parts that
    compiled are rendered even when another part did not compile."""
    compiled, problems = _compile(channel, content)
    rendered, more = _render(compiled, SAMPLE, limits)
    if problems or more or rendered is None:
        raise _combined(problems + more or [TemplateProblem("template", "does not render")])
    return rendered
