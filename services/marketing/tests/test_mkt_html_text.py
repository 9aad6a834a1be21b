"""The text part made from HTML: the fast reading gives exactly what the stdlib parser gives."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_marketing.templates.rendering import _fast_text, _Text, html_to_text


def reference(markup: str) -> str:
    """html_to_text as it was before the fast path: the stdlib parser, line by line."""
    parser = _Text()
    parser.feed(markup)
    parser.close()
    text = "".join(parser.out)
    lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


CAMPAIGN = (
    "<html><body><h1>Hello Ada</h1>"
    "<p>Our spring range is in store. Have a look before it is gone.</p>"
    '<p><a href="https://shop.example/phones?utm_campaign=spring">See the phones</a></p>'
    '<p><a href="https://shop.example/stores">Find a store</a></p>'
    '<p style="font-size:small"><a href="https://crm.example.com/t/u/abc">Unsubscribe</a></p>'
    "</body></html>"
)

# Markup the fast path reads itself (and must read as the stdlib parser does).
PLAIN = [
    CAMPAIGN,
    "",
    "just text",
    "   \n\t  ",
    "<p>a</p><p>b &amp; c</p>",
    "<style>p{}</style><p>a</p><p>b &amp; c</p>",
    '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Spring</title>'
    '<style type="text/css">body { color: red; } a > b {}</style></head>'
    "<body><p>Hi</p></body></html>",
    "<SCRIPT>var a = 1 && 2;</SCRIPT><P>Upper</P><BR><Br/>case",
    "<script type='text/javascript'>x()</Script>after",
    "<ul><li>one<ul><li>one.a</li><li>one.b</li></ul></li><li>two</li></ul>",
    "<ol>\n  <li>first</li>\n  <li>second <b>bold</b> <i>it</i></li>\n</ol>",
    "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>",
    "<h1>T</h1><h2>t2</h2><h3>t3</h3><h4>4</h4><h5>5</h5><h6>6</h6><div>d</div>",
    "line<br>break<br/>twice<br />three<br\n/>",
    "&nbsp;lead&nbsp;&nbsp;nbsp&nbsp; &copy; &#169; &#xA9; &#x27; &#39; &lt;tag&gt; &quot;q&quot;",
    "&amp &ampx &unknown; & alone &#; &#x; &#99999999; &#0; trailing &amp",
    "AT&T and R&D; &notin &notit; &ampamp;",
    "<p>\tTabs\tand  many   spaces\r\nCRLF\r\n\fform\vvt</p>",
    "<p>\u2003em space\u00a0nbsp\u3000ideographic </p>  \u00a0 ",
    '<a href="https://x.example/a?b=1&amp;c=2">entity in href</a>',
    "<a href='https://x.example/single'>single</a>",
    "<a href=https://x.example/bare>bare</a> <a href=https://x.example/b2 >b2</a>",
    '<A HREF="https://x.example/UP">upper</A>',
    '<a class="btn" href="mailto:hi@example.com" target="_blank">mail</a>',
    '<a href="javascript:alert(1)">js</a><a href="/relative">rel</a><a href="">empty</a>',
    "<a>no href</a><a href>valueless</a><a name=x>named</a>",
    '<a href="https://a.example" href="https://b.example">dup</a>',
    '<a href="https://a.example"><a href="https://b.example">inner</a>outer</a>',
    '</a>stray end<a href="https://open.example">never closed',
    '<a href="https://x.example/s"/>self-closed',
    '<img src="x.png" alt="a, b"><p data-x = "1" hidden disabled>attrs</p>',
    "<p class='x'   id=\"y\"   >spaced</p>",
    "<!-- a comment --><p>after</p><!--\n multi\n line - with dash\n-->",
    "<head><meta name=a content=b></head>body text<title>late</title> end",
    "<div><div><p>deep</p></div></div>\n\n\n\n<p>gap</p>",
    "<p>x</p>" * 50,
    "a\n\n\n\n\nb",
    "<span>in</span>line<em>s</em>",
]

# Markup outside the fast path's subset: read by the stdlib parser, the same result.
ODD = [
    "<title>no end",
    '<img src="x.png" alt="a > b"><p data-x="<">lt and gt in values</p>',
    "a < b and c > d",
    "1 <3 2",
    "<p>unclosed <b",
    "<!--[if mso]><table><tr><td><![endif]--><p>x</p><!--[if mso]></td></tr></table><![endif]-->",
    "<![CDATA[ raw ]]><p>x</p>",
    "<?xml version='1.0'?><p>pi</p>",
    "<!---->empty comment<!-->abrupt<!--->also",
    "<!--x-->no blank<!-- a -- b -->",
    "<script>if (a < b) { document.write('</p>'); }</script>after",
    "<script>x</p>y</script>z",
    "<style/>self-closed style<p>x</p>",
    "<textarea>t &amp; <b>x</b></textarea>after",
    "<noscript><p>no js</p></noscript><iframe>f</iframe><xmp><b></xmp>",
    "<plaintext><p>all the rest",
    '<a href=x/>slash</a><a href= >eq</a><a href=="x">eqeq</a>',
    '<a href="x"class="y">glued</a><a/href="z">slash-sep</a>',
    "<p\u00a0class=x>nbsp in tag</p><p\x0b>vt</p>",
    "</p >spaced end</ p>",
    "<p/ >odd</p>",
    "&#x110000; &#xD800; &#128512; &#x80; &#150;",
    '<a href="https://x.example/q?a=1&b=2&amp;c">raw amp</a>',
    "<br/ ><br / >",
    "<div>" + "<b>" * 30 + "deep" + "</b>" * 30 + "</div>",
]


@pytest.mark.parametrize("markup", PLAIN)
def test_plain_markup_is_read_by_the_fast_path_as_by_the_parser(markup: str) -> None:
    assert _fast_text(markup) is not None
    assert html_to_text(markup) == reference(markup)


@pytest.mark.parametrize("markup", ODD)
def test_other_markup_gives_what_the_parser_gives(markup: str) -> None:
    assert html_to_text(markup) == reference(markup)


def test_markup_outside_the_subset_goes_to_the_parser() -> None:
    for markup in ("a < b", "<!--[if mso]>x<![endif]-->", "<script>a<b</script>", "<xmp>x</xmp>"):
        assert _fast_text(markup) is None


def test_the_campaign_text_keeps_links_blocks_and_entities() -> None:
    assert html_to_text(CAMPAIGN) == (
        "Hello Ada\n\n"
        "Our spring range is in store. Have a look before it is gone.\n\n"
        "See the phones (https://shop.example/phones?utm_campaign=spring)\n\n"
        "Find a store (https://shop.example/stores)\n\n"
        "Unsubscribe (https://crm.example.com/t/u/abc)\n"
    )
    assert html_to_text('<a href="https://x.example/?a=1&amp;b=2">go</a>') == (
        "go (https://x.example/?a=1&b=2)\n"
    )
    assert html_to_text("<script>a()</script><p>x &lt; y</p>") == "x < y\n"


def test_no_slow_reading_of_long_or_hostile_markup() -> None:
    hostile = [
        "<a" + ' x="1"' * 20_000 + " /",  # an attribute run that never closes
        "<p " + " " * 50_000 + "x",
        "<!-- " + "- " * 30_000,
        "&" * 60_000,
        "<p>" + "word " * 40_000 + "</p>",
    ]
    for markup in hostile:
        started = time.perf_counter()
        assert html_to_text(markup) == reference(markup)
        assert time.perf_counter() - started < 5


_TAGS = ["p", "a", "br", "li", "ul", "h1", "div", "b", "script", "style", "head", "title", "td"]
_TEXT = st.text(alphabet="ab &;#x39<>/=\"' \t\n\r\u00a0-!", max_size=12)
_NAME = st.sampled_from(_TAGS + [t.upper() for t in _TAGS[:4]])
_VALUE = st.one_of(
    st.builds(lambda v: f'"{v}"', _TEXT),
    st.builds(lambda v: f"'{v}'", _TEXT),
    st.text(alphabet="ab:/.?=&;-", min_size=1, max_size=8),
    st.sampled_from(["https://x.example/a", "mailto:a@b", "http://y/&amp;z", ""]),
)
_ATTR = st.one_of(
    st.builds(
        lambda n, sp, v: f"{n}{sp}={sp}{v}",
        st.sampled_from(["href", "HREF", "class", "x"]),
        st.sampled_from(["", " ", "\n"]),
        _VALUE,
    ),
    st.sampled_from(["hidden", "href", "data-a"]),
)
_START = st.builds(
    lambda name, attrs, sp, close: f"<{name}{''.join(' ' + a for a in attrs)}{sp}{close}>",
    _NAME,
    st.lists(_ATTR, max_size=3),
    st.sampled_from(["", " ", "\t"]),
    st.sampled_from(["", "", "/"]),
)
_END = st.builds(lambda name: f"</{name}>", _NAME)
_PIECE = st.one_of(
    _TEXT,
    _START,
    _END,
    st.sampled_from(
        ["&amp;", "&nbsp;", "&#169;", "&lt;", "<!-- c -->", "<!DOCTYPE html>", "<", "&", "\n\n"]
    ),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECE, max_size=25))
def test_generated_markup_reads_the_same(pieces: list[str]) -> None:
    markup = "".join(pieces)
    assert html_to_text(markup) == reference(markup)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="<>/!-&;#x3a =\"'\n\tpbrhscitle", max_size=60))
def test_noise_reads_the_same(markup: str) -> None:
    assert html_to_text(markup) == reference(markup)
