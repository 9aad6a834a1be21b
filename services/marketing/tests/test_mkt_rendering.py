"""Templates in the sandbox: save-time checks, rendering, SMS encoding and segments, limits."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_marketing.templates.rendering import (
    GSM7_BASIC,
    GSM7_EXTENDED,
    SAMPLE,
    Limits,
    TemplateProblem,
    compile_template,
    html_to_text,
    render_compiled,
    sms_info,
    validate,
)

LIMITS = Limits(sms_max_segments=3, push_title_max=65, push_body_max=240)
EMAIL = {
    "subject": "Hi {{ first_name }}",
    "html": "<p>Hello {{ first_name }} from {{ city | default('your town') }}</p>"
    '<a href="{{ unsubscribe_url }}">Unsubscribe</a>',
    "text": "Hello {{ first_name }}\nUnsubscribe: {{ unsubscribe_url }}",
}


def problem(channel: str, content: dict[str, str]) -> TemplateProblem:
    with pytest.raises(TemplateProblem) as caught:
        validate(channel, content, LIMITS)  # type: ignore[arg-type]
    return caught.value


def test_an_email_renders_with_the_sample_values() -> None:
    out = validate("email", EMAIL, LIMITS)
    assert out.subject == "Hi Ada"
    assert out.html is not None and "Hello Ada from London" in out.html
    assert out.text == "Hello Ada\nUnsubscribe: " + SAMPLE["unsubscribe_url"]


def test_html_is_autoescaped_and_subject_and_text_are_not() -> None:
    compiled = compile_template("email", EMAIL)
    values = {**SAMPLE, "first_name": "<b>Tom & Jerry</b>", "city": None}
    out = render_compiled(compiled, values, LIMITS)
    assert out.html is not None and "&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;" in out.html
    assert "from your town</p>" in out.html  # None is no value: default(...) stands in
    assert out.subject == "Hi <b>Tom & Jerry</b>"
    assert out.text is not None and out.text.startswith("Hello <b>Tom & Jerry</b>")


def test_a_subject_is_always_one_header_line() -> None:
    compiled = compile_template("email", EMAIL)
    out = render_compiled(compiled, {**SAMPLE, "first_name": "Eve\r\nBcc: all@example.com"}, LIMITS)
    assert out.subject == "Hi Eve Bcc: all@example.com"
    assert out.subject is not None and "\n" not in out.subject and "\r" not in out.subject


def test_text_is_derived_from_the_html_when_missing() -> None:
    out = validate("email", {"subject": "S", "html": EMAIL["html"]}, LIMITS)
    assert out.text is not None
    assert "Hello Ada from London" in out.text
    assert "Unsubscribe (https://marketing.example.com/u/sample-token)" in out.text
    assert html_to_text("<style>p{}</style><p>a</p><p>b &amp; c</p>") == "a\n\nb & c\n"


@pytest.mark.parametrize(
    ("content", "part", "reason"),
    [
        ({"subject": "Hi {{ nickname }}", "html": "x"}, "subject", "unknown variable(s) nickname"),
        ({"subject": "S", "html": "{{ first_name.__class__ }}"}, "html", "attribute '__class__'"),
        (
            {"subject": "S", "html": "{{ first_name['__class__'] }}"},
            "html",
            "item '__class__'",
        ),
        ({"subject": "S", "html": "{{ first_name.__class__.__mro__ }}"}, "html", "not allowed"),
        ({"subject": "S", "html": "{% include 'secrets.html' %}"}, "html", "'include' is not"),
        ({"subject": "S", "html": "{% extends 'base.html' %}"}, "html", "'extends' is not"),
        ({"subject": "S", "html": "{% import 'm.html' as m %}"}, "html", "'import' is not"),
        ({"subject": "S", "html": "{{ range(10) | list }}"}, "html", "unknown variable(s) range"),
        ({"subject": "S", "html": "{{ cycler }}"}, "html", "unknown variable(s) cycler"),
        ({"subject": "S", "html": "{{ first_name * 100000 }}"}, "html", "repetition beyond"),
        ({"subject": "S", "html": "{{ 9 ** 9 ** 9 }}"}, "html", "power operator"),
        (
            {"subject": "S", "html": "{{ first_name | attr('__class__') }}"},
            "html",
            "unsafe construct refused",
        ),
        ({"subject": "S", "html": "{{ first_name | nosuchfilter }}"}, "html", "nosuchfilter"),
        ({"subject": "S", "html": "{% if first_name %}open"}, "html", "line 1"),
        ({"subject": "S", "html": "a\n{{ first_name }\n"}, "html", "line 2"),
        ({"subject": "S"}, "html", "needs a html"),
        ({"subject": " ", "html": "x"}, "subject", "needs a subject"),
        ({"subject": "S", "html": "x", "title": "T"}, "title", "has only subject, html, text"),
    ],
)
def test_save_time_refusals_name_the_part_and_the_reason(
    content: dict[str, str], part: str, reason: str
) -> None:
    exc = problem("email", content)
    assert exc.part == part
    assert reason in exc.reason, exc.reason


def test_loops_and_sets_of_allowed_values_are_fine() -> None:
    out = validate(
        "email",
        {
            "subject": "{% set greeting = 'Hello' %}{{ greeting }} {{ first_name | upper }}",
            "html": "{% for part in full_name.split(' ') %}<i>{{ part }}</i>{% endfor %}",
        },
        LIMITS,
    )
    assert out.subject == "Hello ADA"
    assert out.html == "<i>Ada</i><i>Lovelace</i>"


def test_a_missing_value_at_render_is_an_error_unless_defaulted() -> None:
    compiled = compile_template("sms", {"text": "Hi {{ first_name }} {{ city | default('') }}"})
    with pytest.raises(TemplateProblem) as caught:
        render_compiled(compiled, {"city": "Paris"}, LIMITS)
    assert caught.value.part == "text" and "first_name" in caught.value.reason
    assert render_compiled(compiled, {"first_name": "Bo"}, LIMITS).text == "Hi Bo"


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # extension characters take two septets
        ("€" * 81, "GSM-7", 162, 2),
        ("a" * 159 + "€", "GSM-7", 161, 2),
        ("a" * 152 + "€" + "a" * 152, "GSM-7", 306, 3),  # the escape pair is never split
        ("Grüße aus Köln: ÄÖÜäöüß à é", "GSM-7", 27, 1),  # all in GSM 03.38
        ("Zażółć gęślą jaźń", "UCS-2", 17, 1),  # Polish letters are not
        ("ç" * 70, "UCS-2", 70, 1),  # ç is not (only Ç)
        ("ç" * 71, "UCS-2", 71, 2),
        ("ç" * 134, "UCS-2", 134, 2),
        ("ç" * 135, "UCS-2", 135, 3),
        ("😀" * 35, "UCS-2", 70, 1),  # beyond the BMP: two UTF-16 units
        ("a" * 68 + "😀", "UCS-2", 70, 1),
        ("a" * 66 + "😀" + "a" * 66, "UCS-2", 134, 3),  # a surrogate pair is never split
        ("", "GSM-7", 0, 0),
    ],
)
def test_sms_encoding_and_segments(text: str, encoding: str, units: int, segments: int) -> None:
    info = sms_info(text)
    assert (info.encoding, info.units, info.segments) == (encoding, units, segments)


@settings(max_examples=300)
@given(
    st.text(
        alphabet=st.one_of(
            st.sampled_from(sorted(GSM7_BASIC)),
            st.sampled_from(sorted(GSM7_EXTENDED)),
            st.characters(blacklist_categories=("Cs",)),
        ),
        max_size=700,
    )
)
def test_segments_are_the_fewest_that_hold_the_text(text: str) -> None:
    info = sms_info(text)
    single, part = (160, 153) if info.encoding == "GSM-7" else (70, 67)
    if info.units == 0:
        assert info.segments == 0
    elif info.units <= single:
        assert info.segments == 1
    else:
        lower = math.ceil(info.units / part)
        assert lower <= info.segments <= lower + info.units // part  # a pair never splits
    if info.encoding == "GSM-7":
        assert all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text)


def test_sms_over_the_segment_limit_is_refused_at_save_and_at_render() -> None:
    exc = problem("sms", {"text": "x" * 470})
    assert exc.part == "text" and "4 SMS segments" in exc.reason and "at most 3" in exc.reason
    compiled = compile_template("sms", {"text": "{{ company }}: " + "y" * 440})
    ok = render_compiled(compiled, {"company": "ACME"}, LIMITS)
    assert ok.sms is not None and ok.sms.segments == 3
    with pytest.raises(TemplateProblem, match="4 SMS segments"):
        render_compiled(compiled, {"company": "A" * 40}, LIMITS)
    warned = validate("sms", {"text": "Cześć, {{ first_name }}!"}, LIMITS)
    assert warned.sms is not None and warned.sms.encoding == "UCS-2" and warned.warnings


def test_push_title_and_body_limits() -> None:
    out = validate("push", {"title": "Hi {{ first_name }}", "body": "New phones"}, LIMITS)
    assert (out.title, out.body) == ("Hi Ada", "New phones")
    assert problem("push", {"title": "T" * 66, "body": "b"}).part == "title"
    assert "at most 240" in problem("push", {"title": "t", "body": "b" * 241}).reason
    assert problem("push", {"title": "t"}).part == "body"
    assert problem("sms", {"text": "t", "html": "<p>"}).part == "html"
